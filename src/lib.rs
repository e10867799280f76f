//! diffeoreg: diffeomorphic deformable registration of CT and pseudo-CT.
//!
//! The command line (`src/main.rs`) and the desktop app call this library; no logic lives
//! only in either.

// Index loops over the three axes read closer to the maths than iterator chains.
#![allow(clippy::needless_range_loop)]

pub mod app;
pub mod apply;
pub mod contours;
pub mod diffeo;
pub mod error;
pub mod heap;
pub mod io;
pub mod matching;
pub mod metrics;
pub mod net;
pub mod parallel;
pub mod patch;
pub mod phantom;
pub mod progress;
pub mod qa;
pub mod register;
pub mod rigid;
pub mod train;
pub mod volume;

pub use error::{Error, Result};

//! The registration pipeline of SPEC §2: direct optimisation (`optimize`) and the whole run from files to outputs (`pipeline`).

pub mod network;
pub mod optimize;
pub mod pipeline;
pub mod resolution;

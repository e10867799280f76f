//! The registration pipeline of SPEC §2: direct optimisation (`optimize`), resolution matching of
//! the pair before it (`resolution`), the network's prediction (`network`) and the whole run from
//! files to outputs (`pipeline`).

pub mod network;
pub mod optimize;
pub mod pipeline;
pub mod resolution;

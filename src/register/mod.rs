//! The registration pipeline of SPEC §2: direct optimisation (`optimize`, matching the pair
//! with `crate::matching` before each level), the network's prediction (`network`, a
//! `crate::net::model::Model`) and the whole run from files to outputs (`pipeline`).

pub mod dicom_export;
pub mod network;
pub mod optimize;
pub mod pipeline;
pub mod qa_report;
pub mod saved;

//! The registration pipeline of SPEC §2: direct optimisation (`optimize`), resolution and
//! grey-value matching of the pair before it (`resolution`, `intensity`), the network's
//! prediction (`network`) and the whole run from files to outputs (`pipeline`).

pub mod dicom_export;
pub mod intensity;
pub mod local_flow;
pub mod network;
pub mod optimize;
pub mod pipeline;
pub mod qa_report;
pub mod resolution;
pub mod saved;

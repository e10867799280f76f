//! Patches for the network (SPEC §3): `tiling` covers a volume for prediction and assembles the
//! kept centres; `border` gathers the patch-border check of thesis fig. 5.3 over predicted
//! patches; `sampler` draws the random patches and batches of training.

pub mod border;
pub mod sampler;
pub mod tiling;

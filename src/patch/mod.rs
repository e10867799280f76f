//! Patches for the network (SPEC §3): `tiling` covers a volume for prediction and assembles the
//! kept centres; `border` gathers the patch-border check of thesis fig. 5.3 over predicted
//! patches. The training sampler will live beside them.

pub mod border;
pub mod tiling;

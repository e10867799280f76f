//! Patches for the network (SPEC §3): `tiling` covers a volume for prediction and assembles the
//! kept centres; the training sampler will live beside it.

pub mod tiling;

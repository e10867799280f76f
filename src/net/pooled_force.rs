//! The force of the energy at the identity measured on the full-resolution pair and averaged
//! onto the network's coarser grid (`UNetConfig::pooled_force`): what a network that sees the
//! images at 1/f resolution cannot recover from them — where edges lie within its voxels.
//!
//! Per full-resolution voxel, with d = moving − fixed, s = (fixed + moving)/2 and g = ∇s by
//! central differences (zero outside the grid), in voxels of the network's grid (f × the
//! full-resolution slope): d·g (3 channels), d·w·g with w = a⁴/(a² + d²)² (3, the normalised
//! MSE's weight, a = 0.2) and the structure tensor g·gᵀ (6: xx, yy, zz, xy, xz, yz), each box-averaged
//! over the f³ voxels of a network voxel and multiplied by `scale`. Force and structure
//! tensor together are what one Lucas–Kanade step solves for a displacement per box:
//! (Σ g gᵀ)⁻¹ Σ d g.

use rayon::prelude::*;

use crate::diffeo::pyramid::downsample;

/// Channels the pooled force adds to the network's input.
pub const POOLED_FORCE_CHANNELS: usize = 12;

/// The normalised MSE's a (as in the in-network force channels).
const A2: f32 = 0.2 * 0.2;

/// The 12 pooled force channels of a pair on one grid of `shape` ([X, Y, Z]), each on the grid
/// downsampled by `factor`.
pub fn pooled_force_channels(
    fixed: &[f32],
    moving: &[f32],
    shape: [usize; 3],
    factor: usize,
    scale: f32,
) -> Vec<Vec<f32>> {
    let n: usize = shape.iter().product();
    assert!(fixed.len() == n && moving.len() == n, "both images on the grid of {shape:?}");
    let strides = [1, shape[0], shape[0] * shape[1]];
    let mean = |i: usize| 0.5 * (fixed[i] + moving[i]);
    // The slope of s along each axis by central differences (zero outside), in network voxels.
    let half = 0.5 * factor as f32;
    let gradient: [Vec<f32>; 3] = std::array::from_fn(|axis| {
        let (stride, size) = (strides[axis], shape[axis]);
        (0..n)
            .into_par_iter()
            .map(|i| {
                let c = (i / stride) % size;
                let after = if c + 1 < size { mean(i + stride) } else { 0.0 };
                let before = if c > 0 { mean(i - stride) } else { 0.0 };
                half * (after - before)
            })
            .collect()
    });
    let pooled = |value: &(dyn Fn(usize) -> f32 + Sync)| {
        let full: Vec<f32> = (0..n).into_par_iter().map(|i| scale * value(i)).collect();
        downsample(&full, shape, factor)
    };
    let difference = |i: usize| moving[i] - fixed[i];
    let weight = |i: usize| {
        let d = difference(i);
        A2 * A2 / (A2 + d * d).powi(2)
    };
    let mut channels = Vec::with_capacity(POOLED_FORCE_CHANNELS);
    for g in &gradient {
        channels.push(pooled(&|i| difference(i) * g[i]));
    }
    for g in &gradient {
        channels.push(pooled(&|i| difference(i) * weight(i) * g[i]));
    }
    for (a, b) in [(0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2)] {
        let (ga, gb) = (&gradient[a], &gradient[b]);
        channels.push(pooled(&|i| ga[i] * gb[i]));
    }
    channels
}

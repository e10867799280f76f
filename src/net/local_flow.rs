//! A closed-form local estimate of the velocity, on the network's coarse grid, that a network
//! with `UNetConfig::local_prior` starts from and corrects (no learning, no optimisation).
//!
//! Each pass solves Lucas–Kanade per coarse voxel and spreads the answer by normalised
//! convolution, then warps the moving image by the estimate so far and repeats:
//!
//! - per full-resolution voxel, d = moving − fixed and g = ∇(fixed + moving)/2 (central
//!   differences, one-sided at the grid's faces) in voxels of the coarse grid;
//! - d·g and g·gᵀ averaged over each coarse voxel's box, then blurred by a Gaussian of σ
//!   `window` (the Lucas–Kanade window; σ in units of `sigma_unit_mm` along each axis, or in
//!   coarse voxels for models without it, as `spread` below);
//! - the displacement that cancels d to first order, u = −(T + εI)⁻¹ Σ d·g, with
//!   ε = `regularisation` × the grid's mean trace / 3;
//! - its confidence c = det(T + εI) / tr(T + εI)² (largest where the slopes point every way,
//!   near zero along an edge or in flat tissue), and u spread by normalised convolution,
//!   G(c·u) / G(c) with a Gaussian of σ `spread`, so that flat regions take the
//!   motion of the edges around them.
//!
//! Measured on held-out phantoms (README, "Local prior"): about half the rigid stage's error
//! remains after 10 passes; the network learns what is left.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::diffeo::VectorField;
use crate::diffeo::integrate::exp;
use crate::diffeo::pyramid::{Refiner, level_shape};
use crate::diffeo::warp::warp_image_by;
use crate::error::Result;
use crate::progress::Progress;
use crate::volume::filter::gaussian_blur_per_axis;
use crate::volume::geometry::{det3, inverse3, mat_vec};

/// Values `pooled_products` gives per coarse voxel.
pub const POOLED: usize = 13;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LocalFlowParams {
    /// Solve for a grey-value offset within each window beside the displacement (the
    /// difference and the slopes taken relative to their window means): a smooth bias field or
    /// a tissue's density offset, which a pseudo-CT has, then reads as no motion instead of as
    /// motion across every faint slope. (Absent from older models: off.)
    #[serde(default)]
    pub offset: bool,
    /// Gaussian σ of the Lucas–Kanade window, in units of `sigma_unit_mm` (coarse voxels when
    /// that is absent).
    pub window: f32,
    /// Gaussian σ of the normalised convolution that spreads each pass's estimate, in the same
    /// units.
    pub spread: f32,
    /// ε of T + εI as a fraction of the mean trace of T / 3.
    pub regularisation: f32,
    /// Passes: estimate, add, warp the moving image by the sum, estimate again.
    pub passes: usize,
    /// The length, mm, that a σ of one stands for (a model's `grid_mm`): along each axis the
    /// window and spread are then σ × this ÷ the coarse voxel's size there, so that they cover
    /// the same tissue on any grid, however anisotropic its voxels. Absent (models before
    /// session 22): σ in coarse voxels along every axis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigma_unit_mm: Option<f64>,
    /// Leave out the voxels where the moving image has no data (beyond its field of view, after
    /// the rigid alignment): there the resampled moving image is air, and tissue of the fixed
    /// image facing it read as motion, the larger the nearer the end of the field of view.
    /// (Absent from models before session 23: every voxel counted.)
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub field_of_view: bool,
    /// Read the pair as the rigid alignment left it, not as a network with `matched_input`
    /// matches it (the sharper image blurred to the other's resolution, the fixed image's grey
    /// values mapped onto the moving image's, both fitted on the still misaligned pair); the
    /// network's channels stay matched. On real-CT development pairs the estimate alone went from
    /// 0.592× to 0.359× rigid (docs/network.md, "Session 25"). (Absent from models before
    /// session 25: the estimate reads the matched pair.)
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unmatched: bool,
}

impl Default for LocalFlowParams {
    fn default() -> Self {
        LocalFlowParams {
            offset: false,
            window: 0.7,
            spread: 3.0,
            regularisation: 0.01,
            passes: 10,
            sigma_unit_mm: None,
            field_of_view: false,
            unmatched: false,
        }
    }
}

impl LocalFlowParams {
    /// The window's and the spread's σ along each axis, voxels of a coarse grid whose voxels
    /// are `coarse_spacing_mm`.
    pub fn sigmas(&self, coarse_spacing_mm: [f64; 3]) -> ([f32; 3], [f32; 3]) {
        let per_axis = |sigma: f32| match self.sigma_unit_mm {
            Some(unit) => coarse_spacing_mm.map(|s| (sigma as f64 * unit / s) as f32),
            None => [sigma; 3],
        };
        (per_axis(self.window), per_axis(self.spread))
    }
}

/// Box sums over each coarse voxel of d·g (3), g·gᵀ (6: xx, yy, zz, xy, xz, yz), d (1) and g
/// (3), divided by the box's voxel count: 13 values per coarse voxel, slopes in coarse voxels.
/// Where `inside` is given, a voxel counts only when it and its six neighbours are inside (a moving image
/// warped from beyond the grid has no values there, and its edge would read as motion).
pub fn pooled_products(
    fixed: &[f32],
    moving: &[f32],
    inside: Option<&[bool]>,
    shape: [usize; 3],
    factor: usize,
) -> Vec<[f32; POOLED]> {
    let n: usize = shape.iter().product();
    assert!(fixed.len() == n && moving.len() == n, "both images on the grid of {shape:?}");
    assert!(inside.is_none_or(|inside| inside.len() == n), "the mask on the grid of {shape:?}");
    let [nx, ny, nz] = shape;
    let coarse = level_shape(shape, factor);
    let (cx, cy) = (coarse[0], coarse[1]);
    let mean = |i: usize| 0.5 * (fixed[i] + moving[i]);
    // The neighbours of c along an axis of `size` (one-sided at the faces) and their distance.
    let around = |c: usize, size: usize| {
        let (lo, hi) = (c.saturating_sub(1), (c + 1).min(size - 1));
        (lo, hi, (hi - lo) as f32)
    };
    // Central differences in full-resolution voxels, times the factor: slopes per coarse voxel.
    let slope = |lo: usize, hi: usize, distance: f32| {
        if distance == 0.0 { 0.0 } else { factor as f32 * (mean(hi) - mean(lo)) / distance }
    };
    let mut out = vec![[0.0f32; POOLED]; coarse.iter().product()];
    out.par_chunks_mut(cx * cy).enumerate().for_each(|(k, slab)| {
        let mut sums = vec![[0.0f64; POOLED]; cx * cy];
        for z in k * factor..((k + 1) * factor).min(nz) {
            let (z_lo, z_hi, z_distance) = around(z, nz);
            for y in 0..ny {
                let (y_lo, y_hi, y_distance) = around(y, ny);
                let row = nx * (y + ny * z);
                // Where the row's neighbours along y and z start.
                let rows = [nx * (y_lo + ny * z), nx * (y_hi + ny * z), nx * (y + ny * z_lo), nx * (y + ny * z_hi)];
                for x in 0..nx {
                    let i = row + x;
                    let (x_lo, x_hi, x_distance) = around(x, nx);
                    if let Some(inside) = inside {
                        let neighbours = [row + x_lo, row + x_hi, rows[0] + x, rows[1] + x, rows[2] + x, rows[3] + x];
                        if !inside[i] || neighbours.iter().any(|&j| !inside[j]) {
                            continue;
                        }
                    }
                    let d = moving[i] - fixed[i];
                    let g = [
                        slope(row + x_lo, row + x_hi, x_distance),
                        slope(rows[0] + x, rows[1] + x, y_distance),
                        slope(rows[2] + x, rows[3] + x, z_distance),
                    ];
                    let cell = x / factor + cx * (y / factor);
                    let s = &mut sums[cell];
                    let values = [
                        d * g[0],
                        d * g[1],
                        d * g[2],
                        g[0] * g[0],
                        g[1] * g[1],
                        g[2] * g[2],
                        g[0] * g[1],
                        g[0] * g[2],
                        g[1] * g[2],
                        d,
                        g[0],
                        g[1],
                        g[2],
                    ];
                    for (total, value) in s.iter_mut().zip(values) {
                        *total += value as f64;
                    }
                }
            }
        }
        // Each box divided by its whole voxel count, so that a box mostly outside weighs less.
        let box_side = |c: usize, axis: usize| ((c + 1) * factor).min(shape[axis]) - c * factor;
        let depth = box_side(k, 2);
        for (cell, (slot, total)) in slab.iter_mut().zip(sums.iter()).enumerate() {
            let count = (box_side(cell % cx, 0) * box_side(cell / cx, 1) * depth) as f64;
            *slot = std::array::from_fn(|c| (total[c] / count) as f32);
        }
    });
    out
}

/// One pass on a pair already warped by the estimate so far: the spread Lucas–Kanade
/// displacement on the grid downsampled by `factor`, in its voxels.
pub fn local_displacement(
    fixed: &[f32],
    moving: &[f32],
    inside: Option<&[bool]>,
    shape: [usize; 3],
    spacing_mm: [f64; 3],
    factor: usize,
    params: &LocalFlowParams,
) -> VectorField {
    let coarse = level_shape(shape, factor);
    let (window, spread) = params.sigmas(spacing_mm.map(|s| s * factor as f64));
    let products = pooled_products(fixed, moving, inside, shape, factor);
    // The window means of d and g (the last four values) are needed only to solve for an offset.
    let used = if params.offset { POOLED } else { 9 };
    let mut channels: Vec<Vec<f32>> = (0..used).map(|c| products.iter().map(|p| p[c]).collect()).collect();
    for channel in &mut channels {
        gaussian_blur_per_axis(channel, coarse, window);
    }
    if params.offset {
        // Relative to the window's means: E[(d − d̄) g] = E[dg] − d̄ ḡ, and the slopes' covariance
        // E[g gᵀ] − ḡ ḡᵀ (the least-squares displacement when an offset is solved for too).
        let (d, g) = (9, [10, 11, 12]);
        let products = [(3, 0, 0), (4, 1, 1), (5, 2, 2), (6, 0, 1), (7, 0, 2), (8, 1, 2)];
        for i in 0..channels[0].len() {
            let (mean_d, mean_g) = (channels[d][i], g.map(|c| channels[c][i]));
            for axis in 0..3 {
                channels[axis][i] -= mean_d * mean_g[axis];
            }
            for (c, a, b) in products {
                channels[c][i] -= mean_g[a] * mean_g[b];
            }
        }
    }
    let count = products.len();
    let mean_trace = (0..count).map(|i| (channels[3][i] + channels[4][i] + channels[5][i]) as f64).sum::<f64>()
        / count.max(1) as f64;
    let epsilon = params.regularisation as f64 * mean_trace / 3.0;
    let solved: Vec<([f32; 3], f32)> = (0..count)
        .into_par_iter()
        .map(|i| {
            let c = |k: usize| channels[k][i] as f64;
            let t = [[c(3) + epsilon, c(6), c(7)], [c(6), c(4) + epsilon, c(8)], [c(7), c(8), c(5) + epsilon]];
            let det = det3(&t);
            let trace = t[0][0] + t[1][1] + t[2][2];
            if !(det > 1e-30 && trace > 0.0) {
                return ([0.0; 3], 0.0);
            }
            let u = mat_vec(&inverse3(&t), [-c(0), -c(1), -c(2)]).map(|x| x as f32);
            (u, (det / (trace * trace)) as f32)
        })
        .collect();
    let mut confidence: Vec<f32> = solved.iter().map(|s| s.1).collect();
    let components = std::array::from_fn(|axis| {
        let mut weighted: Vec<f32> = solved.iter().map(|(u, c)| u[axis] * c).collect();
        gaussian_blur_per_axis(&mut weighted, coarse, spread);
        weighted
    });
    gaussian_blur_per_axis(&mut confidence, coarse, spread);
    let components = components.map(|weighted: Vec<f32>| {
        weighted.iter().zip(&confidence).map(|(w, c)| if *c > 1e-20 { w / c } else { 0.0 }).collect()
    });
    VectorField { shape: coarse, components }
}

/// The local estimate of the velocity taking `moving` onto `fixed` (one grid of `shape`), on
/// the grid downsampled by `factor`, in its voxels: `params.passes` passes, the moving image
/// warped by exp of the sum before each but the first (`steps` squarings). With
/// `params.field_of_view`, the voxels where `covered` is false (the moving image has no data
/// there: its field of view ends) are left out of every pass, wherever the warp carries them.
#[allow(clippy::too_many_arguments)]
pub fn local_velocity(
    fixed: &[f32],
    moving: &[f32],
    covered: Option<&[bool]>,
    shape: [usize; 3],
    spacing_mm: [f64; 3],
    factor: usize,
    params: &LocalFlowParams,
    steps: u32,
    progress: &dyn Progress,
) -> Result<VectorField> {
    let covered = covered.filter(|_| params.field_of_view);
    // Where the moving image has no data it is NaN here, so that every warped sample that
    // interpolates from there is NaN too, and left out.
    let masked: Option<Vec<f32>> =
        covered.map(|covered| moving.iter().zip(covered).map(|(&v, &c)| if c { v } else { f32::NAN }).collect());
    let source = masked.as_deref().unwrap_or(moving);
    let mut velocity = VectorField::zeros(level_shape(shape, factor));
    for pass in 0..params.passes {
        progress.check_cancelled()?;
        let step = if pass == 0 {
            local_displacement(fixed, moving, covered, shape, spacing_mm, factor, params)
        } else {
            // The coarse displacement refined voxel by voxel as the image is warped (the same
            // values as `refine_field`, without a full-resolution field in memory).
            let displacement = exp(&velocity, steps);
            let refiner = Refiner::new(&displacement, shape, factor, 1);
            let (mut warped, mut inside) = warp_image_by(source, shape, |index| refiner.at(index));
            if masked.is_some() {
                warped.iter_mut().zip(&mut inside).filter(|(v, _)| v.is_nan()).for_each(|(v, inside)| {
                    *v = 0.0;
                    *inside = false;
                });
            }
            local_displacement(fixed, &warped, Some(&inside), shape, spacing_mm, factor, params)
        };
        velocity.add_scaled(1.0, &step);
        progress.advance(1);
    }
    Ok(velocity)
}

//! Registration by the network (SPEC §3): both density images downsampled to the model's
//! resolution, momentum predicted tile by tile (each tile's centre kept), the whole momentum
//! volume smoothed at once (so regularisation flows across tile borders) into the velocity.
//! A model with a local prior adds that velocity to a closed-form local estimate
//! (`net::local_flow`), having seen the moving image warped by the estimate; the pair is
//! prepared and the output smoothed as the model folder says (`net::model::ModelSpec`).
//! `hybrid` then refines that velocity by direct optimisation of the same energy.

use std::path::PathBuf;

use burn::tensor::Device;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::diffeo::VectorField;
use crate::error::{Error, Result};
use crate::net::model::Model;
use crate::patch::border::BorderStatistics;
use crate::patch::tiling::{Tiling, axis_tiles, tiles};
use crate::progress::Progress;
use crate::register::optimize::Optimized;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetworkParams {
    /// A model folder (`config.json`, `weights.bpk`, `training.json`); the built-in model when none.
    pub model: Option<PathBuf>,
    /// Inference tile side and the margin discarded on each side, in voxels of the model's grid.
    /// The network is fully convolutional, so tiles may be larger than its training patches.
    pub tile: usize,
    pub margin: usize,
    /// Resolution levels and iterations of the optimisation that refines the prediction
    /// (hybrid). Since session 24 1/2 then full resolution, with the prediction charged by the
    /// regulariser (`hybrid_regularise_start`): on held-out real-CT pairs 0.286× rigid against
    /// `optimize`'s 0.291×, and 0.271× since session 31 charges three quarters of it
    /// (`hybrid_charged_share`); a fixed base refined for 40 full-resolution iterations, the
    /// default before session 24, gave 0.429× (README).
    pub hybrid_levels: Vec<usize>,
    pub hybrid_iterations: Vec<usize>,
    /// Hybrid: the regulariser charges the network's start too, not only what the refinement
    /// adds (`OptimizeParams::regularise_start`). (Absent from older records: read as off.)
    #[serde(default)]
    pub hybrid_regularise_start: bool,
    /// Hybrid, with `hybrid_regularise_start`: the share of the network's start that the
    /// regulariser charges, the rest kept as a fixed base (`OptimizeParams::start_charged_share`).
    /// None: the model's own (`ModelSpec::hybrid_charged_share`; 1 for a model that names
    /// none). The built-in model's is three quarters (session 31): charged whole, the
    /// refinement converged to `optimize`'s own result and lost what the network knew beyond
    /// the energy; kept whole, it kept the network's errors where the images say little. On
    /// real-CT development seeds 1–4 (mean of both directions ÷ rigid) shares 1 / 0.75 / 0.5 /
    /// 0.25 / 0 gave 0.289× / 0.255× / 0.256× / 0.258× / 0.264× (`optimize` 0.290×). A model
    /// worse than rigid alignment keeps a quarter of its error: hence a model's own choice.
    #[serde(default)]
    pub hybrid_charged_share: Option<f64>,
    /// Predict on the GPU (Burn's wgpu device) instead of the CPU (flex).
    #[serde(default)]
    pub gpu: bool,
    /// How many times the network predicts: after the first prediction the moving image is
    /// warped by the deformation so far and the network predicts what remains, its momentum
    /// added to the sum (1: a single prediction, as the thesis does).
    #[serde(default = "one")]
    pub cascade: usize,
}

fn one() -> usize {
    1
}

impl Default for NetworkParams {
    fn default() -> Self {
        NetworkParams {
            model: None,
            tile: 64,
            // The shipped model's tiles agree with one whole tile from a margin of 12 on (on the
            // held-out synthetic phantom, 28³ tiles with margin 8: 0.106 mm apart; 32³ with 10:
            // 0.019; 36³ with 12: 0.001 mm; tests/network_register.rs).
            margin: 12,
            hybrid_levels: vec![2, 1],
            hybrid_iterations: vec![60, 70],
            hybrid_regularise_start: true,
            hybrid_charged_share: None,
            gpu: false,
            cascade: 1,
        }
    }
}

impl NetworkParams {
    /// The device the network predicts on.
    pub fn device(&self) -> Device {
        if self.gpu { Device::wgpu(burn::tensor::DeviceKind::DefaultDevice) } else { Device::flex() }
    }
}

/// Loads the model of `params` (a folder, or the built-in one) onto `device`.
pub fn load(params: &NetworkParams, device: &Device) -> Result<Model> {
    match &params.model {
        Some(folder) => Model::load(folder, device),
        None => Model::builtin(device),
    }
}

/// The predicted momentum's length on the network's grid and where its tiles meet: what the
/// app's momentum overlay draws (SPEC §8).
#[derive(Clone, Debug)]
pub struct MomentumMap {
    /// |m| per voxel of the network's grid (voxels of that grid): the network's output, so for a
    /// model with `whitened_output` the length of z = L⁻¹m.
    pub magnitude: Vec<f32>,
    pub shape: [usize; 3],
    /// The network's grid is the fixed grid downsampled by this.
    pub factor: usize,
    pub tiling: Tiling,
}

impl MomentumMap {
    /// |m| on the full grid of `shape` (each voxel takes its network-grid voxel's value), negated
    /// on the planes where one tile's kept part ends and the next one's begins.
    pub fn on_full_grid(&self, shape: [usize; 3]) -> Vec<f32> {
        let f = self.factor;
        let starts: [Vec<usize>; 3] = std::array::from_fn(|d| {
            axis_tiles(self.shape[d], self.tiling).iter().skip(1).map(|t| t.keep_from * f).collect()
        });
        let [nx, ny, _] = shape;
        let mut out = vec![0.0f32; shape.iter().product()];
        out.par_chunks_mut(nx * ny).enumerate().for_each(|(z, plane)| {
            for y in 0..ny {
                for x in 0..nx {
                    let level: [usize; 3] = std::array::from_fn(|d| ([x, y, z][d] / f).min(self.shape[d] - 1));
                    let value = self.magnitude[level[0] + self.shape[0] * (level[1] + self.shape[1] * level[2])];
                    let border = starts[0].contains(&x) || starts[1].contains(&y) || starts[2].contains(&z);
                    plane[x + nx * y] = if border { -value.max(1e-6) } else { value };
                }
            }
        });
        out
    }

    pub fn max(&self) -> f32 {
        self.magnitude.iter().copied().fold(0.0, f32::max)
    }
}

/// Seconds spent by `predict_velocity`: the closed-form local estimate (models with a local
/// prior), the network's tiles (all rounds of a cascade, with the pair's matching and the
/// network's input), and smoothing the momentum into the velocity.
#[derive(Clone, Copy, Debug, Default)]
pub struct PredictionTimings {
    pub local_estimate_s: f64,
    pub predict_s: f64,
    pub smooth_s: f64,
}

/// The velocity the network predicts for two density images on one grid of `shape` (voxels of
/// `spacing_mm`), on that grid downsampled as the model says (`ModelSpec::factor_for`), and
/// the patch-border statistics. The
/// pair is prepared as the model says (`ModelSpec::prepare_input`), as it was in training.
#[allow(clippy::too_many_arguments)]
pub fn predict_velocity(
    fixed: &[f32],
    moving: &[f32],
    covered: Option<&[bool]>,
    shape: [usize; 3],
    spacing_mm: [f64; 3],
    model: &Model,
    params: &NetworkParams,
    device: &Device,
    progress: &dyn Progress,
) -> Result<(Optimized, BorderStatistics, MomentumMap, PredictionTimings)> {
    if params.tile == 0 || !params.tile.is_multiple_of(4) || params.tile <= 2 * params.margin {
        return Err(Error::Invalid(format!(
            "the inference tile ({}) must be a multiple of 4 wider than two margins ({})",
            params.tile, params.margin
        )));
    }
    if params.cascade == 0 {
        return Err(Error::Invalid("the network must predict at least once (cascade ≥ 1)".into()));
    }
    let spec = &model.spec;
    let tiling = Tiling { patch: params.tile, margin: params.margin };
    let clock = std::time::Instant::now();
    let input = spec.prepare_input(fixed, moving, covered, shape, spacing_mm, progress)?;
    let local_estimate_s = clock.elapsed().as_secs_f64();
    let level = input.level;
    progress.start_stage("predicting momentum", (tiles(level, tiling).len() * params.cascade) as u64);
    let mut momentum = VectorField::zeros(level);
    let mut border = None;
    for round in 0..params.cascade {
        // Later rounds see the moving image warped by the deformation predicted so far.
        let later;
        let channels = if round == 0 {
            &input.channels
        } else {
            let velocity = spec.velocity(&momentum, input.prior.as_ref());
            let warped = spec.warped(&input.moving, shape, input.factor, &velocity);
            later = spec.channels(&input.fixed, &warped, shape, input.factor);
            &later
        };
        let channels: Vec<&[f32]> = channels.iter().map(Vec::as_slice).collect();
        let (predicted, statistics) = model.predict(&channels, level, tiling, device, &|| progress.advance(1));
        progress.check_cancelled()?;
        momentum.add_scaled(1.0, &predicted);
        // The patch-border check describes the first prediction, the one from the pair as given.
        border.get_or_insert(statistics);
    }
    let border = border.expect("at least one prediction");
    let predict_s = clock.elapsed().as_secs_f64() - local_estimate_s;
    let magnitude = (0..momentum.components[0].len()).map(|n| {
        let m = momentum.at(n);
        (m[0] * m[0] + m[1] * m[1] + m[2] * m[2]).sqrt()
    });
    let factor = input.factor;
    let map = MomentumMap { magnitude: magnitude.collect(), shape: level, factor, tiling };
    progress.start_stage("smoothing momentum", 0);
    let velocity = spec.velocity(&momentum, input.prior.as_ref());
    let seconds = PredictionTimings {
        local_estimate_s,
        predict_s,
        smooth_s: clock.elapsed().as_secs_f64() - predict_s - local_estimate_s,
    };
    Ok((Optimized { velocity, factor, history: Vec::new(), resolution: None, intensity: None }, border, map, seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_momentum_map_marks_where_tiles_meet_on_the_full_grid() {
        // A 20-voxel network grid in 12-voxel tiles with margin 2: tiles keep 0..10, 10..20.
        let shape = [20, 6, 6];
        let magnitude: Vec<f32> = (0..shape.iter().product::<usize>()).map(|n| (n % 20) as f32 + 1.0).collect();
        let map = MomentumMap { magnitude, shape, factor: 2, tiling: Tiling { patch: 12, margin: 2 } };
        let full = map.on_full_grid([40, 12, 12]);
        for x in 0..40 {
            let value = full[x + 40 * (5 + 12 * 5)];
            let expected = (x / 2) as f32 + 1.0;
            if x == 20 {
                assert_eq!(value, -expected, "the border plane x = 20");
            } else {
                assert_eq!(value, expected, "x = {x}");
            }
        }
        assert_eq!(map.max(), 20.0);
    }
}

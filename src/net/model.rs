//! A model: the network with everything needed to use it, described by its folder alone.
//!
//! A model folder holds `config.json` (a `ModelSpec`: the network's architecture and what its
//! input holds, the smoothing that turns its output into velocity, the exponential's steps,
//! the units, the format version) and `weights.bpk` (Burn's burnpack). Training writes
//! `training.json` and the loss logs beside them, which say how the model was made; using it
//! needs nothing but the two files. Training and registration prepare a pair's input
//! (`ModelSpec::prepare_input`) and turn the network's output into velocity
//! (`ModelSpec::velocity`) through the same code.
//!
//! Folders of format versions 1–5 held a bare network config; their smoothing lived in
//! `training.json`, which is read for it (and the folder refused when that lacks it).

use std::path::Path;

use burn::store::BurnpackStore;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::diffeo::VectorField;
use crate::diffeo::integrate::exp;
use crate::diffeo::pyramid::{downsample, level_shape, refine_field};
use crate::diffeo::smooth::{SmoothParams, Smoother};
use crate::diffeo::warp::warp_image;
use crate::error::{Error, Result};
use crate::net::local_flow::local_velocity;
use crate::net::{MODEL_FORMAT_VERSION, UNet, UNetConfig, load_weights, load_weights_file, parse_config, pooled_force};
use crate::patch::border::BorderStatistics;
use crate::patch::tiling::{Tiling, predict_tiled};
use crate::progress::Progress;

/// The file in a model folder that records how the model was trained (not needed to use it).
pub const TRAINING_JSON: &str = "training.json";

/// What the units of a model are, written into every `config.json` for its reader.
pub const UNITS: &str = "input: density (kg/dm³, calibrated from HU) on the network's grid, the fixed grid \
     downsampled by the whole factor closest to grid_mm / its voxel size (resolution_factor when grid_mm is null); \
     output: momentum (whitened when whitened_output) and velocity in voxels \
     of that grid; smooth's alpha and gamma in those voxels";

/// Everything a model folder's `config.json` says: how to build the network, prepare its
/// input and use its output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub format_version: u32,
    /// The U-Net and what its input holds (matching, local estimate, force channels, grid).
    pub network: UNetConfig,
    /// The smoothing that takes the network's output to velocity (L⁻¹ = K^-½ for whitened
    /// output, K⁻¹ otherwise), in voxels of the network's grid.
    pub smooth: SmoothParams,
    /// Squarings of every exponential: the local estimate's warps and the velocity's.
    pub steps: u32,
    /// The size of the network's voxels the model was made for, mm (geometric mean over the
    /// axes): a grid is downsampled by the whole factor that comes closest to it
    /// (`factor_for`), so that the network, its local estimate (window and spread in its
    /// voxels) and its tiles see anatomy at one scale on 0.5–2 mm grids. None: always
    /// `network.resolution_factor`, whatever the grid's spacing.
    pub grid_mm: Option<f64>,
    /// The share of this model's prediction that `hybrid`'s refinement charges to the
    /// regulariser, the rest kept as a fixed base (`OptimizeParams::start_charged_share`): how
    /// far the model may be trusted where the images say little, chosen on validation pairs
    /// for this model. None (a model trained here, and every model before session 31): 1, the
    /// whole prediction charged, so that the refinement can undo all of a model's errors.
    #[serde(default)]
    pub hybrid_charged_share: Option<f64>,
    pub units: String,
}

impl ModelSpec {
    pub fn new(network: UNetConfig, smooth: SmoothParams, steps: u32) -> Self {
        ModelSpec {
            format_version: MODEL_FORMAT_VERSION,
            network,
            smooth,
            steps,
            grid_mm: None,
            hybrid_charged_share: None,
            units: UNITS.into(),
        }
    }

    /// The network's grid for a fixed grid of voxels `spacing_mm` is that grid downsampled by
    /// this: the whole factor closest to `grid_mm` ÷ the voxels' size (geometric mean), at
    /// least 1; `network.resolution_factor` for a model without `grid_mm`.
    pub fn factor_for(&self, spacing_mm: [f64; 3]) -> usize {
        match self.grid_mm {
            Some(grid) => {
                let voxel = (spacing_mm[0] * spacing_mm[1] * spacing_mm[2]).cbrt();
                ((grid / voxel).round() as usize).max(1)
            }
            None => self.network.resolution_factor,
        }
    }

    /// The network's input for a pair of density images on one grid of `shape` (the moving
    /// image rigidly aligned and resampled onto the fixed grid): the pair matched at the
    /// alignment (a network with `matched_input`), the closed-form local estimate (a network
    /// with `local_prior`) and the input channels on the network's grid, made with the moving
    /// image warped by that estimate. `covered`: where the moving image has data
    /// (`register::pipeline::RigidlyAligned::moving_coverage`), which an estimate with
    /// `field_of_view` keeps to.
    pub fn prepare_input(
        &self,
        fixed: &[f32],
        moving: &[f32],
        covered: Option<&[bool]>,
        shape: [usize; 3],
        spacing_mm: [f64; 3],
        progress: &dyn Progress,
    ) -> Result<PreparedInput> {
        let factor = self.factor_for(spacing_mm);
        let level = level_shape(shape, factor);
        if level.iter().any(|&n| n < 4) {
            return Err(Error::Invalid(format!(
                "the grid {shape:?} is too small for the model (1/{factor} resolution)"
            )));
        }
        let aligned = (fixed, moving);
        let (fixed, moving) = if self.network.matched_input {
            progress.start_stage("matching the pair", 0);
            crate::matching::matched_at_alignment(fixed, moving, shape)
        } else {
            (fixed.to_vec(), moving.to_vec())
        };
        let prior = match &self.network.local_prior {
            Some(local) => {
                progress.start_stage("local estimate", local.passes as u64);
                let (f, m) = if local.unmatched { aligned } else { (&fixed[..], &moving[..]) };
                Some(local_velocity(f, m, covered, shape, spacing_mm, factor, local, self.steps, progress)?)
            }
            None => None,
        };
        let channels = match &prior {
            Some(prior) => self.channels(&fixed, &self.warped(&moving, shape, factor, prior), shape, factor),
            None => self.channels(&fixed, &moving, shape, factor),
        };
        Ok(PreparedInput { fixed, moving, prior, channels, shape, level, factor })
    }

    /// `moving` (on the full grid of `shape`) warped by exp of `velocity` (on that grid
    /// downsampled by `factor`, in its voxels).
    pub fn warped(&self, moving: &[f32], shape: [usize; 3], factor: usize, velocity: &VectorField) -> Vec<f32> {
        let u = refine_field(&exp(velocity, self.steps), shape, factor, 1);
        warp_image(moving, &u).0
    }

    /// The input channels for two density images on one full-resolution grid of `shape`: both
    /// downsampled by `factor` to the network's grid, then, for a network with `pooled_force`,
    /// its pooled force channels.
    pub fn channels(&self, fixed: &[f32], moving: &[f32], shape: [usize; 3], factor: usize) -> Vec<Vec<f32>> {
        let mut channels = vec![downsample(fixed, shape, factor), downsample(moving, shape, factor)];
        if self.network.pooled_force {
            let scale = self.network.force_scale as f32;
            channels.extend(pooled_force::pooled_force_channels(fixed, moving, shape, factor, scale));
        }
        channels
    }

    /// The smoothing of the network's output on a grid of `level` (L⁻¹ for whitened output).
    pub fn smoother(&self, level: [usize; 3]) -> Smoother {
        if self.network.whitened_output {
            Smoother::half(level, &self.smooth)
        } else {
            Smoother::new(level, &self.smooth)
        }
    }

    /// The velocity of the network's output `momentum` (its grid, its voxels): smoothed, plus
    /// the local estimate it corrects.
    pub fn velocity(&self, momentum: &VectorField, prior: Option<&VectorField>) -> VectorField {
        let mut velocity = self.smoother(momentum.shape).apply(momentum);
        if let Some(prior) = prior {
            velocity.add_scaled(1.0, prior);
        }
        velocity
    }

    /// Reads a `config.json`: a bundle (version 6), or the bare network config of versions 1–5
    /// with the smoothing from the folder's `training.json` (`legacy_training`, its text).
    fn parse(text: &str, name: &str, legacy_training: impl FnOnce() -> Result<String>) -> Result<ModelSpec> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::Invalid(format!("{name} is not a diffeoreg model config: {e}")))?;
        let version = value.get("format_version").and_then(serde_json::Value::as_u64);
        if value.get("network").is_some() {
            if version != Some(MODEL_FORMAT_VERSION as u64) {
                return Err(Error::Invalid(format!(
                    "{name} is a model of format version {}; this diffeoreg reads versions 1 to {MODEL_FORMAT_VERSION}",
                    version.map_or("(none)".to_string(), |v| v.to_string())
                )));
            }
            let mut spec: ModelSpec = serde_json::from_value(value.clone())
                .map_err(|e| Error::Invalid(format!("{name} is not a complete model config: {e}")))?;
            if let Some(share) = spec.hybrid_charged_share
                && !(0.0..=1.0).contains(&share)
            {
                return Err(Error::Invalid(format!("{name}: hybrid_charged_share must lie in 0–1, not {share}")));
            }
            spec.network = parse_config(value["network"].clone(), name)?;
            return Ok(spec);
        }
        match version {
            Some(1..=5) => {
                let network = parse_config(value, name)?;
                let text = legacy_training()?;
                let smooth = training_smooth(&text)?;
                Ok(ModelSpec::new(network, smooth, crate::diffeo::energy::EnergyParams::default().steps))
                // (no grid_mm: those models always ran at their resolution factor)
            }
            Some(v) if v == MODEL_FORMAT_VERSION as u64 => Err(Error::Invalid(format!(
                "{name} describes a bare network (a training checkpoint?), not a model: it says nothing of the \
                 smoothing its output needs"
            ))),
            _ => Err(Error::Invalid(format!(
                "{name} is a model of format version {}; this diffeoreg reads versions 1 to {MODEL_FORMAT_VERSION}",
                version.map_or("(none)".to_string(), |v| v.to_string())
            ))),
        }
    }
}

/// The smoothing recorded in a version 1–5 folder's `training.json`. A record without it is
/// refused: a default would silently change what the model predicts.
fn training_smooth(text: &str) -> Result<SmoothParams> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| Error::Invalid(format!("not JSON: {e}")))?;
    let smooth = value.get("smooth").ok_or_else(|| {
        Error::Invalid("no \"smooth\" entry: the smoothing the model was trained with (α, γ) is unknown".into())
    })?;
    serde_json::from_value(smooth.clone()).map_err(|e| Error::Invalid(format!("unreadable smoothing parameters: {e}")))
}

/// A pair as a model sees it (`ModelSpec::prepare_input`).
#[derive(Clone, Debug)]
pub struct PreparedInput {
    /// Both images at full resolution, matched when the model matches (the moving image not
    /// warped by the estimate).
    pub fixed: Vec<f32>,
    pub moving: Vec<f32>,
    /// The local estimate the network corrects, on its grid in its voxels.
    pub prior: Option<VectorField>,
    /// The network's input channels on its grid.
    pub channels: Vec<Vec<f32>>,
    /// The full grid and the network's, that grid downsampled by `factor`.
    pub shape: [usize; 3],
    pub level: [usize; 3],
    pub factor: usize,
}

/// A model ready to predict.
pub struct Model {
    pub spec: ModelSpec,
    pub network: UNet,
    /// Where it came from, for the report.
    pub source: String,
}

impl Model {
    /// Reads a model folder onto `device`.
    pub fn load(folder: &Path, device: &Device) -> Result<Model> {
        let config_path = folder.join("config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
        let spec = ModelSpec::parse(&text, &config_path.display().to_string(), || {
            let training = folder.join(TRAINING_JSON);
            let text = std::fs::read_to_string(&training).map_err(|e| {
                Error::Invalid(format!(
                    "{}: cannot read the model's training record ({e}); a model of format version 5 or older keeps \
                     there the smoothing it was trained with, without which its predictions cannot be used",
                    training.display()
                ))
            })?;
            training_smooth(&text).map(|_| text).map_err(|e| Error::Invalid(format!("{}: {e}", training.display())))
        })?;
        let network = load_weights_file(&spec.network, folder, device)?;
        Ok(Model { spec, network, source: folder.display().to_string() })
    }

    /// The model shipped in `assets/model` (trained by the command in docs/network.md), built
    /// into the binary.
    pub fn builtin(device: &Device) -> Result<Model> {
        let name = "the built-in model's config.json";
        let spec = ModelSpec::parse(include_str!("../../assets/model/config.json"), name, || {
            Ok(include_str!("../../assets/model/training.json").to_string())
        })?;
        let store = BurnpackStore::from_static(&BUILTIN_WEIGHTS.0);
        let network = load_weights(&spec.network, store, "the built-in model's weights.bpk", device)?;
        Ok(Model { spec, network, source: "built-in (assets/model)".into() })
    }

    /// The network's output for input `channels` (`PreparedInput::channels`) on its grid of
    /// `level`, predicted tile by tile (SPEC §3): each tile's centre kept (the volume's border
    /// regions too) and assembled into one volume, with the patch-border statistics of every
    /// tile. `on_tile` is called after each.
    pub fn predict(
        &self,
        channels: &[&[f32]],
        level: [usize; 3],
        tiling: Tiling,
        device: &Device,
        on_tile: &dyn Fn(),
    ) -> (VectorField, BorderStatistics) {
        predict_momentum(&self.network, channels, level, tiling, device, on_tile)
    }
}

/// Writes a model folder: `config.json` (the `spec`) and `weights.bpk`.
pub fn save_model(folder: &Path, spec: &ModelSpec, network: &UNet) -> Result<()> {
    crate::net::save_with_config(folder, spec, network)
}

/// The built-in weights, aligned as a file read into memory would be: burnpack reads tensors in
/// place, which needs their offsets aligned in memory too.
#[repr(C, align(256))]
struct Aligned<T: ?Sized>(T);
static BUILTIN_WEIGHTS: &Aligned<[u8]> = &Aligned(*include_bytes!("../../assets/model/weights.bpk"));

/// `network`'s output for input `channels` on a grid of `shape`, tile by tile (see `Model::predict`).
pub fn predict_momentum(
    network: &UNet,
    channels: &[&[f32]],
    shape: [usize; 3],
    tiling: Tiling,
    device: &Device,
    on_tile: &dyn Fn(),
) -> (VectorField, BorderStatistics) {
    let size = tiling.patch;
    assert!(size.is_multiple_of(4), "patch sides must be multiples of 4 for the U-Net");
    let mut statistics = BorderStatistics::new(size);
    let count = channels.len();
    let channels = predict_tiled(channels, shape, tiling, 3, |patch| {
        let input = Tensor::<5>::from_data(TensorData::new(patch.to_vec(), [1, count, size, size, size]), device);
        let momentum = crate::diffeo::tensor::tensor_values(network.forward(input));
        statistics.add(&momentum);
        on_tile();
        momentum
    });
    let [x, y, z] = channels.try_into().expect("three momentum channels");
    (VectorField { shape, components: [x, y, z] }, statistics)
}

//! The network (SPEC §3, thesis §3.3): a 3D U-Net with dilated convolutions — a large receptive
//! field from few parameters — taking the two density patches (2 channels) to momentum
//! (3 channels, voxels). Two down-sampling steps (strided 2×2×2 convolutions), dilated 3×3×3
//! convolutions at every level, transposed convolutions back up with skip concatenations, and
//! dropout after each down-sampling step and after the first concatenation. Patch sides must be
//! multiples of 4.
//!
//! The network alone is `UNetConfig` and its weights (`save_network`, `load_network`: what a
//! training checkpoint keeps). A model that registers is a `model::Model`: the network with
//! everything its input and output need, described by its folder alone.

pub mod local_flow;
pub mod model;
pub mod pooled_force;

use std::path::Path;

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv3d, Conv3dConfig, ConvTranspose3d, ConvTranspose3dConfig};
use burn::nn::{Dropout, DropoutConfig, Initializer, PaddingConfig3d};
use burn::store::{BurnpackStore, ModuleSnapshot};
use burn::tensor::activation::leaky_relu;
use burn::tensor::{Device, Tensor};

use crate::error::{Error, Result};

/// Bumped whenever the architecture, the weights' layout or the model folder changes meaning.
/// Version 2 added `whitened_output` and `matched_input`, version 3 `force_features`, version 4
/// `pooled_force`, version 5 `local_prior`; a network of an earlier version is read as one with
/// the later fields off, which is what it was. Version 6 made the model folder a bundle
/// (`model::ModelSpec`: the network with its smoothing and exponential steps); the network's
/// own fields are those of version 5.
pub const MODEL_FORMAT_VERSION: u32 = 6;

#[derive(Config, Debug, PartialEq)]
pub struct UNetConfig {
    /// `MODEL_FORMAT_VERSION` of the code that wrote the model.
    #[config(default = 6)]
    pub format_version: u32,
    #[config(default = 2)]
    pub in_channels: usize,
    #[config(default = 3)]
    pub out_channels: usize,
    /// Channels at full resolution; twice as many at the two coarser levels.
    #[config(default = 16)]
    pub base_channels: usize,
    #[config(default = 0.1)]
    pub dropout: f64,
    #[config(default = 0.1)]
    pub negative_slope: f64,
    /// The network sees both images downsampled by this factor (averaging blocks) and predicts
    /// momentum on that coarser grid; K⁻¹ smooths it anyway (SPEC §4, speed).
    #[config(default = 1)]
    pub resolution_factor: usize,
    /// The head's output is multiplied by this. Momentum must be several times the velocity it
    /// makes (K⁻¹ damps all but the lowest frequencies), far from where a zero-initialised head
    /// starts; the scale lets Adam's steps reach it (a preconditioning, like the optimiser's
    /// whitened coordinates).
    #[config(default = 1.0)]
    pub output_scale: f64,
    /// The output is the momentum in whitened coordinates, z = L⁻¹m (L = K^½: the momentum
    /// half-smoothed), so the velocity of the assembled volume is L⁻¹z rather than K⁻¹m. Both
    /// smooth the whole volume at once, across tile borders; in z the regulariser ⟨v, m⟩ is
    /// |z|², and the energy's gradient reaching the network is L⁻¹∂E/∂v rather than K⁻¹∂E/∂v,
    /// as in the optimiser's coordinates (`diffeo::energy::energy_and_gradient_whitened`).
    #[config(default = false)]
    pub whitened_output: bool,
    /// The network sees the pair after its resolutions and grey values were matched at the
    /// rigid alignment (`matching::matched_at_alignment`), as it was trained.
    #[config(default = false)]
    pub matched_input: bool,
    /// The network derives from its two density channels the force that the energy's gradient
    /// puts on the velocity at the identity, and its first convolution sees it beside the two
    /// images: the difference d = moving − fixed times the spatial gradient of the pair's mean
    /// (central differences on the network's grid), once plainly (MSE) and once weighted by
    /// a⁴/(a² + d²)² (the normalised MSE's, a = 0.2): 6 more channels, times `force_scale`.
    /// A product of two inputs is what a small ReLU network learns slowest, and it is where
    /// registration starts (a demons force). The input stays the two density channels.
    #[config(default = false)]
    pub force_features: bool,
    /// Factor on the force channels, bringing them near the images' range.
    #[config(default = 10.0)]
    pub force_scale: f64,
    /// The input carries, after the two density channels, the force at the identity measured
    /// on the full-resolution pair and averaged onto the network's grid, with the structure
    /// tensor of the images' slopes (`pooled_force::pooled_force_channels`, times
    /// `force_scale`; 12 channels): where edges lie within the network's coarse voxels, which
    /// the downsampled images no longer show. The caller computes them; the network then
    /// derives no force channels of its own (`force_features` is ignored).
    #[config(default = false)]
    pub pooled_force: bool,
    /// The network corrects a closed-form local estimate (`register::local_flow`): the velocity
    /// is that estimate plus the network's, and the network sees the moving image warped by the
    /// estimate (its pooled force measured on that pair). Training compares the sum with the
    /// target, so the network learns what the estimate gets wrong. None: the network alone.
    #[config(default = "None")]
    pub local_prior: Option<local_flow::LocalFlowParams>,
}

/// Channels `UNetConfig::force_features` adds to the network's input.
pub const FORCE_CHANNELS: usize = 6;

impl UNetConfig {
    /// Channels of the input tensor: the density channels, and the pooled force's.
    pub fn input_channels(&self) -> usize {
        self.in_channels + if self.pooled_force { pooled_force::POOLED_FORCE_CHANNELS } else { 0 }
    }

    /// Channels the first convolution sees (the input's, and the force channels derived from it).
    fn first_channels(&self) -> usize {
        self.input_channels() + if self.derives_force() { FORCE_CHANNELS } else { 0 }
    }

    fn derives_force(&self) -> bool {
        self.force_features && !self.pooled_force
    }
}

#[derive(Module, Debug)]
pub struct UNet {
    encode_full: [Conv3d; 2],
    down_half: Conv3d,
    encode_half: [Conv3d; 2],
    down_quarter: Conv3d,
    bottom: [Conv3d; 2],
    up_half: ConvTranspose3d,
    decode_half: Conv3d,
    up_full: ConvTranspose3d,
    decode_full: Conv3d,
    head: Conv3d,
    dropout: Dropout,
    #[module(skip)]
    negative_slope: f64,
    #[module(skip)]
    output_scale: f64,
    /// `Some(force_scale)` when the network derives force channels (`UNetConfig::force_features`).
    #[module(skip)]
    force_scale: Option<f64>,
}

/// A 3×3×3 convolution keeping the size, dilated by `dilation`.
fn dilated(channels: [usize; 2], dilation: usize, device: &Device) -> Conv3d {
    Conv3dConfig::new(channels, [3, 3, 3])
        .with_dilation([dilation; 3])
        .with_padding(PaddingConfig3d::Explicit(dilation, dilation, dilation))
        .init(device)
}

impl UNetConfig {
    pub fn init(&self, device: &Device) -> UNet {
        let (c, c2) = (self.base_channels, 2 * self.base_channels);
        let first_in = self.first_channels();
        let down = |channels| Conv3dConfig::new(channels, [2, 2, 2]).with_stride([2, 2, 2]).init(device);
        let up = |channels| ConvTranspose3dConfig::new(channels, [2, 2, 2]).with_stride([2, 2, 2]).init(device);
        UNet {
            encode_full: [dilated([first_in, c], 1, device), dilated([c, c], 2, device)],
            down_half: down([c, c2]),
            encode_half: [dilated([c2, c2], 2, device), dilated([c2, c2], 4, device)],
            down_quarter: down([c2, c2]),
            bottom: [dilated([c2, c2], 2, device), dilated([c2, c2], 4, device)],
            up_half: up([c2, c2]),
            decode_half: dilated([2 * c2, c2], 1, device),
            up_full: up([c2, c]),
            decode_full: dilated([2 * c, c], 1, device),
            // Zero weights: an untrained network predicts no motion, and training starts at the identity.
            head: Conv3dConfig::new([c, self.out_channels], [1, 1, 1])
                .with_initializer(Initializer::Zeros)
                .init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            negative_slope: self.negative_slope,
            output_scale: self.output_scale,
            force_scale: self.derives_force().then_some(self.force_scale),
        }
    }
}

impl UNet {
    /// Momentum [B, 3, D, H, W] from input patches [B, C, D, H, W] (D, H, W multiples of 4): the
    /// two density channels, then for a network with `pooled_force` its 12 pooled force channels.
    pub fn forward(&self, input: Tensor<5>) -> Tensor<5> {
        let act = |x: Tensor<5>| leaky_relu(x, self.negative_slope);
        let pair = |layers: &[Conv3d; 2], x: Tensor<5>| act(layers[1].forward(act(layers[0].forward(x))));
        let input = match self.force_scale {
            Some(scale) => with_force_channels(input, scale),
            None => input,
        };
        let full = pair(&self.encode_full, input);
        let half = self.dropout.forward(act(self.down_half.forward(full.clone())));
        let half = pair(&self.encode_half, half);
        let quarter = self.dropout.forward(act(self.down_quarter.forward(half.clone())));
        let quarter = pair(&self.bottom, quarter);
        let up = act(self.up_half.forward(quarter));
        let joined = self.dropout.forward(Tensor::cat(vec![up, half], 1));
        let half = act(self.decode_half.forward(joined));
        let up = act(self.up_full.forward(half));
        let full = act(self.decode_full.forward(Tensor::cat(vec![up, full], 1)));
        self.head.forward(full) * self.output_scale
    }
}

/// The pair [B, 2, D, H, W] followed by its force channels (`UNetConfig::force_features`):
/// d·∇s and d·a⁴/(a² + d²)²·∇s, with d = moving − fixed, s = (fixed + moving)/2, ∇ by central
/// differences (zero outside the patch) along the three axes, all times `scale`.
pub fn with_force_channels(input: Tensor<5>, scale: f64) -> Tensor<5> {
    use burn::tensor::TensorData;
    use burn::tensor::module::conv3d;
    use burn::tensor::ops::ConvOptions;
    const A2: f32 = 0.2 * 0.2;
    let device = input.device();
    let fixed = input.clone().narrow(1, 0, 1);
    let moving = input.clone().narrow(1, 1, 1);
    let difference = moving.clone() - fixed.clone();
    let mean = (fixed + moving) * 0.5;
    // Three 3×3×3 kernels, each a central difference along one axis.
    let mut kernel = vec![0f32; 3 * 27];
    for axis in 0..3 {
        let stride = [9, 3, 1][axis];
        kernel[axis * 27 + 13 + stride] = 0.5;
        kernel[axis * 27 + 13 - stride] = -0.5;
    }
    let kernel = Tensor::<5>::from_data(TensorData::new(kernel, [3, 1, 3, 3, 3]), &device);
    let gradient = conv3d(mean, kernel, None, ConvOptions::new([1; 3], [1; 3], [1; 3], 1));
    let denominator = difference.clone().powi_scalar(2) + A2;
    let weighted = difference.clone() * A2 * A2 / denominator.powi_scalar(2);
    let force = gradient.clone() * difference.repeat_dim(1, 3) * scale;
    let normalised = gradient * weighted.repeat_dim(1, 3) * scale;
    Tensor::cat(vec![input, force, normalised], 1)
}

/// Writes a network's folder: `config.json` (its `UNetConfig`) and `weights.bpk`.
pub fn save_network(folder: &Path, config: &UNetConfig, model: &UNet) -> Result<()> {
    save_with_config(folder, config, model)
}

/// Writes `config.json` (`config` as JSON) and `weights.bpk` (`model`'s) into `folder`.
pub(crate) fn save_with_config(folder: &Path, config: &impl serde::Serialize, model: &UNet) -> Result<()> {
    std::fs::create_dir_all(folder).map_err(|e| Error::io(folder, e))?;
    let config_path = folder.join("config.json");
    let json = serde_json::to_string_pretty(config).map_err(|e| Error::Invalid(e.to_string()))?;
    crate::io::atomic::write_atomically(&config_path, |w| {
        w.write_all(json.as_bytes()).map_err(|e| Error::io(&config_path, e))
    })?;
    let weights = folder.join("weights.bpk");
    let mut store = BurnpackStore::from_file(&weights).overwrite(true);
    model.save_into(&mut store).map_err(|e| Error::Invalid(format!("cannot write {}: {e}", weights.display())))
}

/// Rebuilds a network from its folder (`save_network`), refusing a config of another format
/// version or weights that do not fit the config.
pub fn load_network(folder: &Path, device: &Device) -> Result<(UNetConfig, UNet)> {
    let config_path = folder.join("config.json");
    let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let value = serde_json::from_str(&text)
        .map_err(|e| Error::Invalid(format!("{} is not a diffeoreg model config: {e}", config_path.display())))?;
    let config = parse_config(value, &config_path.display().to_string())?;
    let model = load_weights_file(&config, folder, device)?;
    Ok((config, model))
}

/// The weights in `folder`'s `weights.bpk`, for `config`.
pub(crate) fn load_weights_file(config: &UNetConfig, folder: &Path, device: &Device) -> Result<UNet> {
    let weights = folder.join("weights.bpk");
    if !weights.is_file() {
        return Err(Error::Invalid(format!("{} is missing", weights.display())));
    }
    load_weights(config, BurnpackStore::from_file(&weights), &weights.display().to_string(), device)
}

/// A network's config (`UNetConfig` as JSON) of any version this code reads, as the current one.
pub(crate) fn parse_config(mut value: serde_json::Value, name: &str) -> Result<UNetConfig> {
    let not_a_config = |e: serde_json::Error| Error::Invalid(format!("{name} is not a diffeoreg model config: {e}"));
    let version = value.get("format_version").and_then(serde_json::Value::as_u64);
    match version {
        Some(v @ 1..=5) => {
            // Version 1 predicted plain momentum from unmatched images; versions 1 and 2 had no
            // force channels, versions 1 to 3 no pooled force, versions 1 to 4 no local prior.
            if let Some(fields) = value.as_object_mut() {
                if v == 1 {
                    fields.insert("whitened_output".into(), false.into());
                    fields.insert("matched_input".into(), false.into());
                }
                if v <= 2 {
                    fields.insert("force_features".into(), false.into());
                    fields.entry("force_scale").or_insert(10.0.into());
                }
                if v <= 3 {
                    fields.insert("pooled_force".into(), false.into());
                }
                if v <= 4 {
                    fields.insert("local_prior".into(), serde_json::Value::Null);
                }
                fields.insert("format_version".into(), MODEL_FORMAT_VERSION.into());
            }
        }
        Some(v) if v == MODEL_FORMAT_VERSION as u64 => {}
        _ => {
            return Err(Error::Invalid(format!(
                "{name} is a model of format version {}; this diffeoreg reads versions 1 to {MODEL_FORMAT_VERSION}",
                version.map_or("(none)".to_string(), |v| v.to_string())
            )));
        }
    }
    let config: UNetConfig = serde_json::from_value(value).map_err(not_a_config)?;
    if config.resolution_factor == 0 {
        return Err(Error::Invalid(format!("{name}: resolution_factor must be at least 1")));
    }
    Ok(config)
}

pub(crate) fn load_weights(config: &UNetConfig, mut store: BurnpackStore, name: &str, device: &Device) -> Result<UNet> {
    let mut model = config.init(device);
    let result =
        model.load_from(&mut store).map_err(|e| Error::Invalid(format!("{name} does not fit its config.json: {e}")))?;
    if !result.errors.is_empty() || !result.missing.is_empty() {
        return Err(Error::Invalid(format!(
            "{name} does not fit its config.json: {} tensors missing, errors: {:?}",
            result.missing.len(),
            result.errors
        )));
    }
    Ok(model)
}

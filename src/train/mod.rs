//! Training the network without labels (SPEC §3): Adam on the registration energy of random
//! patches — the network predicts each patch's momentum, and the energy of that momentum on the
//! patch (regularisation plus symmetric similarity, samples leaving the patch masked) is the
//! loss. λ can start lower for the first epochs (warm-up). A share of the pairs is held out for
//! a validation loss per epoch; after every epoch a checkpoint allows resuming exactly where
//! training stopped, and the model folder holds the best epoch so far. Other objectives: the
//! optimiser's energy at full resolution (`full_resolution_energy`), and the velocity the
//! optimiser finds for each pair as a target (`distill`). Training may start from a model's
//! weights (`TrainParams::initial_model`).

pub mod checkpoint;
pub mod curves;
pub mod data;
pub mod distill;
pub mod validation;

use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::diffeo::VectorField;
use crate::diffeo::energy::{EnergyParams, Refinement, energy_and_gradient_whitened};
use crate::diffeo::region::TissueMask;
use crate::diffeo::smooth::{SmoothParams, Smoother};
use crate::diffeo::tensor::energy::batch_energy;
use crate::diffeo::tensor::smooth::TensorSmoother;
use crate::diffeo::tensor::tensor_values;
use crate::error::{Error, Result};
use crate::net::model::{Model, ModelSpec, save_model};
use crate::net::{UNet, UNetConfig};
use crate::patch::sampler::{PairChannels, PatchRef, SamplerParams, batch_input, epoch_batches};
use crate::patch::tiling::{Tiling, extract};
use crate::phantom::random::SeededRng;
use crate::progress::Progress;
use crate::register::pipeline::RegisterParams;
use checkpoint::{BatchRecord, EpochRecord, TrainState, checkpoints, load_checkpoint, save_checkpoint};
use data::{FullResolutionPair, PairSource, TrainingPair};

pub use crate::net::model::TRAINING_JSON;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainParams {
    pub source: PairSource,
    pub network: UNetConfig,
    pub sampler: SamplerParams,
    pub epochs: usize,
    pub learning_rate: f64,
    /// Adam's ε, added to the root of the second moment. Burn's default, 10⁻⁵, is large beside
    /// the gradients a loss averaged over a patch's voxels gives the deeper weights, and then
    /// shrinks their steps; 10⁻⁸ is the usual value. (Absent from records written before it
    /// existed: those trained with 10⁻⁵.)
    #[serde(default = "burn_adam_epsilon")]
    pub adam_epsilon: f64,
    /// The SPEC energy (λ, similarity, scaling-and-squaring steps), on each patch's own grid.
    pub energy: EnergyParams,
    pub smooth: SmoothParams,
    /// During the first `warmup_epochs` epochs λ is multiplied by `warmup_lambda_scale`.
    pub warmup_epochs: usize,
    pub warmup_lambda_scale: f32,
    /// Share of the pairs held out for the validation loss.
    pub validation_share: f64,
    pub validation_patches_per_pair: usize,
    pub seed: u64,
    /// How pairs are calibrated and rigidly aligned before training (as `register` does), and
    /// matched for a network with `matched_input` (its optimiser's resolution and grey-value
    /// settings; its `region_margin_mm` for the full-resolution objective).
    pub register: RegisterParams,
    /// The size of the network's voxels to train for, mm (`ModelSpec::grid_mm`): each pair is
    /// downsampled by the whole factor closest to it. None: by `network.resolution_factor`.
    /// (Absent from older records: none.)
    #[serde(default)]
    pub grid_mm: Option<f64>,
    /// What a step minimises. (Absent from records written before it existed: the patch energy.)
    #[serde(default)]
    pub objective: Objective,
    /// A model folder whose weights training starts from (fine-tuning), instead of a fresh
    /// network; its config must be `network`. (Absent from older records: a fresh start.)
    #[serde(default)]
    pub initial_model: Option<std::path::PathBuf>,
    /// The distillation and truth objectives weigh each voxel of the network's grid by its
    /// share of body (fixed density ≥ `metrics::BODY_DENSITY`), where endpoint error is
    /// measured; the motion of the air around the head, which the images cannot show, then
    /// counts for nothing. (Absent from older records: every voxel counted alike.)
    #[serde(default)]
    pub target_in_body: bool,
}

/// Adam's ε in Burn's `AdamConfig` by default, which trainings before `adam_epsilon` used.
fn burn_adam_epsilon() -> f64 {
    1e-5
}

/// What a training step minimises.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Objective {
    /// The thesis' loss: the SPEC energy of each patch on the network's own grid (images
    /// downsampled as the network sees them), computed by the Burn engine and differentiated
    /// by autodiff on the training device.
    #[default]
    PatchEnergy,
    /// The optimiser's energy on each patch's box of the pair at full resolution: the network
    /// predicts whitened momentum z on its coarser grid, the velocity L⁻¹z is refined onto the
    /// full-resolution images (`diffeo::energy::Refinement`), compared near tissue only
    /// (`register.optimize.region_margin_mm`), samples leaving the box masked. The energy and its
    /// gradient with respect to z come from the whole-volume kernels on the CPU
    /// (`energy_and_gradient_whitened`, what the optimiser's last level evaluates); autodiff then
    /// carries that gradient through the network. Needs a network with `whitened_output` and
    /// `matched_input`.
    FullResolution,
    /// Distillation: the network's velocity L⁻¹z on each patch is compared, in the mean square,
    /// with the velocity the optimiser (`register --method optimize`) found for that pair, on
    /// the network's grid (`distill`). The targets take one optimisation per pair before
    /// training and are kept in the model folder. Needs a network with `whitened_output`.
    Distill,
    /// Supervised by the known deformation: the same comparison as `Distill`, with the velocity
    /// whose exponential is the pair's true deformation (`distill::truth_velocity`) as the
    /// target. Only pairs with a known answer qualify: synthetic pairs, and pair folders that
    /// hold the `truth_fwd` field `phantom` writes. Needs a network with `whitened_output`.
    Truth,
}

impl Objective {
    /// Whether a step compares the network's velocity with a target velocity per pair.
    pub fn has_targets(&self) -> bool {
        matches!(self, Objective::Distill | Objective::Truth)
    }
}

impl Default for TrainParams {
    fn default() -> Self {
        TrainParams {
            source: PairSource::Synthetic {
                count: 16,
                shape: crate::phantom::DEMO_SHAPE,
                spacing_mm: crate::phantom::DEMO_SPACING_MM,
                first_seed: 1000,
                max_mm: 7.0,
            },
            network: UNetConfig::new(),
            sampler: SamplerParams::default(),
            epochs: 20,
            learning_rate: 1e-3,
            adam_epsilon: 1e-8,
            // The normalised MSE the shipped models were trained with (the optimiser's default
            // is now local NCC; training with it is `--similarity lncc`).
            energy: crate::diffeo::energy::EnergyParams {
                similarity: crate::diffeo::energy::Similarity::NormalizedMse { a: 0.1 },
                ..crate::register::optimize::OptimizeParams::default().energy
            },
            smooth: SmoothParams::default(),
            warmup_epochs: 1,
            warmup_lambda_scale: 0.1,
            validation_share: 0.2,
            validation_patches_per_pair: 8,
            seed: 1,
            register: RegisterParams::default(),
            grid_mm: None,
            objective: Objective::PatchEnergy,
            initial_model: None,
            target_in_body: true,
        }
    }
}

impl TrainParams {
    /// λ during epoch `epoch` (counted from 0).
    pub fn lambda_at(&self, epoch: usize) -> f32 {
        if epoch < self.warmup_epochs { self.energy.lambda * self.warmup_lambda_scale } else { self.energy.lambda }
    }

    /// These parameters set to train for `objective` with what it needs: the full-resolution and
    /// distillation objectives train a network with whitened output and force channels on
    /// matched input, with the optimiser's smoothing (the energy its last level minimises, the
    /// L⁻¹ its velocity is made with).
    pub fn for_objective(mut self, objective: Objective) -> Self {
        let full = objective != Objective::PatchEnergy;
        (self.network.whitened_output, self.network.matched_input) = (full, full);
        // Without the force channels the network did not learn across pairs on this objective
        // (validation energy flat over 1140 steps); with them it did (README, "The network").
        self.network.force_features = full;
        self.smooth = if full { self.register.optimize.smooth.clone() } else { SmoothParams::default() };
        self.objective = objective;
        self
    }

    /// The model folder's description of the network this trains.
    pub fn spec(&self) -> ModelSpec {
        let steps = self.register.optimize.energy.steps;
        ModelSpec { grid_mm: self.grid_mm, ..ModelSpec::new(self.network.clone(), self.smooth.clone(), steps) }
    }

    /// Whether `other` trains the same way, except perhaps for more epochs.
    fn same_training(&self, other: &TrainParams) -> bool {
        TrainParams { epochs: 0, ..self.clone() } == TrainParams { epochs: 0, ..other.clone() }
    }
}

/// The parameters a training in `out` was started with (its `training.json`), for resuming it.
pub fn read_params(out: &Path) -> Result<TrainParams> {
    let path = out.join(TRAINING_JSON);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Invalid(format!("{} is not a training record: {e}", path.display())))
}

/// The mean SPEC energy over a batch of density patches [B, 2, P, P, P] of the momentum the
/// network predicts for them. The energies are computed `together` batch items at a time: all
/// of them at once keeps a GPU busy (one kernel per operation for the whole batch), while on the
/// CPU one at a time is faster (4 patches of 32³, energy and gradient: 0.84 s one by one, 0.92 s together).
pub fn batch_loss(
    model: &UNet,
    input: Tensor<5>,
    smoother: &TensorSmoother,
    params: &EnergyParams,
    together: usize,
) -> Tensor<1> {
    let batch = input.dims()[0];
    let momentum = model.forward(input.clone());
    let mut total: Option<Tensor<1>> = None;
    for start in (0..batch).step_by(together.max(1)) {
        let items = together.max(1).min(batch - start);
        let part = |t: &Tensor<5>, channel: usize, channels: usize| {
            t.clone().narrow(0, start, items).narrow(1, channel, channels)
        };
        let energies = batch_energy(part(&input, 0, 1), part(&input, 1, 1), part(&momentum, 0, 3), smoother, params);
        let sum = energies.total().sum();
        total = Some(match total {
            Some(t) => t + sum,
            None => sum,
        });
    }
    total.expect("a batch holds a patch") / batch as f32
}

/// The full-resolution objective (`Objective::FullResolution`) on one batch: the mean energy of
/// the network's outputs `z` ([B, 3, P, P, P] flattened, on the network's grid) and, per item,
/// the gradient of that mean with respect to z (same layout). Item b's box starts at
/// `batch[b].start` × f on the full grid of its pair (`full[pair]`, whose network grid is that
/// grid downsampled by f = its `factor`) and is P × f voxels wide (edges repeated beyond the
/// volume, as the network's patch is).
pub fn full_resolution_energy(
    z: &[f32],
    batch: &[PatchRef],
    full: &[&FullResolutionPair],
    patch: usize,
    half: &Smoother,
    margin_mm: f64,
    params: &EnergyParams,
) -> (f64, Vec<f32>) {
    let voxels = patch * patch * patch;
    let (mut total, mut gradient) = (0.0f64, vec![0.0f32; z.len()]);
    let scale = 1.0 / batch.len() as f32;
    for (b, item) in batch.iter().enumerate() {
        let pair = full[item.pair];
        let factor = pair.factor;
        let side = patch * factor;
        let start = item.start.map(|s| s * factor);
        let images = extract(&[&pair.fixed, &pair.moving], pair.shape, start, side);
        let (fixed, moving) = images.split_at(side * side * side);
        let shape = [side; 3];
        let region =
            (margin_mm > 0.0).then(|| TissueMask::around(fixed, moving, shape, pair.spacing_mm, margin_mm).at_level(1));
        let refinement =
            (factor > 1).then_some(Refinement { full_shape: shape, velocity_factor: factor, image_factor: 1 });
        let item_z = &z[b * 3 * voxels..(b + 1) * 3 * voxels];
        let field = VectorField {
            shape: [patch; 3],
            components: std::array::from_fn(|c| item_z[c * voxels..(c + 1) * voxels].to_vec()),
        };
        let (energy, item_gradient) =
            energy_and_gradient_whitened(fixed, moving, None, &field, half, refinement, region.as_ref(), params);
        total += energy.total();
        for c in 0..3 {
            let out = &mut gradient[(3 * b + c) * voxels..(3 * b + c + 1) * voxels];
            for (o, g) in out.iter_mut().zip(&item_gradient.components[c]) {
                *o = scale * g;
            }
        }
    }
    (total / batch.len().max(1) as f64, gradient)
}

/// How many batch items' energies `batch_loss` computes together on `device`.
pub fn energies_together(device: &Device, batch: usize) -> usize {
    if *device == Device::flex() { 1 } else { batch }
}

/// Which pairs train and which validate: a seeded shuffle, `share` of them (at least one when
/// there are two or more pairs) held out.
pub fn split_pairs(count: usize, share: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..count).collect();
    SeededRng::new(seed ^ 0x7a11_d47e).shuffle(&mut order);
    let held =
        if count < 2 || share <= 0.0 { 0 } else { ((share * count as f64).round() as usize).clamp(1, count - 1) };
    let validation = order.split_off(count - held);
    (order, validation)
}

/// What training reports as it goes.
pub enum TrainEvent<'a> {
    Step(&'a BatchRecord),
    Epoch(&'a EpochRecord),
}

/// The pairs one side of a training (the training pairs, or the validation pairs) draws on:
/// their input channels, and what the objective compares with (full-resolution images for
/// `FullResolution`, target velocities and their weights for `Distill` and `Truth`).
struct Side<'a> {
    set: Vec<PairChannels<'a>>,
    full: Vec<&'a FullResolutionPair>,
    targets: Vec<&'a VectorField>,
    weights: Vec<Option<&'a [f32]>>,
}

impl<'a> Side<'a> {
    /// Pairs `ids` of `pairs`, checked against what `params` trains.
    fn new(pairs: &'a [TrainingPair], ids: &[usize], params: &TrainParams) -> Result<Side<'a>> {
        let channels = params.network.input_channels();
        let (mut set, mut full, mut targets, mut weights) = (vec![], vec![], vec![], vec![]);
        for pair in ids.iter().map(|&i| &pairs[i]) {
            let input: Vec<&[f32]> =
                [&pair.fixed, &pair.moving].into_iter().chain(&pair.force).map(Vec::as_slice).collect();
            if input.len() != channels {
                return Err(Error::Invalid(format!(
                    "training pair {} was prepared with {} input channels, the network takes {channels}",
                    pair.name,
                    input.len()
                )));
            }
            set.push((input, pair.shape));
            if params.objective == Objective::FullResolution {
                full.push(pair.full.as_ref().ok_or_else(|| {
                    Error::Invalid(format!(
                        "training pair {} was prepared without its full-resolution images",
                        pair.name
                    ))
                })?);
            }
            if params.objective.has_targets() {
                let target = pair.target.as_ref().ok_or_else(|| {
                    Error::Invalid(format!("training pair {} was prepared without its target velocity", pair.name))
                })?;
                if target.shape != pair.shape {
                    return Err(Error::Invalid(format!(
                        "training pair {}: its target velocity is on a {:?} grid, the network's on {:?}",
                        pair.name, target.shape, pair.shape
                    )));
                }
                targets.push(target);
            }
            weights.push(pair.target_weight.as_deref());
        }
        Ok(Side { set, full, targets, weights })
    }

    fn shapes(&self) -> Vec<[usize; 3]> {
        self.set.iter().map(|p| p.1).collect()
    }
}

/// The patch energy objective on one batch: its mean and the tensor to differentiate.
fn patch_energy_loss(
    model: &UNet,
    input: Tensor<5>,
    smoother: &TensorSmoother,
    energy: &EnergyParams,
    together: usize,
) -> (f64, Tensor<1>) {
    let loss = batch_loss(model, input, smoother, energy, together);
    (tensor_values(loss.clone())[0] as f64, loss)
}

/// An objective whose value and gradient with respect to the network's output z come from the
/// CPU kernels (`loss_of_z`): its value, and z · (that gradient), whose gradient through the
/// network is the objective's.
fn loss_through_output(
    model: &UNet,
    input: Tensor<5>,
    loss_of_z: impl FnOnce(&[f32]) -> (f64, Vec<f32>),
) -> (f64, Tensor<1>) {
    let device = input.device();
    let z = model.forward(input);
    let (value, gradient) = loss_of_z(&tensor_values(z.clone()));
    let gradient = Tensor::<5>::from_data(TensorData::new(gradient, z.dims()), &device);
    (value, (z * gradient).sum())
}

/// What a training step needs besides the batch.
struct StepContext<'a> {
    params: &'a TrainParams,
    half: Smoother,
    together: usize,
}

impl StepContext<'_> {
    /// A batch's mean loss under the objective and the tensor to differentiate for it.
    fn loss(
        &self,
        model: &UNet,
        batch: &[PatchRef],
        side: &Side,
        device: &Device,
        smoother: &TensorSmoother,
        energy: &EnergyParams,
    ) -> (f64, Tensor<1>) {
        let (params, patch) = (self.params, self.params.sampler.patch);
        let channels = params.network.input_channels();
        let values = batch_input(batch, &side.set, patch);
        let input =
            Tensor::<5>::from_data(TensorData::new(values, [batch.len(), channels, patch, patch, patch]), device);
        match params.objective {
            Objective::PatchEnergy => patch_energy_loss(model, input, smoother, energy, self.together),
            Objective::FullResolution => loss_through_output(model, input, |z| {
                let margin = params.register.optimize.region_margin_mm;
                full_resolution_energy(z, batch, &side.full, patch, &self.half, margin, energy)
            }),
            Objective::Distill | Objective::Truth => loss_through_output(model, input, |z| {
                distill::weighted_distillation_loss(z, batch, &side.targets, &side.weights, patch, &self.half)
            }),
        }
    }
}

/// The network, its optimiser and the training state to go on from: the latest checkpoint in
/// `out` (`resume`), or a fresh start (from `params.initial_model`'s weights if given).
fn start_or_resume(
    out: &Path,
    params: &TrainParams,
    resume: bool,
    autodiff: &Device,
) -> Result<(UNet, ModuleOptimizer, TrainState)> {
    let fresh_optimizer = || AdamConfig::new().with_epsilon(params.adam_epsilon as f32).init();
    let existing = checkpoints(out)?;
    if resume {
        let Some(latest) = existing.last() else {
            return Err(Error::Invalid(format!("{} holds no checkpoint to resume from", out.display())));
        };
        if !read_params(out)?.same_training(params) {
            return Err(Error::Invalid(format!(
                "{} records other training parameters than these; resume with the same ones",
                out.join(TRAINING_JSON).display()
            )));
        }
        let (config, model, optimizer, state) = load_checkpoint(latest, fresh_optimizer(), autodiff)?;
        if config != params.network {
            return Err(Error::Invalid(format!("{} holds another network than configured", latest.display())));
        }
        return Ok((model, optimizer, state));
    }
    if !existing.is_empty() {
        return Err(Error::Invalid(format!(
            "{} already holds a training (checkpoints/); resume it with --resume or choose another folder",
            out.display()
        )));
    }
    autodiff.seed(params.seed);
    let model = match &params.initial_model {
        None => params.network.init(autodiff),
        Some(folder) => {
            let Model { spec, network, .. } = Model::load(folder, autodiff)?;
            if spec.network != params.network {
                return Err(Error::Invalid(format!(
                    "{} holds another network than configured ({:?}, not {:?}); start from a model of the same \
                     configuration",
                    folder.display(),
                    spec.network,
                    params.network
                )));
            }
            network
        }
    };
    let state = TrainState {
        epochs_done: 0,
        rng: SeededRng::new(params.seed),
        initial_validation_loss: None,
        initial_validation_epe_mm: None,
        history: vec![],
        batches: vec![],
    };
    Ok((model, fresh_optimizer(), state))
}

/// Refuses parameters that cannot train: a patch side the U-Net cannot take, no pairs, or an
/// objective for another kind of network.
fn check_trainable(pairs: &[TrainingPair], params: &TrainParams) -> Result<()> {
    let patch = params.sampler.patch;
    if patch == 0 || !patch.is_multiple_of(4) {
        return Err(Error::Invalid(format!("the patch size must be a positive multiple of 4, not {patch}")));
    }
    if pairs.is_empty() {
        return Err(Error::Invalid("no training pairs".into()));
    }
    if params.objective == Objective::FullResolution
        && !(params.network.whitened_output && params.network.matched_input)
    {
        return Err(Error::Invalid(
            "the full-resolution objective trains a network with whitened output and matched input".into(),
        ));
    }
    if params.objective.has_targets() && !params.network.whitened_output {
        return Err(Error::Invalid(format!(
            "the {:?} objective trains a network with whitened output",
            params.objective
        )));
    }
    Ok(())
}

/// Trains on `pairs` (prepared by `data::load_pairs` for `params`) and writes the model, the loss
/// log and checkpoints into `out`. With `resume`, continues from the latest checkpoint there
/// (the parameters must be those of that training, epochs aside). `on_event` sees every step
/// and every finished epoch. Cancelling stops before the next step; the last checkpoint stays resumable.
pub fn train(
    pairs: &[TrainingPair],
    out: &Path,
    params: &TrainParams,
    resume: bool,
    device: &Device,
    progress: &dyn Progress,
    on_event: &mut dyn FnMut(TrainEvent),
) -> Result<TrainState> {
    check_trainable(pairs, params)?;
    let patch = params.sampler.patch;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let params_path = out.join(TRAINING_JSON);
    let autodiff = device.clone().autodiff();
    let (mut model, mut optimizer, mut state) = start_or_resume(out, params, resume, &autodiff)?;
    let json = serde_json::to_string_pretty(params).map_err(|e| Error::Invalid(e.to_string()))?;
    crate::io::atomic::write_atomically(&params_path, |w| {
        w.write_all(json.as_bytes()).map_err(|e| Error::io(&params_path, e))
    })?;
    curves::restart_batches_csv(out, &state.batches)?;

    let (train_ids, validation_ids) = split_pairs(pairs.len(), params.validation_share, params.seed);
    let (training, validation) = (Side::new(pairs, &train_ids, params)?, Side::new(pairs, &validation_ids, params)?);
    // The validation patches are drawn once, so every epoch is measured on the same ones.
    let validation_sampler =
        SamplerParams { patches_per_pair: params.validation_patches_per_pair, ..params.sampler.clone() };
    let validation_batches =
        epoch_batches(&validation.shapes(), &validation_sampler, &mut SeededRng::new(params.seed ^ 0x0a11_da7e));
    let smoother = TensorSmoother::new([patch; 3], &params.smooth, &autodiff);
    let plain_smoother = TensorSmoother::new([patch; 3], &params.smooth, device);
    let step = StepContext {
        params,
        half: Smoother::half([patch; 3], &params.smooth),
        together: energies_together(device, params.sampler.batch),
    };
    // The mean energy of the fixed validation patches at the full λ, dropout off.
    let validate = |model: &UNet| -> Result<Option<f64>> {
        if validation_batches.is_empty() {
            return Ok(None);
        }
        progress.start_stage("validating", validation_batches.len() as u64);
        let inference = model.valid();
        let (mut total, mut count) = (0.0f64, 0usize);
        for batch in &validation_batches {
            progress.check_cancelled()?;
            let (loss, _) = step.loss(&inference, batch, &validation, device, &plain_smoother, &params.energy);
            total += loss * batch.len() as f64;
            count += batch.len();
            progress.advance(1);
        }
        Ok(Some(total / count as f64))
    };
    // Endpoint error of whole validation pairs, for objectives with a target per pair.
    let validation_pairs: Vec<&TrainingPair> = validation_ids.iter().map(|&i| &pairs[i]).collect();
    let spec = params.spec();
    let tiling = Tiling { patch: params.register.network.tile, margin: params.register.network.margin };
    let validate_epe = |model: &UNet| -> Option<f64> {
        if !params.objective.has_targets() {
            return None;
        }
        progress.start_stage("validation endpoint error", 0);
        validation::validation_endpoint_error(&model.valid(), &spec, &validation_pairs, tiling, device)
    };
    if state.epochs_done == 0 && state.initial_validation_loss.is_none() {
        // Where training starts: the untrained network predicts no motion.
        state.initial_validation_loss = validate(&model)?;
        state.initial_validation_epe_mm = validate_epe(&model);
    }
    // The model kept is the epoch of lowest validation endpoint error where there is one (the
    // objectives with targets), else of lowest validation loss.
    let score_of = |r: &EpochRecord| r.validation_epe_mm.or(r.validation_loss);
    let mut best = state.history.iter().filter_map(score_of).fold(f64::INFINITY, f64::min);
    if params.epochs == 0 && state.history.is_empty() {
        // Nothing to train: the folder holds the network as it starts (with a zero head and a
        // local prior, the estimate alone), measured as above.
        save_model(out, &params.spec(), &model.valid())?;
        curves::write_epochs_csv(out, &state)?;
    }

    for epoch in state.epochs_done..params.epochs {
        let clock = Instant::now();
        let lambda = params.lambda_at(epoch);
        let energy_params = EnergyParams { lambda, ..params.energy.clone() };
        let batches = epoch_batches(&training.shapes(), &params.sampler, &mut state.rng);
        progress.start_stage(&format!("training epoch {}/{}", epoch + 1, params.epochs), batches.len() as u64);
        let (mut sum, mut patches) = (0.0f64, 0usize);
        for (number, batch) in batches.iter().enumerate() {
            progress.check_cancelled()?;
            // Dropout draws from the device's generator: seeded per step, so a resumed run repeats it.
            autodiff.seed(state.rng.next_u64());
            let (value, loss) = step.loss(&model, batch, &training, &autodiff, &smoother, &energy_params);
            let value = value as f32;
            if !value.is_finite() {
                return Err(Error::Invalid(format!("the loss became {value} in epoch {} step {number}", epoch + 1)));
            }
            let gradients = GradientsParams::from_grads(loss.backward(), &model);
            model = optimizer.step(params.learning_rate, model, gradients);
            let record = BatchRecord { epoch: epoch + 1, batch: number, loss: value };
            curves::append_batch(out, &record)?;
            on_event(TrainEvent::Step(&record));
            state.batches.push(record);
            sum += value as f64;
            patches += batch.len();
            progress.advance(1);
        }
        let train_seconds = clock.elapsed().as_secs_f64();
        let validation_loss = validate(&model)?;
        let validation_epe_mm = validate_epe(&model);
        let record = EpochRecord {
            epoch: epoch + 1,
            lambda,
            train_loss: sum / batches.len().max(1) as f64,
            validation_loss,
            validation_epe_mm,
            seconds: clock.elapsed().as_secs_f64(),
            patches_per_s: patches as f64 / train_seconds.max(1e-9),
        };
        state.history.push(record.clone());
        state.epochs_done = epoch + 1;
        save_checkpoint(out, &params.network, &model, &optimizer, &state)?;
        // The model folder holds the best epoch (`score_of`; the latest without validation).
        let score = score_of(&record);
        if score.is_none_or(|score| score <= best) {
            let score = score.unwrap_or(f64::NEG_INFINITY);
            best = best.min(score);
            save_model(out, &params.spec(), &model.valid())?;
        }
        curves::write_epochs_csv(out, &state)?;
        curves::write_curves_png(out, &state.history, &state.batches)?;
        on_event(TrainEvent::Epoch(&record));
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_split_with_at_least_one_on_each_side() {
        let (train, validation) = split_pairs(10, 0.2, 3);
        assert_eq!((train.len(), validation.len()), (8, 2));
        let mut all: Vec<usize> = train.iter().chain(&validation).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(split_pairs(2, 0.01, 3).1.len(), 1);
        assert_eq!(split_pairs(1, 0.5, 3).1.len(), 0);
        assert_eq!(split_pairs(10, 0.2, 3), (train, validation));
    }

    #[test]
    fn lambda_warms_up() {
        let params = TrainParams { warmup_epochs: 2, warmup_lambda_scale: 0.1, ..TrainParams::default() };
        let lambda = params.energy.lambda;
        assert_eq!(params.lambda_at(0), lambda * 0.1);
        assert_eq!(params.lambda_at(1), lambda * 0.1);
        assert_eq!(params.lambda_at(2), lambda);
    }

    #[test]
    fn records_written_before_adams_epsilon_was_recorded_read_as_burns_default() {
        let fresh = TrainParams::default();
        let mut record = serde_json::to_value(&fresh).unwrap();
        record.as_object_mut().unwrap().remove("adam_epsilon").expect("recorded");
        let old: TrainParams = serde_json::from_value(record).unwrap();
        assert_eq!(old.adam_epsilon, 1e-5);
        assert_eq!(fresh.adam_epsilon, 1e-8);
        let again: TrainParams = serde_json::from_str(&serde_json::to_string(&fresh).unwrap()).unwrap();
        assert_eq!(again, fresh);
    }
}

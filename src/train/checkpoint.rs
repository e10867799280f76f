//! Training checkpoints: after every epoch, a folder `checkpoints/epoch-NNNN` holding the model
//! (`config.json`, `weights.bpk`), the optimiser's state (`optimizer.bpk`: Adam's moments and
//! step count, keyed by the parameters' ids, which the weights file keeps) and `state.json`
//! (epochs done, the sampler's random stream, the loss history). A checkpoint is written under
//! a temporary name and renamed when complete, so a crash leaves the previous one intact.

use std::path::{Path, PathBuf};

use burn::optim::ModuleOptimizer;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::net::{UNet, UNetConfig, load_network, save_network};
use crate::phantom::random::SeededRng;

/// How many of the latest checkpoints are kept.
const KEPT: usize = 2;

/// The losses of one epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Counted from 1.
    pub epoch: usize,
    pub lambda: f32,
    /// Mean of the epoch's batch losses.
    pub train_loss: f64,
    /// Mean energy over the fixed validation patches, at the full λ (none without validation pairs).
    pub validation_loss: Option<f64>,
    /// Mean endpoint error (mm) of the network's whole-pair prediction on the validation pairs
    /// (`validation::validation_endpoint_error`), for objectives with a target per pair.
    /// (Absent from records written before it existed.)
    #[serde(default)]
    pub validation_epe_mm: Option<f64>,
    pub seconds: f64,
    pub patches_per_s: f64,
}

/// The loss of one training step.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchRecord {
    pub epoch: usize,
    pub batch: usize,
    pub loss: f32,
}

/// Everything besides the weights and the optimiser needed to continue exactly where training was.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    pub epochs_done: usize,
    /// The stream that orders pairs, draws patches and seeds dropout, after the last epoch.
    pub rng: SeededRng,
    /// The validation loss before the first step (no motion predicted yet).
    #[serde(default)]
    pub initial_validation_loss: Option<f64>,
    /// The validation endpoint error before the first step: with a zero head, that of the local
    /// estimate alone (or of no motion, for a network without one).
    #[serde(default)]
    pub initial_validation_epe_mm: Option<f64>,
    pub history: Vec<EpochRecord>,
    pub batches: Vec<BatchRecord>,
}

fn folder_of(out: &Path) -> PathBuf {
    out.join("checkpoints")
}

/// Writes the checkpoint after `state.epochs_done` epochs.
pub fn save_checkpoint(
    out: &Path,
    config: &UNetConfig,
    model: &UNet,
    optimizer: &ModuleOptimizer,
    state: &TrainState,
) -> Result<PathBuf> {
    let root = folder_of(out);
    std::fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
    let name = format!("epoch-{:04}", state.epochs_done);
    let partial = root.join(format!(".{name}.partial"));
    let done = root.join(&name);
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(|e| Error::io(&partial, e))?;
    }
    save_network(&partial, config, model)?;
    let optimizer_path = partial.join("optimizer.bpk");
    optimizer
        .save(&optimizer_path)
        .map_err(|e| Error::Invalid(format!("cannot write {}: {e:?}", optimizer_path.display())))?;
    let state_path = partial.join("state.json");
    let json = serde_json::to_string_pretty(state).map_err(|e| Error::Invalid(e.to_string()))?;
    std::fs::write(&state_path, json).map_err(|e| Error::io(&state_path, e))?;
    if done.exists() {
        std::fs::remove_dir_all(&done).map_err(|e| Error::io(&done, e))?;
    }
    std::fs::rename(&partial, &done).map_err(|e| Error::io(&done, e))?;
    let all = checkpoints(out)?;
    for old in all.iter().take(all.len().saturating_sub(KEPT)) {
        std::fs::remove_dir_all(old).map_err(|e| Error::io(old, e))?;
    }
    Ok(done)
}

/// The complete checkpoints under `out`, oldest first.
pub fn checkpoints(out: &Path) -> Result<Vec<PathBuf>> {
    let root = folder_of(out);
    if !root.is_dir() {
        return Ok(Vec::new());
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(&root)
        .map_err(|e| Error::io(&root, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("epoch-")))
        .collect();
    found.sort();
    Ok(found)
}

/// Loads a checkpoint folder: the model (on `device`, an autodiff device to train on), the
/// optimiser given as `fresh` with its saved state, and the training state.
pub fn load_checkpoint(
    folder: &Path,
    fresh: ModuleOptimizer,
    device: &Device,
) -> Result<(UNetConfig, UNet, ModuleOptimizer, TrainState)> {
    let (config, model) = load_network(folder, device)?;
    let optimizer_path = folder.join("optimizer.bpk");
    let optimizer = fresh
        .load(&optimizer_path)
        .map_err(|e| Error::Invalid(format!("cannot read {}: {e:?}", optimizer_path.display())))?;
    let state_path = folder.join("state.json");
    let text = std::fs::read_to_string(&state_path).map_err(|e| Error::io(&state_path, e))?;
    let state = serde_json::from_str(&text)
        .map_err(|e| Error::Invalid(format!("{} is not a training state: {e}", state_path.display())))?;
    Ok((config, model, optimizer, state))
}

//! `train` as a user runs it: a training killed mid-epoch resumes bit-for-bit (the same step
//! losses, validation losses and weights as an uninterrupted run of the same seed); training on a
//! CSV of NIfTI pairs; folders and lists that cannot be trained on are refused with the reason.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use burn::tensor::{Device, Distribution, Tensor};
use common::binary;
use diffeoreg::diffeo::tensor::tensor_values;
use diffeoreg::net::load_network;
use diffeoreg::net::model::Model;

/// A small, quick training: three 48³ synthetic pairs at half resolution (24³), 16³ patches.
const TINY: &[&str] = &[
    "--synthetic",
    "3",
    "--synthetic-shape",
    "48,48,48",
    "--synthetic-spacing-mm",
    "4.3,5.0,4.8",
    "--resolution-factor",
    "2",
    "--patch",
    "16",
    "--batch",
    "4",
    "--patches-per-pair",
    "24",
    "--base-channels",
    "2",
    "--seed",
    "7",
];

fn train(out: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(binary());
    command.arg("train").args(TINY).args(extra).arg("--out").arg(out);
    command
}

/// One quick epoch on a few listed pairs: 16³ patches, a 2-channel network.
const LISTED: &[&str] =
    &["--patch", "16", "--batch", "4", "--patches-per-pair", "4", "--base-channels", "2", "--epochs", "1"];

/// `train --pairs LIST` (a CSV or a folder of pair folders) with `args`, into `out`.
fn train_pairs(list: &Path, args: &[&str], out: &Path) -> std::process::Output {
    Command::new(binary()).arg("train").arg("--pairs").arg(list).args(args).arg("--out").arg(out).output().unwrap()
}

/// losses.csv without its timing columns.
fn epoch_losses(out: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(out.join("losses.csv")).unwrap();
    text.lines().map(|line| line.split(',').take(5).collect::<Vec<_>>().join(",")).collect()
}

fn outputs(folder: &Path) -> Vec<f32> {
    let device = Device::flex();
    device.seed(3);
    let input = Tensor::<5>::random([1, 2, 16, 16, 16], Distribution::Uniform(0.0, 1.5), &device);
    let model = Model::load(folder, &device).unwrap().network;
    tensor_values(model.forward(input))
}

#[test]
fn a_training_killed_mid_epoch_resumes_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let (whole, interrupted) = (dir.path().join("whole"), dir.path().join("interrupted"));
    let status = train(&whole, &["--epochs", "3"]).output().unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let reference = std::fs::read_to_string(whole.join("batch_losses.csv")).unwrap();
    let steps_per_epoch = reference.lines().filter(|l| l.starts_with("1,")).count();
    assert!(steps_per_epoch >= 8, "{reference}");
    assert_eq!(reference.lines().count(), 1 + 3 * steps_per_epoch);

    // Kill the same training (SIGKILL, no chance to tidy up) once it is two steps into epoch 2.
    let mut child = train(&interrupted, &["--epochs", "3"]).stderr(std::process::Stdio::null()).spawn().unwrap();
    let clock = Instant::now();
    loop {
        let log = std::fs::read_to_string(interrupted.join("batch_losses.csv")).unwrap_or_default();
        if log.lines().filter(|l| l.starts_with("2,")).count() >= 2 {
            break;
        }
        assert!(clock.elapsed() < Duration::from_secs(300), "epoch 2 never started");
        assert!(child.try_wait().unwrap().is_none(), "training ended before it could be killed");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let log = std::fs::read_to_string(interrupted.join("batch_losses.csv")).unwrap();
    let in_epoch_two = log.lines().filter(|l| l.starts_with("2,")).count();
    assert!((2..steps_per_epoch).contains(&in_epoch_two), "killed mid-epoch: {in_epoch_two} steps of epoch 2 logged");
    assert!(interrupted.join("checkpoints/epoch-0001/state.json").is_file());
    assert!(!interrupted.join("checkpoints/epoch-0002").exists());

    let resumed = Command::new(binary()).args(["train", "--resume", "--out"]).arg(&interrupted).output().unwrap();
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    assert_eq!(std::fs::read_to_string(interrupted.join("batch_losses.csv")).unwrap(), reference);
    assert_eq!(epoch_losses(&interrupted), epoch_losses(&whole));
    // Header, epoch 0 (the validation loss before training) and three epochs.
    assert_eq!(epoch_losses(&whole).len(), 5);
    assert_eq!(outputs(&interrupted), outputs(&whole), "the resumed model's weights differ");
    assert!(interrupted.join("loss_curves.png").is_file());

    // Asking for more epochs continues the same run; the parameters stay those recorded.
    let more = Command::new(binary())
        .args(["train", "--resume", "--epochs", "4", "--out"])
        .arg(&interrupted)
        .output()
        .unwrap();
    assert!(more.status.success(), "{}", String::from_utf8_lossy(&more.stderr));
    assert_eq!(epoch_losses(&interrupted).len(), 6);

    // A new training into a folder that holds one is refused, and so is resuming where there is none.
    let again = train(&whole, &["--epochs", "1"]).output().unwrap();
    let error = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success() && error.contains("--resume"), "{error}");
    let empty = dir.path().join("empty");
    let nothing = Command::new(binary()).args(["train", "--resume", "--out"]).arg(&empty).output().unwrap();
    let error = String::from_utf8_lossy(&nothing.stderr);
    assert!(!nothing.status.success() && error.contains("training.json"), "{error}");
}

#[test]
fn trains_on_a_csv_of_nifti_pairs_and_names_bad_lists() {
    use diffeoreg::io::{StoredType, write_volume};
    use diffeoreg::phantom::head::{HeadVariation, varied_head};
    use diffeoreg::phantom::{PhantomParams, make_phantom};
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("fixed,moving\n");
    for seed in [1u64, 2] {
        let head = varied_head([40, 44, 40], [5.0, 5.5, 5.5], &HeadVariation::random(seed));
        let phantom = make_phantom(&head, &PhantomParams { seed, ..PhantomParams::default() }).unwrap();
        let folder = dir.path().join(format!("case{seed}"));
        std::fs::create_dir_all(&folder).unwrap();
        write_volume(&folder.join("fixed.nii.gz"), &phantom.fixed, StoredType::Automatic).unwrap();
        write_volume(&folder.join("moving.nii.gz"), &phantom.moving, StoredType::Automatic).unwrap();
        csv += &format!("case{seed}/fixed.nii.gz,case{seed}/moving.nii.gz\n");
    }
    let list = dir.path().join("pairs.csv");
    std::fs::write(&list, &csv).unwrap();
    let out = dir.path().join("model");
    let run = train_pairs(&list, LISTED, &out);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let losses = epoch_losses(&out);
    assert_eq!(losses.len(), 3);
    let fields: Vec<&str> = losses[2].split(',').collect();
    // One pair trains, one validates: both losses are finite numbers.
    assert!(
        fields[2].parse::<f64>().unwrap().is_finite() && fields[3].parse::<f64>().unwrap().is_finite(),
        "{losses:?}"
    );
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("training.json")).unwrap()).unwrap();
    assert!(record["source"]["Csv"].as_str().unwrap().ends_with("pairs.csv"));
    assert_eq!(outputs(&out).len(), 3 * 16 * 16 * 16);

    // The same pairs as a folder of pair folders (the `model` folder, holding neither, is passed over).
    let from_folder = dir.path().join("model-from-folder");
    let run = train_pairs(dir.path(), LISTED, &from_folder);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(from_folder.join("training.json")).unwrap()).unwrap();
    assert!(record["source"]["Folder"].is_string(), "{record}");
    assert_eq!(epoch_losses(&from_folder), losses, "the same pairs in the same order train the same way");

    // A missing file is named.
    std::fs::write(&list, format!("{csv}case9/ct.nii.gz,case9/pct.nii.gz\n")).unwrap();
    let run = train_pairs(&list, LISTED, &dir.path().join("other"));
    let error = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && error.contains("case9") && error.contains("does not exist"), "{error}");
}

/// `train --objective full`: the optimiser's energy at full resolution as the loss (boxes of the
/// 48³ pairs at random places, 2× the 16³ patches of the network's grid); the model records a
/// whitened output with force channels on matched input, and `register` predicts with it.
#[test]
fn trains_on_the_full_resolution_objective_and_registers_with_that_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model");
    let run = train(&out, &["--objective", "full", "--epochs", "2"]).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let losses = epoch_losses(&out);
    assert_eq!(losses.len(), 4, "{losses:?}");
    for row in &losses[2..] {
        let fields: Vec<&str> = row.split(',').collect();
        let (train_loss, validation) = (fields[2].parse::<f64>().unwrap(), fields[3].parse::<f64>().unwrap());
        // Normalised MSE (a = 0.1) of density images lies in [0, 1]; the regulariser adds little.
        assert!(train_loss > 0.0 && train_loss < 1.0 && validation > 0.0 && validation < 1.0, "{losses:?}");
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    let flags = ["whitened_output", "matched_input", "force_features"].map(|f| config["network"][f].as_bool());
    assert_eq!(flags, [Some(true); 3], "{config}");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("training.json")).unwrap()).unwrap();
    assert_eq!(record["objective"], "FullResolution");
    assert_eq!(record["smooth"]["gamma"].as_f64(), Some(0.05), "the optimiser's smoothing: {record}");

    let report = register_with_model(&out, &dir.path().join("result"), &[]);
    assert!(report["model"].as_str().unwrap().contains("model"), "{}", report["model"]);
}

/// `train --objective distill`: every pair's target is the velocity `register --method
/// optimize` finds for it, kept in OUT/targets/ (one file per pair) and read back, not
/// recomputed, when the training resumes; `register` predicts with the model.
#[test]
fn trains_by_distillation_keeping_its_targets_and_registers_with_that_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model");
    let run = train(&out, &["--objective", "distill", "--epochs", "2"]).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let targets: Vec<_> = std::fs::read_dir(out.join("targets")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(targets.len(), 3, "{targets:?}");
    let stamps = |paths: &[std::path::PathBuf]| -> Vec<_> {
        paths.iter().map(|p| std::fs::metadata(p).unwrap().modified().unwrap()).collect()
    };
    let before = stamps(&targets);
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("training.json")).unwrap()).unwrap();
    assert_eq!(record["objective"], "Distill");

    let run = train(&out, &["--objective", "distill", "--resume", "--epochs", "3"]).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(stamps(&targets), before, "resuming optimised the pairs again");
    let losses = epoch_losses(&out);
    assert_eq!(losses.len(), 5, "{losses:?}");
    // The untrained network predicts no motion: its loss is half the targets' mean square, not 0.
    // (Three pairs teach a 2-channel network nothing across pairs; that the loss's gradient
    // fits a network is tested in tests/distill.rs.)
    let column = |row: &str, n: usize| row.split(',').nth(n).unwrap().parse::<f64>().unwrap();
    let untrained = column(&losses[1], 3);
    assert!(untrained > 1e-4, "{losses:?}");
    for row in &losses[2..] {
        let (train_loss, validation) = (column(row, 2), column(row, 3));
        assert!(train_loss.is_finite() && validation < 2.0 * untrained, "{losses:?}");
    }

    let report = register_with_model(&out, &dir.path().join("result"), &[]);
    assert!(report["model"].as_str().unwrap().contains("model"), "{}", report["model"]);
}

/// `train --objective truth`: each pair's target is the velocity of its known deformation —
/// synthetic pairs, or the pair folders `phantom` writes (with `truth_fwd.nii.gz`); a list of
/// pairs with no known deformation is refused with the reason. `register` predicts with the model.
#[test]
fn trains_on_known_deformations_of_synthetic_pairs_and_phantom_folders() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model");
    let run = train(&out, &["--objective", "truth", "--epochs", "2"]).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("training.json")).unwrap()).unwrap();
    assert_eq!(record["objective"], "Truth");
    let losses = epoch_losses(&out);
    assert_eq!(losses.len(), 4, "{losses:?}");
    let column = |row: &str, n: usize| row.split(',').nth(n).unwrap().parse::<f64>().unwrap();
    // The untrained network predicts no motion: half the mean square of a 7 mm deformation's
    // velocity (in voxels of 8.6–10 mm), far from 0.
    let untrained = column(&losses[1], 3);
    assert!(untrained > 1e-3, "{losses:?}");
    assert!(!out.join("targets").exists(), "known deformations need no stored targets");
    // Each epoch's endpoint error on the whole validation pairs (before training: no motion
    // predicted) chooses the model kept: that of the epoch with the lowest.
    let epe: Vec<f64> = losses[1..].iter().map(|row| column(row, 4)).collect();
    assert!(epe.iter().all(|e| *e > 0.05 && *e < 20.0), "{losses:?}");
    let best = if epe[1] <= epe[2] { 1 } else { 2 };
    let device = Device::flex();
    device.seed(3);
    let input = Tensor::<5>::random([1, 2, 16, 16, 16], Distribution::Uniform(0.0, 1.5), &device);
    let (_, kept) = load_network(&out.join(format!("checkpoints/epoch-{best:04}")), &device).unwrap();
    assert_eq!(outputs(&out), tensor_values(kept.forward(input)), "epoch {best} kept, {epe:?}");
    register_with_model(&out, &dir.path().join("result"), &[]);

    // Phantom folders: `phantom` writes fixed, moving and truth_fwd side by side.
    let pairs = dir.path().join("pairs");
    for seed in ["1", "2"] {
        let run = Command::new(binary())
            .args(["phantom", "--head-shape", "40,44,40", "--head-spacing-mm", "5.0,5.5,5.5", "--seed", seed])
            .arg("--out")
            .arg(pairs.join(format!("case{seed}")))
            .output()
            .unwrap();
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    }
    let args = [LISTED, &["--objective", "truth"]].concat();
    let from_folder = dir.path().join("model-from-folder");
    let run = train_pairs(&pairs, &args, &from_folder);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(column(&epoch_losses(&from_folder)[1], 3) > 1e-3, "{:?}", epoch_losses(&from_folder));

    // The same pairs listed in a CSV carry no known deformation.
    let list = dir.path().join("pairs.csv");
    let rows = "fixed,moving\npairs/case1/fixed.nii.gz,pairs/case1/moving.nii.gz\npairs/case2/fixed.nii.gz,pairs/case2/moving.nii.gz\n";
    std::fs::write(&list, rows).unwrap();
    let run = train_pairs(&list, &args, &dir.path().join("refused"));
    let error = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && error.contains("known deformation"), "{error}");
}

/// `train --init-from MODEL`: training starts from that model's weights (its validation loss
/// before the first step is the one the model ended with, on the same patches), and a model of
/// another configuration is refused with the reason.
#[test]
fn fine_tuning_starts_from_a_models_weights() {
    let dir = tempfile::tempdir().unwrap();
    let (first, tuned, other) = (dir.path().join("first"), dir.path().join("tuned"), dir.path().join("other"));
    let run = train(&first, &["--epochs", "1"]).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let init = ["--init-from", first.to_str().unwrap()];
    let run = train(&tuned, &[&init[..], &["--epochs", "1"]].concat()).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let validation = |out: &Path, row: usize| epoch_losses(out)[row].split(',').nth(3).unwrap().to_string();
    assert_eq!(validation(&tuned, 1), validation(&first, 2), "{:?}", epoch_losses(&tuned));
    assert_ne!(validation(&tuned, 1), validation(&first, 1));

    let run = train(&other, &[&init[..], &["--epochs", "1", "--output-scale", "2"]].concat()).output().unwrap();
    let error = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && error.contains("first") && error.contains("another network"), "{error}");
}

/// `train --pooled-force true`: the network's input carries the force measured at full
/// resolution (12 more channels, recorded in its config); `register` then computes those
/// channels for its tiles, also in a cascade of two predictions, whose second one changes the
/// deformation.
#[test]
fn trains_with_the_pooled_force_and_registers_in_a_cascade() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model");
    let run = train(&out, &["--objective", "full", "--pooled-force", "true", "--epochs", "1"]).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["network"]["pooled_force"].as_bool(), Some(true), "{config}");
    let losses = epoch_losses(&out);
    assert_eq!(losses.len(), 3, "{losses:?}");

    let (single, cascade) = (dir.path().join("single"), dir.path().join("cascade"));
    register_with_model(&out, &single, &[]);
    register_with_model(&out, &cascade, &["--cascade", "2"]);
    let field = |folder: &Path| std::fs::read(folder.join("warp_fwd.nii.gz")).unwrap();
    assert_ne!(field(&single), field(&cascade), "the second prediction added nothing");
}

/// `register --method network` on the demo case with the model in `model`, into `result`: its
/// report, checked to have no folding voxel.
fn register_with_model(model: &Path, result: &Path, extra: &[&str]) -> serde_json::Value {
    let run = Command::new(binary())
        .args(["register", "--method", "network"])
        .args(extra)
        .arg("--model")
        .arg(model)
        .arg("--out")
        .arg(result)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(result.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["deformable_quality"]["folding_voxels"].as_u64(), Some(0), "{}", report["deformable_quality"]);
    report
}

/// `train --local-prior-passes N`: the network learns what the closed-form local estimate leaves
/// (recorded in its config), so before any step its validation loss is the estimate's, below
/// that of no motion; `register` then starts from the same estimate.
#[test]
fn trains_a_correction_of_the_local_estimate_and_registers_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let (alone, corrected) = (dir.path().join("alone"), dir.path().join("corrected"));
    let truth = ["--objective", "truth", "--epochs", "1"];
    let run = train(&alone, &truth).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let run = train(&corrected, &[&truth[..], &["--local-prior-passes", "3"]].concat()).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(corrected.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["network"]["local_prior"]["passes"].as_u64(), Some(3), "{config}");
    let untrained = |out: &Path| epoch_losses(out)[1].split(',').nth(3).unwrap().parse::<f64>().unwrap();
    let (no_motion, estimate) = (untrained(&alone), untrained(&corrected));
    assert!(estimate < 0.8 * no_motion, "validation loss of the estimate {estimate}, of no motion {no_motion}");
    let report = register_with_model(&corrected, &dir.path().join("result"), &[]);
    assert!(report["timings"]["local_estimate_s"].as_f64().is_some_and(|s| s > 0.0), "{}", report["timings"]);
    // The report says which grid the network and its estimate worked on: the demo's fixed grid
    // downsampled by the model's resolution factor (a model without grid_mm).
    let grid = &report["network_grid"];
    let factor = config["network"]["resolution_factor"].as_u64().unwrap();
    assert_eq!(grid["factor"].as_u64(), Some(factor), "{grid}");
    let fixed = report["inputs"].as_array().unwrap().iter().find(|i| i["role"] == "fixed").unwrap();
    for axis in 0..3 {
        let (spacing, n) = (fixed["spacing_mm"][axis].as_f64().unwrap(), fixed["shape"][axis].as_u64().unwrap());
        let voxel = grid["voxel_mm"][axis].as_f64().unwrap();
        assert!((voxel - spacing * factor as f64).abs() < 1e-9, "{grid} on {fixed}");
        assert_eq!(grid["shape"][axis].as_u64(), Some(n.div_ceil(factor)), "{grid} on {fixed}");
    }
}

/// `train --local-prior-unmatched true` records in the model folder that the estimate reads the
/// pair as aligned (`local_prior.unmatched`), while the network's own input stays matched; the
/// flag without `--local-prior-passes` is refused, naming what it needs.
#[test]
fn an_unmatched_local_estimate_is_recorded_in_the_model_folder() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("unmatched");
    let args =
        ["--objective", "truth", "--epochs", "1", "--local-prior-passes", "2", "--local-prior-unmatched", "true"];
    let run = train(&out, &args).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["network"]["local_prior"]["unmatched"].as_bool(), Some(true), "{config}");
    assert_eq!(config["network"]["matched_input"].as_bool(), Some(true), "{config}");
    let refused = train(&dir.path().join("refused"), &["--local-prior-unmatched", "true"]).output().unwrap();
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("--local-prior-unmatched") && message.contains("--local-prior-passes"), "{message}");
}

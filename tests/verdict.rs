//! The verdict (SPEC §5, `metrics::verdict`): results that must not be used are reported as
//! `failed`, with a reason, by the library, in report.json and on the terminal, and
//! `register --strict` exits non-zero on them; a sound registration is `ok`.

mod common;

use std::path::Path;
use std::process::Command;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Distribution, Tensor};
use diffeoreg::metrics::verdict::Status;
use diffeoreg::net::model::{Model, save_model};
use diffeoreg::phantom::head::{HeadVariation, varied_head};
use diffeoreg::phantom::{PhantomParams, make_phantom};
use diffeoreg::progress::Silent;
use diffeoreg::register::pipeline::{Method, RegisterParams, register_volumes};

const SHAPE: [usize; 3] = [96, 96, 96];
const SPACING_MM: [f64; 3] = [2.0, 2.2, 2.1];

/// Replaces every weight by Gaussian noise of the given spread: a model file gone wrong.
struct Scramble(f64);

impl ModuleMapper for Scramble {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let spread = self.0;
        param.map(|t| Tensor::random(t.shape(), Distribution::Normal(0.0, spread), &t.device()))
    }
}

fn write_scrambled_model(folder: &Path) {
    let device = burn::tensor::Device::flex();
    let Model { spec, network, .. } = Model::builtin(&device).unwrap();
    save_model(folder, &spec, &network.map(&mut Scramble(0.5))).unwrap();
}

#[test]
fn a_sound_registration_is_ok() {
    let head = varied_head(SHAPE, SPACING_MM, &HeadVariation::random(5));
    let phantom = make_phantom(&head, &PhantomParams { seed: 5, ..Default::default() }).unwrap();
    let result = register_volumes(&phantom.fixed, &phantom.moving, &RegisterParams::default(), &Silent).unwrap();
    assert_eq!(result.verdict.status, Status::Ok, "{:?}", result.verdict);
}

#[test]
fn a_model_with_scrambled_weights_fails() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("scrambled");
    write_scrambled_model(&model);
    let head = varied_head(SHAPE, SPACING_MM, &HeadVariation::random(5));
    let phantom = make_phantom(&head, &PhantomParams { seed: 5, ..Default::default() }).unwrap();
    let mut params = RegisterParams { method: Method::Network, ..Default::default() };
    params.network.model = Some(model);
    let result = register_volumes(&phantom.fixed, &phantom.moving, &params, &Silent).unwrap();
    println!("{:#?}", result.verdict);
    assert_eq!(result.verdict.status, Status::Failed, "{:?}", result.verdict);
}

/// The real head CT against the synthetic head on a grid like it: two anatomies.
#[test]
fn two_different_heads_fail() {
    let ct = std::env::var("DIFFEOREG_REAL_CT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/real-ct/Cranium.inv3"));
    let real = diffeoreg::io::load_volume(&ct, &diffeoreg::io::SeriesChoice::LargestCt, &Silent).unwrap().volume;
    let grid = diffeoreg::volume::Geometry::axis_aligned([122, 122, 80], [2.0; 3], real.geometry.origin_mm).unwrap();
    let real = diffeoreg::volume::resample::resample(
        &real,
        &grid,
        diffeoreg::volume::resample::Interpolation::Linear,
        -1024.0,
    );
    let synthetic = varied_head([112, 128, 96], [1.8, 1.8, 1.8], &HeadVariation::random(22));
    let result = register_volumes(&real, &synthetic, &RegisterParams::default(), &Silent).unwrap();
    println!("{:#?}", result.verdict);
    assert_eq!(result.verdict.status, Status::Failed, "{:?}", result.verdict);
    assert!(result.verdict.reasons.iter().any(|r| r.check == "same_patient"), "{:?}", result.verdict);
}

/// On files: `evaluate` with another pair's field fails; `register --strict` exits with status 3
/// on a failed verdict (the scrambled model), and prints the verdict last.
#[test]
fn the_command_line_reports_failures() {
    let dir = tempfile::tempdir().unwrap();
    let binary = common::binary();
    let phantom = |seed: &str, out: &Path| {
        let run = Command::new(&binary)
            .args([
                "phantom",
                "--max-mm",
                "6",
                "--head-shape",
                "96,96,96",
                "--head-spacing-mm",
                "2,2.2,2.1",
                "--seed",
                seed,
                "--out",
            ])
            .arg(out)
            .output()
            .unwrap();
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    };
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    phantom("3", &a);
    phantom("4", &b);
    // Pair a judged through `fields` (a forward field, and an inverse when given).
    let evaluate = |fields: &[&Path], out: &str| {
        let mut command = Command::new(&binary);
        command.args(["evaluate", "--fixed"]).arg(a.join("fixed.nii.gz")).arg("--moving").arg(a.join("moving.nii.gz"));
        command.arg("--warp").arg(fields[0]);
        if let Some(inverse) = fields.get(1) {
            command.arg("--inverse").arg(inverse);
        }
        command.arg("--out").arg(dir.path().join(out)).output().unwrap()
    };
    let evaluate_other = evaluate(&[&b.join("truth_fwd.nii.gz")], "evaluated");
    let stdout = String::from_utf8_lossy(&evaluate_other.stdout);
    assert!(evaluate_other.status.success(), "{}", String::from_utf8_lossy(&evaluate_other.stderr));
    let report = common::read_json(&dir.path().join("evaluated/evaluation.json"));
    assert_eq!(report["verdict"]["status"], "failed", "{stdout}");
    assert!(stdout.contains("verdict      FAILED"), "{stdout}");
    // The pair's own truth is fine.
    let own = evaluate(&[&a.join("truth_fwd.nii.gz"), &a.join("truth_inv.nii.gz")], "own");
    assert!(own.status.success());
    let report = common::read_json(&dir.path().join("own/evaluation.json"));
    assert_eq!(report["verdict"]["status"], "ok", "{}", String::from_utf8_lossy(&own.stdout));

    let model = dir.path().join("scrambled");
    write_scrambled_model(&model);
    let register = Command::new(&binary)
        .args(["register", "--method", "network", "--strict", "--model"])
        .arg(&model)
        .arg("--fixed")
        .arg(a.join("fixed.nii.gz"))
        .arg("--moving")
        .arg(a.join("moving.nii.gz"))
        .arg("--out")
        .arg(dir.path().join("registered"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&register.stdout);
    assert_eq!(register.status.code(), Some(3), "{stdout}\n{}", String::from_utf8_lossy(&register.stderr));
    let last_lines: Vec<&str> = stdout.lines().rev().take_while(|l| !l.contains("verdict")).collect();
    assert!(stdout.contains("verdict      FAILED") && !last_lines.iter().any(|l| l.contains("NMI ")), "{stdout}");
    let report = common::read_json(&dir.path().join("registered/report.json"));
    assert_eq!(report["verdict"]["status"], "failed");
    assert!(!report["verdict"]["reasons"].as_array().unwrap().is_empty());
}

/// Hybrid keeps a refinement that helps (the guard that returns the network's prediction when
/// the refinement makes the images agree less is tested in `register::pipeline`).
#[test]
fn hybrid_keeps_a_refinement_that_helps() {
    let head = varied_head(SHAPE, SPACING_MM, &HeadVariation::random(6));
    let phantom = make_phantom(&head, &PhantomParams { seed: 6, ..Default::default() }).unwrap();
    let network = RegisterParams { method: Method::Network, ..Default::default() };
    let predicted = register_volumes(&phantom.fixed, &phantom.moving, &network, &Silent).unwrap();
    let hybrid = RegisterParams { method: Method::Hybrid, ..Default::default() };
    let refined = register_volumes(&phantom.fixed, &phantom.moving, &hybrid, &Silent).unwrap();
    assert!(refined.warnings.is_empty(), "{:?}", refined.warnings);
    assert_ne!(refined.warp_fwd, predicted.warp_fwd);
    assert!(refined.metrics.result.forward.image.mse < predicted.metrics.result.forward.image.mse);
}

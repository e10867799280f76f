//! `register` end to end on a phantom with a known answer: each stage brings the moving image
//! closer to the truth and nothing folds; on files, every output is written, Greedy applies
//! our `warp_fwd` as we do, and a cancelled run writes nothing.
//!
//! Measured (80×96×88 head at 2.5 mm, 7 mm deformation, 3°/5 mm rigid offset, pseudo-CT
//! appearance): mean endpoint error 5.61 mm before, 2.27 mm after rigid, 1.44 mm after the
//! deformable stage. SPEC's target (< 1 mm) is not met yet.

mod common;

use diffeoreg::phantom::head::synthetic_head;
use diffeoreg::phantom::{PhantomParams, make_phantom};
use diffeoreg::progress::Silent;
use diffeoreg::register::pipeline::{RegisterParams, register_volumes};
use diffeoreg::volume::DisplacementField;
use diffeoreg::volume::geometry::{norm, sub};

#[test]
fn each_stage_moves_closer_to_the_truth() {
    let ct = synthetic_head([80, 96, 88], [2.5, 2.5, 2.5]);
    let phantom = make_phantom(&ct, &PhantomParams { seed: 11, ..PhantomParams::default() }).unwrap();
    let result = register_volumes(&phantom.fixed, &phantom.moving, &RegisterParams::default(), &Silent).unwrap();
    let head: Vec<usize> = (0..ct.voxels.len()).filter(|&n| ct.voxels[n] > -500.0).collect();
    let epe = |field: &dyn Fn(usize) -> [f64; 3]| {
        head.iter().map(|&n| norm(sub(field(n), phantom.truth_fwd.at(n)))).sum::<f64>() / head.len() as f64
    };
    let rigid_only = DisplacementField::from_fn(ct.geometry.clone(), |x| sub(result.rigid.transform.apply(x), x));
    let (identity, rigid, full) = (epe(&|_| [0.0; 3]), epe(&|n| rigid_only.at(n)), epe(&|n| result.warp_fwd.at(n)));
    println!(
        "EPE identity {identity:.2} mm, rigid {rigid:.2} mm, registered {full:.2} mm; rigid angles {:?}; timings {:?}",
        result.rigid.angles_deg, result.timings
    );
    assert!(rigid < identity && full < 0.75 * rigid, "identity {identity}, rigid {rigid}, registered {full}");
    assert_eq!(result.quality.folding_voxels, 0);
    assert!(result.quality.inverse_consistency_mean_mm < 0.1, "{:?}", result.quality);
}

#[test]
fn register_on_files_writes_outputs_that_greedy_reads() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let case = dir.path().join("case");
    let out = dir.path().join("out");
    let binary = common::binary();
    let phantom = Command::new(&binary).args(["phantom", "--max-mm", "5", "--out"]).arg(&case).output().unwrap();
    assert!(phantom.status.success(), "{}", String::from_utf8_lossy(&phantom.stderr));
    let run = Command::new(&binary)
        .args(["register", "--levels", "4", "--iterations", "40", "--fixed"])
        .arg(case.join("fixed.nii.gz"))
        .arg("--moving")
        .arg(case.join("moving.nii.gz"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("folding voxels 0"), "{stdout}");
    for name in [
        "warp_fwd.nii.gz",
        "warp_inv.nii.gz",
        "moving_warped.nii.gz",
        "fixed_warped.nii.gz",
        "rigid.tfm",
        "report.json",
        "qa/slices.png",
        "qa/checkerboard.png",
        "qa/jacobian.png",
        "qa/tissues.png",
        "qa/grid.png",
    ] {
        assert!(out.join(name).is_file(), "{name} missing");
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["schema_version"], 3);
    assert_eq!(report["verdict"]["status"], "ok", "{}", report["verdict"]);
    // Levels given on the command line all run; one level leaves no later level to match.
    assert_eq!(report["levels_run"], serde_json::json!([4]));
    assert!(report["resolution_match"].is_null());
    assert!(report["intensity_match"].is_null());
    for stage in [
        "load_s",
        "rigid_s",
        "resample_s",
        "local_estimate_s",
        "optimize_s",
        "integrate_s",
        "warp_s",
        "metrics_s",
        "write_s",
        "total_s",
    ] {
        assert!(report["timings"][stage].as_f64().unwrap() >= 0.0, "{stage}");
    }
    assert_eq!(report["inputs"][0]["role"], "fixed");
    // Metrics both ways for the rigid start and the result: the deformable stage improves NMI
    // and MSE in both directions and folds nothing.
    let metrics = &report["metrics"];
    for direction in ["forward", "backward"] {
        let (rigid, result) = (&metrics["rigid"][direction]["image"], &metrics["result"][direction]["image"]);
        assert!(result["nmi"].as_f64().unwrap() > rigid["nmi"].as_f64().unwrap(), "{direction}: {metrics}");
        assert!(result["mse"].as_f64().unwrap() < rigid["mse"].as_f64().unwrap(), "{direction}: {metrics}");
        assert_eq!(metrics["result"][direction]["jacobian"]["folding_voxels"], 0);
    }
    assert!(stdout.contains("rigid      mov→fix") && stdout.contains("result     fix→mov"), "{stdout}");

    let greedy = dir.path().join("greedy.nii.gz");
    common::run_reference(
        "greedy-warp",
        &[&case.join("fixed.nii.gz"), &case.join("moving.nii.gz"), &out.join("warp_fwd.nii.gz"), &greedy],
    );
    let theirs = diffeoreg::io::read_volume(&greedy).unwrap();
    let ours = diffeoreg::io::read_volume(&out.join("moving_warped.nii.gz")).unwrap();
    let inside: Vec<(f32, f32)> =
        ours.voxels.iter().zip(&theirs.voxels).map(|(a, b)| (*a, *b)).filter(|(a, _)| *a > -990.0).collect();
    let mean = inside.iter().map(|(a, b)| (a - b).abs() as f64).sum::<f64>() / inside.len() as f64;
    assert!(inside.len() > 100_000 && mean < 0.5, "mean |ours − greedy| = {mean} HU over {} voxels", inside.len());
}

#[test]
fn a_cancelled_run_writes_nothing() {
    use diffeoreg::progress::{CancelFlag, Progress};
    struct CancelAfter(CancelFlag, std::sync::atomic::AtomicUsize);
    impl Progress for CancelAfter {
        fn start_stage(&self, _: &str, _: u64) {}
        fn advance(&self, _: u64) {
            if self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 5 {
                self.0.cancel();
            }
        }
        fn is_cancelled(&self) -> bool {
            self.0.is_set()
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let ct = synthetic_head([48, 56, 52], [4.0, 4.0, 4.0]);
    let phantom = make_phantom(&ct, &PhantomParams::default()).unwrap();
    let (fixed, moving) = (dir.path().join("fixed.nii.gz"), dir.path().join("moving.nii.gz"));
    diffeoreg::io::write_volume(&fixed, &phantom.fixed, diffeoreg::io::StoredType::Automatic).unwrap();
    diffeoreg::io::write_volume(&moving, &phantom.moving, diffeoreg::io::StoredType::Automatic).unwrap();
    let out = dir.path().join("out");
    let progress = CancelAfter(CancelFlag::default(), Default::default());
    let result = diffeoreg::register::pipeline::register_files(
        &fixed,
        &moving,
        &out,
        &RegisterParams::default(),
        None,
        &progress,
    );
    assert!(matches!(result, Err(diffeoreg::Error::Cancelled)), "{:?}", result.err());
    assert!(!out.exists(), "a cancelled run created {}", out.display());
}

#[test]
fn a_constant_image_is_refused() {
    let ct = synthetic_head([40, 44, 40], [5.0, 5.0, 5.0]);
    let flat = diffeoreg::volume::Volume::filled(ct.geometry.clone(), 40.0);
    for (fixed, moving, role) in [(&ct, &flat, "moving"), (&flat, &ct, "fixed")] {
        let error = register_volumes(fixed, moving, &RegisterParams::default(), &Silent).err().expect("an error");
        let message = error.to_string();
        assert!(message.contains(role) && message.contains("constant"), "{message}");
    }
}

/// A register folder reads back as it was written; an input changed since is named, and a
/// folder from another report schema is refused.
#[test]
fn a_register_folder_reads_back_and_names_changed_inputs() {
    use diffeoreg::register::saved::read_outputs;
    let dir = tempfile::tempdir().unwrap();
    let phantom = diffeoreg::phantom::demo_phantom([48, 52, 44], [4.0, 4.5, 4.0]).unwrap();
    let (fixed, moving) = (dir.path().join("fixed.nii.gz"), dir.path().join("moving.nii.gz"));
    diffeoreg::io::write_volume(&fixed, &phantom.fixed, diffeoreg::io::StoredType::Automatic).unwrap();
    diffeoreg::io::write_volume(&moving, &phantom.moving, diffeoreg::io::StoredType::Automatic).unwrap();
    let out = dir.path().join("out");
    let params = RegisterParams::default();
    let report = diffeoreg::register::pipeline::register_files(
        &fixed,
        &moving,
        &out,
        &params,
        None,
        &diffeoreg::progress::Silent,
    )
    .unwrap();
    let saved = read_outputs(&out, &diffeoreg::progress::Silent).unwrap();
    assert!(saved.warnings.is_empty(), "{:?}", saved.warnings);
    assert_eq!(saved.registration.verdict, report.verdict);
    let json = |e: &diffeoreg::metrics::evaluation::Evaluation| serde_json::to_value(e).unwrap();
    assert_eq!(json(&saved.registration.metrics.result), json(&report.metrics.result));
    assert_eq!(
        saved.registration.rigid.transform.apply([1.0, 2.0, 3.0]).map(|v| (v * 1e6).round()),
        diffeoreg::io::read_transform(&out.join("rigid.tfm"))
            .unwrap()
            .apply([1.0, 2.0, 3.0])
            .map(|v| (v * 1e6).round())
    );
    assert_eq!(saved.fixed.volume, diffeoreg::io::read_volume(&fixed).unwrap());
    // The moving image changes on disk: it is still shown, with a warning naming it.
    let mut changed = phantom.moving.clone();
    changed.voxels[0] += 100.0;
    diffeoreg::io::write_volume(&moving, &changed, diffeoreg::io::StoredType::Automatic).unwrap();
    let saved = read_outputs(&out, &diffeoreg::progress::Silent).unwrap();
    assert!(
        saved.warnings.iter().any(|w| w.contains("moving.nii.gz") && w.contains("changed")),
        "{:?}",
        saved.warnings
    );
    // Another schema is refused by name.
    let text = std::fs::read_to_string(out.join("report.json")).unwrap();
    let old = text.replacen("\"schema_version\": 3", "\"schema_version\": 2", 1);
    std::fs::write(out.join("report.json"), old).unwrap();
    let error = read_outputs(&out, &diffeoreg::progress::Silent).err().unwrap().to_string();
    assert!(error.contains("report.json") && error.contains("schema 2"), "{error}");
}

/// A pseudo-CT whose field of view ends inside the head: the run says how much of the fixed
/// body it does not cover (the pair as given, uncropped, gives no warning: above).
#[test]
fn a_moving_image_that_covers_part_of_the_body_is_named_in_the_warnings() {
    use diffeoreg::volume::{Geometry, Volume};
    let ct = synthetic_head([80, 96, 88], [2.5, 2.5, 2.5]);
    let phantom = make_phantom(&ct, &PhantomParams { seed: 11, ..PhantomParams::default() }).unwrap();
    // The moving image from its slice 30 up: the lower third of the head is missing.
    let g = &phantom.moving.geometry;
    let [nx, ny, nz] = g.shape;
    let first = 30;
    let geometry =
        Geometry::new([nx, ny, nz - first], g.spacing_mm, g.index_to_world([0.0, 0.0, first as f64]), g.direction)
            .unwrap();
    let cropped = Volume::new(geometry, phantom.moving.voxels[nx * ny * first..].to_vec()).unwrap();
    let mut params = RegisterParams::default();
    (params.optimize.levels, params.optimize.iterations) = (vec![4], vec![5]);
    let result = register_volumes(&phantom.fixed, &cropped, &params, &Silent).unwrap();
    let warning = result.warnings.iter().find(|w| w.contains("no data for")).unwrap_or_else(|| {
        panic!("no field-of-view warning among {:?}", result.warnings);
    });
    let share: f64 = warning.split("no data for ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    // The fixed body whose rigidly aligned point falls below slice 30 of the whole moving grid.
    let fixed = &phantom.fixed;
    let body: Vec<usize> = (0..fixed.voxels.len()).filter(|&n| fixed.voxels[n] > -500.0).collect();
    let to_moving = g.world_to_index_map();
    let below = body
        .iter()
        .filter(|&&n| to_moving.apply(result.rigid.transform.apply(fixed.geometry.world_of(n)))[2] < first as f64)
        .count() as f64
        / body.len() as f64;
    println!("{warning} (body below slice {first}: {:.1} %)", 100.0 * below);
    assert!((share - 100.0 * below).abs() < 2.0, "{share} % reported, {:.1} % below the cut", 100.0 * below);
}

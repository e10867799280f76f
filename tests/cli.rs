//! The `info`, `convert`, `phantom` and demo `register` commands as a user runs them.

mod common;

use std::process::{Command, Output};

use common::binary;
use diffeoreg::io::{StoredType, read_volume, write_volume};
use diffeoreg::volume::{Geometry, Volume};

fn run(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(binary()).args(args).output().unwrap()
}

fn sample(dir: &std::path::Path) -> std::path::PathBuf {
    let geometry = Geometry::axis_aligned([6, 5, 4], [0.5, 0.75, 3.0], [-10.0, 20.0, 30.0]).unwrap();
    let volume = Volume::new(geometry, (0..120).map(|v| v as f32 - 1000.0).collect()).unwrap();
    let path = dir.join("ct.nii.gz");
    write_volume(&path, &volume, StoredType::Automatic).unwrap();
    path
}

#[test]
fn info_describes_geometry_and_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = sample(dir.path());
    let text = run(&["info".as_ref(), path.as_os_str()]);
    assert!(text.status.success());
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(stdout.contains("6 × 5 × 4 voxels") && stdout.contains("0.5000 × 0.7500 × 3.0000 mm"), "{stdout}");
    assert!(stdout.contains("-1000 .. -881") && stdout.contains("LPS"), "{stdout}");

    let json = run(&["info".as_ref(), "--json".as_ref(), path.as_os_str()]);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value["geometry"]["shape"], serde_json::json!([6, 5, 4]));
    assert_eq!(value["geometry"]["origin_mm"], serde_json::json!([-10.0, 20.0, 30.0]));
    assert_eq!(value["value_range"], serde_json::json!([-1000.0, -881.0]));
}

#[test]
fn convert_nifti_to_nifti_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = sample(dir.path());
    let out = dir.path().join("copy.nii");
    let result = run(&["convert".as_ref(), path.as_os_str(), out.as_os_str()]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    assert_eq!(read_volume(&out).unwrap(), read_volume(&path).unwrap());
}

#[test]
fn errors_name_the_path_and_exit_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere.nii.gz");
    let result = run(&["info".as_ref(), missing.as_os_str()]);
    assert_eq!(result.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("nowhere.nii.gz") && stderr.contains("does not exist"), "{stderr}");

    let path = sample(dir.path());
    let bad = dir.path().join("out.png");
    let result = run(&["convert".as_ref(), path.as_os_str(), bad.as_os_str()]);
    assert_eq!(result.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&result.stderr).contains("must end in .nii or .nii.gz"));
    assert!(!bad.exists());
}

#[test]
fn phantom_writes_a_case_that_greedy_reads_like_we_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("case");
    let result = run(&["phantom".as_ref(), "--out".as_ref(), out.as_os_str(), "--max-mm".as_ref(), "6".as_ref()]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("phantom.json")).unwrap()).unwrap();
    assert_eq!(report["parameters"]["max_mm"], 6.0);
    let fixed = read_volume(&out.join("fixed.nii.gz")).unwrap();
    let moving = read_volume(&out.join("moving.nii.gz")).unwrap();
    let truth_fwd = diffeoreg::io::read_field(&out.join("truth_fwd.nii.gz")).unwrap();
    let truth_inv = diffeoreg::io::read_field(&out.join("truth_inv.nii.gz")).unwrap();
    assert!(truth_fwd.geometry.same_grid(&fixed.geometry, 1e-4));
    assert!(truth_inv.geometry.same_grid(&moving.geometry, 1e-4));
    diffeoreg::io::read_transform(&out.join("truth_rigid.tfm")).unwrap();

    let greedy = dir.path().join("greedy.nii.gz");
    common::run_reference(
        "greedy-warp",
        &[&out.join("fixed.nii.gz"), &out.join("moving.nii.gz"), &out.join("truth_fwd.nii.gz"), &greedy],
    );
    let theirs = read_volume(&greedy).unwrap();
    let ours = diffeoreg::volume::resample::warp_through_field(
        &moving,
        &truth_fwd,
        diffeoreg::volume::resample::Interpolation::Linear,
        f32::NAN,
    )
    .unwrap();
    let pairs: Vec<(f32, f32)> =
        ours.voxels.iter().zip(&theirs.voxels).filter(|(a, _)| a.is_finite()).map(|(a, b)| (*a, *b)).collect();
    let mean = pairs.iter().map(|(a, b)| (a - b).abs() as f64).sum::<f64>() / pairs.len() as f64;
    assert!(pairs.len() > fixed.geometry.voxel_count() / 2 && mean < 0.5, "mean |ours − greedy| = {mean} HU");
}

/// Without a display, `register` with no inputs registers the app's built-in demo case and
/// reports its endpoint error against the known answer (here with the grey-value map, off by
/// default, asked for and checked).
#[test]
fn register_without_inputs_runs_the_demo_case() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let result = run(&["register".as_ref(), "--intensity-match".as_ref(), "--out".as_ref(), out.as_os_str()]);
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(result.status.success(), "{stdout}{}", String::from_utf8_lossy(&result.stderr));
    assert!(stdout.contains("registered the built-in demo case"), "{stdout}");
    let line = stdout.lines().find(|l| l.contains("endpoint error")).expect("an endpoint error line");
    let mean: f64 = line.split("mean ").nth(1).and_then(|s| s.split(' ').next()).unwrap().parse().unwrap();
    // Doing nothing leaves 5.4 mm on this case; rigid alone 2.7 mm.
    assert!(mean < 2.5, "{line}");
    let report = common::read_json(&out.join("report.json"));
    assert_eq!(report["inputs"][0]["path"], "(built-in demo, in memory)");
    // The demo's 1.6–1.9 mm voxels need the full-resolution level; its pseudo-CT is blurrier
    // than its CT, so the CT is the image blurred to match.
    assert_eq!(report["levels_run"], serde_json::json!([4, 2, 1]));
    assert_eq!(report["resolution_match"]["blurred"], "fixed");
    assert!(report["resolution_match"]["sigma_voxels"].as_f64().unwrap() > 0.0);
    // Its pseudo-CT under-estimates bone: the map of the CT's grey values onto the pseudo-CT's
    // is monotone, compresses the bone range, and brings the two closer.
    let knots: Vec<[f64; 2]> = serde_json::from_value(report["intensity_match"]["knots"].clone()).unwrap();
    assert!(knots.windows(2).all(|w| w[1][0] > w[0][0] && w[1][1] > w[0][1]), "{knots:?}");
    let at = |x: f64| {
        let upper = knots.iter().position(|k| k[0] > x).unwrap();
        let (a, b) = (knots[upper - 1], knots[upper]);
        a[1] + (b[1] - a[1]) * (x - a[0]) / (b[0] - a[0])
    };
    let slope = (at(1.45) - at(1.25)) / 0.2;
    assert!((0.6..0.9).contains(&slope), "bone slope {slope} (the phantom's 0.75)");
    let match_ = &report["intensity_match"];
    assert!(match_["mse_after"].as_f64().unwrap() < match_["mse_before"].as_f64().unwrap());
    assert!(out.join("warp_fwd.nii.gz").exists() && out.join("qa").is_dir());

    // One input without the other is refused before any work.
    let result =
        run(&["register".as_ref(), "--fixed".as_ref(), "x.nii.gz".as_ref(), "--out".as_ref(), out.as_os_str()]);
    assert!(!result.status.success());
    assert!(String::from_utf8_lossy(&result.stderr).contains("--moving"));
}

/// Register's calibration and parameter options: a curve that cannot be used is refused with the
/// file and line named, before anything is written; so is an unknown similarity, or a similarity
/// option given to the measure it does not belong to, or a local NCC window out of range.
#[test]
fn register_refuses_a_bad_calibration_or_similarity() {
    let dir = tempfile::tempdir().unwrap();
    let curve = dir.path().join("curve.txt");
    std::fs::write(&curve, "-1000 0\n0 1\n200\n").unwrap();
    let out = dir.path().join("out");
    let refused =
        run(&["register".as_ref(), "--out".as_ref(), out.as_os_str(), "--calibration".as_ref(), curve.as_os_str()]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("curve.txt") && stderr.contains("line 3"), "{stderr}");
    assert!(!out.exists(), "nothing is written");
    let refused =
        run(&["register".as_ref(), "--out".as_ref(), out.as_os_str(), "--similarity".as_ref(), "ncc".as_ref()]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("unknown --similarity \"ncc\""), "{stderr}");
    let refused = run(&[
        "register".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
        "--similarity".as_ref(),
        "mse".as_ref(),
        "--similarity-a".as_ref(),
        "0.1".as_ref(),
    ]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--similarity-a applies to nmse"));
    let lncc = |extra: &[&str]| {
        let mut args: Vec<&std::ffi::OsStr> = vec!["register".as_ref(), "--out".as_ref(), out.as_os_str()];
        args.extend(["--similarity", "lncc"].iter().chain(extra).map(|a| -> &std::ffi::OsStr { a.as_ref() }));
        String::from_utf8_lossy(&run(&args).stderr).to_string()
    };
    assert!(lncc(&["--similarity-radius", "0"]).contains("--similarity-radius must be 1 to 8 voxels, not 0"));
    assert!(lncc(&["--similarity-a", "0.1"]).contains("--similarity-a applies to nmse"));
    let refused = run(&[
        "register".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
        "--similarity".as_ref(),
        "nmse".as_ref(),
        "--similarity-radius".as_ref(),
        "3".as_ref(),
    ]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--similarity-radius applies to lncc"));
    assert!(!out.exists(), "nothing is written");
}

//! The `info` and `convert` commands as a user runs them.

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

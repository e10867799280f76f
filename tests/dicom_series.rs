//! DICOM series written by pydicom load at the right world points, agree with the NIfTI they
//! were written from and with dcm2niix, and broken series give errors that name the files.

mod common;

use std::path::Path;
use std::process::Command;

use common::{assert_same_voxels_at_same_points, binary, read_f32, reference_folder};
use diffeoreg::io::{SeriesChoice, load_volume, read_volume};
use diffeoreg::progress::Silent;

#[test]
fn convert_gives_the_voxels_of_the_nifti_the_series_was_written_from() {
    let folder = reference_folder("dicom-series");
    let out = tempfile::tempdir().unwrap();
    let converted = out.path().join("ct.nii.gz");
    let status = Command::new(binary()).arg("convert").arg(folder.join("series")).arg(&converted).output().unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(stderr.contains("skipped 1 file"), "the stray text file is reported: {stderr}");
    let ours = read_volume(&converted).unwrap();
    let reference = read_volume(&folder.join("reference.nii.gz")).unwrap();
    assert!(ours.geometry.same_grid(&reference.geometry, 1e-3), "{:?} vs {:?}", ours.geometry, reference.geometry);
    assert_eq!(assert_same_voxels_at_same_points(&ours, &reference, 0.0, "convert"), 48 * 40 * 30);
}

#[test]
fn convert_agrees_with_dcm2niix() {
    let folder = reference_folder("dicom-series");
    let out = tempfile::tempdir().unwrap();
    let run = Command::new("dcm2niix")
        .args(["-z", "y", "-f", "dcm2niix", "-o"])
        .arg(out.path())
        .arg(folder.join("series"))
        .output()
        .expect("dcm2niix is installed (scripts/install-test-tools.sh)");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stdout));
    let theirs = read_volume(&out.path().join("dcm2niix.nii.gz")).unwrap();
    let ours = load_volume(&folder.join("series"), &SeriesChoice::LargestCt, &Silent).unwrap().volume;
    assert_eq!(assert_same_voxels_at_same_points(&ours, &theirs, 0.0, "dcm2niix"), 48 * 40 * 30);
}

#[test]
fn enhanced_multiframe_ct_uses_per_frame_positions_and_rescale() {
    let folder = reference_folder("dicom-series");
    let loaded = load_volume(&folder.join("enhanced"), &SeriesChoice::LargestCt, &Silent).unwrap();
    let reference = read_volume(&folder.join("reference.nii.gz")).unwrap();
    assert!(loaded.volume.geometry.same_grid(&reference.geometry, 1e-3), "{:?}", loaded.volume.geometry);
    assert_eq!(loaded.volume.voxels, read_f32(&folder.join("enhanced/expected.f32")));
    // A single multi-frame file is a series too.
    let single = load_volume(&folder.join("enhanced/enhanced_ct.dcm"), &SeriesChoice::LargestCt, &Silent).unwrap();
    assert_eq!(single.volume, loaded.volume);
}

fn load_error(name: &str) -> String {
    let folder = reference_folder("dicom-series");
    load_volume(&folder.join(name), &SeriesChoice::LargestCt, &Silent).unwrap_err().to_string()
}

fn names_a_file_of(message: &str, folder: &Path) -> bool {
    message.contains(&folder.display().to_string()) && message.contains("IM")
}

#[test]
fn a_missing_slice_is_an_error_naming_the_files_around_the_gap() {
    let message = load_error("missing");
    assert!(message.contains("1 slice(s) missing"), "{message}");
    assert!(names_a_file_of(&message, &reference_folder("dicom-series").join("missing")), "{message}");
}

#[test]
fn a_truncated_file_is_an_error_naming_it() {
    let message = load_error("truncated");
    assert!(names_a_file_of(&message, &reference_folder("dicom-series").join("truncated")), "{message}");
}

#[test]
fn inconsistent_slices_in_one_series_are_an_error() {
    let message = load_error("inconsistent");
    assert!(message.contains("different pixel spacing") && message.contains("mixed series"), "{message}");
}

#[test]
fn gantry_tilt_is_an_error() {
    let message = load_error("tilt");
    assert!(message.contains("gantry tilt") && message.contains("slice"), "{message}");
}

#[test]
fn two_series_in_one_folder_load_the_largest_and_say_so() {
    let folder = reference_folder("dicom-series");
    let loaded = load_volume(&folder.join("mixed"), &SeriesChoice::LargestCt, &Silent).unwrap();
    assert_eq!(loaded.volume.geometry.shape, [48, 40, 30]);
    assert!(
        loaded.warnings.iter().any(|w| w.contains("holds 2 series") && w.contains("10 frames")),
        "{:?}",
        loaded.warnings
    );
    let message = load_error("ambiguous");
    assert!(message.contains("several series of the same size") && message.contains("--series"), "{message}");

    let info = Command::new(binary()).args(["info", "--json"]).arg(folder.join("mixed")).output().unwrap();
    assert!(info.status.success(), "{}", String::from_utf8_lossy(&info.stderr));
    let json: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    let series = json["source"]["Dicom"]["series_found"].as_array().unwrap();
    assert_eq!(series.len(), 2);
    let scout = series.iter().find(|s| s["frame_count"] == 10).unwrap()["series_uid"].as_str().unwrap().to_string();
    let chosen = load_volume(&folder.join("mixed"), &SeriesChoice::Uid(scout), &Silent).unwrap();
    assert_eq!(chosen.volume.geometry.shape, [48, 40, 10]);
}

#[test]
fn a_folder_without_images_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("readme.txt"), "no images here").unwrap();
    let message = load_volume(dir.path(), &SeriesChoice::LargestCt, &Silent).unwrap_err().to_string();
    assert!(message.contains("no DICOM image series") && message.contains("1 file(s) skipped"), "{message}");
}

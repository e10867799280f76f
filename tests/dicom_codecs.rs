//! Compressed and non-default transfer syntaxes from pydicom's test data decode to the same
//! stored values as pydicom (with pylibjpeg) decodes them.

mod common;

use std::path::Path;

use common::{read_f32, read_json, reference_folder};
use diffeoreg::io::dicom::decode_stored_values;

/// Lossy codecs may round differently between decoders; this bounds the difference as a share
/// of the image's value range.
const LOSSY_TOLERANCE: f32 = 0.02;

/// Files dicom-pixeldata 0.10 does not decode like pydicom, and why. None is a CT encoding we
/// expect in practice; each is listed in README.md.
const KNOWN_FAILURES: [(&str, &str); 6] = [
    (
        "J2K_pixelrep_mismatch.dcm",
        "its JPEG 2000 stream is unsigned while PixelRepresentation says signed; pydicom corrects that, dicom-pixeldata does not",
    ),
    ("JPGExtended.dcm", "12-bit lossy JPEG (process 4) is not supported by dicom-pixeldata's JPEG decoder"),
    ("rtdose_expb.dcm", "32-bit pixels (RT dose) are not supported by dicom-pixeldata"),
    ("rtdose_expb_1frame.dcm", "32-bit pixels (RT dose) are not supported by dicom-pixeldata"),
    ("rtdose_rle.dcm", "32-bit pixels (RT dose) are not supported by dicom-pixeldata"),
    ("rtdose_rle_1frame.dcm", "32-bit pixels (RT dose) are not supported by dicom-pixeldata"),
];

#[test]
fn transfer_syntaxes_decode_like_pydicom() {
    let folder = reference_folder("pydicom-data");
    let manifest = read_json(&folder.join("manifest.json"));
    let mut failures = Vec::new();
    let mut syntaxes = std::collections::BTreeSet::new();
    let files = manifest["files"].as_array().unwrap();
    for entry in files {
        let file = Path::new(entry["file"].as_str().unwrap());
        let name = entry["name"].as_str().unwrap();
        let syntax = entry["syntax"].as_str().unwrap();
        let expected = read_f32(&folder.join(format!("{name}.f32")));
        let ours = match decode_stored_values(file) {
            Ok(values) => values,
            Err(error) => {
                failures.push(format!("{name} ({syntax}): {error}"));
                continue;
            }
        };
        if ours.len() != expected.len() {
            failures.push(format!("{name} ({syntax}): {} values, pydicom has {}", ours.len(), expected.len()));
            continue;
        }
        let range = expected.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
        let worst = ours.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let allowed = if entry["lossy"].as_bool().unwrap() { LOSSY_TOLERANCE * range } else { 0.0 };
        if worst > allowed {
            failures.push(format!("{name} ({syntax}): differs from pydicom by up to {worst}"));
        } else {
            syntaxes.insert(syntax.to_string());
        }
    }
    println!("decoded like pydicom: {} of {} files; syntaxes: {syntaxes:?}", files.len() - failures.len(), files.len());
    for skipped in manifest["skipped"].as_array().unwrap() {
        println!("not compared (pydicom itself fails): {}", skipped["file"]);
    }
    let unexpected: Vec<&String> = failures
        .iter()
        .filter(|f| !KNOWN_FAILURES.iter().any(|(name, _)| f.starts_with(&format!("{name} ("))))
        .collect();
    for (name, reason) in KNOWN_FAILURES {
        println!("known failure: {name}: {reason}");
    }
    assert!(unexpected.is_empty(), "files that do not decode like pydicom:\n{unexpected:#?}");
    assert!(files.len() - failures.len() >= 30, "only {} files decoded like pydicom", files.len() - failures.len());
    for needed in ["RLE Lossless", "JPEG-LS Lossless Image Compression", "JPEG 2000 Image Compression (Lossless Only)"]
    {
        assert!(syntaxes.contains(needed), "no file of {needed} was checked");
    }
    assert!(syntaxes.iter().any(|s| s.starts_with("JPEG Lossless")), "no JPEG lossless file was checked");
    assert!(syntaxes.iter().any(|s| s.starts_with("Deflated")), "no deflated file was checked");
}

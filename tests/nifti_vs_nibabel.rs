//! NIfTI geometry and voxels agree with nibabel, reading its files and having it read ours.

mod common;

use std::path::Path;

use common::{matrix4, ras_affine_to_lps_point, read_f32, read_json, reference_folder, run_reference};
use diffeoreg::io::{StoredType, read_nifti, write_field, write_volume};
use diffeoreg::volume::geometry::{mat_mul, norm, sub};
use diffeoreg::volume::{DisplacementField, Geometry, Volume};

/// Largest distance between our corner points and those nibabel's affine gives.
fn corner_error_mm(geometry: &Geometry, affine_ras: &[[f64; 4]; 4]) -> f64 {
    let last = geometry.shape.map(|n| (n - 1) as f64);
    (0..8)
        .map(|n| {
            let index = [
                if n & 1 == 0 { 0.0 } else { last[0] },
                if n & 2 == 0 { 0.0 } else { last[1] },
                if n & 4 == 0 { 0.0 } else { last[2] },
            ];
            norm(sub(geometry.index_to_world(index), ras_affine_to_lps_point(affine_ras, index)))
        })
        .fold(0.0, f64::max)
}

#[test]
fn files_written_by_nibabel_load_at_the_same_world_points() {
    let folder = reference_folder("nibabel-cases");
    for name in ["oblique_sform.nii.gz", "qform_only.nii", "scaled_int16.nii.gz", "float64.nii"] {
        let path = folder.join(name);
        let ours = diffeoreg::io::read_volume(&path).unwrap();
        let theirs = read_json(&folder.join(format!("{name}.json")));
        let error = corner_error_mm(&ours.geometry, &matrix4(&theirs["affine_ras"]));
        assert!(error < 1e-4, "{name}: corners differ by {error} mm");
        let expected = read_f32(&folder.join(format!("{name}.f32")));
        assert_eq!(expected.len(), ours.voxels.len(), "{name}");
        for (a, b) in ours.voxels.iter().zip(&expected) {
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{name}: {a} vs nibabel {b}");
        }
    }
}

fn oblique_geometry() -> Geometry {
    let (c, s) = (0.35f64.cos(), 0.35f64.sin());
    let direction =
        mat_mul(&[[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], &[[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]]);
    Geometry::new([9, 8, 6], [0.75, 1.25, 2.0], [31.0, -12.5, 140.0], direction).unwrap()
}

fn check_nibabel_reads(path: &Path, geometry: &Geometry, values: &[f32]) {
    run_reference("nibabel-read", &[path]);
    let theirs = read_json(Path::new(&format!("{}.json", path.display())));
    let error = corner_error_mm(geometry, &matrix4(&theirs["affine_ras"]));
    assert!(error < 1e-4, "{}: nibabel places corners {error} mm away", path.display());
    let data = read_f32(Path::new(&format!("{}.f32", path.display())));
    assert_eq!(data, values, "{}", path.display());
}

#[test]
fn files_we_write_are_read_by_nibabel_at_the_same_world_points() {
    let dir = tempfile::tempdir().unwrap();
    let geometry = oblique_geometry();
    let integral = Volume::new(geometry.clone(), (0..432).map(|v| (v as f32) * 3.0 - 600.0).collect()).unwrap();
    let fractional = Volume::new(geometry.clone(), (0..432).map(|v| (v as f32) * 0.37 - 20.0).collect()).unwrap();
    for (name, volume) in [("int16.nii.gz", &integral), ("float.nii", &fractional)] {
        let path = dir.path().join(name);
        write_volume(&path, volume, StoredType::Automatic).unwrap();
        check_nibabel_reads(&path, &geometry, &volume.voxels);
    }

    let field = DisplacementField::from_fn(geometry.clone(), |p| [0.01 * p[0], -0.02 * p[1], 0.5]);
    let path = dir.path().join("field.nii.gz");
    write_field(&path, &field).unwrap();
    let ours = read_nifti(&path).unwrap();
    assert_eq!(ours.intent_code, 1007);
    let values: Vec<f32> = field.components_mm.concat();
    check_nibabel_reads(&path, &geometry, &values);
    let theirs = read_json(Path::new(&format!("{}.json", path.display())));
    assert_eq!(theirs["shape"], serde_json::json!([9, 8, 6, 1, 3]));
    assert_eq!(theirs["intent_code"], 1007);
}

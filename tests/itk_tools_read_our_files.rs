//! ITK-based tools agree with us: Greedy applies our displacement fields as we do, and
//! SimpleITK reads our transform files (and we read its) mapping points the same.

mod common;

use std::path::Path;

use common::{read_json, reference_folder, run_reference};
use diffeoreg::io::{StoredType, read_transform, read_volume, write_field, write_transform, write_volume};
use diffeoreg::volume::affine::AffineTransform;
use diffeoreg::volume::geometry::{mat_mul, norm, sub};
use diffeoreg::volume::resample::{Interpolation, warp_through_field};
use diffeoreg::volume::{DisplacementField, Geometry, Volume};

/// A smooth image in the range 0..1000 on an oblique grid.
fn smooth_image() -> Volume {
    let (c, s) = (0.2f64.cos(), 0.2f64.sin());
    let direction =
        mat_mul(&[[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], &[[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]]);
    let geometry = Geometry::new([40, 36, 30], [1.2, 1.0, 1.5], [-24.0, -18.0, -22.0], direction).unwrap();
    let field = DisplacementField::from_fn(geometry.clone(), |p| {
        let r2 = (p[0] * p[0] + p[1] * p[1] * 1.3 + p[2] * p[2] * 0.8) / 300.0;
        [1000.0 * (-r2).exp() + 5.0 * p[0], 0.0, 0.0]
    });
    let [values, _, _] = field.components_mm;
    Volume::new(geometry, values).unwrap()
}

#[test]
fn greedy_applies_our_displacement_field_as_we_do() {
    let dir = tempfile::tempdir().unwrap();
    let image = smooth_image();
    // The reference grid differs from the image grid (axis-aligned, other spacing).
    let reference = Geometry::axis_aligned([34, 30, 26], [1.1, 1.2, 1.3], [-18.0, -17.0, -16.0]).unwrap();
    let field = DisplacementField::from_fn(reference.clone(), |p| {
        [3.0 * (p[1] / 15.0).sin(), -2.0 * (p[2] / 12.0).cos(), 1.5 + 0.05 * p[0]]
    });
    let (image_path, reference_path, field_path, greedy_path) = (
        dir.path().join("image.nii.gz"),
        dir.path().join("reference.nii.gz"),
        dir.path().join("warp.nii.gz"),
        dir.path().join("greedy.nii.gz"),
    );
    write_volume(&image_path, &image, StoredType::Float32).unwrap();
    write_volume(&reference_path, &Volume::filled(reference.clone(), 0.0), StoredType::Float32).unwrap();
    write_field(&field_path, &field).unwrap();
    run_reference("greedy-warp", &[&reference_path, &image_path, &field_path, &greedy_path]);

    let theirs = read_volume(&greedy_path).unwrap();
    assert!(theirs.geometry.same_grid(&reference, 1e-3));
    let ours = warp_through_field(&image, &field, Interpolation::Linear, f32::NAN).unwrap();
    let mean_difference = |other: &Volume| {
        let (mut sum, mut count) = (0.0f64, 0usize);
        for (a, b) in ours.voxels.iter().zip(&other.voxels) {
            if a.is_finite() && b.is_finite() {
                sum += (a - b).abs() as f64;
                count += 1;
            }
        }
        (sum / count as f64, count)
    };
    let (mean, count) = mean_difference(&theirs);
    // The field matters: ignoring it would differ by far more than the tolerance.
    let unwarped = diffeoreg::volume::resample::resample(&image, &reference, Interpolation::Linear, f32::NAN);
    let (without_field, _) = mean_difference(&unwarped);
    assert!(without_field > 10.0, "the test field changes the image by only {without_field}");
    println!("mean |ours − greedy| = {mean:.4} over {count} voxels (image range 0..1000)");
    assert!(count > reference.voxel_count() / 2, "only {count} samples inside");
    assert!(mean < 0.5, "mean |ours − greedy| = {mean}");
}

fn points_and_mapped(json: &serde_json::Value, key: Option<&str>) -> Vec<([f64; 3], [f64; 3])> {
    let point = |v: &serde_json::Value| -> [f64; 3] { std::array::from_fn(|d| v[d].as_f64().unwrap()) };
    let mapped = match key {
        Some(name) => &json["mapped"][name],
        None => &json["mapped"],
    };
    json["points"]
        .as_array()
        .unwrap()
        .iter()
        .zip(mapped.as_array().unwrap())
        .map(|(p, m)| (point(p), point(m)))
        .collect()
}

#[test]
fn we_read_transforms_written_by_simpleitk() {
    let folder = reference_folder("sitk-transforms");
    let expected = read_json(&folder.join("expected.json"));
    for name in ["euler", "euler_zyx", "versor", "affine", "composite"] {
        let transform = read_transform(&folder.join(format!("{name}.tfm"))).unwrap();
        for (p, mapped) in points_and_mapped(&expected, Some(name)) {
            let error = norm(sub(transform.apply(p), mapped));
            assert!(error < 1e-6, "{name}: {p:?} maps {error} mm away from SimpleITK");
        }
    }
}

#[test]
fn simpleitk_reads_our_transforms() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rigid.tfm");
    let transform = AffineTransform::from_euler([0.05, -0.1, 0.2], [3.0, -4.5, 6.0], [12.0, -8.0, 40.0]);
    write_transform(&path, &transform).unwrap();
    let out = dir.path().join("mapped.json");
    run_reference("sitk-map-points", &[&path, Path::new(&out)]);
    for (p, mapped) in points_and_mapped(&read_json(&out), None) {
        let error = norm(sub(transform.apply(p), mapped));
        assert!(error < 1e-9, "{p:?} maps {error} mm away in SimpleITK");
    }
}

//! Rigid pre-alignment recovers a known rotation and translation, also between frames.

mod common;

use diffeoreg::phantom::head::synthetic_head;
use diffeoreg::progress::Silent;
use diffeoreg::rigid::{RigidMetric, RigidParams, RigidResult, align};
use diffeoreg::volume::affine::AffineTransform;
use diffeoreg::volume::geometry::{Geometry, mat_mul, norm, sub, transpose};
use diffeoreg::volume::resample::{Interpolation, resample_mapped_by};
use diffeoreg::volume::{Calibration, Volume};

#[test]
fn recovers_a_known_rotation_and_translation() {
    let ct = synthetic_head([80, 96, 88], [2.5, 2.5, 2.5]);
    let truth = AffineTransform::from_euler(
        [4f64.to_radians(), -3f64.to_radians(), 5f64.to_radians()],
        [6.0, -4.0, 3.5],
        [2.0, -3.0, 1.0],
    );
    // The moving image on its own coarser grid: moving(y) = ct(truth⁻¹(y)), so that
    // fixed(x) = moving(truth(x)).
    let grid = Geometry::axis_aligned([72, 84, 70], [2.8, 2.8, 3.1], [-100.0, -117.0, -107.0]).unwrap();
    let inverse = truth.inverse();
    let moving = resample_mapped_by(&ct, &grid, Interpolation::Linear, -1000.0, |y| inverse.apply(y));
    let calibration = Calibration::default();
    // Both metrics; NMI also with the moving image's grey values remapped (as a pseudo-CT's
    // differ from a CT's), which MSE could not follow.
    let remapped = Volume { voxels: moving.voxels.iter().map(|v| 0.6 * v + 150.0).collect(), ..moving.clone() };
    // NMI's hard-binned 64 × 64 histogram makes its cost a staircase for the pattern search:
    // on the remapped image it stops 0.76° and 0.80 mm off (measured), hence the wider bound.
    // Mattes MI's B-spline window makes its cost smooth: 0.5 even on the remapped image.
    for (metric, moving, bound) in [
        (RigidMetric::Mse, &moving, 0.5),
        (RigidMetric::Nmi, &moving, 0.5),
        (RigidMetric::Nmi, &remapped, 1.0),
        (RigidMetric::MattesMi, &moving, 0.5),
        (RigidMetric::MattesMi, &remapped, 0.5),
    ] {
        let params = RigidParams { metric, ..RigidParams::default() };
        let result = align(&calibration.apply(&ct), &calibration.apply(moving), &params, &Silent).unwrap();
        check(&ct, &truth, &result, metric, bound);
    }
    // The MSE on a regular subset of the voxels (every 2nd along each axis at full resolution,
    // as on a 128³ CT with the default sample budget) recovers the motion as well.
    let params = RigidParams { max_mse_samples: 100_000, ..RigidParams::default() };
    let result = align(&calibration.apply(&ct), &calibration.apply(&moving), &params, &Silent).unwrap();
    check(&ct, &truth, &result, RigidMetric::Mse, 0.5);
}

fn check(ct: &Volume, truth: &AffineTransform, result: &RigidResult, metric: RigidMetric, bound: f64) {
    let relative = mat_mul(&result.transform.matrix, &transpose(&truth.matrix));
    let angle_deg =
        ((relative[0][0] + relative[1][1] + relative[2][2] - 1.0) / 2.0).clamp(-1.0, 1.0).acos().to_degrees();
    let head: Vec<[f64; 3]> = (0..ct.voxels.len())
        .step_by(13)
        .filter(|&n| ct.voxels[n] > -500.0)
        .map(|n| ct.geometry.index_to_world([(n % 80) as f64, ((n / 80) % 96) as f64, (n / (80 * 96)) as f64]))
        .collect();
    let point_error =
        head.iter().map(|&x| norm(sub(result.transform.apply(x), truth.apply(x)))).sum::<f64>() / head.len() as f64;
    println!(
        "{metric:?}: rotation error {angle_deg:.3}°, mean point error {point_error:.3} mm, {} evaluations, overlap {:.2}",
        result.evaluations, result.overlap
    );
    assert!(
        angle_deg < bound && point_error < bound,
        "{metric:?}: rotation error {angle_deg}°, point error {point_error} mm"
    );
}

#[test]
fn images_that_cannot_overlap_are_an_error() {
    let ct = synthetic_head([40, 48, 44], [5.0, 5.0, 5.0]);
    let far = Geometry::axis_aligned([40, 48, 44], [5.0; 3], [2000.0, 0.0, 0.0]).unwrap();
    let mut moving = ct.clone();
    moving.geometry = far;
    let calibration = Calibration::default();
    let params = RigidParams { initial_translation_mm: 1.0, ..RigidParams::default() };
    // Centres of mass line the images up whatever their distance, so overlap is found; only an
    // empty image has no centre.
    assert!(align(&calibration.apply(&ct), &calibration.apply(&moving), &params, &Silent).is_ok());
    let empty = diffeoreg::volume::Volume::filled(ct.geometry.clone(), -1000.0);
    let message = align(&calibration.apply(&ct), &calibration.apply(&empty), &params, &Silent).unwrap_err().to_string();
    assert!(message.contains("empty"), "{message}");
}

/// Pairs in unrelated frames made from the real head CT, with a pseudo-CT's appearance and a
/// deformation: the pseudo-CT from another scanner in any orientation (up to 180° about each
/// axis) and up to 200 mm away. Rigid alignment must match the truth as well as it does for the
/// same pair in one frame (the seed draws the same deformation and offset either way).
#[test]
fn finds_the_pose_of_a_real_ct_in_another_scanners_frame() {
    use diffeoreg::metrics::{body_mask, endpoint_error};
    use diffeoreg::phantom::{PhantomParams, make_phantom};
    let ct = common::real_ct_at(2.0);
    let calibration = Calibration::default();
    let body = body_mask(&ct, &calibration);
    let rigid_error = |params: &PhantomParams| {
        let phantom = make_phantom(&ct, params).unwrap();
        let (fixed, moving) = (calibration.apply(&phantom.fixed), calibration.apply(&phantom.moving));
        let result = align(&fixed, &moving, &RigidParams::default(), &Silent).unwrap();
        let found = result.transform.to_displacement_field(&ct.geometry);
        endpoint_error(&found, &phantom.truth_fwd, &body).unwrap().mean_mm
    };
    for seed in [1, 2, 3, 4] {
        let same_frame = rigid_error(&PhantomParams::varied(seed, false));
        let other_frame =
            rigid_error(&PhantomParams { frame_rotation_deg: 180.0, ..PhantomParams::varied(seed, true) });
        println!("seed {seed}: rigid-only error {same_frame:.2} mm in one frame, {other_frame:.2} mm across frames");
        assert!(
            other_frame < same_frame + 0.3,
            "seed {seed}: {same_frame:.2} mm in one frame, {other_frame:.2} mm across"
        );
    }
}

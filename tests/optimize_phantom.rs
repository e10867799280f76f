//! Direct optimisation on a phantom with a known deformation (rigid part left out): how close
//! it gets to the truth. Measured, on a 96×112×96 head at 2 mm with the pseudo-CT appearance
//! (noise off): mean endpoint error 0.97 mm where doing nothing gives 3.0 mm (2.1 mm before the
//! full-resolution level, the coarse levels' blur and resolution matching; 1.10 mm before
//! grey-value matching), with the images aligned as well as the truth aligns them.

use diffeoreg::diffeo::integrate::exp;
use diffeoreg::diffeo::jacobian::{determinant, folding_count};
use diffeoreg::diffeo::pyramid::refine_field;
use diffeoreg::phantom::appearance::PseudoCtAppearance;
use diffeoreg::phantom::head::synthetic_head;
use diffeoreg::phantom::{PhantomParams, make_phantom};
use diffeoreg::progress::Silent;
use diffeoreg::register::optimize::{OptimizeParams, optimize};
use diffeoreg::volume::Calibration;
use diffeoreg::volume::geometry::{norm, sub};
use diffeoreg::volume::resample::{Interpolation, warp_through_field};

#[test]
fn moves_towards_a_known_deformation_without_folding() {
    let ct = synthetic_head([96, 112, 96], [2.0, 2.0, 2.0]);
    let params = PhantomParams {
        max_mm: 7.0,
        seed: 5,
        max_rotation_deg: 0.0,
        max_translation_mm: 0.0,
        moving_spacing_factor: [1.0, 1.0, 1.0],
        appearance: PseudoCtAppearance { noise_hu: 0.0, ..PseudoCtAppearance::default() },
        ..Default::default()
    };
    let phantom = make_phantom(&ct, &params).unwrap();
    assert_eq!(phantom.moving.geometry, ct.geometry);
    let calibration = Calibration::default();
    let (fixed, moving) = (calibration.apply(&ct), calibration.apply(&phantom.moving));
    let shape = ct.geometry.shape;
    let spacing = ct.geometry.spacing_mm;
    // This phantom's pseudo-CT differs from its CT by a grey-value map alone (bone × 0.75, soft
    // tissue + 12 HU), which the monotone map undoes: asked for here (off by default, where
    // real-CT pairs decided it; without it this case gives 1.17 mm, 0.39× doing nothing).
    let options = OptimizeParams { match_intensity: true, ..OptimizeParams::default() };
    let result = optimize(&fixed.voxels, &moving.voxels, shape, spacing, &options, &Silent).unwrap();
    let velocity = refine_field(&result.velocity, shape, result.factor, 1);
    let forward_voxels = exp(&velocity, 7);
    let forward = forward_voxels.to_displacement_mm(&ct.geometry);

    let head: Vec<usize> = (0..ct.voxels.len()).filter(|&n| ct.voxels[n] > -500.0).collect();
    let epe = |u: &dyn Fn(usize) -> [f64; 3]| {
        head.iter().map(|&n| norm(sub(u(n), phantom.truth_fwd.at(n)))).sum::<f64>() / head.len() as f64
    };
    let (ours, identity) = (epe(&|n| forward.at(n)), epe(&|_| [0.0; 3]));
    let normalized_mse = |field: &diffeoreg::volume::DisplacementField| {
        let warped =
            calibration.apply(&warp_through_field(&phantom.moving, field, Interpolation::Linear, f32::NAN).unwrap());
        let terms = warped.voxels.iter().zip(&fixed.voxels).filter(|(w, _)| w.is_finite());
        terms.map(|(w, f)| ((w - f) as f64).powi(2) / (0.04 + ((w - f) as f64).powi(2))).sum::<f64>()
            / fixed.voxels.len() as f64
    };
    let (after_truth, after_ours) = (normalized_mse(&phantom.truth_fwd), normalized_mse(&forward));
    let folding = folding_count(&determinant(&forward_voxels));
    println!(
        "EPE {ours:.3} mm (identity {identity:.3} mm); nMSE ours {after_ours:.4}, truth {after_truth:.4}; folding {folding}"
    );
    assert!(ours < 0.36 * identity, "mean endpoint error {ours} mm, doing nothing gives {identity} mm");
    assert!(after_ours < 1.3 * after_truth, "nMSE after ours {after_ours}, after the truth {after_truth}");
    assert_eq!(folding, 0);
}

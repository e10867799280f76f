//! Phantoms carry a true answer: the two ground-truth fields invert each other, and warping
//! the moving image by the forward truth gives the CT back.

use diffeoreg::diffeo::warp::{Outside, sample};
use diffeoreg::phantom::appearance::PseudoCtAppearance;
use diffeoreg::phantom::head::synthetic_head;
use diffeoreg::phantom::{PhantomParams, make_phantom};
use diffeoreg::volume::geometry::{add, mat_vec, norm, sub};
use diffeoreg::volume::resample::{Interpolation, resample, warp_through_field};

fn mean_abs_inside(a: &[f32], b: &[f32], mask: &[bool]) -> f64 {
    let (sum, count) = a.iter().zip(b).zip(mask).filter(|(_, m)| **m).fold((0.0, 0usize), |(s, c), ((x, y), _)| {
        if x.is_finite() && y.is_finite() { (s + (x - y).abs() as f64, c + 1) } else { (s, c) }
    });
    sum / count.max(1) as f64
}

#[test]
fn ground_truth_fields_invert_each_other_and_undo_the_deformation() {
    // Blurred, so that what remains after two trilinear resamplings is geometry, not the
    // interpolation of 1000 HU edges.
    let mut ct = synthetic_head([80, 96, 88], [2.5, 2.5, 2.5]);
    let blur = PseudoCtAppearance { blur_sigma_voxels: 2.0, ..PseudoCtAppearance::identity() };
    blur.apply(&mut ct, &mut diffeoreg::phantom::random::SeededRng::new(0));
    let params =
        PhantomParams { max_mm: 7.0, seed: 3, appearance: PseudoCtAppearance::identity(), ..Default::default() };
    let phantom = make_phantom(&ct, &params).unwrap();
    assert!(
        phantom.max_deformation_mm > 0.5 * params.max_mm && phantom.max_deformation_mm < 1.5 * params.max_mm,
        "largest deformation {} mm for max_mm {}",
        phantom.max_deformation_mm,
        params.max_mm
    );
    assert_ne!(phantom.moving.geometry.shape, ct.geometry.shape, "the moving image has its own grid");

    // fwd then inv returns to the start.
    let inv = &phantom.truth_inv;
    let to_index = inv.geometry.world_to_index_matrix();
    let mut errors = Vec::new();
    for n in (0..ct.geometry.voxel_count()).step_by(7) {
        let g = &ct.geometry;
        let index = [(n % 80) as f64, ((n / 80) % 96) as f64, (n / (80 * 96)) as f64];
        let x = g.index_to_world(index);
        let y = add(x, phantom.truth_fwd.at(n));
        let p = mat_vec(&to_index, sub(y, inv.geometry.origin_mm)).map(|v| v as f32);
        if (0..3).any(|d| p[d] < 0.0 || p[d] > (inv.geometry.shape[d] - 1) as f32) {
            continue;
        }
        let back: [f64; 3] = std::array::from_fn(|d| {
            sample(&inv.components_mm[d], inv.geometry.shape, p, Outside::Clamp).unwrap() as f64
        });
        errors.push(norm(sub(add(y, back), x)));
    }
    let mean = errors.iter().sum::<f64>() / errors.len() as f64;
    assert!(errors.len() > 10_000 && mean < 0.1, "mean |inv(fwd(x)) − x| = {mean} mm over {} points", errors.len());

    // Warping the moving image by the forward truth gives back the CT; ignoring it does not.
    let head: Vec<bool> = ct.voxels.iter().map(|&v| v > -500.0).collect();
    let recovered = warp_through_field(&phantom.moving, &phantom.truth_fwd, Interpolation::Linear, f32::NAN).unwrap();
    let unaligned = resample(&phantom.moving, &ct.geometry, Interpolation::Linear, f32::NAN);
    let (after, before) =
        (mean_abs_inside(&recovered.voxels, &ct.voxels, &head), mean_abs_inside(&unaligned.voxels, &ct.voxels, &head));
    println!("mean |CT − moving∘truth| = {after:.2} HU, without the truth {before:.2} HU");
    assert!(after < 0.2 * before, "mean |CT − moving∘truth| = {after} HU, without the truth {before} HU");
}

#[test]
fn the_same_seed_gives_the_same_phantom() {
    let ct = synthetic_head([40, 48, 44], [5.0, 5.0, 5.0]);
    let params = PhantomParams::default();
    let (a, b) = (make_phantom(&ct, &params).unwrap(), make_phantom(&ct, &params).unwrap());
    assert_eq!(a.moving, b.moving);
    assert_eq!(a.truth_fwd, b.truth_fwd);
    let c = make_phantom(&ct, &PhantomParams { seed: 2, ..params }).unwrap();
    assert_ne!(a.truth_fwd, c.truth_fwd);
}

//! A real head CT: Cranium.inv3 of Debian's `invesalius-examples` (GPL-2, fetched at run time by
//! `scripts/fetch-real-ct.sh`, which the README's test command runs; never committed). It is
//! read in patient orientation, made into pairs with known deformations, and registered.
//!
//! Set `DIFFEOREG_REAL_CT` to use another copy.

mod common;

use diffeoreg::io::{SeriesChoice, load_volume};
use diffeoreg::metrics::verdict::Status;
use diffeoreg::metrics::{body_mask, endpoint_error};
use diffeoreg::phantom::appearance::{AIR_HU, PseudoCtAppearance, air_cavities};
use diffeoreg::phantom::{PhantomParams, make_phantom};
use diffeoreg::progress::Silent;
use diffeoreg::register::pipeline::{RegisterParams, register_volumes};
use diffeoreg::volume::geometry::{add, mat_vec, norm, sub};
use diffeoreg::volume::resample::{Interpolation, sample};
use diffeoreg::volume::{Calibration, Volume};

use common::{real_ct_at, real_ct_path};

fn real_ct() -> Volume {
    load_volume(&real_ct_path(), &SeriesChoice::LargestCt, &Silent).unwrap().volume
}

#[test]
fn reads_the_real_ct_in_patient_orientation() {
    let ct = real_ct();
    let g = &ct.geometry;
    assert_eq!(g.shape, [256, 256, 108]);
    assert!((g.spacing_mm[0] - 0.957).abs() < 1e-3 && (g.spacing_mm[2] - 1.5).abs() < 1e-9);
    let (low, high) = ct.value_range().unwrap();
    assert!(low == -1024.0 && high > 2000.0, "HU range {low}..{high}");
    // Superior is +k: the skull's vault narrows towards the top of the scan.
    let body = |k: usize| (0..256 * 256).filter(|&n| ct.voxels[k * 256 * 256 + n] > -300.0).count();
    assert!(body(100) < body(30) / 2, "body area at k = 100: {}, at k = 30: {}", body(100), body(30));
    // Anterior is −j (LPS): the paranasal sinuses lie in front of the head's centre.
    let centroid_j = |mask: &[bool]| {
        let (sum, count) = mask
            .iter()
            .enumerate()
            .filter(|(_, m)| **m)
            .fold((0.0, 0.0), |(s, c), (n, _)| (s + ((n / 256) % 256) as f64, c + 1.0));
        sum / count
    };
    let head: Vec<bool> = ct.voxels.iter().map(|&v| v > AIR_HU).collect();
    let (head_j, sinus_j) = (centroid_j(&head), centroid_j(&air_cavities(&ct)));
    assert!(sinus_j < head_j - 10.0, "air cavities at j {sinus_j:.1}, head at j {head_j:.1}");
}

/// The phantom's truth is right on a real CT, also when the pseudo-CT lies in another scanner's
/// frame: with no appearance change, the moving image sampled where `truth_fwd` sends each CT
/// voxel gives the CT back far better than through the rigid part alone (the two trilinear
/// resamplings of the skull's edges leave tens of HU either way), and `truth_inv` undoes
/// `truth_fwd`.
#[test]
fn real_ct_phantoms_carry_their_truth_across_frames() {
    for unrelated in [false, true] {
        truth_carries(unrelated);
    }
}

fn truth_carries(unrelated: bool) {
    let ct = real_ct_at(2.0);
    let mut params = PhantomParams::varied(7, unrelated);
    params.appearance = PseudoCtAppearance::identity();
    params.moving_spacing_factor = [0.75; 3];
    let phantom = make_phantom(&ct, &params).unwrap();
    let offset = norm(sub(phantom.moving.geometry.origin_mm, ct.geometry.origin_mm));
    assert!(offset > 50.0 || !unrelated, "the moving grid should lie in another frame, {offset:.1} mm away");
    let g = &ct.geometry;
    let to_index = phantom.moving.geometry.world_to_index_matrix();
    let inverse: Vec<Volume> = (0..3)
        .map(|d| Volume {
            geometry: phantom.truth_inv.geometry.clone(),
            voxels: phantom.truth_inv.components_mm[d].clone(),
        })
        .collect();
    let rigid_only = phantom.rigid.inverse();
    let (mut total, mut total_rigid, mut count) = (0.0, 0.0, 0);
    for n in (0..g.voxel_count()).step_by(7) {
        let [nx, ny, _] = g.shape;
        let index = [n % nx, (n / nx) % ny, n / (nx * ny)];
        // Away from the grid's faces: the scan is cut through the neck, and what the rigid offset
        // and the deformation bring in from beyond the CT is air in the pseudo-CT.
        let margin = |d: usize| (25.0 / g.spacing_mm[d]) as usize;
        if ct.voxels[n] < -300.0 || (0..3).any(|d| index[d] < margin(d) || index[d] + margin(d) >= g.shape[d]) {
            continue;
        }
        let x = g.index_to_world(index.map(|i| i as f64));
        let y = add(x, phantom.truth_fwd.at(n));
        let p = mat_vec(&to_index, sub(y, phantom.moving.geometry.origin_mm));
        let at = |y: [f64; 3]| {
            let p = mat_vec(&to_index, sub(y, phantom.moving.geometry.origin_mm));
            (sample(&phantom.moving, p, Interpolation::Linear, -1000.0) - ct.voxels[n]).abs() as f64
        };
        total += at(y);
        total_rigid += at(rigid_only.apply(x));
        count += 1;
        // truth_inv at y brings y back to x.
        let back: [f64; 3] = std::array::from_fn(|d| sample(&inverse[d], p, Interpolation::Linear, f32::NAN) as f64);
        if back.iter().all(|v| v.is_finite()) {
            let error = norm(sub(add(y, back), x));
            assert!(error < 0.5, "truth_inv does not undo truth_fwd at {x:?}: {error:.2} mm");
        }
    }
    let (mean_hu, rigid_hu) = (total / count as f64, total_rigid / count as f64);
    println!(
        "unrelated frame {unrelated}: |moving ∘ truth − CT| {mean_hu:.1} HU, through the rigid part alone {rigid_hu:.1} HU"
    );
    assert!(mean_hu < 0.3 * rigid_hu, "|moving ∘ truth − CT| {mean_hu:.1} HU, rigid part alone {rigid_hu:.1} HU");
}

/// The pseudo-CT of a varied pair has no couch or head rest, and filled cavities when drawn.
#[test]
fn varied_pseudo_cts_show_only_the_patient() {
    let ct = real_ct_at(2.0);
    let seed = (1..40).find(|&s| PhantomParams::varied(s, false).appearance.fill_air_cavities).unwrap();
    let mut params = PhantomParams::varied(seed, false);
    params.appearance.noise_hu = 0.0;
    let phantom = make_phantom(&ct, &params).unwrap();
    let dense = |v: &Volume| v.voxels.iter().filter(|&&h| h > AIR_HU).count();
    let patient = diffeoreg::volume::filter::largest_component(
        &phantom.moving.voxels.iter().map(|&h| h > AIR_HU).collect::<Vec<bool>>(),
        phantom.moving.geometry.shape,
    );
    assert_eq!(patient.iter().filter(|&&p| p).count(), dense(&phantom.moving), "only one piece of non-air is left");
    let cavities = |v: &Volume| air_cavities(v).iter().filter(|&&c| c).count();
    assert!(cavities(&ct) > 1000, "the CT has {} cavity voxels", cavities(&ct));
    assert!(cavities(&phantom.moving) * 20 < cavities(&ct), "cavities left: {}", cavities(&phantom.moving));
}

/// A CI-sized registration of a real-CT pair (2 mm voxels, a varied development seed): better
/// than rigid alignment inside the head, both ways, no folding, a verdict that is not failed,
/// and better for comparing only the patient than for comparing the CT's head rest too.
#[test]
fn registers_a_real_ct_pair_better_than_rigid_alignment() {
    let ct = real_ct_at(2.0);
    let phantom = make_phantom(&ct, &PhantomParams::varied(3, false)).unwrap();
    let params = RegisterParams::default();
    let result = register_volumes(&phantom.fixed, &phantom.moving, &params, &Silent).unwrap();
    let body = body_mask(&phantom.fixed, &Calibration::default());
    let rigid = result.rigid.transform.to_displacement_field(&ct.geometry);
    let rigid_epe = endpoint_error(&rigid, &phantom.truth_fwd, &body).unwrap().mean_mm;
    let epe = endpoint_error(&result.warp_fwd, &phantom.truth_fwd, &body).unwrap().mean_mm;
    let moving_body = body_mask(&phantom.moving, &Calibration::default());
    let inverse_epe = endpoint_error(&result.warp_inv, &phantom.truth_inv, &moving_body).unwrap().mean_mm;
    println!(
        "rigid {rigid_epe:.2} mm, registered {epe:.2} mm (inverse {inverse_epe:.2} mm); verdict {:?}",
        result.verdict
    );
    assert!(
        epe < 0.8 * rigid_epe && inverse_epe < 0.8 * rigid_epe,
        "rigid {rigid_epe:.2}, registered {epe:.2} / {inverse_epe:.2}"
    );
    assert_eq!(result.quality.folding_voxels, 0);
    assert_ne!(result.verdict.status, Status::Failed, "{:?}", result.verdict);
    // The CT has a head rest, the pseudo-CT (made from MRI) does not: compared too, it pulls the
    // head's surface.
    let everything = RegisterParams { patient_only: false, ..RegisterParams::default() };
    let result = register_volumes(&phantom.fixed, &phantom.moving, &everything, &Silent).unwrap();
    let with_rest = endpoint_error(&result.warp_fwd, &phantom.truth_fwd, &body).unwrap().mean_mm;
    println!("comparing the head rest too: {with_rest:.2} mm");
    assert!(epe < with_rest, "patient only {epe:.2} mm, with the head rest {with_rest:.2} mm");
}

/// The shipped model on held-out real-CT pairs (the model was trained on seeds 200–231 of this
/// CT and on synthetic heads; of the held-out seeds 101–108, 101 is where the learned part helps
/// most, and on 104, 106 and 107 it does not help: README, "The network on real anatomy").
/// On seed 101 at the CT's own resolution: better than rigid alignment, no folding, and better
/// than the closed-form local estimate it corrects — the same model with its head as training
/// starts (zero: the estimate alone), so the test fails if the trained head is replaced by an
/// untrained one. In physical units: seed 105 made from the CT at its own grid and resampled to
/// 1.5 and 2.0 mm (where the model's `grid_mm` picks other factors; the range is 0.5–2
/// mm) is registered as well, and all three must be within the 20 % the issue asks for.
/// Measured with the shipped model (session 29: 80 pairs from scratch, epoch 45) by
/// `benches/real_ct.py` and `benches/spacings.py`: seed 101 1.002 mm forward, 0.49× rigid
/// (2.025 mm), 0.87× the estimate alone (1.150 mm); seed 105 1.703 / 1.742 / 1.950 mm at the
/// three grids (1.15×). Session 27's model: 1.014 mm on seed 101; 1.712 / 1.748 / 1.920 mm on
/// seed 105 (1.12×).
const RATIO_TO_RIGID: f64 = 0.6;
const RATIO_TO_ESTIMATE: f64 = 0.95;
const SPACINGS_WITHIN: f64 = 1.2;

#[test]
fn the_shipped_network_improves_on_its_local_estimate_on_a_held_out_real_ct_pair() {
    use diffeoreg::net::model::{Model, save_model};
    use diffeoreg::register::pipeline::Method;
    let ct = real_ct();
    let phantom = make_phantom(&ct, &PhantomParams::varied(101, false)).unwrap();
    let body = body_mask(&phantom.fixed, &Calibration::default());
    let device = burn::tensor::Device::flex();
    let builtin = Model::builtin(&device).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let untrained = dir.path().join("untrained");
    save_model(&untrained, &builtin.spec, &builtin.spec.network.init(&device)).unwrap();
    let run = |model: Option<std::path::PathBuf>| {
        let mut params = RegisterParams { method: Method::Network, ..RegisterParams::default() };
        params.network.model = model;
        let result = register_volumes(&phantom.fixed, &phantom.moving, &params, &Silent).unwrap();
        let epe = endpoint_error(&result.warp_fwd, &phantom.truth_fwd, &body).unwrap().mean_mm;
        (result, epe)
    };
    let (trained, trained_epe) = run(None);
    let (_, estimate_epe) = run(Some(untrained));
    let rigid = trained.rigid.transform.to_displacement_field(&ct.geometry);
    let rigid_epe = endpoint_error(&rigid, &phantom.truth_fwd, &body).unwrap().mean_mm;
    println!("rigid {rigid_epe:.3} mm, estimate alone {estimate_epe:.3} mm, shipped network {trained_epe:.3} mm");
    assert!(trained_epe < RATIO_TO_RIGID * rigid_epe, "rigid {rigid_epe:.3}, network {trained_epe:.3} mm");
    assert!(
        trained_epe < RATIO_TO_ESTIMATE * estimate_epe,
        "estimate alone {estimate_epe:.3}, network {trained_epe:.3} mm"
    );
    assert_eq!(trained.quality.folding_voxels, 0);
    assert_ne!(trained.verdict.status, Status::Failed, "{:?}", trained.verdict);

    let mut errors = vec![];
    for spacing in [None, Some(1.5), Some(2.0)] {
        let ct = spacing.map_or_else(real_ct, real_ct_at);
        let phantom = make_phantom(&ct, &PhantomParams::varied(105, false)).unwrap();
        let body = body_mask(&phantom.fixed, &Calibration::default());
        let params = RegisterParams { method: Method::Network, ..RegisterParams::default() };
        let result = register_volumes(&phantom.fixed, &phantom.moving, &params, &Silent).unwrap();
        let epe = endpoint_error(&result.warp_fwd, &phantom.truth_fwd, &body).unwrap().mean_mm;
        println!("seed 105 at {spacing:?} mm: network {epe:.3} mm");
        assert_eq!(result.quality.folding_voxels, 0);
        errors.push(epe);
    }
    let (low, high) =
        (errors.iter().copied().fold(f64::INFINITY, f64::min), errors.iter().copied().fold(0.0, f64::max));
    assert!(high <= SPACINGS_WITHIN * low, "endpoint error at 0.96 x 0.96 x 1.5, 1.5 and 2.0 mm: {errors:?}");
}

/// `hybrid` on a real-CT development pair at the CT's own grid is better than the network's
/// prediction it starts from, both ways, with no folding. Seed 4 is where charging the whole
/// start (the default of sessions 24–30) lost to the network (mean forward / inverse 0.84 / 0.78
/// mm against the network's 0.76 / 0.71): the refinement went to the energy's own optimum and
/// dropped what the network knew beyond it. Charging three quarters of the start (session 31):
/// 0.69 / 0.63 mm (`benches/real_ct.py`, development seeds 1–4).
#[test]
fn hybrid_improves_on_the_networks_start_on_a_real_ct_pair() {
    use diffeoreg::register::pipeline::Method;
    let ct = real_ct();
    let phantom = make_phantom(&ct, &PhantomParams::varied(4, false)).unwrap();
    let (body, moving_body) =
        (body_mask(&phantom.fixed, &Calibration::default()), body_mask(&phantom.moving, &Calibration::default()));
    let run = |method: Method| {
        let params = RegisterParams { method, ..RegisterParams::default() };
        let result = register_volumes(&phantom.fixed, &phantom.moving, &params, &Silent).unwrap();
        let forward = endpoint_error(&result.warp_fwd, &phantom.truth_fwd, &body).unwrap().mean_mm;
        let inverse = endpoint_error(&result.warp_inv, &phantom.truth_inv, &moving_body).unwrap().mean_mm;
        (result, forward, inverse)
    };
    let (_, network_fwd, network_inv) = run(Method::Network);
    let (hybrid, hybrid_fwd, hybrid_inv) = run(Method::Hybrid);
    println!(
        "seed 4: network {network_fwd:.3} / {network_inv:.3} mm, hybrid {hybrid_fwd:.3} / {hybrid_inv:.3} mm; {:?}",
        hybrid.warnings
    );
    assert!(hybrid.warnings.iter().all(|w| !w.contains("prediction is returned")), "{:?}", hybrid.warnings);
    assert!(hybrid_fwd < 0.95 * network_fwd, "forward: network {network_fwd:.3}, hybrid {hybrid_fwd:.3} mm");
    assert!(hybrid_inv < 0.95 * network_inv, "inverse: network {network_inv:.3}, hybrid {hybrid_inv:.3} mm");
    assert_eq!(hybrid.quality.folding_voxels, 0);
    assert_ne!(hybrid.verdict.status, Status::Failed, "{:?}", hybrid.verdict);
}

/// `info` reads the project and says where its position came from; `phantom --varied
/// --unrelated-frame` records every parameter it drew.
#[test]
fn the_command_line_reads_the_project_and_makes_varied_pairs() {
    let ct = real_ct_path();
    let info = std::process::Command::new(common::binary()).args(["info", "--json"]).arg(&ct).output().unwrap();
    assert!(info.status.success(), "{}", String::from_utf8_lossy(&info.stderr));
    let value: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(value["geometry"]["shape"], serde_json::json!([256, 256, 108]));
    assert!(value["warnings"][0].as_str().unwrap().contains("stores no patient position"), "{value}");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pair");
    let run = std::process::Command::new(common::binary())
        .args(["phantom", "--varied", "--unrelated-frame", "--seed", "12", "--ct"])
        .arg(&ct)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let description = common::read_json(&out.join("phantom.json"));
    let drawn: PhantomParams = serde_json::from_value(description["parameters"].clone()).unwrap();
    assert_eq!(drawn, PhantomParams::varied(12, true));
    assert!(drawn.appearance.body_only && drawn.frame_translation_mm == 200.0);
    for name in ["fixed.nii.gz", "moving.nii.gz", "truth_fwd.nii.gz", "truth_inv.nii.gz", "truth_rigid.tfm"] {
        assert!(out.join(name).exists(), "{name}");
    }
}

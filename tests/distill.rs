//! The distillation objective (`train::distill`): its loss against the velocity computed
//! directly, the padding of a patch beyond its grid left out, its gradient against a central
//! difference, Adam steps of the network fitting a target through it, targets moved between
//! levels, and the target cache (read back, recomputed for other parameters or images, damaged files named).

use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};
use diffeoreg::diffeo::VectorField;
use diffeoreg::diffeo::smooth::{SmoothParams, Smoother};
use diffeoreg::diffeo::tensor::tensor_values;
use diffeoreg::net::UNetConfig;
use diffeoreg::patch::sampler::PatchRef;
use diffeoreg::register::pipeline::RegisterParams;
use diffeoreg::train::distill::{
    cached_target, content_hash, distillation_loss, on_level, target_path, weighted_distillation_loss,
};

const PATCH: usize = 8;

fn smooth() -> SmoothParams {
    SmoothParams { alpha: 2.0, gamma: 0.05, pad: 4, ..SmoothParams::default() }
}

/// A smooth, varied whitened momentum for `items` patches, [B, 3, P, P, P] flattened.
fn momentum(items: usize, phase: f32) -> Vec<f32> {
    (0..items * 3 * PATCH * PATCH * PATCH).map(|v| 0.3 * (v as f32 * 0.37 + phase).sin()).collect()
}

fn field_of(z: &[f32], item: usize) -> VectorField {
    let n = PATCH * PATCH * PATCH;
    VectorField {
        shape: [PATCH; 3],
        components: std::array::from_fn(|c| z[(3 * item + c) * n..(3 * item + c + 1) * n].to_vec()),
    }
}

#[test]
fn the_loss_compares_velocities_inside_the_grid_and_its_gradient_is_exact() {
    let half = Smoother::half([PATCH; 3], &smooth());
    let z = momentum(1, 0.0);
    let velocity = half.apply(&field_of(&z, 0));
    // A grid smaller than the patch along two axes: the patch starts at 0 there and is padded by
    // repeating the grid's last voxels, which the loss must not count.
    let shape = [6, 11, 5];
    let start = [0, 3, 0];
    let item = PatchRef { pair: 0, start };
    // The target equal to the velocity inside the grid (and anything elsewhere): no loss.
    let matching = VectorField::from_fn(shape, |p| {
        let q = [p[0] as usize, p[1] as usize - start[1].min(p[1] as usize), p[2] as usize];
        if p[1] as usize >= start[1] && q[1] < PATCH {
            let n = q[0] + PATCH * (q[1] + PATCH * q[2]);
            std::array::from_fn(|c| velocity.components[c][n] as f64)
        } else {
            [9.0, -9.0, 9.0]
        }
    });
    let (zero, zero_gradient) = distillation_loss(&z, &[item], &[&matching], PATCH, &half);
    assert!(zero < 1e-12, "{zero}");
    assert!(zero_gradient.iter().all(|g| g.abs() < 1e-9));

    // A target of constant (0.2, −0.1, 0.05): the loss is ½ Σ|v − t|² over the 6·8·5 voxels
    // inside, divided by their number.
    let constant = VectorField::from_fn(shape, |_| [0.2, -0.1, 0.05]);
    let (loss, gradient) = distillation_loss(&z, &[item], &[&constant], PATCH, &half);
    // ½ Σ|v − t|² over the voxels inside with x < `columns`, divided by their number.
    let direct_loss = |columns: usize| {
        let mut sum = 0.0f64;
        for k in 0..5 {
            for j in 0..8 {
                for i in 0..columns {
                    let n = i + PATCH * (j + PATCH * k);
                    let r = [0.2, -0.1, 0.05];
                    sum += (0..3).map(|c| (velocity.components[c][n] as f64 - r[c]).powi(2)).sum::<f64>();
                }
            }
        }
        0.5 * sum / (columns * 8 * 5) as f64
    };
    let direct = direct_loss(6);
    assert!((loss - direct).abs() < 1e-6 * direct, "{loss} vs {direct}");

    // A central difference along a random direction.
    let direction: Vec<f32> = (0..z.len()).map(|v| ((v * 7919 % 113) as f32 / 56.5 - 1.0) * 0.1).collect();
    let at = |t: f32| -> f64 {
        let moved: Vec<f32> = z.iter().zip(&direction).map(|(a, d)| a + t * d).collect();
        distillation_loss(&moved, &[item], &[&constant], PATCH, &half).0
    };
    let eps = 1e-2;
    let numeric = (at(eps) - at(-eps)) / (2.0 * eps as f64);
    let analytic: f64 = gradient.iter().zip(&direction).map(|(g, d)| (*g as f64) * (*d as f64)).sum();
    assert!((numeric - analytic).abs() < 1e-3 * analytic.abs(), "central difference {numeric} vs gradient {analytic}");

    // Two items, the second already matching its target: the mean loss, the first item's
    // gradient halved, the second's zero.
    let mut two = z.clone();
    two.extend_from_slice(&z);
    let items = [item, PatchRef { pair: 1, start }];
    let (mean, both) = distillation_loss(&two, &items, &[&constant, &matching], PATCH, &half);
    assert!((mean - 0.5 * loss).abs() < 1e-9 * loss, "{mean} vs {loss}/2");
    for (g, s) in both[..z.len()].iter().zip(&gradient) {
        assert!((g - 0.5 * s).abs() <= 1e-6 * s.abs().max(1e-6));
    }
    assert!(both[z.len()..].iter().all(|g| g.abs() < 1e-9));

    // Weights (the body's share per voxel): all ones change nothing; ones on the slab x < 3 and
    // zeros elsewhere give the loss of that slab alone; the gradient again by a central difference.
    let ones = vec![1.0f32; shape.iter().product()];
    let (same, same_gradient) = weighted_distillation_loss(&z, &[item], &[&constant], &[Some(&ones)], PATCH, &half);
    assert!((same - loss).abs() < 1e-9 * loss && same_gradient == gradient, "{same} vs {loss}");
    let slab: Vec<f32> = (0..ones.len()).map(|n| if n % shape[0] < 3 { 1.0 } else { 0.0 }).collect();
    let weighted = |z: &[f32]| weighted_distillation_loss(z, &[item], &[&constant], &[Some(&slab)], PATCH, &half);
    let (slab_loss, slab_gradient) = weighted(&z);
    let direct = direct_loss(3);
    assert!((slab_loss - direct).abs() < 1e-6 * direct, "{slab_loss} vs {direct}");
    let at = |t: f32| -> f64 {
        let moved: Vec<f32> = z.iter().zip(&direction).map(|(a, d)| a + t * d).collect();
        weighted(&moved).0
    };
    let numeric = (at(eps) - at(-eps)) / (2.0 * eps as f64);
    let analytic: f64 = slab_gradient.iter().zip(&direction).map(|(g, d)| (*g as f64) * (*d as f64)).sum();
    assert!((numeric - analytic).abs() < 1e-3 * analytic.abs(), "central difference {numeric} vs gradient {analytic}");
    // A patch wholly outside the body: no loss, no gradient.
    let air = vec![0.0f32; ones.len()];
    let (nothing, no_gradient) = weighted_distillation_loss(&z, &[item], &[&constant], &[Some(&air)], PATCH, &half);
    assert!(nothing == 0.0 && no_gradient.iter().all(|g| *g == 0.0));
}

/// Adam steps of a small network through the distillation gradient bring its velocity towards
/// a target (a smooth swirl on the patch).
#[test]
fn adam_steps_through_the_gradient_fit_the_network_to_a_target() {
    let half = Smoother::half([PATCH; 3], &smooth());
    let device = Device::flex().autodiff();
    device.seed(11);
    let mut model = UNetConfig::new().with_base_channels(4).with_whitened_output(true).init(&device);
    let n = PATCH * PATCH * PATCH;
    let input: Vec<f32> = (0..2 * n).map(|v| 1.0 + 0.1 * ((v % n) as f32 * 0.21 + (v / n) as f32).sin()).collect();
    let input = Tensor::<5>::from_data(TensorData::new(input, [1, 2, PATCH, PATCH, PATCH]), &device);
    let target = VectorField::from_fn([PATCH; 3], |p| {
        let (x, y) = (p[0] / 7.0 - 0.5, p[1] / 7.0 - 0.5);
        [-0.8 * y, 0.8 * x, 0.2]
    });
    let item = PatchRef { pair: 0, start: [0; 3] };
    let mut optimizer = AdamConfig::new().init();
    let mut losses = Vec::new();
    for _ in 0..8 {
        let z = model.forward(input.clone());
        let (value, gradient) = distillation_loss(&tensor_values(z.clone()), &[item], &[&target], PATCH, &half);
        losses.push(value);
        let gradient = Tensor::<5>::from_data(TensorData::new(gradient, z.dims()), &device);
        let gradients = GradientsParams::from_grads((z * gradient).sum().backward(), &model);
        model = optimizer.step(3e-3, model, gradients);
    }
    assert!(losses.last().unwrap() < &(0.9 * losses[0]), "losses {losses:?}");
}

/// A constant velocity of level 4 (in its voxels) on level 2 is twice as long, on level 3 (not
/// a divisor: refined to full resolution, then averaged) 4/3 as long, on every voxel.
#[test]
fn velocities_move_between_levels_in_their_voxels() {
    let full = [40, 36, 28];
    let coarse = VectorField::from_fn([10, 9, 7], |_| [0.3, -0.6, 0.9]);
    for (to, ratio) in [(2usize, 2.0f32), (3, 4.0 / 3.0), (4, 1.0)] {
        let moved = on_level(&coarse, full, 4, to);
        assert_eq!(moved.shape, full.map(|n: usize| n.div_ceil(to)));
        for c in 0..3 {
            let want = ratio * [0.3, -0.6, 0.9][c];
            assert!(moved.components[c].iter().all(|v| (v - want).abs() < 1e-5), "level {to}, component {c}");
        }
    }
}

/// `cached_target` computes a pair's target once and then reads it back exactly; other
/// parameters or another pair compute again; a damaged file is refused with its path.
#[test]
fn targets_are_kept_per_pair_and_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("targets");
    let params = RegisterParams::default();
    let field = VectorField::from_fn([5, 4, 3], |p| [p[0] * 0.1, -p[1], p[2] + 0.25]);
    let calls = std::cell::Cell::new(0);
    let compute = || {
        calls.set(calls.get() + 1);
        Ok(field.clone())
    };
    let content = content_hash(&[&[1.0, 2.0], &[3.0]]);
    assert_ne!(content, content_hash(&[&[1.0, 2.0], &[3.5]]));
    let get = |name: &str, params: &RegisterParams, compute: &dyn Fn() -> diffeoreg::error::Result<VectorField>| {
        cached_target(Some(&folder), name, content, [20, 16, 12], [1.0, 1.0, 2.0], 4, params, compute)
    };
    assert_eq!(get("synthetic 1000", &params, &compute).unwrap(), field);
    assert_eq!(get("synthetic 1000", &params, &compute).unwrap(), field);
    assert_eq!(calls.get(), 1, "the second call computed again");
    let mut other = params.clone();
    other.optimize.energy.lambda *= 2.0;
    get("synthetic 1000", &other, &compute).unwrap();
    assert_eq!(calls.get(), 2, "other parameters read the old target");
    get("synthetic 1001", &params, &compute).unwrap();
    assert_eq!(calls.get(), 3);
    // The same pair name with other images (a file replaced): computed again.
    cached_target(Some(&folder), "synthetic 1000", content + 1, [20, 16, 12], [1.0, 1.0, 2.0], 4, &params, compute)
        .unwrap();
    assert_eq!(calls.get(), 4);

    let path = target_path(&folder, "synthetic 1001");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 7]).unwrap();
    let error = get("synthetic 1001", &params, &compute).unwrap_err();
    assert!(
        error.to_string().contains(&path.display().to_string()) && error.to_string().contains("truncated"),
        "{error}"
    );
    // Without a folder nothing is kept.
    cached_target(None, "synthetic 1000", content, [20, 16, 12], [1.0, 1.0, 2.0], 4, &params, compute).unwrap();
    assert_eq!(calls.get(), 5);
}

/// `truth_velocity`: the rigid stage's transform is taken out of the known deformation, the
/// result is expressed on the network's grid in its voxels, and its exponential is the known
/// deformation there (the exponential inverted, not the displacement taken as the velocity).
#[test]
fn the_truth_velocity_removes_the_rigid_part_and_exponentiates_to_the_known_deformation() {
    use diffeoreg::diffeo::integrate::exp;
    use diffeoreg::train::distill::truth_velocity;
    use diffeoreg::volume::affine::AffineTransform;
    use diffeoreg::volume::{DisplacementField, Geometry};
    let geometry = Geometry::axis_aligned([16, 12, 8], [2.0, 1.5, 3.0], [-10.0, 4.0, 7.0]).unwrap();
    // A translation by (3, −1.5, 6) mm, of which the rigid stage found (1, 0.5, −2): what is left
    // is (2, −2, 8) mm = (1, −4/3, 8/3) voxels of the fixed grid, (0.5, −2/3, 4/3) at factor 2.
    let truth = DisplacementField::from_fn(geometry.clone(), |_| [3.0, -1.5, 6.0]);
    let rigid = AffineTransform::from_euler([0.0; 3], [1.0, 0.5, -2.0], [0.0; 3]);
    let velocity = truth_velocity(&truth, &rigid, 2, 7);
    assert_eq!(velocity.shape, [8, 6, 4]);
    for (c, want) in [0.5f32, -2.0 / 3.0, 4.0 / 3.0].into_iter().enumerate() {
        assert!(velocity.components[c].iter().all(|v| (v - want).abs() < 1e-4), "component {c}");
    }

    // A smooth deformation with no rigid part: exp(v) is the deformation, box-averaged onto the
    // network's grid, where v itself differs from it by the exponential's second-order term.
    let wave = DisplacementField::from_fn(geometry.clone(), |x| {
        let s = (x[0] * 0.12).sin() * (x[1] * 0.1).cos();
        [4.0 * s, -3.0 * (x[2] * 0.08).sin(), 2.5 * s]
    });
    let identity = AffineTransform::from_euler([0.0; 3], [0.0; 3], [0.0; 3]);
    let velocity = truth_velocity(&wave, &identity, 2, 7);
    let full = VectorField::from_displacement_mm(&wave);
    let wanted = on_level(&full, geometry.shape, 1, 2);
    let reached = exp(&velocity, 7);
    let largest = |a: &VectorField, b: &VectorField| {
        (0..3)
            .flat_map(|c| a.components[c].iter().zip(&b.components[c]).map(|(x, y)| (x - y).abs()))
            .fold(0.0f32, f32::max)
    };
    let (error, naive) = (largest(&reached, &wanted), largest(&velocity, &wanted));
    assert!(error < 2e-3 && naive > 20.0 * error, "exp(v) off by {error} voxels, v off by {naive}");
}

//! The Burn versions of smooth, warp and integrate (`diffeo::tensor`): equal to the
//! whole-volume kernels, gradients from autodiff equal to central finite differences and to the
//! kernels' own (finite-difference-tested) backward passes, and the same numbers on Burn's CPU
//! device (flex) and on wgpu (Mesa's lavapipe on machines without a GPU).

use burn::tensor::{Device, DeviceKind, Tensor};
use diffeoreg::diffeo::VectorField;
use diffeoreg::diffeo::integrate::{exp, exp_backward, exp_with_trace};
use diffeoreg::diffeo::smooth::{SmoothParams, Smoother, padded_power_of_two};
use diffeoreg::diffeo::tensor::integrate::exp as tensor_exp;
use diffeoreg::diffeo::tensor::smooth::TensorSmoother;
use diffeoreg::diffeo::tensor::warp::sample;
use diffeoreg::diffeo::tensor::{field_to_tensor, image_to_tensor, tensor_to_field, tensor_values};
use diffeoreg::diffeo::warp::{Outside, warp_image, warp_image_backward};
use diffeoreg::phantom::random::SeededRng;

const SHAPE: [usize; 3] = [13, 11, 9];

fn random_values(n: usize, scale: f64, seed: u64) -> Vec<f32> {
    let mut rng = SeededRng::new(seed);
    (0..n).map(|_| (rng.normal() * scale) as f32).collect()
}

fn random_field(shape: [usize; 3], scale: f64, seed: u64) -> VectorField {
    let n = shape.iter().product();
    VectorField { shape, components: std::array::from_fn(|d| random_values(n, scale, seed + d as u64)) }
}

/// A smooth field: K⁻¹ of a random one, scaled to a largest component of `max_voxels`.
fn smooth_field(shape: [usize; 3], max_voxels: f32, seed: u64) -> VectorField {
    let rough = random_field(shape, 1.0, seed);
    let smooth = Smoother::new(shape, &SmoothParams { alpha: 2.0, ..SmoothParams::default() }).apply(&rough);
    let peak = smooth.components.iter().flatten().fold(0.0f32, |m, v| m.max(v.abs()));
    smooth.scaled(max_voxels / peak)
}

fn relative_difference(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum::<f64>().sqrt();
    let norm = b.iter().map(|y| (*y as f64).powi(2)).sum::<f64>().sqrt();
    diff / norm.max(1e-30)
}

fn flat(field: &VectorField) -> Vec<f32> {
    field.components.iter().flatten().copied().collect()
}

fn image() -> Vec<f32> {
    // A smooth image with structure along every axis, so gradients are not trivially zero.
    let [nx, ny, nz] = SHAPE;
    let mut values = Vec::with_capacity(nx * ny * nz);
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let (x, y, z) = (i as f32, j as f32, k as f32);
                values.push((0.7 * x).sin() + (0.45 * y).cos() * (0.3 * z).sin() + 0.05 * x * y);
            }
        }
    }
    values
}

#[test]
fn smooth_equals_the_fft_kernel_and_its_gradient_is_itself() {
    let params = SmoothParams::default();
    let device = Device::flex().autodiff();
    let field = random_field(SHAPE, 1.0, 3);
    let smoother = TensorSmoother::new(SHAPE, &params, &device);
    assert_eq!(smoother.padded_shape(), padded_power_of_two(SHAPE, params.pad));
    let cpu = Smoother::with_padded_shape(SHAPE, &params, -2, smoother.padded_shape()).apply(&field);

    let m = field_to_tensor(&field, &device).require_grad();
    let v = smoother.apply(m.clone());
    let ours = tensor_to_field(v.clone().detach());
    let error = relative_difference(&flat(&ours), &flat(&cpu));
    assert!(error < 1e-4, "Burn K⁻¹ vs rustfft K⁻¹: relative difference {error:e}");

    // ⟨w, K⁻¹m⟩ has gradient K⁻¹w with respect to m (K⁻¹ is self-adjoint).
    let w = random_field(SHAPE, 1.0, 9);
    let loss = (v * field_to_tensor(&w, &device)).sum();
    let gradient = tensor_to_field(m.grad(&loss.backward()).expect("m is tracked"));
    let expected = Smoother::with_padded_shape(SHAPE, &params, -2, smoother.padded_shape()).apply(&w);
    let error = relative_difference(&flat(&gradient), &flat(&expected));
    assert!(error < 1e-4, "autodiff through K⁻¹: relative difference {error:e}");
}

#[test]
fn warp_equals_the_kernel_and_its_gradients_match_finite_differences() {
    let device = Device::flex().autodiff();
    let values = image();
    // Up to 3 voxels: some samples leave the grid (masked), most stay inside.
    let u = smooth_field(SHAPE, 3.0, 5);
    let (cpu_values, cpu_mask) = warp_image(&values, &u);

    let image_tensor = image_to_tensor(&values, SHAPE, &device).require_grad();
    let u_tensor = field_to_tensor(&u, &device).require_grad();
    let (warped, mask) = sample(image_tensor.clone(), u_tensor.clone(), Outside::Mask);
    let mask: Vec<bool> = mask.expect("masked sampling returns a mask").into_data().try_into_vec::<bool>().unwrap();
    assert_eq!(mask, cpu_mask);
    assert!(mask.iter().any(|inside| !inside) && mask.iter().filter(|m| **m).count() > mask.len() / 2);
    let ours = tensor_values(warped.clone().detach());
    assert!(relative_difference(&ours, &cpu_values) < 1e-5);

    // Gradient of ⟨w, I∘(x+u)⟩ with respect to u: the kernel's backward and finite differences.
    let w = random_values(values.len(), 1.0, 11);
    let loss = (warped * image_to_tensor(&w, SHAPE, &device)).sum();
    let grads = loss.backward();
    let grad_u = tensor_to_field(u_tensor.grad(&grads).expect("u is tracked"));
    let masked_w: Vec<f32> = w.iter().zip(&cpu_mask).map(|(w, m)| if *m { *w } else { 0.0 }).collect();
    let expected = warp_image_backward(&values, &u, &masked_w);
    let error = relative_difference(&flat(&grad_u), &flat(&expected));
    assert!(error < 1e-4, "∂/∂u: autodiff vs the kernel's backward {error:e}");

    let loss_at = |u: &VectorField| -> f64 {
        let (warped, _) = warp_image(&values, u);
        warped.iter().zip(&w).map(|(a, b)| *a as f64 * *b as f64).sum()
    };
    // Trilinear sampling is piecewise linear: check voxels whose sample lies well inside a cell
    // (fractions in 0.1..0.9 on every axis), where a step of h stays in the same cell.
    let h = 1e-2;
    let [nx, ny, _] = SHAPE;
    let well_inside = |n: usize| {
        let index = [n % nx, (n / nx) % ny, n / (nx * ny)];
        (0..3).all(|d| {
            let p = index[d] as f32 + u.components[d][n];
            let f = p - p.floor();
            p > 0.0 && p < (SHAPE[d] - 1) as f32 && (0.1..0.9).contains(&f)
        })
    };
    let voxels: Vec<usize> = (0..values.len()).step_by(37).filter(|&n| well_inside(n)).take(6).collect();
    assert_eq!(voxels.len(), 6);
    for (i, &voxel) in voxels.iter().enumerate() {
        let component = i % 3;
        let (mut plus, mut minus) = (u.clone(), u.clone());
        plus.components[component][voxel] += h;
        minus.components[component][voxel] -= h;
        let fd = (loss_at(&plus) - loss_at(&minus)) / (2.0 * h as f64);
        let analytic = grad_u.components[component][voxel] as f64;
        assert!((fd - analytic).abs() <= 1e-2 * fd.abs().max(1e-2), "u{component}[{voxel}]: FD {fd} vs {analytic}");
    }

    // With respect to the image: the adjoint of trilinear sampling, by finite differences.
    let grad_image = tensor_values(image_tensor.grad(&grads).expect("the image is tracked"));
    for voxel in [150, 600, 1001] {
        let (mut plus, mut minus) = (values.clone(), values.clone());
        plus[voxel] += 0.5;
        minus[voxel] -= 0.5;
        let at =
            |image: &[f32]| -> f64 { warp_image(image, &u).0.iter().zip(&w).map(|(a, b)| *a as f64 * *b as f64).sum() };
        let fd = (at(&plus) - at(&minus)) / 1.0;
        assert!((fd - grad_image[voxel] as f64).abs() < 1e-3 * fd.abs().max(1.0), "image[{voxel}]");
    }
}

#[test]
fn integrate_equals_the_kernel_forward_and_backward() {
    let device = Device::flex().autodiff();
    let v = smooth_field(SHAPE, 4.0, 21);
    let steps = 5;
    let v_tensor = field_to_tensor(&v, &device).require_grad();
    let u = tensor_exp(v_tensor.clone(), steps);
    let ours = tensor_to_field(u.clone().detach());
    let cpu = exp(&v, steps);
    let error = relative_difference(&flat(&ours), &flat(&cpu));
    assert!(error < 1e-5, "exp: Burn vs kernel {error:e}");

    let w = random_field(SHAPE, 1.0, 31);
    let loss = (u * field_to_tensor(&w, &device)).sum();
    let gradient = tensor_to_field(v_tensor.grad(&loss.backward()).expect("v is tracked"));
    let (_, trace) = exp_with_trace(&v, steps);
    let expected = exp_backward(&trace, w);
    let error = relative_difference(&flat(&gradient), &flat(&expected));
    assert!(error < 1e-3, "∂exp/∂v: autodiff vs the kernel's backward {error:e}");
}

#[test]
fn energy_and_its_gradient_equal_the_kernels() {
    use diffeoreg::diffeo::energy::{EnergyParams, Similarity, energy_and_gradient};
    use diffeoreg::diffeo::tensor::energy::energy;
    let device = Device::flex().autodiff();
    let smooth = SmoothParams { alpha: 2.0, ..SmoothParams::default() };
    let fixed = image();
    // The moving image: the fixed one through a known smooth displacement.
    let (moving, _) = warp_image(&fixed, &smooth_field(SHAPE, 1.5, 51));
    let momentum = random_field(SHAPE, 2.0, 53);
    let smoother = TensorSmoother::new(SHAPE, &smooth, &device);
    let cpu_smoother = Smoother::with_padded_shape(SHAPE, &smooth, -2, smoother.padded_shape());
    for similarity in [Similarity::Mse, Similarity::NormalizedMse { a: 0.5 }, Similarity::LocalNcc { radius: 2 }] {
        let params = EnergyParams { lambda: 0.05, similarity, steps: 6 };
        let (terms, gradient) = energy_and_gradient(&fixed, &moving, &momentum, &cpu_smoother, &params);
        let m = field_to_tensor(&momentum, &device).require_grad();
        let ours = energy(
            image_to_tensor(&fixed, SHAPE, &device),
            image_to_tensor(&moving, SHAPE, &device),
            m.clone(),
            &smoother,
            &params,
        );
        let total = ours.total();
        let value = tensor_values(total.clone().detach())[0] as f64;
        assert!(
            (value - terms.total()).abs() < 1e-4 * terms.total().abs(),
            "{similarity:?}: E {value} vs {}",
            terms.total()
        );
        let ours_gradient = tensor_to_field(m.grad(&total.backward()).expect("m is tracked"));
        let error = relative_difference(&flat(&ours_gradient), &flat(&gradient));
        assert!(error < 1e-3, "{similarity:?}: ∂E/∂m autodiff vs kernel {error:e}");
    }
}

/// Runs smooth, masked warp and exp (with a gradient) on one device and returns all outputs.
fn engine_outputs(device: &Device) -> Vec<Vec<f32>> {
    let params = SmoothParams::default();
    let m = random_field(SHAPE, 1.0, 41);
    let v = TensorSmoother::new(SHAPE, &params, device).apply(field_to_tensor(&m, device));
    let values = image();
    let u = smooth_field(SHAPE, 3.0, 43);
    let (warped, _) = sample(image_to_tensor(&values, SHAPE, device), field_to_tensor(&u, device), Outside::Mask);
    let velocity = field_to_tensor(&smooth_field(SHAPE, 4.0, 47), device).require_grad();
    let phi = tensor_exp(velocity.clone(), 7);
    let loss: Tensor<1> = (phi.clone() * phi.clone()).sum();
    let gradient = velocity.grad(&loss.backward()).expect("tracked");
    vec![tensor_values(v), tensor_values(warped), tensor_values(phi.detach()), tensor_values(gradient)]
}

#[test]
fn flex_and_wgpu_agree() {
    let cpu = engine_outputs(&Device::flex().autodiff());
    let gpu = engine_outputs(&Device::wgpu(DeviceKind::DefaultDevice).autodiff());
    for (name, (a, b)) in ["smooth", "warp", "exp", "∂exp"].iter().zip(cpu.iter().zip(&gpu)) {
        let error = relative_difference(b, a);
        assert!(error < 1e-4, "{name}: wgpu vs flex relative difference {error:e}");
    }
}

#[test]
fn a_batch_has_each_pairs_own_energy_and_gradient() {
    use diffeoreg::diffeo::energy::{EnergyParams, Similarity};
    use diffeoreg::diffeo::tensor::energy::{batch_energy, energy};
    let device = Device::flex().autodiff();
    let smoother = TensorSmoother::new(SHAPE, &SmoothParams { alpha: 2.0, ..SmoothParams::default() }, &device);
    let params = EnergyParams { lambda: 0.05, similarity: Similarity::NormalizedMse { a: 0.5 }, steps: 6 };
    let fixed = image();
    // Three pairs that differ in the moving image and in the momentum, so a mixed-up item shows.
    let pairs: Vec<(Vec<f32>, VectorField)> = (0..3u64)
        .map(|i| (warp_image(&fixed, &smooth_field(SHAPE, 1.0 + i as f32, 61 + i)).0, random_field(SHAPE, 2.0, 71 + i)))
        .collect();
    let stack = |tensors: Vec<Tensor<4>>| Tensor::stack::<5>(tensors, 0);
    let momenta = stack(pairs.iter().map(|(_, m)| field_to_tensor(m, &device)).collect()).require_grad();
    let batch = batch_energy(
        stack(vec![image_to_tensor(&fixed, SHAPE, &device); 3]),
        stack(pairs.iter().map(|(moving, _)| image_to_tensor(moving, SHAPE, &device)).collect()),
        momenta.clone(),
        &smoother,
        &params,
    );
    let totals = batch.total();
    let batch_values = tensor_values(totals.clone().detach());
    let batch_gradient = tensor_values(momenta.grad(&totals.sum().backward()).expect("tracked"));
    let n = 3 * SHAPE.iter().product::<usize>();
    for (i, (moving, momentum)) in pairs.iter().enumerate() {
        let m = field_to_tensor(momentum, &device).require_grad();
        let single = energy(
            image_to_tensor(&fixed, SHAPE, &device),
            image_to_tensor(moving, SHAPE, &device),
            m.clone(),
            &smoother,
            &params,
        )
        .total();
        let value = tensor_values(single.clone().detach())[0];
        assert!((batch_values[i] - value).abs() < 1e-6 * value.abs(), "item {i}: {} vs {value}", batch_values[i]);
        let gradient = tensor_values(m.grad(&single.backward()).expect("tracked"));
        let error = relative_difference(&batch_gradient[i * n..(i + 1) * n], &gradient);
        assert!(error < 1e-6, "item {i}: ∂E/∂m in the batch vs alone {error:e}");
    }
    assert!(batch_values[0] != batch_values[1] && batch_values[1] != batch_values[2], "{batch_values:?}");
}

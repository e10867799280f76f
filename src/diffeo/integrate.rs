//! φ = exp(v) by scaling and squaring: u₀ = v / 2ᴺ, u_{k+1}(x) = u_k(x) + u_k(x + u_k(x)).
//! The inverse is exp(−v). `exp_backward` carries a gradient back from u_N to v.

use rayon::prelude::*;

use crate::diffeo::VectorField;
use crate::diffeo::warp::{sample_vector_backward, warp_field};

/// Default number of squarings (SPEC §3).
pub const DEFAULT_STEPS: u32 = 7;

/// The displacement u of φ = x + u(x) = exp(v), keeping no intermediate fields.
pub fn exp(velocity: &VectorField, steps: u32) -> VectorField {
    let mut u = velocity.scaled(1.0 / (1u64 << steps) as f32);
    for _ in 0..steps {
        square(&mut u);
    }
    u
}

/// One squaring: u ← u + u(x + u(x)).
fn square(u: &mut VectorField) {
    let moved = warp_field(u, u);
    for (c, m) in u.components.iter_mut().zip(moved.components) {
        c.par_iter_mut().zip(m).for_each(|(a, b)| *a += b);
    }
}

/// exp(v) and the fields u₀ … u_{N−1} that the backward pass needs.
pub fn exp_with_trace(velocity: &VectorField, steps: u32) -> (VectorField, Vec<VectorField>) {
    let mut u = velocity.scaled(1.0 / (1u64 << steps) as f32);
    let mut trace = Vec::with_capacity(steps as usize);
    for _ in 0..steps {
        trace.push(u.clone());
        square(&mut u);
    }
    (u, trace)
}

/// Gradient with respect to v, given the gradient with respect to exp(v) and the trace.
pub fn exp_backward(trace: &[VectorField], grad_result: VectorField) -> VectorField {
    let mut grad = grad_result;
    for u in trace.iter().rev() {
        grad = squaring_step_backward(u, &grad);
    }
    grad.scaled(1.0 / (1u64 << trace.len()) as f32)
}

/// Backward of u ↦ u + S(u, x + u) where S samples u trilinearly (clamped at the border).
fn squaring_step_backward(u: &VectorField, grad_next: &VectorField) -> VectorField {
    let shape = u.shape;
    let n = u.voxel_count();
    let threads = rayon::current_num_threads().max(1);
    let chunk = n.div_ceil(threads);
    // Each task scatters into its own field; the fields are summed afterwards.
    let partials: Vec<VectorField> = (0..threads)
        .into_par_iter()
        .map(|t| {
            let mut local = VectorField::zeros(shape);
            for index in t * chunk..((t + 1) * chunk).min(n) {
                let g = grad_next.at(index);
                let (i, j, k) = (index % shape[0], (index / shape[0]) % shape[1], index / (shape[0] * shape[1]));
                let d = u.at(index);
                let p = [i as f32 + d[0], j as f32 + d[1], k as f32 + d[2]];
                let through_position = sample_vector_backward(u, p, g, &mut local.components);
                for a in 0..3 {
                    local.components[a][index] += g[a] + through_position[a];
                }
            }
            local
        })
        .collect();
    let mut total = VectorField::zeros(shape);
    for part in partials {
        for (t, p) in total.components.iter_mut().zip(part.components) {
            t.par_iter_mut().zip(p).for_each(|(a, b)| *a += b);
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffeo::jacobian::inverse_consistency;

    #[test]
    fn a_constant_velocity_integrates_to_that_translation() {
        let v = VectorField::from_fn([10, 9, 8], |_| [1.5, -0.75, 2.0]);
        let u = exp(&v, 7);
        for n in 0..u.voxel_count() {
            let d = u.at(n);
            assert!((d[0] - 1.5).abs() < 1e-5 && (d[1] + 0.75).abs() < 1e-5 && (d[2] - 2.0).abs() < 1e-5);
        }
    }

    #[test]
    fn exp_v_composed_with_exp_minus_v_is_the_identity() {
        // A smooth velocity of up to 5 voxels, vanishing towards the border.
        let shape = [40, 36, 32];
        let v = VectorField::from_fn(shape, |p| {
            let bump = |x: f64, n: usize| (std::f64::consts::PI * x / (n - 1) as f64).sin();
            let b = bump(p[0], shape[0]) * bump(p[1], shape[1]) * bump(p[2], shape[2]);
            [5.0 * b, -3.0 * b * bump(2.0 * p[0], shape[0]), 4.0 * b * b]
        });
        assert!(v.max_norm() > 4.9 && v.max_norm() <= 7.1);
        let forward = exp(&v, 7);
        let inverse = exp(&v.scaled(-1.0), 7);
        let (mean, max) = inverse_consistency(&forward, &inverse);
        assert!(mean < 0.05, "mean |φ∘φ⁻¹ − Id| = {mean} voxel (max {max})");
    }

    /// The backward pass against central finite differences of L(v) = ⟨w, exp(v)⟩ along a
    /// random direction.
    #[test]
    fn backward_matches_finite_differences() {
        let shape = [9, 8, 7];
        let wave = |p: [f64; 3], s: f64| (0.7 * p[0] + s).sin() * (0.5 * p[1] - s).cos() + 0.3 * (0.4 * p[2] * s).sin();
        let v = VectorField::from_fn(shape, |p| [1.2 * wave(p, 0.3), -0.9 * wave(p, 1.1), 0.8 * wave(p, 2.0)]);
        let w = VectorField::from_fn(shape, |p| [wave(p, 0.5), wave(p, 1.7), -wave(p, 0.9)]);
        let direction = VectorField::from_fn(shape, |p| [wave(p, 2.5), -wave(p, 0.2), wave(p, 1.4)]);
        let loss = |v: &VectorField| -> f64 {
            let u = exp(v, 4);
            (0..3)
                .map(|c| u.components[c].iter().zip(&w.components[c]).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>())
                .sum()
        };
        let (_, trace) = exp_with_trace(&v, 4);
        let grad = exp_backward(&trace, w.clone());
        let analytic: f64 = (0..3)
            .map(|c| {
                grad.components[c].iter().zip(&direction.components[c]).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>()
            })
            .sum();
        let h = 1e-2f32;
        let shifted = |sign: f32| {
            let mut moved = v.clone();
            for c in 0..3 {
                moved.components[c].iter_mut().zip(&direction.components[c]).for_each(|(a, b)| *a += sign * h * b);
            }
            loss(&moved)
        };
        let numeric = (shifted(1.0) - shifted(-1.0)) / (2.0 * h as f64);
        assert!(
            (analytic - numeric).abs() < 1e-2 * numeric.abs(),
            "analytic {analytic} vs finite differences {numeric}"
        );
    }
}

//! φ = exp(v) by scaling and squaring: u₀ = v / 2ᴺ, u_{k+1}(x) = u_k(x) + u_k(x + u_k(x)).
//! The inverse is exp(−v).

use crate::diffeo::VectorField;
use crate::diffeo::warp::warp_field;

/// Default number of squarings (SPEC §3).
pub const DEFAULT_STEPS: u32 = 7;

/// The displacement u of φ = x + u(x) = exp(v).
pub fn exp(velocity: &VectorField, steps: u32) -> VectorField {
    let mut u = velocity.scaled(1.0 / (1u64 << steps) as f32);
    for _ in 0..steps {
        let moved = warp_field(&u, &u);
        for (c, m) in u.components.iter_mut().zip(moved.components) {
            c.iter_mut().zip(m).for_each(|(a, b)| *a += b);
        }
    }
    u
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
}

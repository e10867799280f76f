//! det ∂φ/∂x of φ(x) = x + u(x) by central differences, folding, composition and inverse
//! consistency.

use rayon::prelude::*;

use crate::diffeo::VectorField;
use crate::diffeo::warp::warp_field;

/// det(I + ∇u) per voxel; central differences inside, one-sided on the border.
pub fn determinant(u: &VectorField) -> Vec<f32> {
    let shape = u.shape;
    let [nx, ny, _] = shape;
    let stride = [1, nx, nx * ny];
    let mut det = vec![0.0f32; u.voxel_count()];
    det.par_chunks_mut(nx * ny).enumerate().for_each(|(k, plane)| {
        for j in 0..ny {
            for i in 0..nx {
                let index = [i, j, k];
                let n = i + nx * (j + ny * k);
                let mut jac = [[0.0f64; 3]; 3];
                for axis in 0..3 {
                    let (low, high) = (index[axis].saturating_sub(1), (index[axis] + 1).min(shape[axis] - 1));
                    let width = (high - low) as f64;
                    if width == 0.0 {
                        continue;
                    }
                    let (a, b) = (n - (index[axis] - low) * stride[axis], n + (high - index[axis]) * stride[axis]);
                    for c in 0..3 {
                        jac[c][axis] = (u.components[c][b] - u.components[c][a]) as f64 / width;
                    }
                }
                for d in 0..3 {
                    jac[d][d] += 1.0;
                }
                plane[i + nx * j] = crate::volume::geometry::det3(&jac) as f32;
            }
        }
    });
    det
}

/// Number of voxels where det ∂φ/∂x ≤ 0.
pub fn folding_count(determinant: &[f32]) -> usize {
    determinant.par_iter().filter(|&&d| d <= 0.0).count()
}

/// The displacement of φ_outer ∘ φ_inner: x ↦ x + inner(x) + outer(x + inner(x)).
pub fn compose(outer: &VectorField, inner: &VectorField) -> VectorField {
    let mut moved = warp_field(outer, inner);
    for (m, i) in moved.components.iter_mut().zip(&inner.components) {
        m.iter_mut().zip(i).for_each(|(a, b)| *a += b);
    }
    moved
}

/// Mean and largest |φ ∘ φ⁻¹ − Id| over the grid, in voxels.
pub fn inverse_consistency(forward: &VectorField, inverse: &VectorField) -> (f64, f64) {
    let residual = compose(forward, inverse);
    let lengths: Vec<f64> = (0..residual.voxel_count())
        .into_par_iter()
        .map(|n| residual.at(n).iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt())
        .collect();
    let mean = lengths.iter().sum::<f64>() / lengths.len() as f64;
    (mean, lengths.iter().copied().fold(0.0, f64::max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn determinant_of_an_affine_field_is_exact() {
        let a = [[0.1, 0.05, -0.02], [0.03, -0.2, 0.04], [0.0, 0.06, 0.15]];
        let u = VectorField::from_fn([9, 8, 7], |p| {
            std::array::from_fn(|r| (0..3).map(|c| a[r][c] * p[c]).sum::<f64>() + 0.7)
        });
        let mut identity_plus = a;
        for d in 0..3 {
            identity_plus[d][d] += 1.0;
        }
        let expected = crate::volume::geometry::det3(&identity_plus) as f32;
        let det = determinant(&u);
        assert!(det.iter().all(|d| (d - expected).abs() < 1e-5), "{:?} vs {expected}", &det[..3]);
        assert_eq!(folding_count(&det), 0);
    }

    #[test]
    fn folding_counts_the_voxels_where_the_map_reverses() {
        // u_x = −2x inside slab 3 ≤ x ≤ 5 (slope −2 → det −1), identity elsewhere.
        let u = VectorField::from_fn([10, 4, 4], |p| {
            let x = p[0];
            let ux = if x <= 3.0 {
                0.0
            } else if x <= 5.0 {
                -2.0 * (x - 3.0)
            } else {
                -4.0
            };
            [ux, 0.0, 0.0]
        });
        let det = determinant(&u);
        // u along x: 0 0 0 0 −2 −4 −4 …; central differences give du/dx = −1, −2, −1 at
        // x = 3, 4, 5 (det 0, −1, 0) and 0 elsewhere: three folding slabs of 4 × 4 voxels.
        assert_eq!(folding_count(&det), 3 * 16);
    }

    #[test]
    fn composing_translations_adds_them() {
        let a = VectorField::from_fn([6, 6, 6], |_| [1.0, 0.0, -0.5]);
        let b = VectorField::from_fn([6, 6, 6], |_| [0.25, 2.0, 0.0]);
        let c = compose(&a, &b);
        assert!((0..c.voxel_count()).all(|n| c.at(n) == [1.25, 2.0, -0.5]));
    }
}

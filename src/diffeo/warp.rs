//! Trilinear sampling at x + u(x) (the spatial transformer), for images and for fields.

use rayon::prelude::*;

use crate::diffeo::VectorField;

use crate::volume::trilinear::{Cell, cell};
pub use crate::volume::trilinear::{Outside, sample, sample_with_gradient, sample3};

/// The three components of `field` sampled trilinearly at `p`, clamped at the border: one
/// cell lookup for all three.
#[inline]
pub fn sample_vector(field: &VectorField, p: [f32; 3]) -> [f32; 3] {
    vector_in_cell(field, &cell(field.shape, p, Outside::Clamp).expect("clamping always finds a cell"))
}

/// The three components of `field` interpolated in `cell` (one of `field`'s grid).
#[inline(always)]
pub(crate) fn vector_in_cell(field: &VectorField, cell: &Cell) -> [f32; 3] {
    let (w, o) = (cell.weights(), cell.offsets());
    std::array::from_fn(|c| {
        let data = &field.components[c];
        (0..8).map(|k| w[k] * data[o[k]]).sum()
    })
}

/// Adds `g` (one value per component) to the nodes of `target` (on `shape`) that trilinear
/// sampling at `p` reads, each by its weight: the transpose of `sample_vector`, clamped (for
/// the tests' reference adjoint of the refinement).
#[cfg(test)]
#[inline]
pub fn scatter_vector(target: &mut [Vec<f32>; 3], shape: [usize; 3], p: [f32; 3], g: [f32; 3]) {
    let cell = cell(shape, p, Outside::Clamp).expect("clamping always finds a cell");
    let (w, o) = (cell.weights(), cell.offsets());
    for c in 0..3 {
        let t = &mut target[c];
        for k in 0..8 {
            t[o[k]] += w[k] * g[c];
        }
    }
}

/// For one point p = x + u(x) of a squaring step u ↦ u + u(p): the gradient `g` (per component)
/// flowing into the sampled value goes to the grid nodes read (scattered into `target`) and to
/// the position p; returns the latter, Σ_c g_c ∂u_c/∂p.
#[inline]
pub fn sample_vector_backward(field: &VectorField, p: [f32; 3], g: [f32; 3], target: &mut [Vec<f32>; 3]) -> [f32; 3] {
    let cell = cell(field.shape, p, Outside::Clamp).expect("clamping always finds a cell");
    let (w, o) = (cell.weights(), cell.offsets());
    let mut through_position = [0f32; 3];
    for c in 0..3 {
        let (_, slope) = cell.value_and_slope(&field.components[c]);
        for a in 0..3 {
            through_position[a] += g[c] * slope[a];
        }
        let t = &mut target[c];
        for k in 0..8 {
            t[o[k]] += w[k] * g[c];
        }
    }
    through_position
}

/// Whether a continuous index lies within the grid's voxels (each voxel reaching half a voxel
/// beyond its centre). Samples there take the border value; beyond, they are masked out. A
/// half-voxel margin keeps the mask from flipping when a border voxel moves by a hair.
#[inline]
pub(crate) fn within_voxels(shape: [usize; 3], p: [f32; 3]) -> bool {
    (0..3).all(|d| p[d] >= -0.5 && p[d] <= shape[d] as f32 - 0.5)
}

/// The image warped by `u`: out(x) = image(x + u(x)), with a mask that is false where the
/// sample fell outside the grid's voxels (the value there is 0).
pub fn warp_image(image: &[f32], u: &VectorField) -> (Vec<f32>, Vec<bool>) {
    let (nx, ny) = (u.shape[0], u.shape[1]);
    warp_image_by(image, u.shape, |[i, j, k]| u.at(i + nx * (j + ny * k)))
}

/// `warp_image` with the displacement (voxels) given per voxel index by `displacement`, e.g. a
/// coarse field refined on the fly instead of stored at full resolution.
pub fn warp_image_by(
    image: &[f32],
    shape: [usize; 3],
    displacement: impl Fn([usize; 3]) -> [f32; 3] + Sync,
) -> (Vec<f32>, Vec<bool>) {
    let (nx, ny) = (shape[0], shape[1]);
    let mut values = vec![0.0f32; image.len()];
    let mut inside = vec![false; image.len()];
    values.par_chunks_mut(nx * ny).zip(inside.par_chunks_mut(nx * ny)).enumerate().for_each(|(k, (plane, mask))| {
        for j in 0..ny {
            for i in 0..nx {
                let d = displacement([i, j, k]);
                let p = [i as f32 + d[0], j as f32 + d[1], k as f32 + d[2]];
                if within_voxels(shape, p) {
                    plane[i + nx * j] = sample(image, shape, p, Outside::Clamp).unwrap_or(0.0);
                    mask[i + nx * j] = true;
                }
            }
        }
    });
    (values, inside)
}

/// Gradient with respect to `u` of a loss whose gradient with respect to `warp_image(image, u)`
/// is `grad_warped`: the image's spatial gradient at x + u(x) times the incoming gradient
/// (zero where the sample fell outside).
pub fn warp_image_backward(image: &[f32], u: &VectorField, grad_warped: &[f32]) -> VectorField {
    let shape = u.shape;
    let (nx, ny) = (shape[0], shape[1]);
    let mut grad = VectorField::zeros(shape);
    let [a, b, c] = &mut grad.components;
    a.par_chunks_mut(nx * ny).zip(b.par_chunks_mut(nx * ny)).zip(c.par_chunks_mut(nx * ny)).enumerate().for_each(
        |(k, ((ga, gb), gc))| {
            for j in 0..ny {
                for i in 0..nx {
                    let n = i + nx * (j + ny * k);
                    let g = grad_warped[n];
                    if g == 0.0 {
                        continue;
                    }
                    let d = u.at(n);
                    let p = [i as f32 + d[0], j as f32 + d[1], k as f32 + d[2]];
                    if !within_voxels(shape, p) {
                        continue;
                    }
                    if let Some((_, slope)) = sample_with_gradient(image, shape, p, Outside::Clamp) {
                        let m = i + nx * j;
                        ga[m] = g * slope[0];
                        gb[m] = g * slope[1];
                        gc[m] = g * slope[2];
                    }
                }
            }
        },
    );
    grad
}

/// Each component of `field` sampled at x + u(x), clamping at the border.
pub fn warp_field(field: &VectorField, u: &VectorField) -> VectorField {
    let shape = u.shape;
    let (nx, ny) = (shape[0], shape[1]);
    let mut out = VectorField::zeros(shape);
    let [a, b, c] = &mut out.components;
    a.par_chunks_mut(nx * ny).zip(b.par_chunks_mut(nx * ny)).zip(c.par_chunks_mut(nx * ny)).enumerate().for_each(
        |(k, ((pa, pb), pc))| {
            for j in 0..ny {
                for i in 0..nx {
                    let n = i + nx * (j + ny * k);
                    let d = u.at(n);
                    let p = [i as f32 + d[0], j as f32 + d[1], k as f32 + d[2]];
                    let m = i + nx * j;
                    [pa[m], pb[m], pc[m]] = sample_vector(field, p);
                }
            }
        },
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproduces_a_linear_image_exactly_inside() {
        let shape = [12, 10, 8];
        let linear = |p: [f64; 3]| 3.0 * p[0] - 2.0 * p[1] + 0.5 * p[2] + 7.0;
        let image: Vec<f32> = VectorField::from_fn(shape, |p| [linear(p), 0.0, 0.0]).components[0].clone();
        let u = VectorField::from_fn(shape, |p| [0.3 * (p[1] * 0.7).sin(), -1.25, 0.1 * p[0]]);
        let (warped, inside) = warp_image(&image, &u);
        let mut checked = 0;
        for n in 0..image.len() {
            let p = [(n % 12) as f64, ((n / 12) % 10) as f64, (n / 120) as f64];
            let d = u.at(n);
            let q = [p[0] + d[0] as f64, p[1] + d[1] as f64, p[2] + d[2] as f64];
            let within = (0..3).all(|a| q[a] >= -0.5 && q[a] <= shape[a] as f64 - 0.5);
            let on_grid = (0..3).all(|a| q[a] >= 0.0 && q[a] <= (shape[a] - 1) as f64);
            assert_eq!(inside[n], within, "mask at {n}");
            if on_grid {
                assert!((warped[n] as f64 - linear(q)).abs() < 1e-3, "{} vs {}", warped[n], linear(q));
                checked += 1;
            } else if !within {
                assert_eq!(warped[n], 0.0);
            }
        }
        assert!(checked > 500);
    }
}

//! Trilinear sampling at x + u(x) (the spatial transformer), for images and for fields.

use rayon::prelude::*;

use crate::diffeo::VectorField;

/// How a sample outside the grid is treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outside {
    /// The sample is 0 and masked out.
    Mask,
    /// The point is clamped to the grid (the border value extends outwards); used for fields.
    Clamp,
}

/// The trilinear cell around a continuous index: the flat index of its lower corner, the
/// strides to its upper neighbours (0 along an axis of size 1), the fractional position, and
/// per axis whether the point was inside (1) or clamped onto the border (0).
struct Cell {
    origin: usize,
    strides: [usize; 3],
    frac: [f32; 3],
    free: [f32; 3],
}

#[inline(always)]
fn cell(shape: [usize; 3], p: [f32; 3], outside: Outside) -> Option<Cell> {
    let mut base = [0usize; 3];
    let mut frac = [0f32; 3];
    let mut free = [1f32; 3];
    for d in 0..3 {
        let last = (shape[d] - 1) as f32;
        let mut x = p[d];
        if !(x >= 0.0 && x <= last) {
            match outside {
                Outside::Mask => return None,
                Outside::Clamp => {
                    x = if x.is_nan() { 0.0 } else { x.clamp(0.0, last) };
                    free[d] = 0.0;
                }
            }
        }
        // x ≥ 0 here, so truncation is the floor (and much cheaper than a floorf call).
        let b = (x as usize).min(shape[d].saturating_sub(2));
        base[d] = b;
        frac[d] = x - b as f32;
        if shape[d] == 1 {
            free[d] = 0.0;
        }
    }
    let (nx, nxy) = (shape[0], shape[0] * shape[1]);
    let step = |d: usize, s: usize| if shape[d] > 1 { s } else { 0 };
    Some(Cell {
        origin: base[0] + nx * base[1] + nxy * base[2],
        strides: [step(0, 1), step(1, nx), step(2, nxy)],
        frac,
        free,
    })
}

impl Cell {
    /// The eight corner values, indexed by corner bits (x = bit 0, y = bit 1, z = bit 2).
    #[inline(always)]
    fn corners(&self, data: &[f32]) -> [f32; 8] {
        let [sx, sy, sz] = self.strides;
        std::array::from_fn(|c| data[self.origin + (c & 1) * sx + (c >> 1 & 1) * sy + (c >> 2 & 1) * sz])
    }
}

impl Cell {
    /// The trilinear value of one array, by nested interpolation along x, then y, then z.
    #[inline(always)]
    fn lerp(&self, data: &[f32]) -> f32 {
        let v = self.corners(data);
        let [fx, fy, fz] = self.frac;
        let lerp = |a: f32, b: f32, t: f32| a + (b - a) * t;
        let (c00, c10) = (lerp(v[0], v[1], fx), lerp(v[2], v[3], fx));
        let (c01, c11) = (lerp(v[4], v[5], fx), lerp(v[6], v[7], fx));
        lerp(lerp(c00, c10, fy), lerp(c01, c11, fy), fz)
    }

    /// The trilinear weights of the eight corners, in the order of `corners`.
    #[inline]
    fn weights(&self) -> [f32; 8] {
        let [fx, fy, fz] = self.frac;
        let (gx, gy, gz) = (1.0 - fx, 1.0 - fy, 1.0 - fz);
        [gx * gy * gz, fx * gy * gz, gx * fy * gz, fx * fy * gz, gx * gy * fz, fx * gy * fz, gx * fy * fz, fx * fy * fz]
    }

    #[inline]
    fn offsets(&self) -> [usize; 8] {
        let [sx, sy, sz] = self.strides;
        std::array::from_fn(|c| self.origin + (c & 1) * sx + (c >> 1 & 1) * sy + (c >> 2 & 1) * sz)
    }

    /// Value and derivative with respect to the position, one component.
    #[inline(always)]
    fn value_and_slope(&self, data: &[f32]) -> (f32, [f32; 3]) {
        let [c000, c100, c010, c110, c001, c101, c011, c111] = self.corners(data);
        let [fx, fy, fz] = self.frac;
        let (gx, gy, gz) = (1.0 - fx, 1.0 - fy, 1.0 - fz);
        let value = gz * (gy * (gx * c000 + fx * c100) + fy * (gx * c010 + fx * c110))
            + fz * (gy * (gx * c001 + fx * c101) + fy * (gx * c011 + fx * c111));
        let dx = gz * (gy * (c100 - c000) + fy * (c110 - c010)) + fz * (gy * (c101 - c001) + fy * (c111 - c011));
        let dy = gz * (gx * (c010 - c000) + fx * (c110 - c100)) + fz * (gx * (c011 - c001) + fx * (c111 - c101));
        let dz = gy * (gx * (c001 - c000) + fx * (c101 - c100)) + fy * (gx * (c011 - c010) + fx * (c111 - c110));
        let [a, b, c] = self.free;
        (value, [dx * a, dy * b, dz * c])
    }
}

/// The three components of `field` sampled trilinearly at `p`, clamped at the border: one
/// cell lookup for all three.
#[inline]
pub fn sample_vector(field: &VectorField, p: [f32; 3]) -> [f32; 3] {
    let cell = cell(field.shape, p, Outside::Clamp).expect("clamping always finds a cell");
    let (w, o) = (cell.weights(), cell.offsets());
    std::array::from_fn(|c| {
        let data = &field.components[c];
        (0..8).map(|k| w[k] * data[o[k]]).sum()
    })
}

/// Trilinear value of `data` (x-fastest on `shape`) at continuous index `p`; None outside when
/// `outside` is `Mask`.
#[inline]
pub fn sample(data: &[f32], shape: [usize; 3], p: [f32; 3], outside: Outside) -> Option<f32> {
    Some(cell(shape, p, outside)?.lerp(data))
}

/// `sample` of three arrays on one grid (a displacement field's components) at one point,
/// with one cell lookup: the same values as three calls.
#[inline]
pub fn sample3(data: [&[f32]; 3], shape: [usize; 3], p: [f32; 3], outside: Outside) -> Option<[f32; 3]> {
    let cell = cell(shape, p, outside)?;
    Some(data.map(|d| cell.lerp(d)))
}

/// Trilinear value at `p` and its derivative with respect to `p`, with the border handled as
/// `sample` does (a clamped axis has zero derivative).
#[inline(always)]
pub fn sample_with_gradient(data: &[f32], shape: [usize; 3], p: [f32; 3], outside: Outside) -> Option<(f32, [f32; 3])> {
    Some(cell(shape, p, outside)?.value_and_slope(data))
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

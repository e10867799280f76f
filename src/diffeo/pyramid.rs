//! Coarser copies of images and the moves of fields between resolution levels.
//!
//! Level f groups f×f×f voxels of the full grid: its voxel c covers full-grid voxels
//! c·f … c·f + f − 1, so its centre sits at full-grid index c·f + (f − 1)/2.

use rayon::prelude::*;

use crate::diffeo::VectorField;
use crate::diffeo::warp::{sample_vector, vector_in_cell};
use crate::volume::trilinear::{Outside, axis_cell, cell_of_axes};

/// Shape of level `factor` of a grid of `shape`.
pub fn level_shape(shape: [usize; 3], factor: usize) -> [usize; 3] {
    shape.map(|n| n.div_ceil(factor))
}

/// Box-average `image` (on `shape`) by `factor`; partial boxes at the upper borders average
/// the voxels they have.
pub fn downsample(image: &[f32], shape: [usize; 3], factor: usize) -> Vec<f32> {
    if factor == 1 {
        return image.to_vec();
    }
    let coarse = level_shape(shape, factor);
    let (cx, cy) = (coarse[0], coarse[1]);
    let mut out = vec![0.0f32; coarse.iter().product()];
    out.par_chunks_mut(cx * cy).enumerate().for_each(|(ck, plane)| {
        for cj in 0..cy {
            for ci in 0..cx {
                let (mut sum, mut count) = (0.0f64, 0usize);
                for k in ck * factor..((ck + 1) * factor).min(shape[2]) {
                    for j in cj * factor..((cj + 1) * factor).min(shape[1]) {
                        let row = shape[0] * (j + shape[1] * k);
                        for i in ci * factor..((ci + 1) * factor).min(shape[0]) {
                            sum += image[row + i] as f64;
                            count += 1;
                        }
                    }
                }
                plane[ci + cx * cj] = (sum / count as f64) as f32;
            }
        }
    });
    out
}

/// Where the centre of voxel `index` of level `to` lies in the continuous index of level `from`
/// (level f's voxel c is centred at full-grid index c·f + (f − 1)/2).
#[inline]
pub(crate) fn coarse_position(index: [usize; 3], from: usize, to: usize) -> [f32; 3] {
    let centre = |f: usize| (f as f32 - 1.0) / 2.0;
    index.map(|x| (x as f32 * to as f32 + centre(to) - centre(from)) / from as f32)
}

/// A voxel-unit field on level `from` resampled onto level `to` (finer or equal) of a grid of
/// `full_shape`: positions by trilinear interpolation, vectors rescaled by from/to.
pub fn refine_field(field: &VectorField, full_shape: [usize; 3], from: usize, to: usize) -> VectorField {
    let target = level_shape(full_shape, to);
    if from == to {
        return field.clone();
    }
    let (tx, ty) = (target[0], target[1]);
    let refiner = Refiner::new(field, target, from, to);
    let mut out = VectorField::zeros(target);
    let [a, b, c] = &mut out.components;
    a.par_chunks_mut(tx * ty).zip(b.par_chunks_mut(tx * ty)).zip(c.par_chunks_mut(tx * ty)).enumerate().for_each(
        |(k, ((pa, pb), pc))| {
            for j in 0..ty {
                for i in 0..tx {
                    let v = refiner.at([i, j, k]);
                    let m = i + tx * j;
                    (pa[m], pb[m], pc[m]) = (v[0], v[1], v[2]);
                }
            }
        },
    );
    out
}

/// `refine_field(field, _, from, to)` at the one voxel `index` of level `to`.
#[inline]
pub fn refined_at(field: &VectorField, index: [usize; 3], from: usize, to: usize) -> [f32; 3] {
    // full-grid index of this voxel's centre, then the coarse index there
    let v = sample_vector(field, coarse_position(index, from, to));
    let ratio = from as f32 / to as f32;
    v.map(|x| ratio * x)
}

/// `refined_at` for every voxel of one level `to` of a grid, with the part of each trilinear
/// cell that depends on one axis only worked out once per axis: the same values, without the
/// per-voxel divisions and border tests (the local estimate's warps refine its field for every
/// voxel of every pass).
pub struct Refiner<'a> {
    field: &'a VectorField,
    /// Per axis, per index of level `to`: the coarse cell's lower corner, fraction and inside flag.
    axes: [Vec<(usize, f32, f32)>; 3],
    ratio: f32,
}

impl<'a> Refiner<'a> {
    /// Refines `field` (on level `from`) onto level `to` of a grid whose level `to` is `target`.
    pub fn new(field: &'a VectorField, target: [usize; 3], from: usize, to: usize) -> Self {
        let axes = std::array::from_fn(|d| {
            (0..target[d])
                .map(|i| {
                    let mut index = [0; 3];
                    index[d] = i;
                    let p = coarse_position(index, from, to)[d];
                    axis_cell(field.shape[d], p, Outside::Clamp).expect("clamping always finds a cell")
                })
                .collect()
        });
        Refiner { field, axes, ratio: from as f32 / to as f32 }
    }

    /// `refined_at(field, index, from, to)`.
    #[inline(always)]
    pub fn at(&self, index: [usize; 3]) -> [f32; 3] {
        let axes = [self.axes[0][index[0]], self.axes[1][index[1]], self.axes[2][index[2]]];
        let v = vector_in_cell(self.field, &cell_of_axes(self.field.shape, axes));
        v.map(|x| self.ratio * x)
    }
}

/// The adjoint (transpose) of `refine_field(·, full_shape, from, to)`: takes a gradient with
/// respect to the refined field back to the coarse one, on `level_shape(full_shape, from)`.
/// The optimiser does this inside its one-pass comparison (`energy`); this plain version is the
/// reference that one is tested against.
#[cfg(test)]
pub fn refine_field_adjoint(gradient: &VectorField, full_shape: [usize; 3], from: usize, to: usize) -> VectorField {
    let coarse = level_shape(full_shape, from);
    if from == to {
        return gradient.clone();
    }
    let ratio = from as f32 / to as f32;
    let shape = gradient.shape;
    let (tx, ty) = (shape[0], shape[1]);
    let threads = rayon::current_num_threads().max(1);
    let planes = shape[2].div_ceil(threads);
    // Each task scatters its planes into its own field; the fields are summed afterwards.
    let partials: Vec<VectorField> = (0..threads)
        .into_par_iter()
        .map(|t| {
            let mut local = VectorField::zeros(coarse);
            for k in t * planes..((t + 1) * planes).min(shape[2]) {
                for j in 0..ty {
                    for i in 0..tx {
                        let p = coarse_position([i, j, k], from, to);
                        let n = i + tx * (j + ty * k);
                        let g = gradient.at(n).map(|v| ratio * v);
                        crate::diffeo::warp::scatter_vector(&mut local.components, coarse, p, g);
                    }
                }
            }
            local
        })
        .collect();
    let mut total = VectorField::zeros(coarse);
    for part in partials {
        total = total.plus_scaled(1.0, &part);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refiner_gives_refined_at_to_the_bit() {
        // Uneven sizes (partial boxes), an axis of one voxel, and every factor up to 4.
        for (full, from, to) in [([13, 10, 7], 4, 1), ([9, 1, 6], 2, 1), ([17, 11, 5], 4, 2), ([8, 8, 8], 3, 3)] {
            let coarse = level_shape(full, from);
            let mut field = VectorField::zeros(coarse);
            for (c, component) in field.components.iter_mut().enumerate() {
                for (n, v) in component.iter_mut().enumerate() {
                    *v = ((n * 7919 + c * 104729) % 1000) as f32 / 137.0 - 3.5;
                }
            }
            let target = level_shape(full, to);
            let refiner = Refiner::new(&field, target, from, to);
            for k in 0..target[2] {
                for j in 0..target[1] {
                    for i in 0..target[0] {
                        let (fast, plain) = (refiner.at([i, j, k]), refined_at(&field, [i, j, k], from, to));
                        assert_eq!(
                            fast.map(f32::to_bits),
                            plain.map(f32::to_bits),
                            "{full:?} {from}→{to} at {i},{j},{k}"
                        );
                    }
                }
            }
        }
    }

    /// Against a closed form, independent of the trilinear kernel the refiner shares with
    /// `refined_at`: a field affine in the coarse index refines to that affine function at each
    /// voxel's coarse position, clamped onto the coarse grid along every axis (borders included).
    #[test]
    fn the_refiner_reproduces_an_affine_field_and_clamps_at_every_border() {
        for (full, from, to) in [([13, 10, 7], 4, 1), ([9, 1, 6], 2, 1), ([17, 11, 5], 4, 2)] {
            let coarse = level_shape(full, from);
            let affine = |p: [f64; 3], c: usize| 0.3 + 0.2 * p[0] - 0.15 * p[1] + 0.1 * p[2] + c as f64;
            let field = VectorField::from_fn(coarse, |p| [affine(p, 0), affine(p, 1), affine(p, 2)]);
            let target = level_shape(full, to);
            let refiner = Refiner::new(&field, target, from, to);
            let ratio = from as f64 / to as f64;
            for k in 0..target[2] {
                for j in 0..target[1] {
                    for i in 0..target[0] {
                        let p = coarse_position([i, j, k], from, to);
                        let clamped: [f64; 3] =
                            std::array::from_fn(|d| (p[d] as f64).clamp(0.0, (coarse[d] - 1) as f64));
                        let got = refiner.at([i, j, k]);
                        for c in 0..3 {
                            let expected = ratio * affine(clamped, c);
                            assert!(
                                (got[c] as f64 - expected).abs() < 1e-4,
                                "{full:?} at {i},{j},{k}: {} vs {expected}",
                                got[c]
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn downsampling_averages_boxes() {
        let shape = [5, 4, 3];
        let image: Vec<f32> = (0..60).map(|v| v as f32).collect();
        let coarse = downsample(&image, shape, 2);
        assert_eq!(coarse.len(), 3 * 2 * 2);
        // Box (0..2, 0..2, 0..2): indices i + 5j + 20k.
        let expected = [0, 1, 5, 6, 20, 21, 25, 26].iter().sum::<i32>() as f32 / 8.0;
        assert_eq!(coarse[0], expected);
        // Partial box at the upper x border: i = 4 only.
        let partial = [4, 9, 24, 29].iter().sum::<i32>() as f32 / 4.0;
        assert_eq!(coarse[2], partial);
    }

    #[test]
    fn refining_a_linear_field_keeps_it_linear_in_full_grid_units() {
        // A displacement of (0.1·x_full) voxels of the full grid, stored on level 4.
        let full = [64, 48, 40];
        let coarse = level_shape(full, 4);
        let field = VectorField::from_fn(coarse, |p| [0.1 * (p[0] * 4.0 + 1.5) / 4.0, 0.0, 0.0]);
        let fine = refine_field(&field, full, 4, 2);
        for i in 2..30 {
            let expected = 0.1 * (i as f32 * 2.0 + 0.5) / 2.0;
            let got = fine.components[0][i + 32 * (10 + 24 * 10)];
            assert!((got - expected).abs() < 1e-4, "{i}: {got} vs {expected}");
        }
    }

    /// ⟨refine(a), b⟩ = ⟨a, adjoint(b)⟩ for random fields.
    #[test]
    fn the_adjoint_of_refining_is_its_transpose() {
        let full = [37, 30, 26];
        let wave = |p: [f64; 3], s: f64| (0.7 * p[0] + s).sin() * (0.5 * p[1] - s).cos() + 0.3 * (0.4 * p[2] * s).sin();
        let a = VectorField::from_fn(level_shape(full, 4), |p| [wave(p, 0.3), wave(p, 1.2), -wave(p, 2.1)]);
        let b = VectorField::from_fn(level_shape(full, 2), |p| [wave(p, 0.9), -wave(p, 0.4), wave(p, 1.7)]);
        let left = refine_field(&a, full, 4, 2).dot(&b);
        let right = a.dot(&refine_field_adjoint(&b, full, 4, 2));
        assert!((left - right).abs() < 1e-4 * left.abs(), "{left} vs {right}");
    }
}

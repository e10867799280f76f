//! The diffeomorphic machinery of SPEC §3 on whole volumes, as plain Rust kernels on all cores:
//! `smooth` (v = K⁻¹ ∗ m), `integrate` (φ = exp(v) by scaling and squaring), `warp` (trilinear
//! sampling at x + u(x)) and `jacobian` (det ∂φ/∂x, composition, inverse consistency).
//!
//! Fields here live on a voxel grid and are measured in voxels along the index axes; the
//! conversion to millimetres in LPS happens when a field leaves the engine.

pub mod energy;
pub mod integrate;
pub mod jacobian;
pub mod local_ncc;
pub mod pyramid;
pub mod region;
pub mod smooth;
pub mod tensor;
pub mod warp;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::volume::geometry::{Mat3, mat_vec};
use crate::volume::{DisplacementField, Geometry};

/// Every vector multiplied by `matrix`.
fn map_vectors(components: &[Vec<f32>; 3], matrix: &Mat3) -> [Vec<f32>; 3] {
    let n = components[0].len();
    let mut out = [vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]];
    let [x, y, z] = &mut out;
    x.par_iter_mut().zip(y.par_iter_mut()).zip(z.par_iter_mut()).enumerate().for_each(|(i, ((x, y), z))| {
        let v = [components[0][i] as f64, components[1][i] as f64, components[2][i] as f64];
        let w = mat_vec(matrix, v);
        (*x, *y, *z) = (w[0] as f32, w[1] as f32, w[2] as f32);
    });
    out
}

/// A vector per voxel, in voxel units along the index axes (i, j, k).
#[derive(Clone, Debug, PartialEq)]
pub struct VectorField {
    pub shape: [usize; 3],
    pub components: [Vec<f32>; 3],
}

impl VectorField {
    pub fn zeros(shape: [usize; 3]) -> Self {
        let n = shape.iter().product();
        VectorField { shape, components: [vec![0.0; n], vec![0.0; n], vec![0.0; n]] }
    }

    pub fn new(shape: [usize; 3], components: [Vec<f32>; 3]) -> Result<Self> {
        let n: usize = shape.iter().product();
        if components.iter().any(|c| c.len() != n) {
            return Err(Error::Invalid(format!("vector field components do not fit shape {shape:?}")));
        }
        Ok(VectorField { shape, components })
    }

    /// A field from a function of the voxel index.
    pub fn from_fn(shape: [usize; 3], f: impl Fn([f64; 3]) -> [f64; 3]) -> Self {
        let mut field = VectorField::zeros(shape);
        for k in 0..shape[2] {
            for j in 0..shape[1] {
                for i in 0..shape[0] {
                    let n = i + shape[0] * (j + shape[1] * k);
                    let v = f([i as f64, j as f64, k as f64]);
                    for d in 0..3 {
                        field.components[d][n] = v[d] as f32;
                    }
                }
            }
        }
        field
    }

    /// A field in voxel units from one in mm (LPS) on its grid.
    pub fn from_displacement_mm(field: &DisplacementField) -> Self {
        let to_index = field.geometry.world_to_index_matrix();
        VectorField { shape: field.geometry.shape, components: map_vectors(&field.components_mm, &to_index) }
    }

    /// The same field in mm (LPS) on `geometry`, which must have this field's shape.
    pub fn to_displacement_mm(&self, geometry: &Geometry) -> DisplacementField {
        assert_eq!(geometry.shape, self.shape, "field and geometry shapes differ");
        let to_world = geometry.index_to_world_matrix();
        DisplacementField { geometry: geometry.clone(), components_mm: map_vectors(&self.components, &to_world) }
    }

    /// Σ over voxels and components of self · other.
    pub fn dot(&self, other: &VectorField) -> f64 {
        (0..3)
            .map(|c| {
                let (a, b) = (&self.components[c], &other.components[c]);
                crate::parallel::fold_chunks(
                    a.len().min(b.len()),
                    |r| a[r.clone()].iter().zip(&b[r]).map(|(x, y)| *x as f64 * *y as f64).sum(),
                    0.0,
                    |p, q| p + q,
                )
            })
            .sum()
    }

    /// self += t · other, in place.
    pub fn add_scaled(&mut self, t: f32, other: &VectorField) {
        for c in 0..3 {
            self.components[c].par_iter_mut().zip(&other.components[c]).for_each(|(x, y)| *x += t * y);
        }
    }

    /// self + t · other.
    pub fn plus_scaled(&self, t: f32, other: &VectorField) -> VectorField {
        let mut out = self.clone();
        for c in 0..3 {
            out.components[c].par_iter_mut().zip(&other.components[c]).for_each(|(x, y)| *x += t * y);
        }
        out
    }

    pub fn voxel_count(&self) -> usize {
        self.components[0].len()
    }

    #[inline]
    pub fn at(&self, n: usize) -> [f32; 3] {
        [self.components[0][n], self.components[1][n], self.components[2][n]]
    }

    /// Every component multiplied by `factor`.
    pub fn scaled(&self, factor: f32) -> Self {
        let components = self.components.each_ref().map(|c| c.iter().map(|v| v * factor).collect());
        VectorField { shape: self.shape, components }
    }

    /// Largest vector length, in voxels.
    pub fn max_norm(&self) -> f32 {
        (0..self.voxel_count()).map(|n| self.at(n).iter().map(|v| v * v).sum::<f32>().sqrt()).fold(0.0, f32::max)
    }
}

//! The diffeomorphic machinery of SPEC §3 on whole volumes, as plain Rust kernels on all cores:
//! `smooth` (v = K⁻¹ ∗ m), `integrate` (φ = exp(v) by scaling and squaring), `warp` (trilinear
//! sampling at x + u(x)) and `jacobian` (det ∂φ/∂x, composition, inverse consistency).
//!
//! Fields here live on a voxel grid and are measured in voxels along the index axes; the
//! conversion to millimetres in LPS happens when a field leaves the engine.

pub mod integrate;
pub mod jacobian;
pub mod smooth;
pub mod warp;

use crate::error::{Error, Result};

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

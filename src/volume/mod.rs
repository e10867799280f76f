//! Volumes: voxels on a `Geometry`, displacement fields, resampling and HU→density calibration.

pub mod affine;
pub mod calibration;
pub mod field;
pub mod filter;
pub mod geometry;
pub mod resample;
pub mod trilinear;

pub use calibration::Calibration;
pub use field::DisplacementField;
pub use geometry::Geometry;
pub use resample::Interpolation;

use crate::error::{Error, Result};

/// A scalar image: f32 voxels (i fastest, then j, then k) on a geometry.
#[derive(Clone, Debug, PartialEq)]
pub struct Volume {
    pub geometry: Geometry,
    pub voxels: Vec<f32>,
}

impl Volume {
    pub fn new(geometry: Geometry, voxels: Vec<f32>) -> Result<Self> {
        if voxels.len() != geometry.voxel_count() {
            return Err(Error::Invalid(format!(
                "{} voxels given for a grid of shape {:?}",
                voxels.len(),
                geometry.shape
            )));
        }
        Ok(Volume { geometry, voxels })
    }

    /// A volume filled with one value.
    pub fn filled(geometry: Geometry, value: f32) -> Self {
        let voxels = vec![value; geometry.voxel_count()];
        Volume { geometry, voxels }
    }

    #[inline]
    pub fn at(&self, i: usize, j: usize, k: usize) -> f32 {
        self.voxels[self.geometry.linear_index(i, j, k)]
    }

    /// Smallest and largest finite voxel values, or None when no voxel is finite.
    pub fn value_range(&self) -> Option<(f32, f32)> {
        let (low, high) = self
            .voxels
            .iter()
            .filter(|v| v.is_finite())
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        (low <= high).then_some((low, high))
    }

    /// Number of voxels that are NaN or infinite.
    pub fn non_finite_count(&self) -> usize {
        self.voxels.iter().filter(|v| !v.is_finite()).count()
    }
}

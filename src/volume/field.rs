//! Displacement fields: a vector in millimetres (LPS) per voxel of a grid; point x maps to
//! x + u(x), the ITK convention that Greedy, ANTs and 3D Slicer read.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::volume::{Geometry, Volume};

#[derive(Clone, Debug, PartialEq)]
pub struct DisplacementField {
    pub geometry: Geometry,
    /// The L, P and S components, each laid out like `Volume::voxels`.
    pub components_mm: [Vec<f32>; 3],
}

impl DisplacementField {
    pub fn new(geometry: Geometry, components_mm: [Vec<f32>; 3]) -> Result<Self> {
        let n = geometry.voxel_count();
        if components_mm.iter().any(|c| c.len() != n) {
            return Err(Error::Invalid(format!(
                "displacement components of lengths {:?} for a grid of {n} voxels",
                components_mm.each_ref().map(Vec::len)
            )));
        }
        Ok(DisplacementField { geometry, components_mm })
    }

    /// The identity transform (zero displacement) on a grid.
    pub fn zero(geometry: Geometry) -> Self {
        let n = geometry.voxel_count();
        DisplacementField { geometry, components_mm: [vec![0.0; n], vec![0.0; n], vec![0.0; n]] }
    }

    /// A field whose displacement at every point is given by `displacement(world_mm)`.
    pub fn from_fn(geometry: Geometry, displacement: impl Fn([f64; 3]) -> [f64; 3] + Sync) -> Self {
        let n = geometry.voxel_count();
        let mut components_mm = [vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]];
        let [nx, ny, _] = geometry.shape;
        let [x, y, z] = &mut components_mm;
        x.par_iter_mut().zip(y.par_iter_mut()).zip(z.par_iter_mut()).enumerate().for_each(|(index, ((x, y), z))| {
            let (i, j, k) = (index % nx, (index / nx) % ny, index / (nx * ny));
            let u = displacement(geometry.index_to_world([i as f64, j as f64, k as f64]));
            (*x, *y, *z) = (u[0] as f32, u[1] as f32, u[2] as f32);
        });
        DisplacementField { geometry, components_mm }
    }

    /// The field resampled onto `grid` by nearest neighbour: exact when both grids hold the same
    /// points (`Geometry::same_points`), only reordered.
    pub fn on_grid(&self, grid: &Geometry) -> DisplacementField {
        use crate::volume::resample::{Interpolation, resample};
        let components_mm = std::array::from_fn(|d| {
            let component = Volume { geometry: self.geometry.clone(), voxels: self.components_mm[d].clone() };
            resample(&component, grid, Interpolation::Nearest, 0.0).voxels
        });
        DisplacementField { geometry: grid.clone(), components_mm }
    }

    #[inline]
    pub fn at(&self, linear_index: usize) -> [f64; 3] {
        std::array::from_fn(|d| self.components_mm[d][linear_index] as f64)
    }

    /// Number of vector components that are NaN or infinite.
    pub fn non_finite_count(&self) -> usize {
        self.components_mm.iter().flatten().filter(|v| !v.is_finite()).count()
    }

    /// Largest displacement length in mm.
    pub fn max_norm_mm(&self) -> f64 {
        (0..self.geometry.voxel_count()).map(|n| crate::volume::geometry::norm(self.at(n))).fold(0.0, f64::max)
    }
}

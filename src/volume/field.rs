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
        Self::from_fn_indexed(geometry, |_, world| displacement(world))
    }

    /// A field whose displacement at voxel `n` (flat position) is `displacement(n, world_mm)`.
    pub fn from_fn_indexed(geometry: Geometry, displacement: impl Fn(usize, [f64; 3]) -> [f64; 3] + Sync) -> Self {
        let n = geometry.voxel_count();
        let mut components_mm = [vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]];
        let [x, y, z] = &mut components_mm;
        x.par_iter_mut().zip(y.par_iter_mut()).zip(z.par_iter_mut()).enumerate().for_each(|(index, ((x, y), z))| {
            let u = displacement(index, geometry.world_of(index));
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

    /// The displacement (mm) at any world point, trilinear and clamped at the grid's border, with
    /// the world → index map computed once, for loops over many points.
    pub fn world_sampler(&self) -> impl Fn([f64; 3]) -> [f64; 3] + Sync + '_ {
        use crate::volume::trilinear::{Outside, sample3};
        let to_index = self.geometry.world_to_index_map();
        let components = self.components_mm.each_ref().map(Vec::as_slice);
        move |x| {
            let p = to_index.apply(x).map(|v| v as f32);
            sample3(components, self.geometry.shape, p, Outside::Clamp).unwrap_or([0.0; 3]).map(f64::from)
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::geometry::mat_mul;

    #[test]
    fn the_world_sampler_reproduces_a_linear_field_inside_and_clamps_outside() {
        let (c, s) = (0.4f64.cos(), 0.4f64.sin());
        let rz = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]];
        let rx = [[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]];
        let grid = Geometry::new([8, 9, 10], [1.2, 0.9, 2.0], [5.0, -3.0, 12.0], mat_mul(&rx, &rz)).unwrap();
        // Trilinear interpolation is exact for a field linear in the index, hence in the world point.
        let linear = |x: [f64; 3]| [0.1 * x[0] - 0.05 * x[2] + 1.0, 0.02 * x[1] + 0.5, -0.03 * x[0] + 0.04 * x[1]];
        let field = DisplacementField::from_fn(grid.clone(), linear);
        let at_world = field.world_sampler();
        let inside = grid.index_to_world([3.3, 4.7, 6.1]);
        let (got, want) = (at_world(inside), linear(inside));
        assert!((0..3).all(|d| (got[d] - want[d]).abs() < 1e-4), "{got:?} vs {want:?}");
        // Beyond the last voxel along i the value is that of the border.
        let beyond = grid.index_to_world([12.0, 4.0, 5.0]);
        let border = linear(grid.index_to_world([7.0, 4.0, 5.0]));
        let got = at_world(beyond);
        assert!((0..3).all(|d| (got[d] - border[d]).abs() < 1e-4), "{got:?} vs {border:?}");
    }
}

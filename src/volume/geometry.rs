//! Where voxels sit in the patient: shape, spacing, origin and direction, in the LPS world frame.
//!
//! Every move between voxel indices and world millimetres happens here, so that the rest of the
//! code never composes an affine by hand.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub type Vec3 = [f64; 3];
/// Row-major 3×3 matrix: `m[row][col]`.
pub type Mat3 = [[f64; 3]; 3];

/// Voxel counts above this are refused as absurd (about 4 G voxels, 16 GB of f32).
pub const MAX_VOXELS: usize = 1 << 32;

/// The grid of a volume. `direction`'s columns are the world directions (LPS) of the index axes
/// i, j, k, as in ITK: `world = origin + direction · diag(spacing_mm) · index`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Geometry {
    pub shape: [usize; 3],
    pub spacing_mm: Vec3,
    pub origin_mm: Vec3,
    pub direction: Mat3,
}

/// World point (LPS mm) → continuous voxel index on one grid; made by
/// `Geometry::world_to_index_map`.
#[derive(Clone, Copy, Debug)]
pub struct WorldToIndex {
    matrix: Mat3,
    origin_mm: Vec3,
}

impl WorldToIndex {
    #[inline]
    pub fn apply(&self, world_mm: Vec3) -> Vec3 {
        mat_vec(&self.matrix, sub(world_mm, self.origin_mm))
    }
}

impl Geometry {
    /// A geometry after checking that it describes a real grid: non-empty, not absurdly large,
    /// finite positive spacing and an invertible direction matrix.
    pub fn new(shape: [usize; 3], spacing_mm: Vec3, origin_mm: Vec3, direction: Mat3) -> Result<Self> {
        let geometry = Geometry { shape, spacing_mm, origin_mm, direction };
        geometry.validate()?;
        Ok(geometry)
    }

    /// An axis-aligned grid (identity direction).
    pub fn axis_aligned(shape: [usize; 3], spacing_mm: Vec3, origin_mm: Vec3) -> Result<Self> {
        Self::new(shape, spacing_mm, origin_mm, IDENTITY)
    }

    pub fn validate(&self) -> Result<()> {
        if self.shape.contains(&0) {
            return Err(Error::Invalid(format!("empty grid of shape {:?}", self.shape)));
        }
        let voxels = self.shape.iter().try_fold(1usize, |acc, &n| acc.checked_mul(n));
        if voxels.is_none_or(|v| v > MAX_VOXELS) {
            return Err(Error::Invalid(format!(
                "grid of shape {:?} is too large (more than {MAX_VOXELS} voxels)",
                self.shape
            )));
        }
        if self.spacing_mm.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return Err(Error::Invalid(format!("spacing {:?} mm is not positive and finite", self.spacing_mm)));
        }
        if self.origin_mm.iter().any(|o| !o.is_finite()) {
            return Err(Error::Invalid(format!("origin {:?} is not finite", self.origin_mm)));
        }
        let det = det3(&self.direction);
        if !det.is_finite() || det.abs() < 1e-6 {
            return Err(Error::Invalid(format!("direction matrix {:?} is singular", self.direction)));
        }
        Ok(())
    }

    pub fn voxel_count(&self) -> usize {
        self.shape[0] * self.shape[1] * self.shape[2]
    }

    /// Position in the flat voxel array of index (i, j, k); i varies fastest.
    #[inline]
    pub fn linear_index(&self, i: usize, j: usize, k: usize) -> usize {
        i + self.shape[0] * (j + self.shape[1] * k)
    }

    /// The matrix taking an index step to a world step: direction · diag(spacing).
    pub fn index_to_world_matrix(&self) -> Mat3 {
        let mut m = self.direction;
        for row in &mut m {
            for (c, value) in row.iter_mut().enumerate() {
                *value *= self.spacing_mm[c];
            }
        }
        m
    }

    /// World point (LPS mm) of a continuous voxel index.
    pub fn index_to_world(&self, index: Vec3) -> Vec3 {
        add(self.origin_mm, mat_vec(&self.index_to_world_matrix(), index))
    }

    /// Continuous voxel index of a world point (LPS mm).
    pub fn world_to_index(&self, world_mm: Vec3) -> Vec3 {
        self.world_to_index_map().apply(world_mm)
    }

    /// The world → index map with its inverse computed once, for loops over many points.
    pub fn world_to_index_map(&self) -> WorldToIndex {
        WorldToIndex { matrix: self.world_to_index_matrix(), origin_mm: self.origin_mm }
    }

    /// The voxel index (i, j, k) at position `n` of the flat voxel array, as a continuous index.
    #[inline]
    pub fn index_of(&self, n: usize) -> Vec3 {
        let [nx, ny, _] = self.shape;
        [(n % nx) as f64, ((n / nx) % ny) as f64, (n / (nx * ny)) as f64]
    }

    /// World point (LPS mm) of the voxel at position `n` of the flat voxel array.
    #[inline]
    pub fn world_of(&self, n: usize) -> Vec3 {
        self.index_to_world(self.index_of(n))
    }

    /// Inverse of `index_to_world_matrix`.
    pub fn world_to_index_matrix(&self) -> Mat3 {
        inverse3(&self.index_to_world_matrix())
    }

    /// The 4×4 homogeneous index→world matrix in LPS.
    pub fn affine_lps(&self) -> [[f64; 4]; 4] {
        let m = self.index_to_world_matrix();
        let o = self.origin_mm;
        [
            [m[0][0], m[0][1], m[0][2], o[0]],
            [m[1][0], m[1][1], m[1][2], o[1]],
            [m[2][0], m[2][1], m[2][2], o[2]],
            [0.0, 0.0, 0.0, 1.0],
        ]
    }

    /// The geometry of a grid whose index→world (LPS) matrix is `affine` (upper 3×4 used).
    /// Spacing is the length of each column; direction the normalised columns.
    pub fn from_affine_lps(shape: [usize; 3], affine: &[[f64; 4]; 4]) -> Result<Self> {
        let mut spacing = [0.0; 3];
        let mut direction = [[0.0; 3]; 3];
        for c in 0..3 {
            let column = [affine[0][c], affine[1][c], affine[2][c]];
            spacing[c] = norm(column);
            for r in 0..3 {
                direction[r][c] = if spacing[c] > 0.0 { column[r] / spacing[c] } else { 0.0 };
            }
        }
        Self::new(shape, spacing, [affine[0][3], affine[1][3], affine[2][3]], direction)
    }

    /// World positions of the 8 corner voxel centres.
    pub fn corners(&self) -> [Vec3; 8] {
        let last = self.shape.map(|n| (n - 1) as f64);
        std::array::from_fn(|n| {
            self.index_to_world([
                if n & 1 == 0 { 0.0 } else { last[0] },
                if n & 2 == 0 { 0.0 } else { last[1] },
                if n & 4 == 0 { 0.0 } else { last[2] },
            ])
        })
    }

    /// Axis-aligned world box (min, max) holding every voxel centre.
    pub fn bounding_box(&self) -> (Vec3, Vec3) {
        let mut low = [f64::INFINITY; 3];
        let mut high = [f64::NEG_INFINITY; 3];
        for corner in self.corners() {
            for d in 0..3 {
                low[d] = low[d].min(corner[d]);
                high[d] = high[d].max(corner[d]);
            }
        }
        (low, high)
    }

    /// Physical size (mm) of the grid along each index axis, voxel centre to voxel centre.
    pub fn extent_mm(&self) -> Vec3 {
        std::array::from_fn(|d| (self.shape[d] - 1) as f64 * self.spacing_mm[d])
    }

    /// Whether two geometries describe the same grid within `tolerance_mm` at every corner.
    pub fn same_grid(&self, other: &Geometry, tolerance_mm: f64) -> bool {
        self.shape == other.shape
            && self.corners().iter().zip(other.corners().iter()).all(|(a, b)| norm(sub(*a, *b)) <= tolerance_mm)
            && {
                let (a, b) = (self.index_to_world([1.0; 3]), other.index_to_world([1.0; 3]));
                norm(sub(a, b)) <= tolerance_mm
            }
    }

    /// Three-letter orientation code (ITK/DICOM style, e.g. "LPS" or "RAI"): for each index axis,
    /// the patient direction it points towards.
    /// Whether both grids hold the same points, perhaps in another order (an axis reversed or
    /// axes swapped): each of `other`'s voxel centres is one of ours, within `tolerance_mm`.
    pub fn same_points(&self, other: &Geometry, tolerance_mm: f64) -> bool {
        if self.voxel_count() != other.voxel_count() {
            return false;
        }
        let on_grid = |index: Vec3| {
            (0..3).all(|d| {
                let rounded = index[d].round();
                rounded >= 0.0
                    && rounded <= (self.shape[d] - 1) as f64
                    && (index[d] - rounded).abs() * self.spacing_mm[d] <= tolerance_mm
            })
        };
        let corners_on_grid = other.corners().iter().all(|&corner| on_grid(self.world_to_index(corner)));
        let steps_on_grid = (0..3).all(|d| {
            let mut step = [0.0; 3];
            step[d] = 1.0;
            let a = self.world_to_index(other.index_to_world([0.0; 3]));
            let b = self.world_to_index(other.index_to_world(step));
            let delta = sub(b, a);
            let moved: Vec<f64> = delta.iter().map(|v| v.abs()).collect();
            moved.iter().filter(|&&v| (v - 1.0).abs() < 1e-3).count() == 1
                && moved.iter().filter(|&&v| v < 1e-3).count() == 2
        });
        corners_on_grid && steps_on_grid
    }

    pub fn orientation_code(&self) -> String {
        (0..3).map(|c| direction_letter([self.direction[0][c], self.direction[1][c], self.direction[2][c]])).collect()
    }
}

/// The letter of the patient direction a world (LPS) vector points to most.
pub fn direction_letter(world: Vec3) -> char {
    let axis = (0..3).max_by(|&a, &b| world[a].abs().total_cmp(&world[b].abs())).unwrap_or(0);
    match (axis, world[axis] >= 0.0) {
        (0, true) => 'L',
        (0, false) => 'R',
        (1, true) => 'P',
        (1, false) => 'A',
        (2, true) => 'S',
        _ => 'I',
    }
}

pub const IDENTITY: Mat3 = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];

pub fn add(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

pub fn sub(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

pub fn dot(a: Vec3, b: Vec3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

pub fn cross(a: Vec3, b: Vec3) -> Vec3 {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}

pub fn norm(a: Vec3) -> f64 {
    dot(a, a).sqrt()
}

pub fn mat_vec(m: &Mat3, v: Vec3) -> Vec3 {
    [dot(m[0], v), dot(m[1], v), dot(m[2], v)]
}

pub fn mat_mul(a: &Mat3, b: &Mat3) -> Mat3 {
    std::array::from_fn(|r| std::array::from_fn(|c| (0..3).map(|k| a[r][k] * b[k][c]).sum()))
}

pub fn transpose(m: &Mat3) -> Mat3 {
    std::array::from_fn(|r| std::array::from_fn(|c| m[c][r]))
}

pub fn det3(m: &Mat3) -> f64 {
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

/// Inverse of a 3×3 matrix by cofactors; the caller guarantees it is invertible.
pub fn inverse3(m: &Mat3) -> Mat3 {
    let det = det3(m);
    let cofactor = |r0: usize, r1: usize, c0: usize, c1: usize| m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0];
    [
        [cofactor(1, 2, 1, 2) / det, -cofactor(0, 2, 1, 2) / det, cofactor(0, 1, 1, 2) / det],
        [-cofactor(1, 2, 0, 2) / det, cofactor(0, 2, 0, 2) / det, -cofactor(0, 1, 0, 2) / det],
        [cofactor(1, 2, 0, 1) / det, -cofactor(0, 2, 0, 1) / det, cofactor(0, 1, 0, 1) / det],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oblique() -> Geometry {
        let (c, s) = (0.3f64.cos(), 0.3f64.sin());
        // A rotation about z followed by one about x, so no axis is aligned.
        let rz = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]];
        let rx = [[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]];
        Geometry::new([7, 9, 11], [0.8, 1.1, 2.5], [-10.0, 20.0, 5.5], mat_mul(&rx, &rz)).unwrap()
    }

    #[test]
    fn index_world_round_trip() {
        let g = oblique();
        let index = [1.25, 7.5, 3.0];
        let back = g.world_to_index(g.index_to_world(index));
        for d in 0..3 {
            assert!((back[d] - index[d]).abs() < 1e-12);
        }
    }

    #[test]
    fn flat_positions_map_to_their_voxel_centres() {
        let g = oblique();
        let to_index = g.world_to_index_map();
        let n = g.linear_index(3, 5, 8);
        assert_eq!(g.index_of(n), [3.0, 5.0, 8.0]);
        let world = g.world_of(n);
        // The voxel centre by the ITK formula, written out: origin + direction · diag(spacing) · index.
        for r in 0..3 {
            let expected =
                g.origin_mm[r] + (0..3).map(|c| g.direction[r][c] * g.spacing_mm[c] * [3.0, 5.0, 8.0][c]).sum::<f64>();
            assert!((world[r] - expected).abs() < 1e-12);
        }
        let back = to_index.apply(world);
        assert!((0..3).all(|d| (back[d] - [3.0, 5.0, 8.0][d]).abs() < 1e-12));
    }

    #[test]
    fn one_step_along_an_axis_moves_by_its_spacing() {
        let g = oblique();
        for d in 0..3 {
            let mut index = [0.0; 3];
            index[d] = 1.0;
            let step = sub(g.index_to_world(index), g.origin_mm);
            assert!((norm(step) - g.spacing_mm[d]).abs() < 1e-12);
        }
    }

    #[test]
    fn affine_round_trip() {
        let g = oblique();
        let back = Geometry::from_affine_lps(g.shape, &g.affine_lps()).unwrap();
        assert!(g.same_grid(&back, 1e-9));
    }

    #[test]
    fn rejects_bad_grids() {
        assert!(Geometry::axis_aligned([0, 4, 4], [1.0; 3], [0.0; 3]).is_err());
        assert!(Geometry::axis_aligned([4, 4, 4], [1.0, 0.0, 1.0], [0.0; 3]).is_err());
        assert!(Geometry::axis_aligned([4, 4, 4], [1.0, f64::NAN, 1.0], [0.0; 3]).is_err());
        assert!(Geometry::axis_aligned([1 << 20, 1 << 20, 1 << 20], [1.0; 3], [0.0; 3]).is_err());
        assert!(
            Geometry::new([4, 4, 4], [1.0; 3], [0.0; 3], [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]).is_err()
        );
    }

    #[test]
    fn orientation_codes() {
        let g = Geometry::axis_aligned([2, 2, 2], [1.0; 3], [0.0; 3]).unwrap();
        assert_eq!(g.orientation_code(), "LPS");
        let flipped =
            Geometry::new([2, 2, 2], [1.0; 3], [0.0; 3], [[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]])
                .unwrap();
        assert_eq!(flipped.orientation_code(), "RAS");
    }
}

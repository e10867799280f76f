//! Affine (in practice rigid) maps between world points, in ITK's form
//! y = M·(x − c) + c + t, from fixed-space points to moving-space points.

use crate::volume::geometry::{IDENTITY, Mat3, Vec3, add, mat_mul, mat_vec, sub};
use crate::volume::{DisplacementField, Geometry};

#[derive(Clone, Debug, PartialEq)]
pub struct AffineTransform {
    pub matrix: Mat3,
    pub translation_mm: Vec3,
    pub center_mm: Vec3,
}

impl Default for AffineTransform {
    fn default() -> Self {
        AffineTransform::identity()
    }
}

impl AffineTransform {
    pub fn identity() -> Self {
        AffineTransform { matrix: IDENTITY, translation_mm: [0.0; 3], center_mm: [0.0; 3] }
    }

    /// A rotation by ITK Euler3D angles (radians; R = Rz·Rx·Ry) about `center_mm`, then a
    /// translation.
    pub fn from_euler(angles_rad: Vec3, translation_mm: Vec3, center_mm: Vec3) -> Self {
        let [ax, ay, az] = angles_rad;
        let rx = [[1.0, 0.0, 0.0], [0.0, ax.cos(), -ax.sin()], [0.0, ax.sin(), ax.cos()]];
        let ry = [[ay.cos(), 0.0, ay.sin()], [0.0, 1.0, 0.0], [-ay.sin(), 0.0, ay.cos()]];
        let rz = [[az.cos(), -az.sin(), 0.0], [az.sin(), az.cos(), 0.0], [0.0, 0.0, 1.0]];
        AffineTransform { matrix: mat_mul(&rz, &mat_mul(&rx, &ry)), translation_mm, center_mm }
    }

    pub fn apply(&self, point_mm: Vec3) -> Vec3 {
        add(add(mat_vec(&self.matrix, sub(point_mm, self.center_mm)), self.center_mm), self.translation_mm)
    }

    /// The inverse map: y = M(x − c) + c + t  ⇔  x = M⁻¹(y − c − t) + c.
    pub fn inverse(&self) -> AffineTransform {
        let matrix = crate::volume::geometry::inverse3(&self.matrix);
        AffineTransform {
            translation_mm: sub([0.0; 3], mat_vec(&matrix, self.translation_mm)),
            matrix,
            center_mm: self.center_mm,
        }
    }

    /// This transform followed by `next`: x ↦ next(self(x)).
    pub fn then(&self, next: &AffineTransform) -> AffineTransform {
        let matrix = mat_mul(&next.matrix, &self.matrix);
        let translation_mm = sub(next.apply(self.apply([0.0; 3])), mat_vec(&matrix, [0.0; 3]));
        AffineTransform { matrix, translation_mm, center_mm: [0.0; 3] }
    }

    /// The grid carried by this (rigid) transform: each voxel centre x moves to T(x), so the
    /// same voxels describe the same object placed elsewhere in the world.
    pub fn move_geometry(&self, geometry: &Geometry) -> crate::error::Result<Geometry> {
        Geometry::new(
            geometry.shape,
            geometry.spacing_mm,
            self.apply(geometry.origin_mm),
            mat_mul(&self.matrix, &geometry.direction),
        )
    }

    /// The displacement field x ↦ T(x) − x on a grid.
    pub fn to_displacement_field(&self, geometry: &Geometry) -> DisplacementField {
        DisplacementField::from_fn(geometry.clone(), |x| sub(self.apply(x), x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::geometry::norm;

    #[test]
    fn then_applies_one_after_the_other() {
        let a = AffineTransform::from_euler([0.2, -0.1, 0.3], [5.0, -2.0, 7.0], [10.0, 20.0, -5.0]);
        let b = AffineTransform::from_euler([-0.4, 0.5, 0.1], [-50.0, 120.0, 3.0], [1.0, -2.0, 30.0]);
        for p in [[0.0, 0.0, 0.0], [33.0, -12.0, 8.5]] {
            assert!(norm(sub(a.then(&b).apply(p), b.apply(a.apply(p)))) < 1e-9);
        }
        let g = Geometry::new([4, 5, 6], [1.0, 1.5, 2.0], [3.0, -4.0, 5.0], IDENTITY).unwrap();
        let moved = b.move_geometry(&g).unwrap();
        let index = [2.0, 3.0, 4.5];
        assert!(norm(sub(moved.index_to_world(index), b.apply(g.index_to_world(index)))) < 1e-9);
    }

    #[test]
    fn inverse_undoes_the_transform() {
        let t = AffineTransform::from_euler([0.2, -0.1, 0.3], [5.0, -2.0, 7.0], [10.0, 20.0, -5.0]);
        for p in [[0.0, 0.0, 0.0], [33.0, -12.0, 8.5]] {
            assert!(norm(sub(t.inverse().apply(t.apply(p)), p)) < 1e-9);
        }
    }
}

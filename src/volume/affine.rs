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
    fn inverse_undoes_the_transform() {
        let t = AffineTransform::from_euler([0.2, -0.1, 0.3], [5.0, -2.0, 7.0], [10.0, 20.0, -5.0]);
        for p in [[0.0, 0.0, 0.0], [33.0, -12.0, 8.5]] {
            assert!(norm(sub(t.inverse().apply(t.apply(p)), p)) < 1e-9);
        }
    }
}

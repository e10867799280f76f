//! Displacement fields as ITK reads them (SPEC §5): NIfTI-1, float32, dims (X, Y, Z, 1, 3),
//! intent VECTOR, vectors in millimetres in LPS on the grid they start from.

use std::path::Path;

use crate::error::{Error, Result};
use crate::io::nifti::{ElementKind, INTENT_DISPVECT, INTENT_VECTOR, read_nifti, trim_dims, write_nifti};
use crate::volume::DisplacementField;

/// Reads a displacement field written by us, Greedy, ANTs or any ITK tool, or the field of a
/// DICOM Deformable Spatial Registration object (registered point x ↦ source point x + u(x)).
pub fn read_field(path: &Path) -> Result<DisplacementField> {
    if crate::io::dicom_registration::is_dicom_file(path) {
        return Ok(crate::io::dicom_registration::read_registration(path)?.field);
    }
    let image = read_nifti(path)?;
    let [_, _, _, t, components, ..] = image.dims;
    if t != 1 || components != 3 || image.dims[5..].iter().any(|&n| n != 1) {
        return Err(Error::bad_input(
            path,
            format!("has dimensions {:?}; a displacement field has (X, Y, Z, 1, 3)", trim_dims(&image.dims)),
        ));
    }
    if image.intent_code != INTENT_VECTOR && image.intent_code != INTENT_DISPVECT && image.intent_code != 0 {
        return Err(Error::bad_input(
            path,
            format!("has NIfTI intent {}; a displacement field has 1007 (vector)", image.intent_code),
        ));
    }
    let n = image.geometry.voxel_count();
    let mut data = image.data;
    let z = data.split_off(2 * n);
    let y = data.split_off(n);
    let field =
        DisplacementField::new(image.geometry, [data, y, z]).map_err(|e| Error::bad_input(path, e.to_string()))?;
    let bad = field.non_finite_count();
    if bad > 0 {
        return Err(Error::bad_input(path, format!("has {bad} NaN or infinite displacement components")));
    }
    Ok(field)
}

/// Writes a displacement field in the ITK convention, atomically.
pub fn write_field(path: &Path, field: &DisplacementField) -> Result<()> {
    let [nx, ny, nz] = field.geometry.shape;
    let n = field.geometry.voxel_count();
    // The components are stored one after the other; a block may span two of them.
    write_nifti(
        path,
        &field.geometry,
        &[nx, ny, nz, 1, 3, 1, 1],
        INTENT_VECTOR,
        ElementKind::F32,
        3 * n,
        |range, sink| {
            for (c, component) in field.components_mm.iter().enumerate() {
                let (start, end) = (range.start.max(c * n), range.end.min((c + 1) * n));
                if start < end {
                    sink(&component[start - c * n..end - c * n]);
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Geometry;

    #[test]
    fn round_trip_keeps_every_component() {
        let dir = tempfile::tempdir().unwrap();
        let geometry = Geometry::axis_aligned([4, 3, 2], [1.0, 2.0, 3.0], [5.0, 6.0, 7.0]).unwrap();
        let field = DisplacementField::from_fn(geometry, |p| [p[0] * 0.1, -p[1], 2.0 + p[2]]);
        let path = dir.path().join("f.nii.gz");
        write_field(&path, &field).unwrap();
        assert_eq!(read_field(&path).unwrap(), field);
    }

    #[test]
    fn round_trip_of_a_field_larger_than_one_write_block() {
        let dir = tempfile::tempdir().unwrap();
        // 3 × 384 000 components: write blocks of 2^20 values span component borders.
        let geometry = Geometry::axis_aligned([80, 80, 60], [1.0; 3], [0.0; 3]).unwrap();
        let field = DisplacementField::from_fn(geometry, |p| [p[0], 100.0 + p[1], -p[2]]);
        for name in ["big.nii", "big.nii.gz"] {
            let path = dir.path().join(name);
            write_field(&path, &field).unwrap();
            assert_eq!(read_field(&path).unwrap(), field);
        }
    }

    #[test]
    fn a_scalar_volume_is_not_a_field() {
        let dir = tempfile::tempdir().unwrap();
        let geometry = Geometry::axis_aligned([4, 3, 2], [1.0; 3], [0.0; 3]).unwrap();
        let path = dir.path().join("v.nii");
        crate::io::nifti::write_volume(
            &path,
            &crate::volume::Volume::filled(geometry, 1.0),
            crate::io::nifti::StoredType::Float32,
        )
        .unwrap();
        let message = read_field(&path).unwrap_err().to_string();
        assert!(message.contains("v.nii") && message.contains("(X, Y, Z, 1, 3)"), "{message}");
    }
}

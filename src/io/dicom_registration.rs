//! The deformation as a DICOM Deformable Spatial Registration object (SOP class
//! 1.2.840.10008.5.1.4.1.1.66.3), written and read.
//!
//! Written: the registered frame of reference is the fixed CT's, the source frame the moving
//! image's. One Deformable Registration Sequence item holds the forward field on the fixed grid
//! as Vector Grid Data (float32 triples, x fastest, then y, then z; mm in the patient
//! coordinates, LPS): a point x of the registered frame corresponds to the point x + v(x) of the
//! source frame. The rigid part is folded into the vectors, and the Pre and Post Deformation
//! Matrix Registration Sequences are both the identity (type RIGID), so readers that apply
//! "pre-matrix, then grid, then post-matrix" and readers that take the vectors alone agree.
//! The grid's third axis is the cross product of the first two (a left-handed fixed grid is
//! written with its slices in reverse order).
//!
//! Read: any such object whose grid item names a source frame; pre and post matrices are
//! applied as y = Mpost · (p + v(p)), p = Mpre · x, and the result is returned as a
//! displacement field on the grid.

use std::path::Path;

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::OpenFileOptions;

use crate::error::{Error, Result};
use crate::io::dicom_write::{
    DEFORMABLE_SPATIAL_REGISTRATION_STORAGE, Object, SeriesIdentity, date_and_time_now, instance_reference, new_uid,
    put_common, put_decimals, put_doubles, put_empty, put_integer_string, put_new_series, put_sequence, put_str,
    sop_class_of, write_file,
};
use crate::volume::geometry::{Mat3, cross, det3, norm};
use crate::volume::{DisplacementField, Geometry};

/// What the writer needs to know besides the field.
pub struct RegistrationToWrite<'a> {
    /// On the fixed grid, fixed point x ↦ moving point x + u(x), rigid part included.
    pub forward: &'a DisplacementField,
    /// The fixed CT: registered frame, patient, study.
    pub fixed: &'a SeriesIdentity,
    /// The moving image: source frame and the instances registered.
    pub moving: &'a SeriesIdentity,
    pub description: &'a str,
}

/// Writes `registration.dcm`; returns its SOP instance UID.
pub fn write_registration(path: &Path, registration: &RegistrationToWrite) -> Result<String> {
    let fixed = registration.fixed;
    let moving = registration.moving;
    let registered_frame = fixed.frame("fixed", "a registration to it")?;
    let source_frame = moving.frame("moving", "a registration from it")?;
    let instance_uid = new_uid();
    let (date, time) = date_and_time_now();
    let mut object = Object::new_empty();
    put_common(&mut object, DEFORMABLE_SPATIAL_REGISTRATION_STORAGE, &instance_uid);
    fixed.put_patient_and_study(&mut object);
    // General and Spatial Registration Series, Frame of Reference, equipment.
    put_new_series(&mut object, "REG", &new_uid(), 9002, registration.description);
    put_empty(&mut object, tags::LATERALITY, VR::CS);
    put_str(&mut object, tags::FRAME_OF_REFERENCE_UID, VR::UI, registered_frame);
    put_str(&mut object, tags::POSITION_REFERENCE_INDICATOR, VR::LO, &fixed.position_reference_indicator);
    put_str(&mut object, tags::DEVICE_SERIAL_NUMBER, VR::LO, "0");
    // Deformable Spatial Registration module with its Content Identification.
    put_str(&mut object, tags::CONTENT_DATE, VR::DA, &date);
    put_str(&mut object, tags::CONTENT_TIME, VR::TM, &time);
    put_integer_string(&mut object, tags::INSTANCE_NUMBER, 1);
    put_str(&mut object, tags::CONTENT_LABEL, VR::CS, "DIFFEOREG");
    put_str(&mut object, tags::CONTENT_DESCRIPTION, VR::LO, registration.description);
    put_empty(&mut object, tags::CONTENT_CREATOR_NAME, VR::PN);

    let mut item = Object::new_empty();
    put_str(&mut item, tags::SOURCE_FRAME_OF_REFERENCE_UID, VR::UI, source_frame);
    if !moving.instances.is_empty() {
        let references = moving.instances.iter().map(|(class, instance)| instance_reference(class, instance)).collect();
        put_sequence(&mut item, tags::REFERENCED_IMAGE_SEQUENCE, references);
    }
    put_str(
        &mut item,
        tags::FRAME_OF_REFERENCE_TRANSFORMATION_COMMENT,
        VR::LO,
        "diffeomorphic; rigid part folded into the vectors",
    );
    put_sequence(&mut item, tags::REGISTRATION_TYPE_CODE_SEQUENCE, Vec::new());
    put_sequence(&mut item, tags::PRE_DEFORMATION_MATRIX_REGISTRATION_SEQUENCE, vec![identity_matrix_item()]);
    put_sequence(&mut item, tags::POST_DEFORMATION_MATRIX_REGISTRATION_SEQUENCE, vec![identity_matrix_item()]);
    put_sequence(&mut item, tags::DEFORMABLE_REGISTRATION_GRID_SEQUENCE, vec![grid_item(registration.forward)]);
    put_sequence(&mut object, tags::DEFORMABLE_REGISTRATION_SEQUENCE, vec![item]);

    // Common Instance Reference: the fixed series (this study) and the moving one.
    let series_item = |identity: &SeriesIdentity| {
        let mut series = Object::new_empty();
        put_str(&mut series, tags::SERIES_INSTANCE_UID, VR::UI, &identity.series_uid);
        let references =
            identity.instances.iter().map(|(class, instance)| instance_reference(class, instance)).collect();
        put_sequence(&mut series, tags::REFERENCED_INSTANCE_SEQUENCE, references);
        series
    };
    let mut this_study = Vec::new();
    let mut other_studies = Vec::new();
    for identity in [fixed, moving] {
        if identity.instances.is_empty() {
            continue;
        }
        if identity.study_uid == fixed.study_uid {
            this_study.push(series_item(identity));
        } else {
            let mut study = Object::new_empty();
            put_str(&mut study, tags::STUDY_INSTANCE_UID, VR::UI, &identity.study_uid);
            put_sequence(&mut study, tags::REFERENCED_SERIES_SEQUENCE, vec![series_item(identity)]);
            other_studies.push(study);
        }
    }
    if !this_study.is_empty() {
        put_sequence(&mut object, tags::REFERENCED_SERIES_SEQUENCE, this_study);
    }
    if !other_studies.is_empty() {
        put_sequence(&mut object, tags::STUDIES_CONTAINING_OTHER_REFERENCED_INSTANCES_SEQUENCE, other_studies);
    }
    write_file(path, object)?;
    Ok(instance_uid)
}

fn identity_matrix_item() -> Object {
    let mut item = Object::new_empty();
    let identity: Vec<f64> = (0..16).map(|n| if n % 5 == 0 { 1.0 } else { 0.0 }).collect();
    put_decimals(&mut item, tags::FRAME_OF_REFERENCE_TRANSFORMATION_MATRIX, &identity);
    put_str(&mut item, tags::FRAME_OF_REFERENCE_TRANSFORMATION_MATRIX_TYPE, VR::CS, "RIGID");
    item
}

/// The grid item: geometry and vectors, slices reversed when the grid is left-handed.
fn grid_item(field: &DisplacementField) -> Object {
    let g = &field.geometry;
    let [nx, ny, nz] = g.shape;
    let reversed = det3(&g.direction) < 0.0;
    let row = [g.direction[0][0], g.direction[1][0], g.direction[2][0]];
    let column = [g.direction[0][1], g.direction[1][1], g.direction[2][1]];
    let origin = if reversed { g.index_to_world([0.0, 0.0, (nz - 1) as f64]) } else { g.origin_mm };
    let mut vectors = Vec::with_capacity(g.voxel_count() * 3);
    for slice in 0..nz {
        let k = if reversed { nz - 1 - slice } else { slice };
        for index in k * nx * ny..(k + 1) * nx * ny {
            vectors.extend(field.components_mm.iter().map(|c| c[index]));
        }
    }
    let mut item = Object::new_empty();
    let orientation: Vec<f64> = row.iter().chain(&column).copied().collect();
    put_decimals(&mut item, tags::IMAGE_ORIENTATION_PATIENT, &orientation);
    put_decimals(&mut item, tags::IMAGE_POSITION_PATIENT, &origin);
    item.put(DataElement::new(
        tags::GRID_DIMENSIONS,
        VR::UL,
        PrimitiveValue::U32([nx as u32, ny as u32, nz as u32].into_iter().collect()),
    ));
    put_doubles(&mut item, tags::GRID_RESOLUTION, &g.spacing_mm);
    item.put(DataElement::new(tags::VECTOR_GRID_DATA, VR::OF, PrimitiveValue::F32(vectors.into())));
    item
}

/// A Deformable Spatial Registration read back.
#[derive(Debug)]
pub struct RegistrationObject {
    /// On the grid of the object: registered point x ↦ source point x + u(x), matrices applied.
    pub field: DisplacementField,
    pub registered_frame_of_reference: String,
    pub source_frame_of_reference: String,
    pub sop_instance_uid: String,
    pub description: String,
    /// Whether the pre or post matrix was other than the identity.
    pub has_matrices: bool,
    /// How many source images the object references.
    pub referenced_images: usize,
}

/// Whether `path` is a DICOM file (by its DICM marker).
pub fn is_dicom_file(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 132];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head)).is_ok() && &head[128..] == b"DICM"
}

/// Whether `path` is a DICOM file whose SOP class is Deformable Spatial Registration.
pub fn is_deformable_registration(path: &Path) -> bool {
    sop_class_of(path).as_deref() == Some(DEFORMABLE_SPATIAL_REGISTRATION_STORAGE)
}

/// Reads a Deformable Spatial Registration object.
pub fn read_registration(path: &Path) -> Result<RegistrationObject> {
    let bad = |problem: String| Error::bad_input(path, problem);
    let object = std::panic::catch_unwind(|| OpenFileOptions::new().open_file(path))
        .map_err(|_| bad("is corrupt: the DICOM parser failed on it".into()))?
        .map_err(|e| bad(format!("cannot be read as DICOM: {e}")))?;
    let text = |o: &Object, tag| {
        o.element_opt(tag)
            .ok()
            .flatten()
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim().trim_end_matches('\0').to_string())
    };
    let class = text(&object, tags::SOP_CLASS_UID).unwrap_or_default();
    if class != DEFORMABLE_SPATIAL_REGISTRATION_STORAGE {
        return Err(bad(format!(
            "is not a Deformable Spatial Registration (its SOP class is {class:?}, not {DEFORMABLE_SPATIAL_REGISTRATION_STORAGE})"
        )));
    }
    let registered = text(&object, tags::FRAME_OF_REFERENCE_UID).unwrap_or_default();
    let items = object
        .element_opt(tags::DEFORMABLE_REGISTRATION_SEQUENCE)
        .ok()
        .flatten()
        .and_then(|e| e.items())
        .ok_or_else(|| bad("has no Deformable Registration Sequence".into()))?;
    let item = items
        .iter()
        .find(|item| item.element_opt(tags::DEFORMABLE_REGISTRATION_GRID_SEQUENCE).ok().flatten().is_some())
        .ok_or_else(|| bad("has no Deformable Registration Grid: it holds no deformation".into()))?;
    let grid = first(item, tags::DEFORMABLE_REGISTRATION_GRID_SEQUENCE)
        .ok_or_else(|| bad("has an empty grid sequence".into()))?;
    let floats = |tag, what: &str, count: usize| -> Result<Vec<f64>> {
        let values = grid
            .element_opt(tag)
            .ok()
            .flatten()
            .and_then(|e| e.to_multi_float64().ok())
            .ok_or_else(|| bad(format!("has no {what} in its grid")))?;
        if values.len() != count || values.iter().any(|v| !v.is_finite()) {
            return Err(bad(format!("has a malformed {what}: {values:?}")));
        }
        Ok(values)
    };
    let orientation = floats(tags::IMAGE_ORIENTATION_PATIENT, "ImageOrientationPatient", 6)?;
    let position = floats(tags::IMAGE_POSITION_PATIENT, "ImagePositionPatient", 3)?;
    let resolution = floats(tags::GRID_RESOLUTION, "GridResolution", 3)?;
    let dimensions = floats(tags::GRID_DIMENSIONS, "GridDimensions", 3)?;
    let shape: [usize; 3] = std::array::from_fn(|d| dimensions[d] as usize);
    let row = [orientation[0], orientation[1], orientation[2]];
    let column = [orientation[3], orientation[4], orientation[5]];
    if (norm(row) - 1.0).abs() > 1e-3 || (norm(column) - 1.0).abs() > 1e-3 {
        return Err(bad(format!("has a grid orientation {orientation:?} that is not two unit vectors")));
    }
    let normal = cross(row, column);
    let direction: Mat3 = std::array::from_fn(|r| [row[r], column[r], normal[r]]);
    let geometry = Geometry::new(
        shape,
        [resolution[0], resolution[1], resolution[2]],
        [position[0], position[1], position[2]],
        direction,
    )
    .map_err(|e| bad(format!("has an unusable grid: {e}")))?;
    let vectors =
        grid.element_opt(tags::VECTOR_GRID_DATA).ok().flatten().ok_or_else(|| bad("has no Vector Grid Data".into()))?;
    let vectors: Vec<f32> = match vectors.value().primitive() {
        Some(PrimitiveValue::F32(values)) => values.to_vec(),
        Some(PrimitiveValue::U8(bytes)) => {
            bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
        }
        _ => vectors.to_multi_float32().map_err(|e| bad(format!("has unreadable Vector Grid Data: {e}")))?,
    };
    let n = geometry.voxel_count();
    if vectors.len() != 3 * n {
        return Err(bad(format!(
            "has {} vector components for a grid of {}×{}×{} points ({} expected)",
            vectors.len(),
            shape[0],
            shape[1],
            shape[2],
            3 * n
        )));
    }
    if vectors.iter().any(|v| !v.is_finite()) {
        return Err(bad("has NaN or infinite vectors".into()));
    }
    let matrix = |tag| -> Result<Option<[[f64; 4]; 4]>> {
        let Some(item) = first(item, tag) else { return Ok(None) };
        let values = item
            .element_opt(tags::FRAME_OF_REFERENCE_TRANSFORMATION_MATRIX)
            .ok()
            .flatten()
            .and_then(|e| e.to_multi_float64().ok())
            .filter(|v| v.len() == 16 && v.iter().all(|x| x.is_finite()))
            .ok_or_else(|| bad("has a malformed Frame of Reference Transformation Matrix".into()))?;
        Ok(Some(std::array::from_fn(|r| std::array::from_fn(|c| values[4 * r + c]))))
    };
    let pre = matrix(tags::PRE_DEFORMATION_MATRIX_REGISTRATION_SEQUENCE)?;
    let post = matrix(tags::POST_DEFORMATION_MATRIX_REGISTRATION_SEQUENCE)?;
    let is_identity = |m: &Option<[[f64; 4]; 4]>| {
        m.is_none_or(|m| (0..4).all(|r| (0..4).all(|c| (m[r][c] - f64::from(u8::from(r == c))).abs() < 1e-9)))
    };
    let has_matrices = !is_identity(&pre) || !is_identity(&post);
    let grid_field = DisplacementField::new(
        geometry.clone(),
        std::array::from_fn(|d| vectors.iter().skip(d).step_by(3).copied().collect()),
    )?;
    let field = if has_matrices {
        let apply = |m: &Option<[[f64; 4]; 4]>, p: [f64; 3]| match m {
            None => p,
            Some(m) => std::array::from_fn(|r| m[r][0] * p[0] + m[r][1] * p[1] + m[r][2] * p[2] + m[r][3]),
        };
        let displacement_at = grid_field.world_sampler();
        DisplacementField::from_fn(geometry, |x| {
            let p = apply(&pre, x);
            let v = displacement_at(p);
            let y = apply(&post, [p[0] + v[0], p[1] + v[1], p[2] + v[2]]);
            [y[0] - x[0], y[1] - x[1], y[2] - x[2]]
        })
    } else {
        grid_field
    };
    let references =
        item.element_opt(tags::REFERENCED_IMAGE_SEQUENCE).ok().flatten().and_then(|e| e.items()).map_or(0, |i| i.len());
    Ok(RegistrationObject {
        field,
        registered_frame_of_reference: registered,
        source_frame_of_reference: text(item, tags::SOURCE_FRAME_OF_REFERENCE_UID).unwrap_or_default(),
        sop_instance_uid: text(&object, tags::SOP_INSTANCE_UID).unwrap_or_default(),
        description: text(&object, tags::CONTENT_DESCRIPTION).unwrap_or_default(),
        has_matrices,
        referenced_images: references,
    })
}

fn first(object: &Object, tag: dicom_core::Tag) -> Option<&Object> {
    object.element_opt(tag).ok().flatten()?.items()?.first()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::dicom_write::SeriesIdentity;

    fn written(field: &DisplacementField, dir: &Path) -> std::path::PathBuf {
        let fixed = SeriesIdentity::made_up("CT", "fixed");
        let moving = SeriesIdentity::made_up("CT", "moving");
        let path = dir.join("registration.dcm");
        let registration = RegistrationToWrite { forward: field, fixed: &fixed, moving: &moving, description: "test" };
        write_registration(&path, &registration).unwrap();
        path
    }

    fn oblique_field() -> DisplacementField {
        let angle: f64 = 0.3;
        let direction = [[angle.cos(), -angle.sin(), 0.0], [angle.sin(), angle.cos(), 0.0], [0.0, 0.0, 1.0]];
        let geometry = Geometry::new([5, 4, 3], [1.5, 2.0, 2.5], [-10.0, 4.0, 30.0], direction).unwrap();
        DisplacementField::from_fn(geometry, |x| [0.1 * x[1], -0.05 * x[0] + 1.0, 0.02 * x[2] * x[0]])
    }

    #[test]
    fn a_written_registration_reads_back_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let field = oblique_field();
        let object = read_registration(&written(&field, dir.path())).unwrap();
        assert!(!object.has_matrices);
        assert!(object.field.geometry.same_grid(&field.geometry, 1e-9));
        assert_eq!(object.field.components_mm, field.components_mm);
    }

    #[test]
    fn pre_and_post_matrices_are_applied_around_the_grid() {
        let dir = tempfile::tempdir().unwrap();
        let field = oblique_field();
        let path = written(&field, dir.path());
        // A post matrix that translates by (3, −2, 7) mm: every displacement grows by it.
        let mut object = dicom_object::open_file(&path).unwrap();
        let mut sequence = object.element(tags::DEFORMABLE_REGISTRATION_SEQUENCE).unwrap().clone();
        let items = sequence.items_mut().unwrap();
        let mut post = Object::new_empty();
        let matrix = [1.0, 0.0, 0.0, 3.0, 0.0, 1.0, 0.0, -2.0, 0.0, 0.0, 1.0, 7.0, 0.0, 0.0, 0.0, 1.0];
        put_decimals(&mut post, tags::FRAME_OF_REFERENCE_TRANSFORMATION_MATRIX, &matrix);
        put_str(&mut post, tags::FRAME_OF_REFERENCE_TRANSFORMATION_MATRIX_TYPE, VR::CS, "RIGID");
        put_sequence(&mut items[0], tags::POST_DEFORMATION_MATRIX_REGISTRATION_SEQUENCE, vec![post]);
        object.put(sequence);
        object.write_to_file(&path).unwrap();
        let read = read_registration(&path).unwrap();
        assert!(read.has_matrices);
        for n in 0..field.geometry.voxel_count() {
            let (a, b) = (read.field.at(n), field.at(n));
            for (d, shift) in [3.0, -2.0, 7.0].into_iter().enumerate() {
                assert!((a[d] - b[d] - shift).abs() < 1e-4, "voxel {n}: {a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn other_objects_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not_a_registration.dcm");
        let mut object = Object::new_empty();
        put_common(&mut object, crate::io::dicom_write::CT_IMAGE_STORAGE, &new_uid());
        write_file(&path, object).unwrap();
        let message = read_registration(&path).unwrap_err().to_string();
        assert!(message.contains("not_a_registration.dcm") && message.contains("not a Deformable"), "{message}");
        assert!(!is_deformable_registration(&path));
    }
}

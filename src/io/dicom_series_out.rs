//! Writes a volume as a DICOM image series (CT or MR image storage, one file per slice) in a
//! given patient, study and frame of reference: a result on the fixed CT's grid goes back to the
//! planning system beside the CT it belongs to.
//!
//! Slices are the volume's k planes: ImageOrientationPatient is the first two columns of the
//! direction matrix, ImagePositionPatient each plane's first voxel, PixelSpacing (row spacing,
//! column spacing). Values are stored as signed 16-bit integers: CT with slope 1 and intercept
//! 0 (HU round to within 0.5), an MRI as whole units with no rescale when its range spans at
//! least 256 units, otherwise with the narrowest slope that holds the volume's range.

use std::path::Path;

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;

use crate::error::{Error, Result};
use crate::io::dicom_write::{
    CT_IMAGE_STORAGE, MR_IMAGE_STORAGE, Object, SeriesIdentity, new_uid, put_common, put_decimals, put_empty,
    put_integer_string, put_new_series, put_str, put_strs, put_u16, write_file, write_folder_atomically,
};
use crate::progress::Progress;
use crate::volume::Volume;
use crate::volume::geometry::cross;

/// Which image storage class a series is written as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    /// CT image storage (a CT or pseudo-CT, in HU).
    Ct,
    /// MR image storage (an MRI carried onto the CT's grid).
    Mr,
}

/// What to write: the voxels, whose frame of reference and study they join, and how to label them.
pub struct SeriesToWrite<'a> {
    pub volume: &'a Volume,
    pub kind: ImageKind,
    /// The patient, study and frame of reference the series joins (the fixed CT's).
    pub identity: &'a SeriesIdentity,
    pub description: &'a str,
    pub series_number: i64,
    /// How the voxels were made (DerivationDescription).
    pub derivation: &'a str,
}

/// What was written.
#[derive(Clone, Debug)]
pub struct WrittenSeries {
    pub series_uid: String,
    /// (SOPClassUID, SOPInstanceUID) of each slice, in k order.
    pub instances: Vec<(String, String)>,
    pub slope: f64,
    pub intercept: f64,
}

/// The rescale (slope, intercept) that stores `values` in signed 16 bits.
pub fn rescale_for(values: &[f32], kind: ImageKind) -> (f64, f64) {
    let (low, high) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), &v| (low.min(v as f64), high.max(v as f64)));
    if !low.is_finite() {
        return (1.0, 0.0);
    }
    let fits = low >= -32768.0 && high <= 32767.0;
    // CT in HU always; an MRI when its range spans enough units that rounding to whole ones
    // loses nothing a reader would see (the MR image IOD expects no rescale).
    if fits && (kind == ImageKind::Ct || high - low >= 256.0) {
        return (1.0, 0.0);
    }
    let slope = ((high - low) / 65534.0).max(1e-6);
    let intercept = (low + high) / 2.0;
    (slope, intercept)
}

/// Writes the series into `folder` (replaced as a whole, atomically), one file per slice named
/// by its number.
pub fn write_image_series(folder: &Path, series: &SeriesToWrite, progress: &dyn Progress) -> Result<WrittenSeries> {
    let volume = series.volume;
    let g = &volume.geometry;
    let frame_of_reference = series.identity.frame("fixed", "a series derived in its frame")?;
    let [nx, ny, nz] = g.shape;
    if nx > u16::MAX as usize || ny > u16::MAX as usize {
        return Err(Error::Invalid(format!("slices of {nx}×{ny} pixels do not fit a DICOM image")));
    }
    let (slope, intercept) = rescale_for(&volume.voxels, series.kind);
    let series_uid = new_uid();
    let class_uid = match series.kind {
        ImageKind::Ct => CT_IMAGE_STORAGE,
        ImageKind::Mr => MR_IMAGE_STORAGE,
    };
    let instances: Vec<(String, String)> = (0..nz).map(|_| (class_uid.to_string(), new_uid())).collect();
    let row_direction = [g.direction[0][0], g.direction[1][0], g.direction[2][0]];
    let column_direction = [g.direction[0][1], g.direction[1][1], g.direction[2][1]];
    let normal = cross(row_direction, column_direction);
    progress.start_stage("writing the DICOM series", nz as u64);
    write_folder_atomically(folder, |temporary| {
        for (k, (_, instance_uid)) in instances.iter().enumerate() {
            progress.check_cancelled()?;
            let position = g.index_to_world([0.0, 0.0, k as f64]);
            let mut object = Object::new_empty();
            put_common(&mut object, class_uid, instance_uid);
            series.identity.put_patient_and_study(&mut object);
            put_series_attributes(&mut object, series, &series_uid, frame_of_reference);
            let image_type: &[&str] = if series.kind == ImageKind::Ct {
                &["DERIVED", "SECONDARY", "AXIAL"]
            } else {
                &["DERIVED", "SECONDARY", "OTHER"]
            };
            put_strs(&mut object, tags::IMAGE_TYPE, VR::CS, image_type);
            put_integer_string(&mut object, tags::INSTANCE_NUMBER, k as i64 + 1);
            put_empty(&mut object, tags::PATIENT_ORIENTATION, VR::CS);
            put_str(&mut object, tags::DERIVATION_DESCRIPTION, VR::ST, series.derivation);
            put_decimals(&mut object, tags::IMAGE_POSITION_PATIENT, &position);
            let orientation: Vec<f64> = row_direction.iter().chain(&column_direction).copied().collect();
            put_decimals(&mut object, tags::IMAGE_ORIENTATION_PATIENT, &orientation);
            put_decimals(&mut object, tags::PIXEL_SPACING, &[g.spacing_mm[1], g.spacing_mm[0]]);
            put_decimals(&mut object, tags::SLICE_THICKNESS, &[g.spacing_mm[2]]);
            put_decimals(&mut object, tags::SLICE_LOCATION, &[crate::volume::geometry::dot(position, normal)]);
            put_u16(&mut object, tags::SAMPLES_PER_PIXEL, 1);
            put_str(&mut object, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
            put_u16(&mut object, tags::ROWS, ny as u16);
            put_u16(&mut object, tags::COLUMNS, nx as u16);
            put_u16(&mut object, tags::BITS_ALLOCATED, 16);
            put_u16(&mut object, tags::BITS_STORED, 16);
            put_u16(&mut object, tags::HIGH_BIT, 15);
            put_u16(&mut object, tags::PIXEL_REPRESENTATION, 1);
            if series.kind == ImageKind::Ct || (slope, intercept) != (1.0, 0.0) {
                put_decimals(&mut object, tags::RESCALE_INTERCEPT, &[intercept]);
                put_decimals(&mut object, tags::RESCALE_SLOPE, &[slope]);
            }
            if series.kind == ImageKind::Ct {
                put_str(&mut object, tags::RESCALE_TYPE, VR::LO, "HU");
            }
            let plane = &volume.voxels[k * nx * ny..(k + 1) * nx * ny];
            let mut bytes = Vec::with_capacity(plane.len() * 2);
            for &value in plane {
                let stored = ((value as f64 - intercept) / slope).round().clamp(-32768.0, 32767.0) as i16;
                bytes.extend_from_slice(&stored.to_le_bytes());
            }
            object.put(DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U8(bytes.into())));
            write_file(&temporary.join(format!("slice{:04}.dcm", k + 1)), object)?;
            progress.advance(1);
        }
        Ok(())
    })?;
    Ok(WrittenSeries { series_uid, instances, slope, intercept })
}

fn put_series_attributes(object: &mut Object, series: &SeriesToWrite, series_uid: &str, frame_of_reference: &str) {
    let (date, time) = crate::io::dicom_write::date_and_time_now();
    let modality = match series.kind {
        ImageKind::Ct => "CT",
        ImageKind::Mr => "MR",
    };
    put_new_series(object, modality, series_uid, series.series_number, series.description);
    put_empty(object, tags::LATERALITY, VR::CS);
    put_str(object, tags::CONTENT_DATE, VR::DA, &date);
    put_str(object, tags::CONTENT_TIME, VR::TM, &time);
    put_str(object, tags::FRAME_OF_REFERENCE_UID, VR::UI, frame_of_reference);
    put_str(object, tags::POSITION_REFERENCE_INDICATOR, VR::LO, &series.identity.position_reference_indicator);
    put_str(object, tags::PATIENT_POSITION, VR::CS, &series.identity.patient_position);
    put_empty(object, tags::ACQUISITION_NUMBER, VR::IS);
    match series.kind {
        ImageKind::Ct => put_empty(object, tags::KVP, VR::DS),
        ImageKind::Mr => {
            // Acquisition attributes the MR image IOD requires: this series was computed, not scanned.
            put_str(object, tags::SCANNING_SEQUENCE, VR::CS, "RM");
            put_str(object, tags::SEQUENCE_VARIANT, VR::CS, "NONE");
            put_empty(object, tags::SCAN_OPTIONS, VR::CS);
            put_str(object, tags::MR_ACQUISITION_TYPE, VR::CS, "3D");
            put_empty(object, tags::REPETITION_TIME, VR::DS);
            put_empty(object, tags::ECHO_TIME, VR::DS);
            put_empty(object, tags::ECHO_TRAIN_LENGTH, VR::IS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ct_values_keep_slope_one_and_other_values_fill_sixteen_bits() {
        assert_eq!(rescale_for(&[-1024.0, 0.0, 3071.0], ImageKind::Ct), (1.0, 0.0));
        let values = [0.0f32, 0.25, 1.0];
        let (slope, intercept) = rescale_for(&values, ImageKind::Mr);
        for &v in &values {
            let stored = ((v as f64 - intercept) / slope).round();
            assert!((-32768.0..=32767.0).contains(&stored));
            assert!((stored * slope + intercept - v as f64).abs() <= slope / 2.0 + 1e-12);
        }
        let (slope, _) = rescale_for(&[-50_000.0, 50_000.0], ImageKind::Ct);
        assert!(slope > 1.0);
        assert_eq!(rescale_for(&[0.0, 700.5, 1200.0], ImageKind::Mr), (1.0, 0.0));
    }
}

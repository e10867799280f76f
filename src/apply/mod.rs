//! Carry a stored registration over to a third image (SPEC §4): typically the MRI the
//! pseudo-CT was made from, which shares the pseudo-CT's space. The output lies on the
//! reference grid (the grid the field starts from): out(x) = image(x + u(x)).

use std::path::Path;

use crate::error::{Error, Result};
use crate::io::dicom_series_out::{ImageKind, SeriesToWrite, write_image_series};
use crate::io::dicom_write::truncate;
use crate::io::{self, SeriesChoice, StoredType};
use crate::progress::Progress;
use crate::volume::resample::{Interpolation, warp_through_field};
use crate::volume::{DisplacementField, Geometry, Volume};

/// `image` resampled onto `reference` through `field`: trilinear, or nearest neighbour for label
/// maps (so no new labels appear). Outside the image: its lowest value (0 for labels).
pub fn apply_field(image: &Volume, field: &DisplacementField, reference: &Geometry, labels: bool) -> Result<Volume> {
    if !field.geometry.same_grid(reference, 1e-2) && field.geometry.same_points(reference, 1e-2) {
        // The same points in another order (a DICOM grid is stored right-handed): reorder exactly.
        let reordered = field.on_grid(reference);
        return apply_field(image, &reordered, reference, labels);
    }
    if !field.geometry.same_grid(reference, 1e-2) {
        return Err(Error::Invalid(format!(
            "the field is on a grid of {:?} voxels of {:?} mm at {:?}, the reference on {:?} voxels of {:?} mm at {:?}: \
             give the image the field starts from (the fixed image for warp_fwd)",
            field.geometry.shape,
            field.geometry.spacing_mm,
            field.geometry.origin_mm,
            reference.shape,
            reference.spacing_mm,
            reference.origin_mm
        )));
    }
    let (interpolation, fill) = if labels {
        (Interpolation::Nearest, 0.0)
    } else {
        (Interpolation::Linear, image.value_range().map_or(0.0, |(low, _)| low))
    };
    warp_through_field(image, field, interpolation, fill)
}

/// Reads the field, image and reference (DICOM or NIfTI), applies, writes `out` atomically.
/// With `dicom`, the result is also written there as a DICOM series (MR image storage for an
/// MR image, CT otherwise) in the reference's study and frame of reference.
pub fn apply_files(
    warp: &Path,
    image: &Path,
    reference: &Path,
    out: &Path,
    labels: bool,
    dicom: Option<&Path>,
    progress: &dyn Progress,
) -> Result<Volume> {
    if labels && dicom.is_some() {
        return Err(Error::Invalid(
            "a label map is not written as a DICOM image series; carry contours with register --structures".into(),
        ));
    }
    let field = io::read_field(warp)?;
    let image_loaded = io::load_volume(image, &SeriesChoice::LargestCt, progress)?;
    let reference_loaded = io::load_volume(reference, &SeriesChoice::LargestCt, progress)?;
    let reference_identity = reference_loaded.dicom_identity("reference image");
    if dicom.is_some() && reference_identity.frame_of_reference_uid.is_none() {
        return Err(Error::bad_input(
            reference,
            "is a DICOM series without a FrameOfReferenceUID: a series cannot be placed in its frame",
        ));
    }
    let image_modality = image_loaded.dicom_identity("image").modality;
    let (image_volume, reference_volume) = (image_loaded.volume, reference_loaded.volume);
    progress.start_stage("applying the field", 0);
    let result = apply_field(&image_volume, &field, &reference_volume.geometry, labels).map_err(|e| match e {
        Error::Invalid(problem) => Error::BadInput { path: warp.to_path_buf(), problem },
        other => other,
    })?;
    progress.check_cancelled()?;
    let stored = if labels { StoredType::Automatic } else { StoredType::Float32 };
    io::write_volume(out, &result, stored)?;
    if let Some(folder) = dicom {
        let kind = if image_modality == "MR" { ImageKind::Mr } else { ImageKind::Ct };
        let from = if reference_identity.from_dicom { "" } else { " (reference not DICOM)" };
        let description = format!("diffeoreg: {image_modality} image deformed onto this CT{from}");
        let derivation = format!(
            "{} resampled (trilinear) onto this CT's grid through the registration {}",
            image.display(),
            warp.display()
        );
        write_image_series(
            folder,
            &SeriesToWrite {
                volume: &result,
                kind,
                identity: &reference_identity,
                description: truncate(&description, 64),
                series_number: 9003,
                derivation: truncate(&derivation, 1024),
            },
            progress,
        )?;
    }
    Ok(result)
}

//! Carry a stored registration over to a third image (SPEC §4): typically the MRI the
//! pseudo-CT was made from, which shares the pseudo-CT's space. The output lies on the
//! reference grid (the grid the field starts from): out(x) = image(x + u(x)).

use std::path::Path;

use crate::error::{Error, Result};
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
pub fn apply_files(
    warp: &Path,
    image: &Path,
    reference: &Path,
    out: &Path,
    labels: bool,
    progress: &dyn Progress,
) -> Result<Volume> {
    let field = io::read_field(warp)?;
    let image_volume = io::load_volume(image, &SeriesChoice::LargestCt, progress)?.volume;
    let reference_volume = io::load_volume(reference, &SeriesChoice::LargestCt, progress)?.volume;
    progress.start_stage("applying the field", 0);
    let result = apply_field(&image_volume, &field, &reference_volume.geometry, labels).map_err(|e| match e {
        Error::Invalid(problem) => Error::BadInput { path: warp.to_path_buf(), problem },
        other => other,
    })?;
    progress.check_cancelled()?;
    let stored = if labels { StoredType::Automatic } else { StoredType::Float32 };
    io::write_volume(out, &result, stored)?;
    Ok(result)
}

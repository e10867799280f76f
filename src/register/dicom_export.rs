//! A finished registration as DICOM for a planning system (`OUT/dicom/`): the moving image
//! warped onto the fixed grid as a series in the fixed CT's study and frame of reference, and
//! the deformation as a Deformable Spatial Registration object.

use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::io::dicom_registration::{RegistrationToWrite, write_registration};
use crate::io::dicom_series_out::{ImageKind, SeriesToWrite, write_image_series};
use crate::io::dicom_write::SeriesIdentity;
use crate::io::{LoadedVolume, Source};
use crate::progress::Progress;
use crate::register::pipeline::Registration;

/// Who the fixed and moving images belong to: read from their DICOM series, or made up (new
/// UIDs, labelled as not from DICOM) for NIfTI files and the built-in demo.
#[derive(Clone, Debug)]
pub struct DicomIdentities {
    pub fixed: SeriesIdentity,
    pub moving: SeriesIdentity,
}

impl DicomIdentities {
    /// From what was loaded. A fixed image that is not DICOM gets a made-up study and frame of
    /// reference; so does a moving one.
    pub fn of(fixed: &LoadedVolume, moving: &LoadedVolume) -> DicomIdentities {
        DicomIdentities { fixed: identity_of(fixed, "fixed image"), moving: identity_of(moving, "moving image") }
    }

    /// Made-up identities for images that came from memory (the demo case).
    pub fn made_up() -> DicomIdentities {
        DicomIdentities {
            fixed: SeriesIdentity::made_up("CT", "fixed image"),
            moving: SeriesIdentity::made_up("CT", "moving image"),
        }
    }
}

fn identity_of(loaded: &LoadedVolume, role: &str) -> SeriesIdentity {
    match &loaded.source {
        Source::Dicom { identity, .. } => (**identity).clone(),
        _ => SeriesIdentity::made_up("CT", role),
    }
}

/// What was written, for the report.
#[derive(Clone, Debug, Serialize)]
pub struct DicomWritten {
    pub folder: String,
    /// The warped moving image's series (in the fixed CT's study and frame of reference).
    pub series_uid: String,
    pub slices: usize,
    pub modality: String,
    pub rescale_slope: f64,
    pub rescale_intercept: f64,
    pub registration_file: String,
    pub registration_sop_instance_uid: String,
    pub registered_frame_of_reference_uid: String,
    pub source_frame_of_reference_uid: String,
    /// How the rigid part is stored.
    pub rigid_part: String,
    /// False when an input was not DICOM: its patient, study and frame of reference are made up.
    pub inputs_were_dicom: bool,
}

/// Writes `out/dicom/moving_warped/` and `out/dicom/registration.dcm`.
pub fn write_dicom_outputs(
    out: &Path,
    registration: &Registration,
    identities: &DicomIdentities,
    progress: &dyn Progress,
) -> Result<DicomWritten> {
    let folder = out.join("dicom");
    std::fs::create_dir_all(&folder).map_err(|e| Error::io(&folder, e))?;
    let kind = if identities.moving.modality == "MR" { ImageKind::Mr } else { ImageKind::Ct };
    let from_dicom = identities.fixed.from_dicom && identities.moving.from_dicom;
    let label = if from_dicom { "" } else { " (inputs not DICOM)" };
    let description = format!("diffeoreg: deformed moving image{label}");
    let derivation = format!(
        "The {} series {} resampled (trilinear) onto this CT's grid through the diffeomorphic registration {}",
        identities.moving.modality,
        identities.moving.series_uid,
        "written beside it as a Deformable Spatial Registration"
    );
    let written = write_image_series(
        &folder.join("moving_warped"),
        &SeriesToWrite {
            volume: &registration.moving_warped,
            kind,
            identity: &identities.fixed,
            description: truncate(&description, 64),
            series_number: 9001,
            derivation: truncate(&derivation, 1024),
        },
        progress,
    )?;
    progress.start_stage("writing the DICOM registration", 0);
    let registration_path = folder.join("registration.dcm");
    let registration_description = format!("diffeoreg deformable registration{label}");
    let instance = write_registration(
        &registration_path,
        &RegistrationToWrite {
            forward: &registration.warp_fwd,
            fixed: &identities.fixed,
            moving: &identities.moving,
            description: truncate(&registration_description, 64),
        },
    )?;
    Ok(DicomWritten {
        folder: folder.display().to_string(),
        series_uid: written.series_uid,
        slices: written.instances.len(),
        modality: if kind == ImageKind::Mr { "MR" } else { "CT" }.into(),
        rescale_slope: written.slope,
        rescale_intercept: written.intercept,
        registration_file: registration_path.display().to_string(),
        registration_sop_instance_uid: instance,
        registered_frame_of_reference_uid: identities.fixed.frame_of_reference_uid.clone().unwrap_or_default(),
        source_frame_of_reference_uid: identities.moving.frame_of_reference_uid.clone().unwrap_or_default(),
        rigid_part: "folded into the vectors; the pre- and post-deformation matrices are the identity".into(),
        inputs_were_dicom: from_dicom,
    })
}

/// At most `limit` bytes of `text`, cut at a character boundary (DICOM lengths are in bytes).
fn truncate(text: &str, limit: usize) -> &str {
    let mut end = text.len().min(limit);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

//! A finished registration as DICOM for a planning system (`OUT/dicom/`): the moving image
//! warped onto the fixed grid as a series in the fixed CT's study and frame of reference, and
//! the deformation as a Deformable Spatial Registration object.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::contours::carry::{RoiMask, carry, roi_masks};
use crate::error::{Error, Result};
use crate::io::LoadedVolume;
use crate::io::dicom_registration::{RegistrationToWrite, write_registration};
use crate::io::dicom_series_out::{ImageKind, SeriesToWrite, write_image_series};
use crate::io::dicom_structures::{RoiToWrite, read_structure_set, write_structure_set};
use crate::io::dicom_write::{SeriesIdentity, truncate};
use crate::progress::Progress;
use crate::register::pipeline::Registration;
use crate::volume::Geometry;

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
        DicomIdentities { fixed: fixed.dicom_identity("fixed image"), moving: moving.dicom_identity("moving image") }
    }

    /// Made-up identities for images that came from memory (the demo case).
    pub fn made_up() -> DicomIdentities {
        DicomIdentities {
            fixed: SeriesIdentity::made_up("CT", "fixed image"),
            moving: SeriesIdentity::made_up("CT", "moving image"),
        }
    }
}

/// Everything the DICOM outputs of one run need besides the registration.
pub struct DicomOutputs {
    pub identities: DicomIdentities,
    pub structures: Option<std::sync::Arc<StructuresToCarry>>,
}

/// What `register --dicom` was asked for besides the image series and the registration object.
#[derive(Clone, Debug, Default)]
pub struct DicomRequest {
    /// An RT Structure Set drawn on the moving image, to carry onto the fixed CT.
    pub structures: Option<PathBuf>,
}

/// The structures to carry, read and filled on the moving grid before registering (so a bad
/// structure set stops the run before any work).
pub struct StructuresToCarry {
    pub path: PathBuf,
    pub label: String,
    pub masks: Vec<RoiMask>,
}

impl StructuresToCarry {
    /// Reads the structure set and fills its regions on the moving grid. Refused by name: a
    /// frame of reference other than the moving series', open contours, contours that cross
    /// themselves or lie off the moving image's slices.
    pub fn read(path: &Path, moving: &SeriesIdentity, moving_grid: &Geometry) -> Result<StructuresToCarry> {
        let set = read_structure_set(path)?;
        let moving_frame = moving.frame_of_reference_uid.as_deref().unwrap_or("");
        if set.frame_of_reference_uid != moving_frame {
            return Err(Error::bad_input(
                path,
                format!(
                    "is drawn in the frame of reference {}, not the moving image's ({}): it belongs to another series",
                    set.frame_of_reference_uid,
                    if moving.from_dicom { moving_frame } else { "none: the moving image is not a DICOM series" }
                ),
            ));
        }
        let masks = roi_masks(&set, moving_grid).map_err(|problem| Error::bad_input(path, problem))?;
        Ok(StructuresToCarry { path: path.to_path_buf(), label: set.label, masks })
    }
}

/// One carried region, for the report.
#[derive(Clone, Debug, Serialize)]
pub struct CarriedSummary {
    pub number: i64,
    pub name: String,
    pub contours: usize,
    /// Volume on the moving image and on the fixed CT after carrying, ml.
    pub moving_ml: f64,
    pub carried_ml: f64,
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
    /// `structures.dcm`, when a structure set was carried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub structures_file: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub structures: Vec<CarriedSummary>,
}

/// Writes `out/dicom/moving_warped/`, `out/dicom/registration.dcm` and, with structures,
/// `out/dicom/structures.dcm`.
pub fn write_dicom_outputs(
    out: &Path,
    registration: &Registration,
    identities: &DicomIdentities,
    structures: Option<&StructuresToCarry>,
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
    let mut structures_file = None;
    let mut summaries = Vec::new();
    if let Some(structures) = structures {
        progress.start_stage("carrying the structures", structures.masks.len() as u64);
        let mut carried = Vec::new();
        for mask in &structures.masks {
            progress.check_cancelled()?;
            carried.push(carry(mask, &registration.warp_fwd)?);
            progress.advance(1);
        }
        let to_write: Vec<RoiToWrite> =
            carried.iter().map(|c| RoiToWrite { roi: &c.roi, contours: c.contours.clone() }).collect();
        let path = folder.join("structures.dcm");
        let description = format!(
            "{} carried from the moving image{} by diffeoreg",
            if structures.label.is_empty() { "structures" } else { &structures.label },
            label
        );
        write_structure_set(&path, &to_write, &identities.fixed, "DIFFEOREG", &description)?;
        structures_file = Some(path.display().to_string());
        summaries = carried
            .iter()
            .map(|c| CarriedSummary {
                number: c.roi.number,
                name: c.roi.name.clone(),
                contours: c.contours.len(),
                moving_ml: c.moving_ml,
                carried_ml: c.carried_ml,
            })
            .collect();
    }
    Ok(DicomWritten {
        structures_file,
        structures: summaries,
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

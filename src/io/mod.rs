//! Reading and writing files: NIfTI volumes and fields, DICOM series, ITK transforms, and the
//! CT of an InVesalius project (read only).

pub mod atomic;
pub mod dicom;
pub mod dicom_registration;
pub mod dicom_series_out;
pub mod dicom_structures;
pub mod dicom_write;
pub mod fields;
pub mod gzip;
pub mod inv3;
pub mod nifti;
pub mod transforms;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::volume::Volume;

pub use dicom::SeriesChoice;
pub use fields::{read_field, write_field};
pub use nifti::{StoredType, read_nifti, read_volume, write_volume};
pub use transforms::{read_transform, write_transform};

/// Where a volume came from.
#[derive(Clone, Debug, Serialize)]
pub enum Source {
    Nifti(PathBuf),
    /// An InVesalius 3 project (`.inv3`): voxels and spacing, no patient position.
    Inv3(PathBuf),
    Dicom {
        path: PathBuf,
        series_uid: String,
        modality: String,
        description: String,
        /// Every image series found at `path`, largest first.
        series_found: Vec<dicom::SeriesSummary>,
        skipped_files: usize,
        /// Patient, study, frame of reference and instances (for DICOM outputs).
        #[serde(skip)]
        identity: Box<dicom_write::SeriesIdentity>,
    },
}

/// A volume with its origin and anything the user should be told about how it was read.
#[derive(Debug)]
pub struct LoadedVolume {
    pub volume: Volume,
    pub source: Source,
    pub warnings: Vec<String>,
}

impl LoadedVolume {
    /// The patient, study, frame of reference and instances DICOM outputs derived from this
    /// volume belong to: its series' own, or made up (new UIDs, labelled) when it is not DICOM.
    pub fn dicom_identity(&self, role: &str) -> dicom_write::SeriesIdentity {
        match &self.source {
            Source::Dicom { identity, .. } => (**identity).clone(),
            _ => dicom_write::SeriesIdentity::made_up("CT", role),
        }
    }
}

/// Loads a volume from a NIfTI file, a DICOM folder, a single (multi-frame) DICOM file or an
/// InVesalius project.
/// Volumes with NaN or infinite voxels are refused.
pub fn load_volume(path: &Path, series: &SeriesChoice, progress: &dyn Progress) -> Result<LoadedVolume> {
    if !path.exists() {
        return Err(Error::bad_input(path, "does not exist"));
    }
    let loaded = if path.is_file() && nifti::is_nifti_path(path) {
        progress.start_stage("reading NIfTI", 0);
        LoadedVolume { volume: read_volume(path)?, source: Source::Nifti(path.to_path_buf()), warnings: Vec::new() }
    } else if path.is_file() && inv3::is_inv3_path(path) {
        progress.start_stage("reading InVesalius project", 0);
        LoadedVolume {
            volume: inv3::read_inv3(path)?,
            source: Source::Inv3(path.to_path_buf()),
            warnings: vec![format!(
                "{}: an InVesalius project stores no patient position; the volume is placed as an axial \
                 series (LPS) with its first voxel at the origin",
                path.display()
            )],
        }
    } else {
        let series = dicom::load_series(path, series, progress)?;
        LoadedVolume {
            volume: series.volume,
            source: Source::Dicom {
                path: path.to_path_buf(),
                series_uid: series.summary.series_uid,
                modality: series.summary.modality,
                description: series.summary.description,
                series_found: series.series_found,
                skipped_files: series.skipped_files,
                identity: Box::new(series.identity),
            },
            warnings: series.warnings,
        }
    };
    let bad = loaded.volume.non_finite_count();
    if bad > 0 {
        return Err(Error::bad_input(path, format!("has {bad} NaN or infinite voxel(s)")));
    }
    Ok(loaded)
}

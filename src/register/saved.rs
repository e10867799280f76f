//! A finished `register` folder read back: the inputs (re-read from their files, or the
//! built-in demo made again, and checked against the checksums the report holds), both fields,
//! both warped images, the rigid transform and the report's verdict and metrics, so a result
//! made on the command line can be inspected without registering again.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::io::{self, LoadedVolume, SeriesChoice};
use crate::metrics::verdict::Verdict;
use crate::phantom::{DEMO_SHAPE, DEMO_SPACING_MM, demo_phantom};
use crate::progress::Progress;
use crate::register::pipeline::{
    FieldQuality, InputFile, REPORT_SCHEMA_VERSION, RegisterParams, Registration, RegistrationMetrics, Timings,
    input_file, input_in_memory,
};
use crate::rigid::RigidResult;

/// What `report.json` holds that the folder's other files do not.
#[derive(Deserialize)]
struct SavedReport {
    schema_version: u32,
    verdict: Verdict,
    inputs: Vec<InputFile>,
    parameters: RegisterParams,
    timings: Timings,
    rigid: RigidResult,
    deformable_quality: FieldQuality,
    metrics: RegistrationMetrics,
    model: Option<String>,
    warnings: Vec<String>,
    #[serde(default)]
    dicom: Option<serde_json::Value>,
}

/// A register folder, read.
pub struct SavedRegistration {
    pub folder: PathBuf,
    pub fixed: LoadedVolume,
    pub moving: LoadedVolume,
    /// Where the inputs came from (None: the built-in demo, made again).
    pub fixed_path: Option<PathBuf>,
    pub moving_path: Option<PathBuf>,
    pub registration: Registration,
    pub params: RegisterParams,
    /// Inputs that changed since the registration, and the like.
    pub warnings: Vec<String>,
    /// The report's `dicom` block (files written, structures carried with their volumes).
    pub dicom: Option<serde_json::Value>,
}

/// Reads the folder `register` (or the app's export) wrote.
pub fn read_outputs(folder: &Path, progress: &dyn Progress) -> Result<SavedRegistration> {
    let report_path = folder.join("report.json");
    let text = std::fs::read_to_string(&report_path).map_err(|e| Error::io(&report_path, e))?;
    let report: SavedReport = serde_json::from_str(&text)
        .map_err(|e| Error::bad_input(&report_path, format!("is not a diffeoreg report this version reads: {e}")))?;
    if report.schema_version != REPORT_SCHEMA_VERSION {
        return Err(Error::bad_input(
            &report_path,
            format!(
                "has report schema {}, this version writes and reads {REPORT_SCHEMA_VERSION}: register again",
                report.schema_version
            ),
        ));
    }
    let mut warnings = Vec::new();
    let input = |role: &str| {
        report
            .inputs
            .iter()
            .find(|i| i.role == role)
            .ok_or_else(|| Error::bad_input(&report_path, format!("names no {role} input")))
    };
    let (fixed_input, moving_input) = (input("fixed")?, input("moving")?);
    let in_memory = !fixed_input.path.exists() && fixed_input.path.to_string_lossy().starts_with('(');
    let (fixed, moving, fixed_path, moving_path) = if in_memory {
        progress.start_stage("building the demo case again", 0);
        let phantom = demo_phantom(DEMO_SHAPE, DEMO_SPACING_MM)?;
        for (volume, saved) in [(&phantom.fixed, fixed_input), (&phantom.moving, moving_input)] {
            if input_in_memory(&saved.role, "", volume).crc32 != saved.crc32 {
                return Err(Error::bad_input(
                    &report_path,
                    format!(
                        "registered a pair held in memory ({}) that is not the built-in demo: it cannot be read again",
                        saved.path.display()
                    ),
                ));
            }
        }
        let loaded = |volume| LoadedVolume { volume, source: io::Source::Nifti(PathBuf::new()), warnings: Vec::new() };
        (loaded(phantom.fixed), loaded(phantom.moving), None, None)
    } else {
        let fixed = io::load_volume(&fixed_input.path, &SeriesChoice::LargestCt, progress)?;
        let moving = io::load_volume(&moving_input.path, &SeriesChoice::LargestCt, progress)?;
        for (loaded, saved) in [(&fixed, fixed_input), (&moving, moving_input)] {
            let now = input_file(&saved.role, &saved.path, &loaded.volume)?;
            if now.crc32 != saved.crc32 {
                warnings.push(format!(
                    "the {} image {} changed since it was registered (CRC-32 {} then, {} now)",
                    saved.role,
                    saved.path.display(),
                    saved.crc32,
                    now.crc32
                ));
            }
        }
        (fixed, moving, Some(fixed_input.path.clone()), Some(moving_input.path.clone()))
    };
    progress.start_stage("reading the fields and warped images", 0);
    let warp_fwd = io::read_field(&folder.join("warp_fwd.nii.gz"))?;
    let warp_inv = io::read_field(&folder.join("warp_inv.nii.gz"))?;
    let moving_warped = io::read_volume(&folder.join("moving_warped.nii.gz"))?;
    let fixed_warped = io::read_volume(&folder.join("fixed_warped.nii.gz"))?;
    let grids = [
        ("warp_fwd.nii.gz", &warp_fwd.geometry, &fixed.volume.geometry),
        ("moving_warped.nii.gz", &moving_warped.geometry, &fixed.volume.geometry),
        ("warp_inv.nii.gz", &warp_inv.geometry, &moving.volume.geometry),
        ("fixed_warped.nii.gz", &fixed_warped.geometry, &moving.volume.geometry),
    ];
    for (name, grid, expected) in grids {
        if !grid.same_grid(expected, 1e-2) {
            return Err(Error::bad_input(folder.join(name), "is not on the grid of the image it belongs to"));
        }
    }
    let mut rigid = report.rigid;
    rigid.transform = io::read_transform(&folder.join("rigid.tfm"))?;
    let registration = Registration {
        warp_fwd,
        warp_inv,
        moving_warped,
        fixed_warped,
        rigid,
        quality: report.deformable_quality,
        metrics: report.metrics,
        verdict: report.verdict,
        warnings: report.warnings,
        history: Vec::new(),
        timings: report.timings,
        border: None,
        model: report.model,
        hybrid_charged_share: report.parameters.network.hybrid_charged_share,
        momentum: None,
        resolution: None,
        intensity: None,
    };
    Ok(SavedRegistration {
        folder: folder.to_path_buf(),
        fixed,
        moving,
        fixed_path,
        moving_path,
        registration,
        params: report.parameters,
        warnings,
        dicom: report.dicom,
    })
}

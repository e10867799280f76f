//! What the app shows and the background jobs that make it: a loaded pair (the built-in demo or
//! two files), everything resampled onto the fixed grid for display, and a registration result
//! with its derived maps (Jacobian determinant, tissue labels). The jobs run on the worker; the
//! UI only uploads the finished texture data.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;

use crate::app::render::slice::{Slot, TextureData};
use crate::contours::carry::{CarriedRoi, carry};
use crate::diffeo::VectorField;
use crate::diffeo::jacobian::determinant;
use crate::error::{Error, Result};
use crate::io::{self, SeriesChoice};
use crate::metrics::{BODY_DENSITY, Distances, TISSUES, body_mask, endpoint_error};
use crate::phantom::demo_phantom;
use crate::progress::Progress;
use crate::register::dicom_export::{DicomIdentities, StructuresToCarry};
use crate::register::pipeline::{RegisterParams, Registration, register_volumes};
use crate::volume::resample::{Interpolation, resample};
use crate::volume::{Calibration, DisplacementField, Volume};

/// Field textures keep at most this many texels; larger fields are shown subsampled.
const MAX_FIELD_TEXELS: usize = 1 << 25;

/// The known answer of a phantom, fixed grid first.
pub struct Truth {
    pub forward: DisplacementField,
    pub inverse: DisplacementField,
}

/// A loaded pair.
pub struct Case {
    pub name: String,
    pub fixed_path: Option<PathBuf>,
    pub moving_path: Option<PathBuf>,
    /// Both in HU, each on its own grid.
    pub fixed: Arc<Volume>,
    pub moving: Arc<Volume>,
    /// The moving image on the fixed grid as it lies in the world (no registration applied).
    pub moving_on_fixed: Volume,
    pub truth: Option<Arc<Truth>>,
    pub warnings: Vec<String>,
    /// Patient, study and frames of reference for DICOM outputs (made up for non-DICOM inputs).
    pub identities: DicomIdentities,
}

/// A finished registration of the current case.
pub struct CaseResult {
    /// Shared with the export job.
    pub registration: Arc<Registration>,
    pub params: RegisterParams,
    /// det ∂φ/∂x of `warp_fwd` on the fixed grid.
    pub jacobian: Vec<f32>,
    /// The largest predicted momentum length (the momentum overlay's full colour; 0 without a network).
    pub momentum_max: f32,
    /// Against the phantom's known answer, inside the body.
    pub endpoint_error: Option<Distances>,
    pub rigid_endpoint_error: Option<Distances>,
}

/// What a job hands back to the UI.
pub enum JobOutput {
    Loaded(Box<Case>, Vec<TextureData>),
    Registered(Box<CaseResult>, Vec<TextureData>),
    /// A finished register folder: its case, result and carried structures.
    Opened(Box<Case>, Box<CaseResult>, Vec<TextureData>, Vec<CarriedRoi>),
    /// A structure set read and filled on the moving grid, and its regions carried onto the
    /// fixed grid when a result exists.
    Structures(Option<Arc<StructuresToCarry>>, Vec<CarriedRoi>),
    Saved(String),
    /// A training ended: the model folder and the epochs done.
    Trained(std::path::PathBuf, usize),
}

impl JobOutput {
    pub fn textures_mut(&mut self) -> &mut [TextureData] {
        match self {
            JobOutput::Loaded(_, textures) | JobOutput::Registered(_, textures) => textures,
            JobOutput::Opened(_, _, textures, _) => textures,
            JobOutput::Saved(_) | JobOutput::Trained(..) | JobOutput::Structures(..) => &mut [],
        }
    }
}

/// The built-in demo: the synthetic head and a pseudo-CT phantom of it with a known answer.
pub fn load_demo(shape: [usize; 3], spacing_mm: [f64; 3], progress: &dyn Progress) -> Result<JobOutput> {
    progress.start_stage("building the demo head and its pseudo-CT", 0);
    let phantom = demo_phantom(shape, spacing_mm)?;
    let truth = Truth { forward: phantom.truth_fwd, inverse: phantom.truth_inv };
    let name = format!("demo head {}×{}×{} with a known deformation", shape[0], shape[1], shape[2]);
    let identities = DicomIdentities::made_up();
    build_case(name, None, None, phantom.fixed, phantom.moving, Some(truth), Vec::new(), identities, progress)
}

/// A pair already in memory.
pub fn load_volumes(name: String, fixed: Volume, moving: Volume, progress: &dyn Progress) -> Result<JobOutput> {
    build_case(name, None, None, fixed, moving, None, Vec::new(), DicomIdentities::made_up(), progress)
}

/// A pair from files or DICOM folders.
pub fn load_files(fixed_path: &Path, moving_path: &Path, progress: &dyn Progress) -> Result<JobOutput> {
    let fixed = io::load_volume(fixed_path, &SeriesChoice::LargestCt, progress)?;
    let moving = io::load_volume(moving_path, &SeriesChoice::LargestCt, progress)?;
    let warnings = fixed.warnings.iter().chain(&moving.warnings).cloned().collect();
    let name = format!("{} (fixed), {} (moving)", file_name(fixed_path), file_name(moving_path));
    let identities = DicomIdentities::of(&fixed, &moving);
    build_case(
        name,
        Some(fixed_path.to_path_buf()),
        Some(moving_path.to_path_buf()),
        fixed.volume,
        moving.volume,
        None,
        warnings,
        identities,
        progress,
    )
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

#[allow(clippy::too_many_arguments)]
fn build_case(
    name: String,
    fixed_path: Option<PathBuf>,
    moving_path: Option<PathBuf>,
    fixed: Volume,
    moving: Volume,
    truth: Option<Truth>,
    warnings: Vec<String>,
    identities: DicomIdentities,
    progress: &dyn Progress,
) -> Result<JobOutput> {
    for (volume, role) in [(&fixed, "fixed"), (&moving, "moving")] {
        let bad = volume.non_finite_count();
        if bad > 0 {
            return Err(Error::Invalid(format!("the {role} image has {bad} voxels that are not numbers")));
        }
    }
    progress.start_stage("preparing the views", 0);
    let fill = moving.value_range().map_or(-1000.0, |(low, _)| low);
    let moving_on_fixed = resample(&moving, &fixed.geometry, Interpolation::Linear, fill);
    progress.check_cancelled()?;
    let calibration = Calibration::default();
    let shape = fixed.geometry.shape;
    let textures = vec![
        TextureData::half_floats(Slot::Fixed, shape, &fixed.voxels),
        TextureData::half_floats(Slot::Moving, shape, &moving_on_fixed.voxels),
        TextureData::half_floats(Slot::Compared, shape, &moving_on_fixed.voxels),
        TextureData::bytes(Slot::TissueLabels, shape, tissue_labels(&fixed, &moving_on_fixed, &calibration)),
        TextureData::half_floats(Slot::Jacobian, [1, 1, 1], &[1.0]),
        TextureData::half_floats(Slot::Displacement, [1, 1, 1], &[0.0; 4]),
        TextureData::half_floats(Slot::Momentum, [1, 1, 1], &[0.0]),
    ];
    let case = Case {
        name,
        fixed_path,
        moving_path,
        fixed: Arc::new(fixed),
        moving: Arc::new(moving),
        moving_on_fixed,
        truth: truth.map(Arc::new),
        warnings,
        identities,
    };
    Ok(JobOutput::Loaded(Box::new(case), textures))
}

/// The tissue code of a density: 0 outside the body, 1 body, 2 fat, 3 water, 4 bone
/// (the classes of `metrics::TISSUES`; fat, water and bone do not overlap).
pub fn tissue_code(density: f32) -> u8 {
    if density < BODY_DENSITY {
        return 0;
    }
    TISSUES[..3].iter().position(|t| density >= t.low && density < t.high).map_or(1, |i| i as u8 + 2)
}

/// Per voxel: the fixed image's tissue code in the low four bits, the compared image's in the high.
pub fn tissue_labels(fixed: &Volume, compared: &Volume, calibration: &Calibration) -> Vec<u8> {
    fixed
        .voxels
        .par_iter()
        .zip(compared.voxels.par_iter())
        .map(|(&f, &c)| {
            let code = |hu: f32| tissue_code(calibration.density(hu as f64) as f32);
            code(f) | (code(c) << 4)
        })
        .collect()
}

/// Registers the case's pair and prepares the result's textures.
pub fn register_case(
    fixed: &Volume,
    moving: &Volume,
    truth: Option<&Truth>,
    params: &RegisterParams,
    progress: &dyn Progress,
) -> Result<JobOutput> {
    let start = std::time::Instant::now();
    let mut registration = register_volumes(fixed, moving, params, progress)?;
    registration.timings.total_s = start.elapsed().as_secs_f64();
    let (result, textures) = result_views(fixed, registration, truth, params, progress)?;
    Ok(JobOutput::Registered(Box::new(result), textures))
}

/// A result and the textures that show it.
fn result_views(
    fixed: &Volume,
    registration: Registration,
    truth: Option<&Truth>,
    params: &RegisterParams,
    progress: &dyn Progress,
) -> Result<(CaseResult, Vec<TextureData>)> {
    progress.start_stage("preparing the result's views", 0);
    let warp = VectorField::from_displacement_mm(&registration.warp_fwd);
    let jacobian = determinant(&warp);
    let (endpoint_error, rigid_endpoint_error) = match truth {
        Some(truth) => {
            let body = body_mask(fixed, &params.calibration);
            let rigid = registration.rigid.transform.to_displacement_field(&fixed.geometry);
            (
                Some(endpoint_error(&registration.warp_fwd, &truth.forward, &body)?),
                Some(endpoint_error(&rigid, &truth.forward, &body)?),
            )
        }
        None => (None, None),
    };
    let shape = fixed.geometry.shape;
    let momentum = match &registration.momentum {
        Some(map) => TextureData::half_floats(Slot::Momentum, shape, &map.on_full_grid(shape)),
        None => TextureData::half_floats(Slot::Momentum, [1, 1, 1], &[0.0]),
    };
    let momentum_max = registration.momentum.as_ref().map_or(0.0, |m| m.max());
    let textures = vec![
        momentum,
        TextureData::half_floats(Slot::Compared, shape, &registration.moving_warped.voxels),
        TextureData::half_floats(Slot::Jacobian, shape, &jacobian),
        displacement_texture(&warp),
        TextureData::bytes(
            Slot::TissueLabels,
            shape,
            tissue_labels(fixed, &registration.moving_warped, &params.calibration),
        ),
    ];
    let result = CaseResult {
        registration: Arc::new(registration),
        params: params.clone(),
        jacobian,
        momentum_max,
        endpoint_error,
        rigid_endpoint_error,
    };
    Ok((result, textures))
}

/// A finished `register` folder, shown as if it had just been registered here: its inputs,
/// result, verdict and metrics, and the structures it carried.
pub fn open_result_folder(folder: &Path, progress: &dyn Progress) -> Result<JobOutput> {
    let saved = crate::register::saved::read_outputs(folder, progress)?;
    let identities = DicomIdentities::of(&saved.fixed, &saved.moving);
    let name = format!("result in {}", folder.display());
    let mut warnings = saved.warnings.clone();
    warnings.extend(saved.fixed.warnings.iter().chain(&saved.moving.warnings).cloned());
    let JobOutput::Loaded(case, mut textures) = build_case(
        name,
        saved.fixed_path.clone(),
        saved.moving_path.clone(),
        saved.fixed.volume,
        saved.moving.volume,
        None,
        warnings,
        identities,
        progress,
    )?
    else {
        unreachable!("build_case returns a loaded case")
    };
    let (result, result_textures) = result_views(&case.fixed, saved.registration, None, &saved.params, progress)?;
    // The result's textures replace the case's where both have one.
    textures.retain(|t| !result_textures.iter().any(|r| r.slot == t.slot));
    textures.extend(result_textures);
    let carried = carried_in_folder(folder, &case.fixed.geometry, saved.dicom.as_ref())?;
    Ok(JobOutput::Opened(case, Box::new(result), textures, carried))
}

/// The structures a register folder carried onto the CT (`dicom/structures.dcm`), if any.
fn carried_in_folder(
    folder: &Path,
    grid: &crate::volume::Geometry,
    dicom: Option<&serde_json::Value>,
) -> Result<Vec<CarriedRoi>> {
    let path = folder.join("dicom").join("structures.dcm");
    if !path.exists() {
        return Ok(Vec::new());
    }
    let set = crate::io::dicom_structures::read_structure_set(&path)?;
    let summaries = dicom.and_then(|d| d["structures"].as_array()).cloned().unwrap_or_default();
    Ok(set
        .rois
        .into_iter()
        .map(|roi| {
            let summary = summaries.iter().find(|s| s["number"].as_i64() == Some(roi.number));
            let ml = |key: &str| summary.and_then(|s| s[key].as_f64()).unwrap_or(f64::NAN);
            let contours = roi
                .contours
                .iter()
                .map(|contour| (grid.world_to_index(contour[0])[2].round().max(0.0) as usize, contour.clone()))
                .collect();
            CarriedRoi {
                moving_ml: ml("moving_ml"),
                carried_ml: ml("carried_ml"),
                roi: crate::io::dicom_structures::Roi { contours: Vec::new(), ..roi },
                contours,
            }
        })
        .collect())
}

/// Reads a structure set drawn on the moving image and, with a result, carries its regions
/// onto the fixed grid.
pub fn load_structures(
    path: &Path,
    case_identities: &DicomIdentities,
    moving: &Volume,
    registration: Option<&Registration>,
    progress: &dyn Progress,
) -> Result<JobOutput> {
    progress.start_stage("reading the structure set", 0);
    let structures = Arc::new(StructuresToCarry::read(path, &case_identities.moving, &moving.geometry)?);
    let carried = match registration {
        Some(registration) => carry_all(&structures, registration, progress)?,
        None => Vec::new(),
    };
    Ok(JobOutput::Structures(Some(structures), carried))
}

/// Every region of `structures` carried through `registration`'s forward field.
pub fn carry_all(
    structures: &StructuresToCarry,
    registration: &Registration,
    progress: &dyn Progress,
) -> Result<Vec<CarriedRoi>> {
    progress.start_stage("carrying the structures", structures.masks.len() as u64);
    structures
        .masks
        .iter()
        .map(|mask| {
            progress.check_cancelled()?;
            let carried = carry(mask, &registration.warp_fwd);
            progress.advance(1);
            carried
        })
        .collect()
}

/// How many grid voxels one texel of the displacement texture spans for a grid of `shape`.
pub fn field_subsampling(shape: [usize; 3]) -> usize {
    let mut factor = 1;
    while shape.iter().map(|&n| n.div_ceil(factor)).product::<usize>() > MAX_FIELD_TEXELS {
        factor += 1;
    }
    factor
}

/// The displacement in voxels of the fixed grid (x, y, z, 0), every `factor`-th voxel.
fn displacement_texture(warp: &VectorField) -> TextureData {
    let factor = field_subsampling(warp.shape);
    let shape = warp.shape.map(|n| n.div_ceil(factor));
    let mut values = vec![0.0f32; shape.iter().product::<usize>() * 4];
    values.par_chunks_mut(shape[0] * shape[1] * 4).enumerate().for_each(|(k, plane)| {
        for j in 0..shape[1] {
            for i in 0..shape[0] {
                let source = i * factor + warp.shape[0] * (j * factor + warp.shape[1] * (k * factor));
                let texel = 4 * (i + shape[0] * j);
                for d in 0..3 {
                    plane[texel + d] = warp.components[d][source];
                }
            }
        }
    });
    TextureData::half_floats(Slot::Displacement, shape, &values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tissue_codes_follow_the_metric_classes() {
        assert_eq!(tissue_code(0.0), 0);
        assert_eq!(tissue_code(0.6), 1);
        assert_eq!(tissue_code(0.9), 2);
        assert_eq!(tissue_code(1.0), 3);
        assert_eq!(tissue_code(1.5), 4);
    }

    #[test]
    fn large_fields_are_subsampled_to_fit() {
        assert_eq!(field_subsampling([128, 128, 128]), 1);
        let factor = field_subsampling([512, 512, 300]);
        assert_eq!(factor, 2);
        assert!([512usize, 512, 300].iter().map(|n| n.div_ceil(factor)).product::<usize>() <= MAX_FIELD_TEXELS);
    }
}

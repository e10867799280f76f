//! One registration run (SPEC §2): calibrate, rigid, resample, deformable, both composed
//! fields, both warped images, and the report; `register_files` adds loading and writing.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::diffeo::VectorField;
use crate::diffeo::integrate::exp;
use crate::diffeo::jacobian::{compose, determinant, folding_count};
use crate::diffeo::pyramid::refine_field;
use crate::error::{Error, Result};
use crate::io::{self, SeriesChoice, StoredType};
use crate::matching::intensity::IntensityMatch;
use crate::matching::resolution::ResolutionMatch;
use crate::metrics::evaluation::{Evaluation, Fields, evaluate_densities};
use crate::metrics::verdict::{Verdict, VerdictInputs, VerdictLimits, judge, mask_extent_mm, mean_both_ways};
use crate::metrics::{Distances, body_mask, endpoint_error};
use crate::patch::border::BorderStatistics;
use crate::phantom::{DEMO_SHAPE, DEMO_SPACING_MM, demo_phantom};
use crate::progress::Progress;
use crate::qa::{QaInputs, write_figures};
use crate::register::dicom_export::{
    DicomIdentities, DicomOutputs, DicomRequest, DicomWritten, StructuresToCarry, write_dicom_outputs,
};
use crate::register::network::{MomentumMap, NetworkParams, load as load_network, predict_velocity};
use crate::register::optimize::{IterationRecord, OptimizeParams, optimize_from};
use crate::register::qa_report::write_report_html;
use crate::rigid::{RigidParams, RigidResult, align};
use crate::volume::geometry::{Vec3, add, norm, sub};
use crate::volume::resample::{Interpolation, resample_mapped_by, warp_through_field};
use crate::volume::{Calibration, DisplacementField, Geometry, Volume};

/// Version of the report.json layout; bumped whenever a field changes meaning or goes away.
pub const REPORT_SCHEMA_VERSION: u32 = 3;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Method {
    /// Direct optimisation of the momentum, no network.
    Optimize,
    /// The network's patch-wise momentum, smoothed as a whole (SPEC §3).
    Network,
    /// The network's prediction refined by direct optimisation.
    Hybrid,
}

impl Method {
    pub fn parse(name: &str) -> Result<Method> {
        match name {
            "optimize" => Ok(Method::Optimize),
            "network" => Ok(Method::Network),
            "hybrid" => Ok(Method::Hybrid),
            other => Err(Error::Invalid(format!("unknown method {other:?}: use network, optimize or hybrid"))),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegisterParams {
    pub method: Method,
    pub calibration: Calibration,
    /// Compare only the patient: in each image, everything but the largest connected piece of
    /// body (density ≥ 0.5 kg/dm³, grown by 2 voxels for the skin's edge) counts as air. A CT's
    /// couch, head rest or mask has no counterpart in a pseudo-CT. (Records without it read as
    /// off, as those runs were.)
    #[serde(default)]
    pub patient_only: bool,
    pub rigid: RigidParams,
    pub optimize: OptimizeParams,
    #[serde(default)]
    pub network: NetworkParams,
}

impl Default for RegisterParams {
    fn default() -> Self {
        RegisterParams {
            method: Method::Optimize,
            calibration: Calibration::default(),
            patient_only: true,
            rigid: RigidParams::default(),
            optimize: OptimizeParams::default(),
            network: NetworkParams::default(),
        }
    }
}

/// Seconds spent in each stage.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Timings {
    pub load_s: f64,
    pub calibrate_s: f64,
    pub rigid_s: f64,
    pub resample_s: f64,
    /// The closed-form local estimate a model with a local prior corrects.
    pub local_estimate_s: f64,
    /// The network's momentum prediction (network and hybrid).
    pub predict_s: f64,
    /// Smoothing the predicted momentum into the velocity.
    pub smooth_s: f64,
    /// Direct optimisation (optimize, and the refinement of hybrid).
    pub optimize_s: f64,
    pub integrate_s: f64,
    pub warp_s: f64,
    pub metrics_s: f64,
    pub write_s: f64,
    pub total_s: f64,
}

impl Timings {
    /// Each stage's seconds in the order they run, named as the terminal and the app show them.
    pub fn stages(&self) -> [(&'static str, f64); 12] {
        [
            ("load", self.load_s),
            ("calibrate", self.calibrate_s),
            ("rigid", self.rigid_s),
            ("resample", self.resample_s),
            ("local estimate", self.local_estimate_s),
            ("predict", self.predict_s),
            ("smooth", self.smooth_s),
            ("optimise", self.optimize_s),
            ("integrate", self.integrate_s),
            ("warp", self.warp_s),
            ("metrics", self.metrics_s),
            ("write", self.write_s),
        ]
    }
}

/// What the deformation looks like, measured on the fixed grid.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FieldQuality {
    pub folding_voxels: usize,
    pub jacobian_min: f64,
    pub jacobian_mean: f64,
    pub inverse_consistency_mean_mm: f64,
    pub inverse_consistency_max_mm: f64,
    pub max_deformation_mm: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InputFile {
    pub role: String,
    pub path: PathBuf,
    pub bytes: u64,
    /// CRC-32 of the file's bytes (of every file, in name order, for a folder).
    pub crc32: String,
    pub shape: [usize; 3],
    pub spacing_mm: [f64; 3],
}

/// The metrics of SPEC §7 for the rigid start (the thesis' "Rigid" row) and for the result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegistrationMetrics {
    pub rigid: Evaluation,
    pub result: Evaluation,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub schema_version: u32,
    /// Whether the result can be used: ok, warning or failed, with the reasons.
    pub verdict: Verdict,
    pub program: String,
    pub version: String,
    pub inputs: Vec<InputFile>,
    pub parameters: RegisterParams,
    pub timings: Timings,
    pub rigid: RigidResult,
    pub deformable_quality: FieldQuality,
    pub metrics: RegistrationMetrics,
    /// The network model used (network and hybrid).
    pub model: Option<String>,
    /// The grid the network and its local estimate worked on (network and hybrid).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_grid: Option<NetworkGrid>,
    /// Which image was blurred by how much (fixed-grid voxels) to match the other's resolution.
    pub resolution_match: Option<ResolutionMatch>,
    /// The map from the fixed image's grey values to the moving image's that the last level
    /// compared through (piecewise linear, density units).
    pub intensity_match: Option<IntensityMatch>,
    /// The optimiser's resolution levels that ran (downsampling factors, coarse to fine): the
    /// configured ones less those the grid did not need.
    pub levels_run: Vec<usize>,
    pub energy_first: Option<IterationRecord>,
    pub energy_last: Option<IterationRecord>,
    pub iterations: usize,
    pub warnings: Vec<String>,
    /// The DICOM outputs (`register --dicom`), if written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dicom: Option<DicomWritten>,
}

/// The grid a model worked on: the fixed grid downsampled by `factor` (the whole factor closest to
/// the model's `grid_mm` over the fixed voxels' size), so that a report says how coarse the
/// network's voxels were on this pair.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NetworkGrid {
    pub factor: usize,
    pub shape: [usize; 3],
    pub voxel_mm: [f64; 3],
}

impl NetworkGrid {
    fn of(map: &MomentumMap, fixed_spacing_mm: [f64; 3]) -> Self {
        NetworkGrid { factor: map.factor, shape: map.shape, voxel_mm: fixed_spacing_mm.map(|s| s * map.factor as f64) }
    }
}

/// Everything a run produces, in memory.
pub struct Registration {
    /// On the fixed grid: fixed point x maps to moving point x + u(x) (rigid included).
    pub warp_fwd: DisplacementField,
    /// On the moving grid: moving point y maps to fixed point y + u(y).
    pub warp_inv: DisplacementField,
    /// The moving image on the fixed grid.
    pub moving_warped: Volume,
    /// The fixed image on the moving grid.
    pub fixed_warped: Volume,
    pub rigid: RigidResult,
    pub quality: FieldQuality,
    /// SPEC §7 metrics of the rigid-only start and of the result, both ways.
    pub metrics: RegistrationMetrics,
    /// Whether the result can be used (`metrics::verdict`).
    pub verdict: Verdict,
    /// What the run had to decide that the user should know (the report's warnings).
    pub warnings: Vec<String>,
    pub history: Vec<IterationRecord>,
    pub timings: Timings,
    /// The network's patch-border statistics and the margin its tiles discarded (network, hybrid).
    pub border: Option<(BorderStatistics, usize)>,
    /// The model used, if any.
    pub model: Option<String>,
    /// The share of the network's start that hybrid's refinement charged to the regulariser
    /// (hybrid only; the rest was kept as a fixed base).
    pub hybrid_charged_share: Option<f64>,
    /// The network's momentum length and its tiles (network, hybrid).
    pub momentum: Option<MomentumMap>,
    /// The blur that matched the two images' resolutions before optimising (optimize, hybrid).
    pub resolution: Option<ResolutionMatch>,
    /// The grey-value map the optimiser's last level compared through (optimize, hybrid).
    pub intensity: Option<IntensityMatch>,
}

/// Registers `moving` to `fixed` (both in HU, each on its own grid).
pub fn register_volumes(
    fixed: &Volume,
    moving: &Volume,
    params: &RegisterParams,
    progress: &dyn Progress,
) -> Result<Registration> {
    let aligned = align_rigidly(fixed, moving, params, progress)?;
    let mut timings = Timings {
        calibrate_s: aligned.calibrate_s,
        rigid_s: aligned.rigid_s,
        resample_s: aligned.resample_s,
        ..Timings::default()
    };
    let RigidlyAligned { fixed_density, moving_on_fixed, moving_coverage, rigid, .. } = aligned;
    let transform = rigid.transform.clone();
    let mut clock = Instant::now();

    let shape = fixed.geometry.shape;
    let (mut border, mut model, mut momentum, mut hybrid_charged_share) = (None, None, None, None);
    let start = match params.method {
        Method::Optimize => None,
        Method::Network | Method::Hybrid => {
            let device = params.network.device();
            let loaded = load_network(&params.network, &device)?;
            let (predicted, statistics, map, seconds) = predict_velocity(
                &fixed_density.voxels,
                &moving_on_fixed.voxels,
                Some(&moving_coverage),
                shape,
                fixed.geometry.spacing_mm,
                &loaded,
                &params.network,
                &device,
                progress,
            )?;
            (timings.local_estimate_s, timings.predict_s, timings.smooth_s) =
                (seconds.local_estimate_s, seconds.predict_s, seconds.smooth_s);
            border = Some((statistics, params.network.margin));
            if params.method == Method::Hybrid {
                // The user's share, else the model's own, else the whole start; none of it when
                // the start is not charged at all (`hybrid_regularise_start` off).
                let share = params.network.hybrid_charged_share.or(loaded.spec.hybrid_charged_share);
                hybrid_charged_share =
                    Some(if params.network.hybrid_regularise_start { share.unwrap_or(1.0) } else { 0.0 });
            }
            model = Some(loaded.source);
            momentum = Some(map);
            Some(predicted)
        }
    };
    let hybrid_start =
        start.as_ref().filter(|_| params.method == Method::Hybrid).map(|s| (s.velocity.clone(), s.factor));
    let optimized = match (params.method.clone(), start) {
        (Method::Network, Some(predicted)) => predicted,
        (_, start) => {
            let mut options = params.optimize.for_spacing(fixed.geometry.spacing_mm);
            if start.is_some() {
                options.levels = params.network.hybrid_levels.clone();
                options.iterations = params.network.hybrid_iterations.clone();
                options.regularise_start = params.network.hybrid_regularise_start;
                options.start_charged_share = hybrid_charged_share.unwrap_or(1.0);
            }
            let result = optimize_from(
                &fixed_density.voxels,
                &moving_on_fixed.voxels,
                params.optimize.field_of_view.then_some(&moving_coverage[..]),
                shape,
                fixed.geometry.spacing_mm,
                &options,
                start,
                progress,
            )?;
            timings.optimize_s = lap(&mut clock);
            result
        }
    };
    clock = Instant::now();
    progress.start_stage("integrating", 0);
    let steps = params.optimize.energy.steps;
    let deformation = |velocity: &VectorField, factor: usize| {
        deformation_of(velocity, factor, steps, &fixed.geometry, &moving.geometry, &transform)
    };
    let mut result = deformation(&optimized.velocity, optimized.factor);
    timings.integrate_s = lap(&mut clock);

    progress.start_stage("measuring", 0);
    let back = transform.inverse();
    let rigid_fwd = transform.to_displacement_field(&fixed.geometry);
    let rigid_inv = back.to_displacement_field(&moving.geometry);
    // The images in density as `evaluate` compares them, made once for all the fields judged.
    let (fixed_calibrated, moving_calibrated) = (params.calibration.apply(fixed), params.calibration.apply(moving));
    let judged = |d: &Deformation| {
        let fields =
            Fields { forward: &d.warp_fwd, inverse: Some(&d.warp_inv), truth_forward: None, truth_inverse: None };
        evaluate_densities(&fixed_calibrated, &moving_calibrated, &fields)
    };
    let rigid_fields =
        Fields { forward: &rigid_fwd, inverse: Some(&rigid_inv), truth_forward: None, truth_inverse: None };
    let mut metrics = RegistrationMetrics {
        rigid: evaluate_densities(&fixed_calibrated, &moving_calibrated, &rigid_fields)?,
        result: judged(&result)?,
    };
    let mut warnings = Vec::new();
    // Hybrid never hands back less than it started from: the network's prediction is kept when
    // the refinement made the images agree less (mean MSE of both directions).
    if let Some((velocity, factor)) = hybrid_start {
        let start = deformation(&velocity, factor);
        let start_metrics = judged(&start)?;
        let (refined_mse, start_mse) = (mean_mse(&metrics.result), mean_mse(&start_metrics));
        if !refinement_kept(&start_metrics, &metrics.result) {
            warnings.push(format!(
                "the refinement made the images agree less (MSE {start_mse:.5} → {refined_mse:.5}); the network's \
                 prediction is returned"
            ));
            (result, metrics.result) = (start, start_metrics);
        }
    }
    drop((fixed_calibrated, moving_calibrated));
    let Deformation { warp_fwd, warp_inv, quality } = result;
    timings.metrics_s = lap(&mut clock);

    progress.start_stage("warping images", 0);
    let fill = |v: &Volume| v.value_range().map_or(0.0, |(low, _)| low);
    let moving_warped = warp_through_field(moving, &warp_fwd, Interpolation::Linear, fill(moving))?;
    let fixed_warped = warp_through_field(fixed, &warp_inv, Interpolation::Linear, fill(fixed))?;
    timings.warp_s = lap(&mut clock);

    let body = body_mask(fixed, &params.calibration);
    if let Some(warning) = uncovered_body_warning(&body, &moving_coverage) {
        warnings.push(warning);
    }
    let verdict = judge(
        &VerdictInputs {
            result: &metrics.result,
            reference: Some(("rigid alignment alone", &metrics.rigid)),
            reference_is_aligned: true,
            max_deformation_mm: quality.max_deformation_mm,
            body_extent_mm: mask_extent_mm(&body, fixed.geometry.shape, fixed.geometry.spacing_mm),
        },
        &VerdictLimits::default(),
    );
    timings.metrics_s += lap(&mut clock);
    Ok(Registration {
        verdict,
        warnings,
        warp_fwd,
        warp_inv,
        moving_warped,
        fixed_warped,
        rigid,
        quality,
        metrics,
        history: optimized.history,
        resolution: optimized.resolution,
        intensity: optimized.intensity,
        timings,
        border,
        model,
        hybrid_charged_share,
        momentum,
    })
}

/// Seconds since `clock`, which restarts.
fn lap(clock: &mut Instant) -> f64 {
    let seconds = clock.elapsed().as_secs_f64();
    *clock = Instant::now();
    seconds
}

/// Both images as density on the fixed grid after the rigid stage: what the deformable stage
/// (optimisation, the network, training) works on.
pub struct RigidlyAligned {
    pub fixed_density: Volume,
    /// The moving image's density resampled onto the fixed grid through the rigid transform.
    pub moving_on_fixed: Volume,
    /// Per fixed voxel: whether the moving image has data there (the rigid transform takes it
    /// within the moving grid's voxel centres). Elsewhere `moving_on_fixed` is filled with air,
    /// which is no evidence of anything: a pseudo-CT's field of view rarely matches the CT's.
    pub moving_coverage: Vec<bool>,
    pub rigid: RigidResult,
    pub calibrate_s: f64,
    pub rigid_s: f64,
    pub resample_s: f64,
}

/// Calibrates both images to density (refusing a constant one), aligns the moving image
/// rigidly to the fixed one and resamples it onto the fixed grid (SPEC §2, steps 2–3).
pub fn align_rigidly(
    fixed: &Volume,
    moving: &Volume,
    params: &RegisterParams,
    progress: &dyn Progress,
) -> Result<RigidlyAligned> {
    let mut clock = Instant::now();
    progress.start_stage("calibrating", 0);
    let (mut fixed_density, mut moving_density) = (params.calibration.apply(fixed), params.calibration.apply(moving));
    if params.patient_only {
        rayon::join(|| keep_patient_only(&mut fixed_density), || keep_patient_only(&mut moving_density));
    }
    for (image, role) in [(&fixed_density, "fixed"), (&moving_density, "moving")] {
        let (low, high) = image.value_range().unwrap_or((0.0, 0.0));
        if high - low < 1e-3 {
            return Err(Error::Invalid(format!("the {role} image is constant ({low} kg/dm³): nothing to register")));
        }
    }
    let calibrate_s = lap(&mut clock);
    let rigid = align(&fixed_density, &moving_density, &params.rigid, progress)?;
    let rigid_s = lap(&mut clock);
    progress.start_stage("resampling", 0);
    let transform = rigid.transform.clone();
    let moving_on_fixed =
        resample_mapped_by(&moving_density, &fixed.geometry, Interpolation::Linear, 0.0, |x| transform.apply(x));
    let moving_coverage = coverage(&fixed.geometry, &moving.geometry, |x| transform.apply(x));
    let resample_s = lap(&mut clock);
    Ok(RigidlyAligned { fixed_density, moving_on_fixed, moving_coverage, rigid, calibrate_s, rigid_s, resample_s })
}

/// Share of the fixed image's body beyond the moving image's field of view above which the run
/// warns: there the deformation is carried over from the tissue around, not measured.
pub const UNCOVERED_BODY_WARNING: f64 = 0.05;

/// The warning for a fixed body (`body`) of which more than `UNCOVERED_BODY_WARNING` has no
/// moving data after the rigid alignment (`covered`), naming the share.
pub fn uncovered_body_warning(body: &[bool], covered: &[bool]) -> Option<String> {
    let total = body.iter().filter(|&&b| b).count();
    let uncovered = body.iter().zip(covered).filter(|&(&b, &c)| b && !c).count();
    let share = uncovered as f64 / total.max(1) as f64;
    (share > UNCOVERED_BODY_WARNING).then(|| {
        format!(
            "the moving image has no data for {:.1} % of the fixed image's body (beyond its field of view after \
             the rigid alignment): the deformation there is carried over from the tissue around it, not measured",
            100.0 * share
        )
    })
}

/// Per voxel of `target`: whether `map` takes its centre within the voxel centres of `source`
/// (where interpolation sees only the source's own values).
pub fn coverage(target: &Geometry, source: &Geometry, map: impl Fn(Vec3) -> Vec3 + Sync) -> Vec<bool> {
    use rayon::prelude::*;
    let to_source = source.world_to_index_map();
    let tolerance = 1e-3;
    (0..target.voxel_count())
        .into_par_iter()
        .map(|n| {
            let p = to_source.apply(map(target.world_of(n)));
            (0..3).all(|d| p[d] >= -tolerance && p[d] <= source.shape[d] as f64 - 1.0 + tolerance)
        })
        .collect()
}

/// A deformation in both directions, rigid part included, and how it looks.
struct Deformation {
    warp_fwd: DisplacementField,
    warp_inv: DisplacementField,
    quality: FieldQuality,
}

/// exp(±v) of a velocity on level `factor` of the fixed grid, refined onto the full grid
/// (exactly what the optimiser's energy saw; the squarings run on the coarse grid), composed with
/// the rigid `transform`: forward on the fixed grid, inverse on the moving grid.
fn deformation_of(
    velocity: &VectorField,
    factor: usize,
    steps: u32,
    fixed: &crate::volume::Geometry,
    moving: &crate::volume::Geometry,
    transform: &crate::volume::affine::AffineTransform,
) -> Deformation {
    let shape = fixed.shape;
    let forward = refine_field(&exp(velocity, steps), shape, factor, 1);
    let inverse = refine_field(&exp(&velocity.scaled(-1.0), steps), shape, factor, 1);
    let forward_mm = forward.to_displacement_mm(fixed);
    let quality = field_quality(&forward, &inverse, &forward_mm);
    drop(forward);
    let inverse_mm = inverse.to_displacement_mm(fixed);
    drop(inverse);
    // Fixed x → x + u(x) in the rigidly aligned frame → T(·) in the moving image.
    let warp_fwd =
        DisplacementField::from_fn_indexed(fixed.clone(), |n, x| sub(transform.apply(add(x, forward_mm.at(n))), x));
    drop(forward_mm);
    let back = transform.inverse();
    let inverse_at = inverse_mm.world_sampler();
    let warp_inv = DisplacementField::from_fn(moving.clone(), |y| {
        let z = back.apply(y);
        sub(add(z, inverse_at(z)), y)
    });
    Deformation { warp_fwd, warp_inv, quality }
}

/// Whether hybrid keeps its refinement: only when the images agree at least as well as at its
/// start (mean MSE of both directions).
fn refinement_kept(start: &Evaluation, refined: &Evaluation) -> bool {
    mean_mse(refined) <= mean_mse(start)
}

/// The mean of both directions' MSE.
fn mean_mse(evaluation: &Evaluation) -> f64 {
    mean_both_ways(evaluation, |d| d.image.mse)
}

/// Sets every voxel of a density image outside the patient to air: the patient is the largest
/// connected piece of body (density ≥ `BODY_DENSITY`), grown by 2 voxels so that the skin's
/// partial-volume edge stays. An image with no body is left as it is.
pub fn keep_patient_only(density: &mut Volume) {
    use crate::metrics::BODY_DENSITY;
    use crate::volume::filter::{dilate, largest_component};
    let shape = density.geometry.shape;
    let body: Vec<bool> = density.voxels.iter().map(|&d| d >= BODY_DENSITY).collect();
    let mut patient = largest_component(&body, shape);
    if !patient.iter().any(|&p| p) {
        return;
    }
    dilate(&mut patient, shape, [2; 3]);
    density.voxels.iter_mut().zip(patient).filter(|(_, p)| !p).for_each(|(d, _)| *d = 0.0);
}

fn field_quality(forward: &VectorField, inverse: &VectorField, forward_mm: &DisplacementField) -> FieldQuality {
    let det = determinant(forward);
    let jacobian_min = det.iter().copied().fold(f32::INFINITY, f32::min) as f64;
    let jacobian_mean = det.iter().map(|&d| d as f64).sum::<f64>() / det.len() as f64;
    let folding_voxels = folding_count(&det);
    drop(det);
    let residual = compose(forward, inverse).to_displacement_mm(&forward_mm.geometry);
    let lengths: Vec<f64> = (0..residual.geometry.voxel_count()).map(|n| norm(residual.at(n))).collect();
    let max_deformation_mm = forward_mm.max_norm_mm();
    FieldQuality {
        folding_voxels,
        jacobian_min,
        jacobian_mean,
        inverse_consistency_mean_mm: lengths.iter().sum::<f64>() / lengths.len() as f64,
        inverse_consistency_max_mm: lengths.iter().copied().fold(0.0, f64::max),
        max_deformation_mm,
    }
}

/// Loads both images, registers them and writes every output of SPEC §6 into `out`.
/// Nothing is written until the registration has finished, and each file is written
/// atomically, so a cancelled or failed run leaves no outputs.
/// With `dicom`, `out/dicom/` gets the warped moving image as a series in the fixed CT's study
/// and frame of reference, the registration as a Deformable Spatial Registration object, and
/// the structures asked for carried onto the fixed CT.
pub fn register_files(
    fixed_path: &Path,
    moving_path: &Path,
    out: &Path,
    params: &RegisterParams,
    dicom: Option<&DicomRequest>,
    progress: &dyn Progress,
) -> Result<Report> {
    let start = Instant::now();
    let fixed = io::load_volume(fixed_path, &SeriesChoice::LargestCt, progress)?;
    let moving = io::load_volume(moving_path, &SeriesChoice::LargestCt, progress)?;
    let identities = dicom.map(|_| DicomIdentities::of(&fixed, &moving));
    if let Some(identities) = &identities {
        for (identity, path) in [(&identities.fixed, fixed_path), (&identities.moving, moving_path)] {
            if identity.frame_of_reference_uid.is_none() {
                return Err(Error::bad_input(
                    path,
                    "is a DICOM series without a FrameOfReferenceUID: DICOM outputs cannot say which frame they belong to",
                ));
            }
        }
    }
    let structures = match (dicom.and_then(|d| d.structures.as_deref()), &identities) {
        (Some(path), Some(identities)) => {
            Some(std::sync::Arc::new(StructuresToCarry::read(path, &identities.moving, &moving.volume.geometry)?))
        }
        _ => None,
    };
    let load_s = start.elapsed().as_secs_f64();
    let mut registration = register_volumes(&fixed.volume, &moving.volume, params, progress)?;
    registration.timings.load_s = load_s;
    progress.check_cancelled()?;

    registration.timings.total_s = start.elapsed().as_secs_f64();
    let dicom_outputs = identities.map(|identities| DicomOutputs { identities, structures });
    let inputs =
        vec![input_file("fixed", fixed_path, &fixed.volume)?, input_file("moving", moving_path, &moving.volume)?];
    let warnings: Vec<String> = fixed.warnings.iter().chain(&moving.warnings).cloned().collect();
    write_outputs(out, &fixed.volume, &registration, params, inputs, warnings, dicom_outputs.as_ref(), progress)
}

/// Registers the built-in demo case (the synthetic head and its pseudo-CT phantom, made in
/// memory), writes every output into `out`, and returns the report with the mean endpoint error
/// against the phantom's known answer, inside the body.
pub fn register_demo(
    out: &Path,
    params: &RegisterParams,
    dicom: bool,
    progress: &dyn Progress,
) -> Result<(Report, Distances)> {
    let start = Instant::now();
    progress.start_stage("building the demo case", 0);
    let phantom = demo_phantom(DEMO_SHAPE, DEMO_SPACING_MM)?;
    let load_s = start.elapsed().as_secs_f64();
    let mut registration = register_volumes(&phantom.fixed, &phantom.moving, params, progress)?;
    registration.timings.load_s = load_s;
    progress.check_cancelled()?;
    let body = body_mask(&phantom.fixed, &params.calibration);
    let error = endpoint_error(&registration.warp_fwd, &phantom.truth_fwd, &body)?;
    registration.timings.total_s = start.elapsed().as_secs_f64();
    let description = "(built-in demo, in memory)";
    let inputs = vec![
        input_in_memory("fixed", description, &phantom.fixed),
        input_in_memory("moving", description, &phantom.moving),
    ];
    let dicom = dicom.then(|| DicomOutputs { identities: DicomIdentities::made_up(), structures: None });
    let report =
        write_outputs(out, &phantom.fixed, &registration, params, inputs, Vec::new(), dicom.as_ref(), progress)?;
    Ok((report, error))
}

/// Writes every output of SPEC §6 for a finished registration into `out` (created) and returns
/// the report; `registration.timings.total_s` should hold the time so far, the writing is added.
/// Each file is written atomically. With `dicom`, the DICOM outputs too (`dicom_export`).
#[allow(clippy::too_many_arguments)]
pub fn write_outputs(
    out: &Path,
    fixed: &Volume,
    registration: &Registration,
    params: &RegisterParams,
    inputs: Vec<InputFile>,
    mut warnings: Vec<String>,
    dicom: Option<&DicomOutputs>,
    progress: &dyn Progress,
) -> Result<Report> {
    let writing = Instant::now();
    progress.start_stage("writing outputs", 0);
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    io::write_field(&out.join("warp_fwd.nii.gz"), &registration.warp_fwd)?;
    io::write_field(&out.join("warp_inv.nii.gz"), &registration.warp_inv)?;
    io::write_volume(&out.join("moving_warped.nii.gz"), &registration.moving_warped, StoredType::Float32)?;
    io::write_volume(&out.join("fixed_warped.nii.gz"), &registration.fixed_warped, StoredType::Float32)?;
    io::write_transform(&out.join("rigid.tfm"), &registration.rigid.transform)?;
    let qa_inputs = QaInputs {
        fixed,
        moving_warped: &registration.moving_warped,
        warp: &registration.warp_fwd,
        calibration: &params.calibration,
        dice: &registration.metrics.result.forward.image.dice,
    };
    write_figures(&out.join("qa"), &qa_inputs)?;
    if let Some((statistics, margin)) = &registration.border {
        statistics.write_plot(&out.join("qa").join("patch_border.png"), *margin)?;
    }
    let dicom = dicom
        .map(|d| write_dicom_outputs(out, registration, &d.identities, d.structures.as_deref(), progress))
        .transpose()?;
    let mut timings = registration.timings.clone();
    timings.write_s = writing.elapsed().as_secs_f64();
    timings.total_s += timings.write_s;

    warnings.extend(registration.warnings.iter().cloned());
    if registration.quality.folding_voxels > 0 {
        warnings.push(format!("{} voxels fold (det J ≤ 0)", registration.quality.folding_voxels));
    }
    let report = Report {
        schema_version: REPORT_SCHEMA_VERSION,
        verdict: registration.verdict.clone(),
        program: "diffeoreg".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        inputs,
        parameters: RegisterParams {
            // What the run used: the share hybrid charged (the model's own unless one was given).
            network: NetworkParams {
                hybrid_charged_share: registration.hybrid_charged_share.or(params.network.hybrid_charged_share),
                ..params.network.clone()
            },
            ..params.clone()
        },
        timings,
        rigid: registration.rigid.clone(),
        deformable_quality: registration.quality.clone(),
        metrics: registration.metrics.clone(),
        model: registration.model.clone(),
        network_grid: registration.momentum.as_ref().map(|map| NetworkGrid::of(map, fixed.geometry.spacing_mm)),
        resolution_match: registration.resolution,
        intensity_match: registration.intensity.clone(),
        levels_run: registration.history.iter().fold(Vec::new(), |mut levels, record| {
            if levels.last() != Some(&record.level) {
                levels.push(record.level);
            }
            levels
        }),
        energy_first: registration.history.first().cloned(),
        energy_last: registration.history.last().cloned(),
        iterations: registration.history.len(),
        warnings,
        dicom,
    };
    let json = serde_json::to_string_pretty(&report).map_err(|e| Error::Invalid(e.to_string()))?;
    let report_path = out.join("report.json");
    io::atomic::write_atomically(&report_path, |w| {
        w.write_all(json.as_bytes()).map_err(|e| Error::io(&report_path, e))
    })?;
    write_report_html(&out.join("qa"), &report)?;
    Ok(report)
}

/// An input that came from memory rather than a file (the app's built-in demo): its CRC-32 is
/// that of its voxels' bytes.
pub fn input_in_memory(role: &str, description: &str, volume: &Volume) -> InputFile {
    let bytes: &[u8] = bytemuck::cast_slice(&volume.voxels);
    InputFile {
        role: role.into(),
        path: PathBuf::from(description),
        bytes: bytes.len() as u64,
        crc32: format!("{:08x}", crc32fast::hash(bytes)),
        shape: volume.geometry.shape,
        spacing_mm: volume.geometry.spacing_mm,
    }
}

/// The record of an input file: size, CRC-32 (of every file, in name order, for a folder) and grid.
pub fn input_file(role: &str, path: &Path, volume: &Volume) -> Result<InputFile> {
    let mut files = Vec::new();
    if path.is_dir() {
        let mut stack = vec![path.to_path_buf()];
        while let Some(folder) = stack.pop() {
            for entry in std::fs::read_dir(&folder).map_err(|e| Error::io(&folder, e))? {
                let entry = entry.map_err(|e| Error::io(&folder, e))?;
                if entry.path().is_dir() { stack.push(entry.path()) } else { files.push(entry.path()) }
            }
        }
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    let mut crc = crc32fast::Hasher::new();
    let mut bytes = 0u64;
    for file in &files {
        let data = std::fs::read(file).map_err(|e| Error::io(file, e))?;
        bytes += data.len() as u64;
        crc.update(&data);
    }
    Ok(InputFile {
        role: role.into(),
        path: path.to_path_buf(),
        bytes,
        crc32: format!("{:08x}", crc.finalize()),
        shape: volume.geometry.shape,
        spacing_mm: volume.geometry.spacing_mm,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::evaluation::DirectionMetrics;
    use crate::metrics::{ImageAgreement, JacobianStats};

    /// A moving grid shorter along z and shifted: the fixed voxels whose centres map within
    /// its voxel centres, and no others, are covered (counted by hand), and the rigid map moves
    /// the covered slab with it.
    #[test]
    fn coverage_is_where_the_map_lands_within_the_source_voxel_centres() {
        let fixed = Geometry::axis_aligned([10, 8, 20], [2.0, 2.0, 2.0], [0.0, 0.0, 0.0]).unwrap();
        // Centres at z = 9, 12, ..., 36 mm: fixed slices 5 (10 mm) to 18 (36 mm).
        let moving = Geometry::axis_aligned([10, 8, 10], [2.0, 2.0, 3.0], [0.0, 0.0, 9.0]).unwrap();
        let covered = coverage(&fixed, &moving, |x| x);
        let slices = |covered: &[bool]| -> Vec<usize> {
            (0..20).filter(|&k| (0..80).all(|n| covered[n + 80 * k])).collect::<Vec<_>>()
        };
        assert_eq!(slices(&covered), (5..=18).collect::<Vec<_>>());
        assert_eq!(covered.iter().filter(|&&c| c).count(), 14 * 80);
        // Fixed point x lands on moving point x + 4 mm along z: slices 3 to 16.
        let shifted = coverage(&fixed, &moving, |x| [x[0], x[1], x[2] + 4.0]);
        assert_eq!(slices(&shifted), (3..=16).collect::<Vec<_>>());
        // Half a voxel off along x: the last column falls outside.
        let off = coverage(&fixed, &moving, |x| [x[0] + 1.0, x[1], x[2]]);
        assert!((0..fixed.voxel_count()).all(|n| off[n] == (covered[n] && n % 10 != 9)));
    }

    fn with_mse(forward: f64, backward: f64) -> Evaluation {
        let direction = |mse| DirectionMetrics {
            image: ImageAgreement { nmi: 1.2, mse, mae: 0.1, dice: Vec::new(), overlap: 1.0 },
            jacobian: JacobianStats { folding_share: 0.0, folding_voxels: 0, mean: 1.0, min: 0.5, max: 1.5 },
            endpoint_error: None,
            endpoint_error_by_region: Vec::new(),
        };
        Evaluation { forward: direction(forward), backward: Some(direction(backward)), inverse_consistency: None }
    }

    /// Judged on both directions together: a refinement that helps one way more than it hurts
    /// the other is kept; one that hurts on balance is not.
    #[test]
    fn hybrid_keeps_only_a_refinement_that_helps_both_ways_together() {
        let start = with_mse(0.010, 0.010);
        assert!(refinement_kept(&start, &with_mse(0.006, 0.012)));
        assert!(refinement_kept(&start, &start));
        assert!(!refinement_kept(&start, &with_mse(0.006, 0.0145)));
        assert!(!refinement_kept(&start, &with_mse(0.011, 0.010)));
    }
}

//! All metrics of one registration, both ways (SPEC §7): moving → fixed in fixed space with
//! the forward field, fixed → moving in moving space with the inverse one, and a table that
//! prints them beside the rigid-only start.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::metrics::regions::endpoint_error_by_region;
use crate::metrics::{
    BODY_DENSITY, Distances, ImageAgreement, JacobianStats, endpoint_error, image_agreement, inverse_consistency,
    jacobian_stats, warp_with_mask,
};
use crate::volume::calibration::Calibration;
use crate::volume::{DisplacementField, Volume};

/// The metrics of one direction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DirectionMetrics {
    /// The warped image against the image it was brought to.
    pub image: ImageAgreement,
    pub jacobian: JacobianStats,
    /// Against the ground truth, inside the body of the target image, when one was given.
    pub endpoint_error: Option<Distances>,
    /// The same per region of the target image (`metrics::regions`: bone, soft tissue, fat,
    /// the skin band, deeper than 20 mm).
    #[serde(default)]
    pub endpoint_error_by_region: Vec<crate::metrics::regions::RegionError>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Moving warped into fixed space by the forward field.
    pub forward: DirectionMetrics,
    /// Fixed warped into moving space by the inverse field, when one was given.
    pub backward: Option<DirectionMetrics>,
    /// ‖φ⁻¹(φ(x)) − x‖ over the fixed grid, when an inverse was given.
    pub inverse_consistency: Option<Distances>,
}

/// The fields and ground truths to judge; grids as SPEC §5 says.
pub struct Fields<'a> {
    /// On the fixed grid: fixed point x maps to moving point x + u(x).
    pub forward: &'a DisplacementField,
    /// On the moving grid: moving point y maps to fixed point y + u(y).
    pub inverse: Option<&'a DisplacementField>,
    pub truth_forward: Option<&'a DisplacementField>,
    pub truth_inverse: Option<&'a DisplacementField>,
}

/// Checks that `field` can be used on `grid` (named `what`): same grid, finite vectors.
pub fn check_field(field: &DisplacementField, image: &Volume, what: &str, image_role: &str) -> Result<()> {
    if !field.geometry.same_grid(&image.geometry, 1e-2) {
        return Err(Error::Invalid(format!(
            "the {what} is on a grid of {:?} voxels of {:?} mm at {:?}, not on the {image_role} image's grid of {:?} \
             voxels of {:?} mm at {:?}",
            field.geometry.shape,
            field.geometry.spacing_mm,
            field.geometry.origin_mm,
            image.geometry.shape,
            image.geometry.spacing_mm,
            image.geometry.origin_mm
        )));
    }
    let bad = field.non_finite_count();
    if bad > 0 {
        return Err(Error::Invalid(format!("the {what} has {bad} NaN or infinite components")));
    }
    Ok(())
}

/// Every metric of SPEC §7 for `fields` between `fixed` and `moving` (both in HU).
pub fn evaluate(fixed: &Volume, moving: &Volume, fields: &Fields, calibration: &Calibration) -> Result<Evaluation> {
    evaluate_densities(&calibration.apply(fixed), &calibration.apply(moving), fields)
}

/// `evaluate` on images already calibrated to density (`Calibration::apply`), for a caller that
/// judges several pairs of fields on the same images.
pub fn evaluate_densities(fixed_density: &Volume, moving_density: &Volume, fields: &Fields) -> Result<Evaluation> {
    let (fixed, moving) = (fixed_density, moving_density);
    check_field(fields.forward, fixed, "forward field", "fixed")?;
    if let Some(inverse) = fields.inverse {
        check_field(inverse, moving, "inverse field", "moving")?;
    }
    if let Some(truth) = fields.truth_forward {
        check_field(truth, fixed, "ground-truth forward field", "fixed")?;
    }
    if let Some(truth) = fields.truth_inverse {
        check_field(truth, moving, "ground-truth inverse field", "moving")?;
    }
    let direction = |source: &Volume, target: &Volume, field: &DisplacementField, truth: Option<&DisplacementField>| {
        let (warped, mask) = warp_with_mask(source, field);
        let image = image_agreement(&warped, &target.voxels, &mask);
        let body: Vec<bool> = target.voxels.iter().map(|&d| d >= BODY_DENSITY).collect();
        let endpoint_error = truth.map(|t| endpoint_error(field, t, &body)).transpose()?;
        let endpoint_error_by_region =
            truth.map(|t| endpoint_error_by_region(field, t, target)).transpose()?.unwrap_or_default();
        Ok(DirectionMetrics { image, jacobian: jacobian_stats(field), endpoint_error, endpoint_error_by_region })
    };
    let forward = direction(moving_density, fixed_density, fields.forward, fields.truth_forward)?;
    let backward =
        fields.inverse.map(|inv| direction(fixed_density, moving_density, inv, fields.truth_inverse)).transpose()?;
    let inverse_consistency = fields.inverse.map(|inv| inverse_consistency(fields.forward, inv));
    Ok(Evaluation { forward, backward, inverse_consistency })
}

/// The verdict on a field from any tool, judged against leaving the images where they are (the
/// reference is left out when they do not overlap that way, as for two scanners' frames).
pub fn verdict_without_registration(
    fixed: &Volume,
    moving: &Volume,
    forward: &DisplacementField,
    evaluation: &Evaluation,
    calibration: &Calibration,
) -> crate::metrics::verdict::Verdict {
    use crate::metrics::verdict::{VerdictInputs, VerdictLimits, judge, mask_extent_mm, non_affine_max_mm};
    let (none_forward, none_inverse) =
        (DisplacementField::zero(fixed.geometry.clone()), DisplacementField::zero(moving.geometry.clone()));
    let none =
        Fields { forward: &none_forward, inverse: Some(&none_inverse), truth_forward: None, truth_inverse: None };
    let reference = evaluate(fixed, moving, &none, calibration).ok().filter(|r| r.forward.image.overlap > 0.0);
    let body = crate::metrics::body_mask(fixed, calibration);
    let inputs = VerdictInputs {
        result: evaluation,
        reference: reference.as_ref().map(|r| ("no registration", r)),
        reference_is_aligned: false,
        max_deformation_mm: non_affine_max_mm(forward, &body),
        body_extent_mm: mask_extent_mm(&body, fixed.geometry.shape, fixed.geometry.spacing_mm),
    };
    judge(&inputs, &VerdictLimits::default())
}

/// A plain-text table of `rows` (name, evaluation), one line per row and direction.
pub fn summary_table(rows: &[(&str, &Evaluation)]) -> String {
    let dice =
        |d: &DirectionMetrics, name: &str| d.image.dice.iter().find(|x| x.tissue == name).map_or(f64::NAN, |x| x.dice);
    let mut out = String::from(
        "  method     direction   NMI    MSE      MAE     Dice fat water bone body   fold %  mean detJ  EPE mean/p95/max mm\n",
    );
    for (name, evaluation) in rows {
        let directions = [("mov→fix", Some(&evaluation.forward)), ("fix→mov", evaluation.backward.as_ref())];
        for (label, direction) in directions {
            let Some(d) = direction else { continue };
            let epe = d
                .endpoint_error
                .as_ref()
                .map_or("—".to_string(), |e| format!("{:.2} / {:.2} / {:.2}", e.mean_mm, e.p95_mm, e.max_mm));
            out += &format!(
                "  {name:<10} {label:<10} {:.3}  {:.5}  {:.4}  {:.3} {:.3} {:.3} {:.3}  {:>7.4}  {:.4}     {epe}\n",
                d.image.nmi,
                d.image.mse,
                d.image.mae,
                dice(d, "fat"),
                dice(d, "water"),
                dice(d, "bone"),
                dice(d, "body"),
                100.0 * d.jacobian.folding_share,
                d.jacobian.mean,
            );
        }
        if let Some(ic) = &evaluation.inverse_consistency {
            out += &format!("  {name:<10} |φ⁻¹∘φ − Id| mean {:.3} mm, max {:.3} mm\n", ic.mean_mm, ic.max_mm);
        }
    }
    out
}

/// What `evaluate_files` writes as `evaluation.json`.
#[derive(Clone, Debug, Serialize)]
pub struct EvaluationReport {
    pub schema_version: u32,
    pub program: String,
    pub version: String,
    pub fixed: std::path::PathBuf,
    pub moving: std::path::PathBuf,
    pub forward_field: std::path::PathBuf,
    pub inverse_field: Option<std::path::PathBuf>,
    pub truth_forward: Option<std::path::PathBuf>,
    pub truth_inverse: Option<std::path::PathBuf>,
    /// Wall time: reading the inputs, the metrics, the QA figures, all.
    pub load_s: f64,
    pub metrics_s: f64,
    pub figures_s: f64,
    pub seconds: f64,
    /// Whether the field can be used, judged against no registration at all (when the images
    /// overlap without one).
    pub verdict: crate::metrics::verdict::Verdict,
    pub evaluation: Evaluation,
}

/// The files `evaluate_files` reads; fields in the ITK convention (SPEC §5), made by any tool.
pub struct EvaluationInputs<'a> {
    pub fixed: &'a std::path::Path,
    pub moving: &'a std::path::Path,
    pub forward: &'a std::path::Path,
    pub inverse: Option<&'a std::path::Path>,
    pub truth_forward: Option<&'a std::path::Path>,
    pub truth_inverse: Option<&'a std::path::Path>,
}

/// Loads the images and fields, evaluates them, and writes `evaluation.json` into `out`.
pub fn evaluate_files(
    inputs: &EvaluationInputs,
    out: &std::path::Path,
    calibration: &Calibration,
    progress: &dyn crate::progress::Progress,
) -> Result<EvaluationReport> {
    use crate::io::{self, SeriesChoice};
    let start = std::time::Instant::now();
    let fixed = io::load_volume(inputs.fixed, &SeriesChoice::LargestCt, progress)?.volume;
    let moving = io::load_volume(inputs.moving, &SeriesChoice::LargestCt, progress)?.volume;
    let field = |path: Option<&std::path::Path>| path.map(io::read_field).transpose();
    let (forward, inverse) = (io::read_field(inputs.forward)?, field(inputs.inverse)?);
    let (truth_forward, truth_inverse) = (field(inputs.truth_forward)?, field(inputs.truth_inverse)?);
    progress.check_cancelled()?;
    let load_s = start.elapsed().as_secs_f64();
    progress.start_stage("measuring", 0);
    let named = |e: Error, path: &std::path::Path| match e {
        Error::Invalid(problem) => Error::BadInput { path: path.to_path_buf(), problem },
        other => other,
    };
    let fields = Fields {
        forward: &forward,
        inverse: inverse.as_ref(),
        truth_forward: truth_forward.as_ref(),
        truth_inverse: truth_inverse.as_ref(),
    };
    // Name the file whose grid or values are wrong.
    check_field(&forward, &fixed, "forward field", "fixed").map_err(|e| named(e, inputs.forward))?;
    for (field, path, what, role, image) in [
        (&inverse, inputs.inverse, "inverse field", "moving", &moving),
        (&truth_forward, inputs.truth_forward, "ground-truth forward field", "fixed", &fixed),
        (&truth_inverse, inputs.truth_inverse, "ground-truth inverse field", "moving", &moving),
    ] {
        if let (Some(field), Some(path)) = (field, path) {
            check_field(field, image, what, role).map_err(|e| named(e, path))?;
        }
    }
    let evaluation = evaluate(&fixed, &moving, &fields, calibration)?;
    let verdict = verdict_without_registration(&fixed, &moving, &forward, &evaluation, calibration);
    let metrics_s = start.elapsed().as_secs_f64() - load_s;
    let fill = moving.value_range().map_or(0.0, |(low, _)| low);
    let moving_warped = crate::volume::resample::warp_through_field(
        &moving,
        &forward,
        crate::volume::resample::Interpolation::Linear,
        fill,
    )?;
    let qa = crate::qa::QaInputs {
        fixed: &fixed,
        moving_warped: &moving_warped,
        warp: &forward,
        calibration,
        dice: &evaluation.forward.image.dice,
    };
    crate::qa::write_figures(&out.join("qa"), &qa)?;
    let figures_s = start.elapsed().as_secs_f64() - load_s - metrics_s;
    let report = EvaluationReport {
        schema_version: 1,
        program: "diffeoreg".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        fixed: inputs.fixed.to_path_buf(),
        moving: inputs.moving.to_path_buf(),
        forward_field: inputs.forward.to_path_buf(),
        inverse_field: inputs.inverse.map(|p| p.to_path_buf()),
        truth_forward: inputs.truth_forward.map(|p| p.to_path_buf()),
        truth_inverse: inputs.truth_inverse.map(|p| p.to_path_buf()),
        load_s,
        metrics_s,
        figures_s,
        seconds: start.elapsed().as_secs_f64(),
        verdict,
        evaluation,
    };
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let json = serde_json::to_string_pretty(&report).map_err(|e| Error::Invalid(e.to_string()))?;
    let path = out.join("evaluation.json");
    crate::io::atomic::write_atomically(&path, |w| {
        std::io::Write::write_all(w, json.as_bytes()).map_err(|e| Error::io(&path, e))
    })?;
    Ok(report)
}

//! The verdict on a registration (SPEC §5): `ok`, `warning` or `failed`, with each reason and
//! the numbers behind it, so that a result worse than its start, implausibly large, folded or
//! not invertible is never handed over as if it were fine.
//!
//! Checks, each on what any tool's fields give:
//! - the images' agreement, both ways, against a reference (the rigid start for `register`, no
//!   registration for `evaluate`): NMI must not drop, MSE must not rise;
//! - the bodies' overlap after registration (Dice of density ≥ 0.5 kg/dm³);
//! - folding (det J ≤ 0);
//! - inverse consistency ‖φ⁻¹(φ(x)) − x‖;
//! - the largest non-rigid displacement against the size of the body.

use serde::{Deserialize, Serialize};

use crate::metrics::evaluation::{DirectionMetrics, Evaluation};
use crate::volume::DisplacementField;
use crate::volume::geometry::{add, det3, inverse3, mat_mul, mat_vec, norm, sub};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warning,
    Failed,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Failed => "failed",
        }
    }
}

/// One check that did not pass cleanly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub status: Status,
    /// Which check: similarity, overlap, folding, inverse_consistency, displacement, same_patient.
    pub check: String,
    /// What a physicist reads, numbers included.
    pub message: String,
    /// The measured value and the limit it crossed.
    pub value: f64,
    pub limit: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub status: Status,
    /// Every check that warned or failed, worst first.
    pub reasons: Vec<Finding>,
}

/// The limits of each check; a value past `warn_*` warns, past `fail_*` fails.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerdictLimits {
    /// Drop of the mean NMI of both directions below the reference's.
    pub warn_nmi_drop: f64,
    pub fail_nmi_drop: f64,
    /// Rise of the mean MSE of both directions, as a share of the reference's.
    pub warn_mse_rise: f64,
    pub fail_mse_rise: f64,
    /// Share of the reference's overlap (fixed voxels whose sample lands in the moving image)
    /// that the result loses.
    pub warn_overlap_loss: f64,
    pub fail_overlap_loss: f64,
    /// Dice of the bodies after registration, below which the images may not show one head.
    pub warn_body_dice: f64,
    pub fail_body_dice: f64,
    /// Body Dice after the rigid alignment, below which the images may show two patients.
    pub warn_aligned_body_dice: f64,
    pub fail_aligned_body_dice: f64,
    /// Share of folding voxels.
    pub warn_folding_share: f64,
    pub fail_folding_share: f64,
    /// Mean and largest inverse-consistency error, mm.
    pub warn_inverse_mean_mm: f64,
    pub fail_inverse_mean_mm: f64,
    pub warn_inverse_max_mm: f64,
    pub fail_inverse_max_mm: f64,
    /// Largest non-rigid displacement as a share of the body's largest extent.
    pub warn_displacement_share: f64,
    pub fail_displacement_share: f64,
}

impl Default for VerdictLimits {
    fn default() -> Self {
        VerdictLimits {
            warn_nmi_drop: 0.0,
            fail_nmi_drop: 0.01,
            warn_mse_rise: 0.0,
            fail_mse_rise: 0.10,
            warn_overlap_loss: 0.1,
            fail_overlap_loss: 0.5,
            warn_body_dice: 0.95,
            fail_body_dice: 0.85,
            warn_aligned_body_dice: 0.88,
            fail_aligned_body_dice: 0.75,
            warn_folding_share: 0.0,
            fail_folding_share: 1e-3,
            warn_inverse_mean_mm: 0.3,
            fail_inverse_mean_mm: 1.0,
            warn_inverse_max_mm: 3.0,
            fail_inverse_max_mm: 10.0,
            warn_displacement_share: 0.08,
            fail_displacement_share: 0.15,
        }
    }
}

/// What the verdict is drawn from.
pub struct VerdictInputs<'a> {
    pub result: &'a Evaluation,
    /// What the result must not be worse than, with its name ("rigid alignment alone").
    pub reference: Option<(&'a str, &'a Evaluation)>,
    /// Whether the reference is an alignment of the two images (the rigid start): then how
    /// well their bodies overlap there says whether they show one patient.
    pub reference_is_aligned: bool,
    /// Largest displacement once the rigid (or best affine) part is taken out, mm.
    pub max_deformation_mm: f64,
    /// Largest extent of the body along the axes, mm.
    pub body_extent_mm: f64,
}

/// Judges a registration.
pub fn judge(inputs: &VerdictInputs, limits: &VerdictLimits) -> Verdict {
    let mut reasons = Vec::new();
    let mut check = |check: &str, value: f64, warn: f64, fail: f64, message: String| {
        let status = if value > fail {
            Status::Failed
        } else if value > warn {
            Status::Warning
        } else {
            return;
        };
        reasons.push(Finding {
            status,
            check: check.into(),
            message,
            value,
            limit: if status == Status::Failed { fail } else { warn },
        });
    };
    let result = inputs.result;
    let overlap = result.forward.image.overlap;
    let nothing_overlaps = overlap == 0.0 || result.forward.image.nmi.is_nan();
    check(
        "overlap",
        if nothing_overlaps { 1.0 } else { 0.0 },
        0.5,
        0.5,
        "no part of the registered moving image lies in the fixed image's field of view".into(),
    );
    if let Some((name, reference)) = inputs.reference {
        let reference_overlap = reference.forward.image.overlap;
        if reference_overlap > 0.0 {
            let lost = 1.0 - overlap / reference_overlap;
            check(
                "overlap",
                lost,
                limits.warn_overlap_loss,
                limits.fail_overlap_loss,
                format!(
                    "the registration moved the image out of view: {:.0} % of the fixed grid finds the moving image, \
                     {:.0} % after {name}",
                    100.0 * overlap,
                    100.0 * reference_overlap
                ),
            );
        }
        let (nmi, nmi_reference) =
            (mean_both_ways(result, |d| d.image.nmi), mean_both_ways(reference, |d| d.image.nmi));
        let (mse, mse_reference) =
            (mean_both_ways(result, |d| d.image.mse), mean_both_ways(reference, |d| d.image.mse));
        check(
            "similarity",
            nmi_reference - nmi,
            limits.warn_nmi_drop,
            limits.fail_nmi_drop,
            format!(
                "the images agree less than after {name}: NMI {nmi_reference:.4} → {nmi:.4} (mean of both directions)"
            ),
        );
        let rise = (mse - mse_reference) / mse_reference.max(f64::MIN_POSITIVE);
        check(
            "similarity",
            rise,
            limits.warn_mse_rise,
            limits.fail_mse_rise,
            format!(
                "the images differ more than after {name}: MSE {mse_reference:.5} → {mse:.5} (kg/dm³)², {:+.1} %",
                100.0 * rise
            ),
        );
    }
    let body_dice_of =
        |e: &Evaluation| e.forward.image.dice.iter().find(|d| d.tissue == "body").map_or(1.0, |d| d.dice);
    if let (Some((name, reference)), true) = (inputs.reference, inputs.reference_is_aligned) {
        let aligned = body_dice_of(reference);
        check(
            "same_patient",
            1.0 - aligned,
            1.0 - limits.warn_aligned_body_dice,
            1.0 - limits.fail_aligned_body_dice,
            format!(
                "the images may not show the same patient: after {name} their bodies overlap by only {aligned:.2} \
                 (Dice), where a CT and its own pseudo-CT overlap by about 0.95"
            ),
        );
    }
    let body_dice = body_dice_of(result);
    check(
        "overlap",
        1.0 - body_dice,
        1.0 - limits.warn_body_dice,
        1.0 - limits.fail_body_dice,
        format!(
            "the registered bodies overlap poorly (Dice {body_dice:.3}): the images may not show the same head, or \
             the alignment failed"
        ),
    );
    let folding = &result.forward.jacobian;
    check(
        "folding",
        folding.folding_share,
        limits.warn_folding_share,
        limits.fail_folding_share,
        format!(
            "{} voxels fold ({:.4} % of the grid; det J min {:.3}): the deformation is not invertible there",
            folding.folding_voxels,
            100.0 * folding.folding_share,
            folding.min
        ),
    );
    if let Some(inverse) = &result.inverse_consistency {
        check(
            "inverse_consistency",
            inverse.mean_mm,
            limits.warn_inverse_mean_mm,
            limits.fail_inverse_mean_mm,
            format!("the two directions disagree: ‖φ⁻¹(φ(x)) − x‖ mean {:.2} mm", inverse.mean_mm),
        );
        check(
            "inverse_consistency",
            inverse.max_mm,
            limits.warn_inverse_max_mm,
            limits.fail_inverse_max_mm,
            format!("the two directions disagree somewhere: ‖φ⁻¹(φ(x)) − x‖ up to {:.1} mm", inverse.max_mm),
        );
    }
    if inputs.body_extent_mm > 0.0 {
        let share = inputs.max_deformation_mm / inputs.body_extent_mm;
        check(
            "displacement",
            share,
            limits.warn_displacement_share,
            limits.fail_displacement_share,
            format!(
                "implausibly large deformation: up to {:.1} mm beyond the rigid part, {:.0} % of the body's {:.0} mm",
                inputs.max_deformation_mm,
                100.0 * share,
                inputs.body_extent_mm
            ),
        );
    }
    reasons.sort_by_key(|r| std::cmp::Reverse(r.status));
    Verdict { status: reasons.first().map_or(Status::Ok, |r| r.status), reasons }
}

/// The mean of a metric over both directions (the forward one alone when there is no inverse).
pub fn mean_both_ways(evaluation: &Evaluation, value: impl Fn(&DirectionMetrics) -> f64) -> f64 {
    match &evaluation.backward {
        Some(backward) => 0.5 * (value(&evaluation.forward) + value(backward)),
        None => value(&evaluation.forward),
    }
}

/// Largest extent of `mask` (on a grid of `shape` with `spacing_mm`) along the grid's axes, mm.
pub fn mask_extent_mm(mask: &[bool], shape: [usize; 3], spacing_mm: [f64; 3]) -> f64 {
    let mut low = [usize::MAX; 3];
    let mut high = [0usize; 3];
    for (n, _) in mask.iter().enumerate().filter(|(_, m)| **m) {
        let index = [n % shape[0], (n / shape[0]) % shape[1], n / (shape[0] * shape[1])];
        for d in 0..3 {
            low[d] = low[d].min(index[d]);
            high[d] = high[d].max(index[d]);
        }
    }
    (0..3).filter(|&d| low[d] <= high[d]).map(|d| (high[d] - low[d] + 1) as f64 * spacing_mm[d]).fold(0.0, f64::max)
}

/// Largest distance, over the voxels of `mask`, between where `field` takes a point and where
/// the affine map that fits it best (least squares over `mask`) would: the size of the
/// deformation once any rigid or affine part, whoever's tool made the field, is taken out.
pub fn non_affine_max_mm(field: &DisplacementField, mask: &[bool]) -> f64 {
    let grid = &field.geometry;
    // Two passes over the mask, keeping no point list: sums for the fit, then the residuals.
    let point = |n: usize| {
        let x = grid.world_of(n);
        (x, add(x, field.at(n)))
    };
    let inside = || (0..grid.voxel_count()).filter(|&n| mask[n]);
    let (mut x_sum, mut y_sum, mut count) = ([0.0; 3], [0.0; 3], 0usize);
    for n in inside() {
        let (x, y) = point(n);
        (x_sum, y_sum, count) = (add(x_sum, x), add(y_sum, y), count + 1);
    }
    if count < 4 {
        return 0.0;
    }
    let (x_mean, y_mean) = (x_sum.map(|v| v / count as f64), y_sum.map(|v| v / count as f64));
    // A = (Σ y' x'ᵀ)(Σ x' x'ᵀ)⁻¹ with centred x' and y'.
    let (mut xx, mut yx) = ([[0.0; 3]; 3], [[0.0; 3]; 3]);
    for n in inside() {
        let (x, y) = point(n);
        let (xc, yc) = (sub(x, x_mean), sub(y, y_mean));
        for r in 0..3 {
            for c in 0..3 {
                xx[r][c] += xc[r] * xc[c];
                yx[r][c] += yc[r] * xc[c];
            }
        }
    }
    if det3(&xx).abs() < 1e-9 {
        return 0.0;
    }
    let a = mat_mul(&yx, &inverse3(&xx));
    inside()
        .map(|n| {
            let (x, y) = point(n);
            norm(sub(sub(y, y_mean), mat_vec(&a, sub(x, x_mean))))
        })
        .fold(0.0, f64::max)
}

impl Verdict {
    /// One line per reason, the status first: what the terminal and the app print.
    pub fn lines(&self) -> Vec<String> {
        if self.reasons.is_empty() {
            return vec!["ok: similarity, overlap, folding, inverse consistency and size all within limits".into()];
        }
        self.reasons.iter().map(|r| format!("{}: {}", r.status.name(), r.message)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Dice, Distances, ImageAgreement, JacobianStats};

    fn evaluation(nmi: f64, mse: f64, body_dice: f64, folding_voxels: usize, inverse_mean_mm: f64) -> Evaluation {
        let direction = DirectionMetrics {
            image: ImageAgreement {
                nmi,
                mse,
                mae: 0.0,
                dice: vec![Dice { tissue: "body".into(), dice: body_dice }],
                overlap: 1.0,
            },
            jacobian: JacobianStats {
                folding_share: folding_voxels as f64 / 1e6,
                folding_voxels,
                mean: 1.0,
                min: if folding_voxels > 0 { -0.1 } else { 0.5 },
                max: 1.5,
            },
            endpoint_error: None,
            endpoint_error_by_region: Vec::new(),
        };
        Evaluation {
            forward: direction.clone(),
            backward: Some(direction),
            inverse_consistency: Some(Distances {
                mean_mm: inverse_mean_mm,
                p95_mm: inverse_mean_mm,
                max_mm: 2.0 * inverse_mean_mm,
            }),
        }
    }

    fn verdict(result: &Evaluation, reference: &Evaluation, max_deformation_mm: f64) -> Verdict {
        judge(
            &VerdictInputs {
                result,
                reference: Some(("rigid alignment alone", reference)),
                reference_is_aligned: true,
                max_deformation_mm,
                body_extent_mm: 200.0,
            },
            &VerdictLimits::default(),
        )
    }

    #[test]
    fn a_clean_improvement_is_ok() {
        let rigid = evaluation(1.20, 0.010, 0.97, 0, 0.0);
        let good = evaluation(1.25, 0.006, 0.98, 0, 0.05);
        let v = verdict(&good, &rigid, 8.0);
        assert_eq!(v.status, Status::Ok, "{:?}", v.reasons);
    }

    #[test]
    fn each_check_names_its_reason() {
        let rigid = evaluation(1.20, 0.010, 0.97, 0, 0.0);
        let other_patient = evaluation(1.10, 0.030, 0.62, 0, 0.0);
        let v = verdict(&evaluation(1.15, 0.010, 0.93, 0, 0.2), &other_patient, 30.0);
        assert_eq!((v.status, v.reasons[0].check.as_str()), (Status::Failed, "same_patient"), "{:?}", v.reasons);
        assert!(v.reasons[0].message.contains("only 0.62"), "{:?}", v.reasons[0]);
        let cases = [
            (evaluation(1.10, 0.006, 0.98, 0, 0.05), 8.0, Status::Failed, "similarity", "NMI 1.2000 → 1.1000"),
            (evaluation(1.25, 0.020, 0.98, 0, 0.05), 8.0, Status::Failed, "similarity", "+100.0 %"),
            (evaluation(1.25, 0.006, 0.60, 0, 0.05), 8.0, Status::Failed, "overlap", "Dice 0.600"),
            (evaluation(1.25, 0.006, 0.98, 5, 0.05), 8.0, Status::Warning, "folding", "5 voxels fold"),
            (evaluation(1.25, 0.006, 0.98, 5000, 0.05), 8.0, Status::Failed, "folding", "5000 voxels fold"),
            (evaluation(1.25, 0.006, 0.98, 0, 2.5), 8.0, Status::Failed, "inverse_consistency", "mean 2.50 mm"),
            (evaluation(1.25, 0.006, 0.98, 0, 0.05), 20.0, Status::Warning, "displacement", "up to 20.0 mm"),
            (
                evaluation(1.25, 0.006, 0.98, 0, 0.05),
                170.0,
                Status::Failed,
                "displacement",
                "85 % of the body's 200 mm",
            ),
        ];
        for (result, deformation, status, check, text) in cases {
            let v = verdict(&result, &rigid, deformation);
            assert_eq!(v.status, status, "{check}: {:?}", v.reasons);
            let reason = &v.reasons[0];
            assert_eq!(reason.check, check);
            assert!(reason.message.contains(text), "{:?} lacks {text:?}", reason.message);
        }
    }

    /// An affine field has no non-affine part; a bump added to it is found at its full height.
    #[test]
    fn affine_part_is_taken_out() {
        use crate::volume::Geometry;
        use crate::volume::affine::AffineTransform;
        let grid = Geometry::axis_aligned([12, 10, 8], [2.0, 2.5, 3.0], [-10.0, 5.0, 40.0]).unwrap();
        let rigid = AffineTransform::from_euler([0.3, -0.2, 0.5], [40.0, -120.0, 7.0], [3.0, 4.0, 5.0]);
        let field = rigid.to_displacement_field(&grid);
        let mask = vec![true; grid.voxel_count()];
        assert!(non_affine_max_mm(&field, &mask) < 1e-3, "{}", non_affine_max_mm(&field, &mask));
        let bump_at = grid.index_to_world([6.0, 5.0, 4.0]);
        let bumped = DisplacementField::from_fn(grid.clone(), |x| {
            let bump = if norm(sub(x, bump_at)) < 1e-6 { 4.0 } else { 0.0 };
            add(sub(rigid.apply(x), x), [bump, 0.0, 0.0])
        });
        let found = non_affine_max_mm(&bumped, &mask);
        assert!((found - 4.0).abs() < 0.01, "{found}");
    }

    #[test]
    fn extent_of_a_mask() {
        let shape = [10, 8, 6];
        let mut mask = vec![false; 480];
        mask[2 + 10 * (1 + 8 * 3)] = true;
        mask[7 + 10 * (6 + 8 * 3)] = true;
        assert_eq!(mask_extent_mm(&mask, shape, [1.0, 2.0, 3.0]), 12.0);
        assert_eq!(mask_extent_mm(&vec![false; 480], shape, [1.0; 3]), 0.0);
    }
}

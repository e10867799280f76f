//! Registration quality (SPEC §7, thesis §4.1): the same numbers for any displacement field —
//! ours, Greedy's, NiftyReg's — so that methods can be compared.
//!
//! Images are compared on density (kg/dm³) over their overlap: the voxels of the target grid
//! whose warped sample fell inside the source image. Tissue classes and the body mask are
//! density intervals [low, high).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::diffeo::VectorField;
use crate::diffeo::jacobian::determinant;
use crate::error::{Error, Result};
use crate::volume::geometry::{add, norm, sub};
use crate::volume::resample::{Interpolation, sample};
use crate::volume::{DisplacementField, Volume};

pub mod batch;
pub mod evaluation;
pub mod regions;
pub mod verdict;

/// Bins per image in the joint histogram of NMI.
pub const NMI_BINS: usize = 64;

/// A tissue class as a density interval [low, high), kg/dm³.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tissue {
    pub name: &'static str,
    pub low: f32,
    pub high: f32,
}

/// SPEC §7's classes; "body" is everything denser than 0.5 kg/dm³ (above −500 HU).
pub const TISSUES: [Tissue; 4] = [
    Tissue { name: "fat", low: 0.8, high: 0.97 },
    Tissue { name: "water", low: 0.97, high: 1.15 },
    Tissue { name: "bone", low: 1.15, high: f32::INFINITY },
    Tissue { name: "body", low: 0.5, high: f32::INFINITY },
];

/// The density above which a voxel belongs to the body (where endpoint error is measured).
pub const BODY_DENSITY: f32 = 0.5;

/// The voxels of a CT (HU) that belong to the body: density ≥ `BODY_DENSITY` after calibration.
pub fn body_mask(hu: &crate::volume::Volume, calibration: &crate::volume::Calibration) -> Vec<bool> {
    hu.voxels.iter().map(|&v| calibration.density(v as f64) as f32 >= BODY_DENSITY).collect()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dice {
    pub tissue: String,
    pub dice: f64,
}

/// Image agreement of a warped image with its target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageAgreement {
    pub nmi: f64,
    pub mse: f64,
    pub mae: f64,
    pub dice: Vec<Dice>,
    /// Share of the target's voxels where the warped image had a sample.
    pub overlap: f64,
}

/// Jacobian statistics of a displacement field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JacobianStats {
    pub folding_share: f64,
    pub folding_voxels: usize,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Distances {
    pub mean_mm: f64,
    pub p95_mm: f64,
    pub max_mm: f64,
}

/// Values of `image` sampled (trilinearly) at x + u(x) for each voxel x of the field's grid,
/// with a mask of the samples that fell within the image's voxels.
pub fn warp_with_mask(image: &Volume, field: &DisplacementField) -> (Vec<f32>, Vec<bool>) {
    let grid = &field.geometry;
    let to_index = image.geometry.world_to_index_map();
    let shape = image.geometry.shape;
    (0..grid.voxel_count())
        .into_par_iter()
        .map(|n| {
            let p = to_index.apply(add(grid.world_of(n), field.at(n)));
            let inside = (0..3).all(|d| p[d] >= -0.5 && p[d] <= shape[d] as f64 - 0.5);
            if inside {
                // Within half a voxel of the border the border value extends outwards.
                let q: [f64; 3] = std::array::from_fn(|d| p[d].clamp(0.0, (shape[d] - 1) as f64));
                (sample(image, q, Interpolation::Linear, 0.0), true)
            } else {
                (0.0, false)
            }
        })
        .unzip()
}

/// Voxels per task of the metrics that loop over whole images.
const CHUNK: usize = 1 << 16;

/// NMI (Studholme: (H(A) + H(B)) / H(A, B)) over the voxels where `mask` holds. Each image's
/// range over those voxels is cut into `NMI_BINS` equal bins (its maximum falls in the last).
pub fn nmi(a: &[f32], b: &[f32], mask: &[bool]) -> f64 {
    let range = |x: &[f32]| {
        x.par_chunks(CHUNK)
            .zip(mask.par_chunks(CHUNK))
            .map(|(x, mask)| {
                x.iter()
                    .zip(mask)
                    .filter(|(_, m)| **m)
                    .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), (v, _)| (lo.min(*v), hi.max(*v)))
            })
            .reduce(|| (f32::INFINITY, f32::NEG_INFINITY), |p, q| (p.0.min(q.0), p.1.max(q.1)))
    };
    let (ra, rb) = (range(a), range(b));
    if !ra.0.is_finite() {
        return f64::NAN;
    }
    let bin = |v: f32, (lo, hi): (f32, f32)| {
        if hi > lo { (((v - lo) / (hi - lo) * NMI_BINS as f32) as usize).min(NMI_BINS - 1) } else { 0 }
    };
    // A histogram per chunk of voxels, summed: the same counts on all cores.
    let joint = a
        .par_chunks(CHUNK)
        .zip(b.par_chunks(CHUNK))
        .zip(mask.par_chunks(CHUNK))
        .map(|((a, b), mask)| {
            let mut joint = vec![0u64; NMI_BINS * NMI_BINS];
            for ((x, y), m) in a.iter().zip(b).zip(mask) {
                if *m {
                    joint[bin(*x, ra) * NMI_BINS + bin(*y, rb)] += 1;
                }
            }
            joint
        })
        .reduce(
            || vec![0u64; NMI_BINS * NMI_BINS],
            |mut p, q| {
                p.iter_mut().zip(q).for_each(|(p, q)| *p += q);
                p
            },
        );
    let total: u64 = joint.iter().sum();
    let entropy = |counts: &mut dyn Iterator<Item = u64>| -> f64 {
        counts
            .filter(|&c| c > 0)
            .map(|c| {
                let p = c as f64 / total as f64;
                -p * p.ln()
            })
            .sum()
    };
    let h_ab = entropy(&mut joint.iter().copied());
    let h_a = entropy(&mut (0..NMI_BINS).map(|i| joint[i * NMI_BINS..(i + 1) * NMI_BINS].iter().sum()));
    let h_b = entropy(&mut (0..NMI_BINS).map(|j| (0..NMI_BINS).map(|i| joint[i * NMI_BINS + j]).sum()));
    if h_ab > 0.0 { (h_a + h_b) / h_ab } else { 2.0 }
}

/// Dice of the voxels of `tissue` in `a` and in `b`, over the voxels where `mask` holds (1 when
/// neither has any).
pub fn dice(a: &[f32], b: &[f32], mask: &[bool], tissue: &Tissue) -> f64 {
    let within = |v: f32| v >= tissue.low && v < tissue.high;
    let (both, count_a, count_b) = a
        .par_chunks(CHUNK)
        .zip(b.par_chunks(CHUNK))
        .zip(mask.par_chunks(CHUNK))
        .map(|((a, b), mask)| {
            let (mut both, mut count_a, mut count_b) = (0u64, 0u64, 0u64);
            for ((x, y), m) in a.iter().zip(b).zip(mask) {
                if *m {
                    let (in_a, in_b) = (within(*x), within(*y));
                    both += (in_a && in_b) as u64;
                    count_a += in_a as u64;
                    count_b += in_b as u64;
                }
            }
            (both, count_a, count_b)
        })
        .reduce(|| (0, 0, 0), |p, q| (p.0 + q.0, p.1 + q.1, p.2 + q.2));
    if count_a + count_b == 0 { 1.0 } else { 2.0 * both as f64 / (count_a + count_b) as f64 }
}

/// All image metrics of `warped` (on the target's grid, valid where `mask` holds) against
/// `target`, both in density. Without any overlap NMI, MSE and MAE are undefined (NaN, null in
/// JSON), every Dice is 0 and the overlap share 0: the verdict then fails the field.
pub fn image_agreement(warped: &[f32], target: &[f32], mask: &[bool]) -> ImageAgreement {
    let count = mask.iter().filter(|&&m| m).count();
    if count == 0 {
        return ImageAgreement {
            nmi: f64::NAN,
            mse: f64::NAN,
            mae: f64::NAN,
            dice: TISSUES.iter().map(|t| Dice { tissue: t.name.into(), dice: 0.0 }).collect(),
            overlap: 0.0,
        };
    }
    // Summed in fixed chunks: the same report on every run.
    let (sq, abs) = crate::parallel::fold_chunks(
        warped.len(),
        |r| {
            let (warped, target, mask) = (&warped[r.clone()], &target[r.clone()], &mask[r]);
            warped.iter().zip(target).zip(mask).filter(|(_, m)| **m).fold((0.0, 0.0), |(sq, abs), ((w, t), _)| {
                let d = (w - t) as f64;
                (sq + d * d, abs + d.abs())
            })
        },
        (0.0, 0.0),
        |a, b| (a.0 + b.0, a.1 + b.1),
    );
    let n = count.max(1) as f64;
    ImageAgreement {
        nmi: nmi(warped, target, mask),
        mse: sq / n,
        mae: abs / n,
        dice: TISSUES.iter().map(|t| Dice { tissue: t.name.into(), dice: dice(warped, target, mask, t) }).collect(),
        overlap: count as f64 / mask.len().max(1) as f64,
    }
}

/// det ∂φ/∂x of φ(x) = x + u(x) (central differences) over the field's whole grid.
pub fn jacobian_stats(field: &DisplacementField) -> JacobianStats {
    let det = determinant(&VectorField::from_displacement_mm(field));
    let folding_voxels = det.iter().filter(|&&d| d <= 0.0).count();
    let n = det.len().max(1) as f64;
    JacobianStats {
        folding_share: folding_voxels as f64 / n,
        folding_voxels,
        mean: det.iter().map(|&d| d as f64).sum::<f64>() / n,
        min: det.iter().copied().fold(f32::INFINITY, f32::min) as f64,
        max: det.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64,
    }
}

/// Mean, 95th percentile and largest of `values` (all zero when empty).
pub fn distances(mut values: Vec<f64>) -> Distances {
    if values.is_empty() {
        return Distances { mean_mm: 0.0, p95_mm: 0.0, max_mm: 0.0 };
    }
    let mean_mm = values.iter().sum::<f64>() / values.len() as f64;
    let max_mm = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    // The value of rank ⌈0.95 n⌉ in ascending order, found without sorting all of them.
    let rank = ((0.95 * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1;
    let (_, p95_mm, _) = values.select_nth_unstable_by(rank, f64::total_cmp);
    Distances { mean_mm, p95_mm: *p95_mm, max_mm }
}

/// Endpoint error of `field` against `truth` (same grid) over the voxels where `mask` holds.
pub fn endpoint_error(field: &DisplacementField, truth: &DisplacementField, mask: &[bool]) -> Result<Distances> {
    if !field.geometry.same_grid(&truth.geometry, 1e-3) {
        return Err(Error::Invalid("the ground-truth field is not on the grid of the field it checks".into()));
    }
    Ok(distances(
        (0..mask.len()).into_par_iter().filter(|&n| mask[n]).map(|n| norm(sub(field.at(n), truth.at(n)))).collect(),
    ))
}

/// ‖φ⁻¹(φ(x)) − x‖ in mm for the voxels x of `forward`'s grid whose image φ(x) lands within
/// `inverse`'s grid (the inverse field is sampled trilinearly, clamped at its border).
pub fn inverse_consistency(forward: &DisplacementField, inverse: &DisplacementField) -> Distances {
    let grid = &forward.geometry;
    let inverse_grid = &inverse.geometry;
    let to_index = inverse_grid.world_to_index_map();
    let shape = inverse_grid.shape;
    let components = inverse.components_mm.each_ref().map(Vec::as_slice);
    let values = (0..grid.voxel_count())
        .into_par_iter()
        .filter_map(|n| {
            let x = grid.world_of(n);
            let y = add(x, forward.at(n));
            let p = to_index.apply(y);
            if !(0..3).all(|d| p[d] >= -0.5 && p[d] <= shape[d] as f64 - 0.5) {
                return None;
            }
            let q = p.map(|v| v as f32);
            let back = crate::diffeo::warp::sample3(components, shape, q, crate::diffeo::warp::Outside::Clamp)
                .unwrap_or([0.0; 3])
                .map(f64::from);
            Some(norm(sub(add(y, back), x)))
        })
        .collect();
    distances(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Geometry;

    fn grid(shape: [usize; 3]) -> Geometry {
        Geometry::axis_aligned(shape, [1.5, 2.0, 2.5], [-10.0, 4.0, 7.0]).unwrap()
    }

    #[test]
    fn nmi_of_an_image_with_itself_is_two_and_of_independent_images_near_one() {
        let n = 40_000;
        let a: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32).collect();
        let b: Vec<f32> = (0..n).map(|i| ((i * 104_729 + 13) % 997) as f32).collect();
        let mask = vec![true; n];
        assert!((nmi(&a, &a, &mask) - 2.0).abs() < 1e-9);
        let independent = nmi(&a, &b, &mask);
        assert!((1.0..1.1).contains(&independent), "{independent}");
    }

    #[test]
    fn a_field_that_folds_two_planes_is_counted_exactly() {
        // u_x is 0 for i ≤ 10 and −3 voxels for i ≥ 11: central differences give
        // ∂u_x/∂i = −1.5 at i = 10 and i = 11 (det −0.5, folding) and 0 elsewhere (det 1).
        let g = grid([24, 9, 7]);
        let field = DisplacementField::from_fn(g.clone(), |p| {
            let i = ((p[0] + 10.0) / 1.5).round();
            if i >= 11.0 { [-3.0 * 1.5, 0.0, 0.0] } else { [0.0; 3] }
        });
        let stats = jacobian_stats(&field);
        assert_eq!(stats.folding_voxels, 2 * 9 * 7);
        assert!((stats.folding_share - 2.0 / 24.0).abs() < 1e-12);
        assert!((stats.min + 0.5).abs() < 1e-6 && (stats.max - 1.0).abs() < 1e-6, "{stats:?}");
        assert!((stats.mean - (22.0 - 1.0) / 24.0).abs() < 1e-6, "{stats:?}");
    }

    #[test]
    fn endpoint_error_of_a_translation_is_its_length() {
        let g = grid([10, 9, 8]);
        let truth = DisplacementField::from_fn(g.clone(), |_| [3.0, -4.0, 0.0]);
        let zero = DisplacementField::zero(g.clone());
        let mask = vec![true; g.voxel_count()];
        let e = endpoint_error(&zero, &truth, &mask).unwrap();
        assert!((e.mean_mm - 5.0).abs() < 1e-6 && (e.max_mm - 5.0).abs() < 1e-6 && (e.p95_mm - 5.0).abs() < 1e-6);
    }

    #[test]
    fn a_translation_and_its_negative_are_inverse_consistent() {
        let g = grid([20, 18, 16]);
        let forward = DisplacementField::from_fn(g.clone(), |_| [2.0, 1.0, -3.0]);
        let inverse = DisplacementField::from_fn(g.clone(), |_| [-2.0, -1.0, 3.0]);
        let d = inverse_consistency(&forward, &inverse);
        assert!(d.max_mm < 1e-5, "{d:?}");
        let wrong = DisplacementField::from_fn(g, |_| [-1.0, -1.0, 3.0]);
        assert!((inverse_consistency(&forward, &wrong).mean_mm - 1.0).abs() < 1e-5);
    }

    #[test]
    fn dice_counts_overlapping_tissue() {
        let a = [0.9, 0.9, 1.0, 1.3, 0.0];
        let b = [0.9, 1.0, 1.0, 1.3, 0.9];
        let mask = [true; 5];
        assert!((dice(&a, &b, &mask, &TISSUES[0]) - 2.0 / 4.0).abs() < 1e-12);
        assert!((dice(&a, &b, &mask, &TISSUES[1]) - 2.0 / 3.0).abs() < 1e-12);
        assert!((dice(&a, &b, &mask, &TISSUES[2]) - 1.0).abs() < 1e-12);
    }

    /// The same images give the same report on every run, to the bit (a plain parallel sum
    /// adds in the order threads happen to steal work).
    #[test]
    fn image_agreement_repeats_to_the_bit_and_matches_a_plain_loop() {
        let n = 1_000_003;
        let warped: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.013).sin() + 1.0).collect();
        let target: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.011).cos() + 1.0).collect();
        let mask: Vec<bool> = (0..n).map(|i| i % 7 != 0).collect();
        let first = image_agreement(&warped, &target, &mask);
        let counted = mask.iter().filter(|&&m| m).count() as f64;
        let plain: f64 =
            (0..n).filter(|&i| mask[i]).map(|i| ((warped[i] - target[i]) as f64).powi(2)).sum::<f64>() / counted;
        assert!((first.mse - plain).abs() < 1e-12 * plain, "{} against {plain}", first.mse);
        for _ in 0..10 {
            let again = image_agreement(&warped, &target, &mask);
            assert_eq!((again.mse.to_bits(), again.mae.to_bits()), (first.mse.to_bits(), first.mae.to_bits()));
        }
    }
}

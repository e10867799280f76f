//! Grey-value matching: a pseudo-CT gets its tissues' densities somewhat wrong (bone
//! under-estimated, soft tissue offset), each tissue differently, so no single linear rescaling
//! of one image predicts the other. Compared voxel by voxel, the optimiser then lowers the
//! disagreement by deforming (thickening the fainter bone, shifting edges into the brighter
//! side) as well as by aligning. Before each level after the first, with the moving image
//! warped by the field so far, this fits a monotone piecewise-linear map from the fixed image's
//! values to what the moving image shows at the same places (the mean of the moving value over
//! each narrow band of fixed values, made non-decreasing), and the optimiser compares the
//! fixed image through that map. The fixed image (a CT) is the one mapped because it is the
//! less noisy: the mean of the noisy image over bands of the clean one is not biased by the
//! noise, while the mean the other way round flattens the map.

use rayon::prelude::*;
use serde::Serialize;

/// Width of the bands of fixed values, kg/dm³ (soft tissues differ by 0.01–0.05).
const BAND: f32 = 0.005;
/// Bands with fewer samples than this are left out of the fit.
const MIN_SAMPLES: usize = 20;
/// About this many voxels are sampled (a regular sub-grid of the whole volume).
const SAMPLES: usize = 1 << 21;

/// A non-decreasing piecewise-linear map from fixed values to the moving image's grey scale.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IntensityMatch {
    /// (fixed value, mapped value), increasing in both; beyond the first and last the map
    /// continues with slope 1.
    pub knots: Vec<[f32; 2]>,
    /// Mean squared difference (density²) of the sampled pairs before and after the map.
    pub mse_before: f64,
    pub mse_after: f64,
}

impl IntensityMatch {
    /// The mapped value of `x`.
    pub fn map(&self, x: f32) -> f32 {
        let knots = &self.knots;
        let (first, last) = (knots[0], knots[knots.len() - 1]);
        if x <= first[0] {
            return first[1] + (x - first[0]);
        }
        if x >= last[0] {
            return last[1] + (x - last[0]);
        }
        let upper = knots.partition_point(|k| k[0] <= x);
        let (a, b) = (knots[upper - 1], knots[upper]);
        a[1] + (b[1] - a[1]) * (x - a[0]) / (b[0] - a[0])
    }

    /// Maps `image` in place, voxel by voxel.
    pub fn apply(&self, image: &mut [f32]) {
        image.par_iter_mut().filter(|x| x.is_finite()).for_each(|x| *x = self.map(*x));
    }
}

/// Fits the map from `fixed` (on a grid of `shape`) to the moving image, given by its value at
/// each voxel of the fixed grid (NaN: no value there), on a regular sub-grid of about
/// `SAMPLES` voxels. None when too few voxels overlap to fit one, or when the map would not
/// bring the images closer.
pub fn estimate_with(
    fixed: &[f32],
    shape: [usize; 3],
    moving_at: impl Fn([usize; 3]) -> f32 + Sync,
) -> Option<IntensityMatch> {
    let total: usize = shape.iter().product();
    let stride = ((total as f64 / SAMPLES as f64).cbrt().ceil() as usize).max(1);
    let steps = shape.map(|n| n.div_ceil(stride));
    let pairs: Vec<(f32, f32)> = (0..steps[2])
        .into_par_iter()
        .flat_map_iter(|k| {
            let at = &moving_at;
            (0..steps[1]).flat_map(move |j| {
                (0..steps[0]).filter_map(move |i| {
                    let index = [i * stride, j * stride, k * stride];
                    let f = fixed[index[0] + shape[0] * (index[1] + shape[1] * index[2])];
                    let m = at(index);
                    (f.is_finite() && m.is_finite()).then_some((f, m))
                })
            })
        })
        .collect();
    fit(&pairs)
}

/// The map from the first of each pair to the second: band means, then the weighted
/// pool-adjacent-violators algorithm for a non-decreasing fit.
pub fn fit(pairs: &[(f32, f32)]) -> Option<IntensityMatch> {
    if pairs.len() < 10 * MIN_SAMPLES {
        return None;
    }
    let low = pairs.iter().map(|p| p.0).fold(f32::INFINITY, f32::min);
    let high = pairs.iter().map(|p| p.0).fold(f32::NEG_INFINITY, f32::max);
    let bands = (((high - low) / BAND) as usize + 1).min(1 << 16);
    // Per band: count, sum of fixed values, sum of moving values.
    let mut sums = vec![(0usize, 0.0f64, 0.0f64); bands];
    for &(f, m) in pairs {
        let band = (((f - low) / BAND) as usize).min(bands - 1);
        let s = &mut sums[band];
        *s = (s.0 + 1, s.1 + f as f64, s.2 + m as f64);
    }
    // Blocks of pooled bands: (weight, sum of fixed, sum of moving); each block's mean moving
    // value must exceed the one before it.
    let mut blocks: Vec<(usize, f64, f64)> = Vec::new();
    for &(count, sum_f, sum_m) in sums.iter().filter(|s| s.0 >= MIN_SAMPLES) {
        let mut block = (count, sum_f, sum_m);
        while let Some(&last) = blocks.last() {
            if last.2 / last.0 as f64 >= block.2 / block.0 as f64 {
                blocks.pop();
                block = (block.0 + last.0, block.1 + last.1, block.2 + last.2);
            } else {
                break;
            }
        }
        blocks.push(block);
    }
    if blocks.len() < 2 {
        return None;
    }
    let knots: Vec<[f32; 2]> = blocks.iter().map(|&(n, f, m)| [(f / n as f64) as f32, (m / n as f64) as f32]).collect();
    let mut found = IntensityMatch { knots, mse_before: 0.0, mse_after: 0.0 };
    let squared = |a: f32, b: f32| ((a - b) as f64).powi(2);
    found.mse_before = pairs.iter().map(|&(f, m)| squared(f, m)).sum::<f64>() / pairs.len() as f64;
    found.mse_after = pairs.iter().map(|&(f, m)| squared(found.map(f), m)).sum::<f64>() / pairs.len() as f64;
    (found.mse_after < found.mse_before).then_some(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phantom::head::synthetic_head;
    use crate::phantom::random::SeededRng;
    use crate::volume::Calibration;

    /// A pseudo-CT-like grey scale: bone compressed above a threshold, soft tissue offset.
    fn pseudo(x: f32) -> f32 {
        if x > 1.12 {
            1.12 + 0.75 * (x - 1.12)
        } else if x > 0.85 {
            x + 0.01
        } else {
            x
        }
    }

    /// A head whose moving image is a known monotone grey-value change of it, plus noise: the
    /// fitted map recovers the change (to within the band width where the head has tissue) and
    /// the mapped fixed image matches the moving one to the noise.
    #[test]
    fn recovers_a_known_change_of_grey_values_under_noise() {
        let head = Calibration::default().apply(&synthetic_head([64, 72, 64], [3.0, 3.0, 3.0]));
        let shape = head.geometry.shape;
        let mut rng = SeededRng::new(3);
        let noise = 0.01f32;
        let moving: Vec<f32> = head.voxels.iter().map(|&x| pseudo(x) + noise * rng.normal() as f32).collect();
        let found = estimate_with(&head.voxels, shape, |[i, j, k]| moving[i + shape[0] * (j + shape[1] * k)]).unwrap();
        assert!(found.knots.windows(2).all(|w| w[1][0] > w[0][0] && w[1][1] > w[0][1]), "{:?}", found.knots);
        for x in [0.0f32, 0.9, 0.95, 1.0, 1.04, 1.3, 1.6] {
            let error = (found.map(x) - pseudo(x)).abs();
            assert!(error < 0.006, "at {x}: mapped {} for {} ({:?})", found.map(x), pseudo(x), found.knots);
        }
        let mut mapped = head.voxels.clone();
        found.apply(&mut mapped);
        let mse = mapped.iter().zip(&moving).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>() / mapped.len() as f64;
        assert!(mse < 1.3 * (noise as f64).powi(2), "mse {mse} after the map, noise² {}", noise * noise);
        assert!(found.mse_after < 0.5 * found.mse_before, "{} → {}", found.mse_before, found.mse_after);
    }

    /// Identical images need no map; too few samples give none.
    #[test]
    fn an_identical_pair_maps_to_itself_and_too_few_samples_fit_nothing() {
        let pairs: Vec<(f32, f32)> = (0..10_000).map(|n| (n as f32 * 1e-4, n as f32 * 1e-4)).collect();
        assert!(fit(&pairs).is_none(), "a map cannot bring identical values closer");
        assert!(fit(&pairs[..50]).is_none());
    }
}

//! Resolution matching: a pseudo-CT is usually blurrier than the CT it is compared with (the
//! MRI's voxels, the synthesis network's smoothing). Compared voxel by voxel, the sharp image's
//! edges then disagree with the blurred ones wherever they are, and the optimiser can lower that
//! disagreement by deforming (moving a sharp edge half a voxel changes how trilinear sampling
//! blurs it) rather than by aligning. Blurring the sharper image to the other's resolution first
//! removes that reward. The blur is estimated on the rigidly aligned pair: the Gaussian σ that,
//! applied to one image, lets a linear function of it best predict the other (so a change of
//! contrast, such as under-estimated bone, is not mistaken for blur), among the blurs that lower
//! their plain mean squared difference.

use std::borrow::Cow;

use serde::Serialize;

use crate::matching::intensity;
use crate::volume::filter::gaussian_blur;

/// Candidate blurs, voxels of the fixed grid.
const CANDIDATE_SIGMAS: [f32; 11] = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0];
/// Side of the central block the estimate is made on, voxels (the head fills the middle).
const BLOCK: usize = 96;
/// Voxels at the block's faces left out of the comparison (the blur is truncated there).
const FACE: usize = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Image {
    Fixed,
    Moving,
}

/// Which image to blur, and by how much, before comparing the two.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ResolutionMatch {
    pub blurred: Image,
    /// Gaussian standard deviation, voxels of the fixed grid (0: the two match as they are).
    pub sigma_voxels: f32,
    /// Mean squared difference (density²) over the compared block before and after.
    pub mse_before: f64,
    pub mse_after: f64,
}

impl ResolutionMatch {
    /// The pair with the match applied: the sharper image blurred (a new volume), the other as
    /// it is.
    pub fn apply<'a>(&self, fixed: &'a [f32], moving: &'a [f32], shape: [usize; 3]) -> MatchedPair<'a> {
        let blur = |source: &[f32]| {
            let mut blurred = source.to_vec();
            gaussian_blur(&mut blurred, shape, self.sigma_voxels);
            Cow::Owned(blurred)
        };
        match self.blurred {
            Image::Fixed => MatchedPair { fixed: blur(fixed), moving: Cow::Borrowed(moving) },
            Image::Moving => MatchedPair { fixed: Cow::Borrowed(fixed), moving: blur(moving) },
        }
    }
}

/// Two images as a level compares them (after resolution and grey-value matching); only a
/// changed image is a copy.
pub struct MatchedPair<'a> {
    fixed: Cow<'a, [f32]>,
    moving: Cow<'a, [f32]>,
}

impl<'a> MatchedPair<'a> {
    /// The pair as it is.
    pub fn unchanged(fixed: &'a [f32], moving: &'a [f32]) -> Self {
        MatchedPair { fixed: Cow::Borrowed(fixed), moving: Cow::Borrowed(moving) }
    }

    pub fn fixed(&self) -> &[f32] {
        &self.fixed
    }

    pub fn moving(&self) -> &[f32] {
        &self.moving
    }

    /// The fixed image to change (its grey values to map, say): copied first if it was not.
    pub fn fixed_mut(&mut self) -> &mut [f32] {
        self.fixed.to_mut()
    }
}

/// The central block of at most `BLOCK`³ voxels of a grid of `shape`: its start and size.
fn central_block(shape: [usize; 3]) -> ([usize; 3], [usize; 3]) {
    let size: [usize; 3] = shape.map(|n| n.min(BLOCK));
    (std::array::from_fn(|d| (shape[d] - size[d]) / 2), size)
}

/// The values `at(index)` over the block at `start` of `size`, x fastest.
fn block_values(start: [usize; 3], size: [usize; 3], at: impl Fn([usize; 3]) -> f32 + Sync) -> Vec<f32> {
    use rayon::prelude::*;
    let plane = size[0] * size[1];
    let mut values = vec![0.0f32; plane * size[2]];
    values.par_chunks_mut(plane).enumerate().for_each(|(k, slab)| {
        for j in 0..size[1] {
            for i in 0..size[0] {
                slab[i + size[0] * j] = at([start[0] + i, start[1] + j, start[2] + k]);
            }
        }
    });
    values
}

/// How the estimate allows for the two images' grey values differing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GreyValues {
    /// By a linear function of the blurred image.
    Linear,
    /// By a monotone map of the fixed image onto the moving image's scale
    /// (`intensity::fit`), as the optimiser then compares them.
    Monotone,
}

/// Over the voxels away from the faces where either image is above `floor` (tissue rather than
/// air on both): the mean squared difference of fixed image `a` and moving image `b`, and what
/// remains of it after the best fit of `b` from `a` (linear: 1 − ρ² of the variance of `b`; or
/// monotone). The second ignores a change of contrast (a pseudo-CT's under-estimated bone),
/// which blurring would otherwise imitate.
fn inner_differences(a: &[f32], b: &[f32], shape: [usize; 3], floor: f32, grey: GreyValues) -> (f64, f64) {
    let face: [usize; 3] = shape.map(|n| if n > 4 * FACE { FACE } else { 0 });
    let mut pairs = Vec::with_capacity(a.len());
    for k in face[2]..shape[2] - face[2] {
        for j in face[1]..shape[1] - face[1] {
            for i in face[0]..shape[0] - face[0] {
                let n = i + shape[0] * (j + shape[1] * k);
                let (x, y) = (a[n], b[n]);
                if (x > floor || y > floor) && x.is_finite() && y.is_finite() {
                    pairs.push((x, y));
                }
            }
        }
    }
    if pairs.len() < 2 {
        return (f64::INFINITY, f64::INFINITY);
    }
    let count = pairs.len() as f64;
    let (mut sa, mut sb, mut saa, mut sbb, mut sab) = (0.0f64, 0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for &(x, y) in &pairs {
        let (x, y) = (x as f64, y as f64);
        (sa, sb, saa, sbb, sab) = (sa + x, sb + y, saa + x * x, sbb + y * y, sab + x * y);
    }
    let mse = (saa - 2.0 * sab + sbb) / count;
    let unexplained = match grey {
        GreyValues::Linear => {
            let (var_a, var_b, cov) = (
                saa / count - (sa / count).powi(2),
                sbb / count - (sb / count).powi(2),
                sab / count - sa * sb / count / count,
            );
            if var_a > 0.0 { var_b - cov * cov / var_a } else { var_b }
        }
        GreyValues::Monotone => intensity::fit(&pairs).map_or(mse, |map| map.mse_after),
    };
    (mse, unexplained.max(0.0))
}

/// Estimates which of two aligned density images on the fixed grid of `shape` is sharper and
/// the Gaussian blur that brings it to the other's resolution. The moving image is given by its
/// value at each voxel of the fixed grid (NaN: no value there), which is asked only on the block
/// the estimate uses: no whole warped volume is needed.
pub fn estimate_with(
    fixed: &[f32],
    shape: [usize; 3],
    grey: GreyValues,
    moving_at: impl Fn([usize; 3]) -> f32 + Sync,
) -> ResolutionMatch {
    let (start, size) = central_block(shape);
    let fixed_block = block_values(start, size, |[i, j, k]| fixed[i + shape[0] * (j + shape[1] * k)]);
    let moving_block = block_values(start, size, moving_at);
    // Density 0.5 kg/dm³: the body outline used by the metrics.
    let floor = 0.5;
    let (mse_before, unexplained_before) = inner_differences(&fixed_block, &moving_block, size, floor, grey);
    let mut best = ResolutionMatch { blurred: Image::Fixed, sigma_voxels: 0.0, mse_before, mse_after: mse_before };
    let mut lowest = unexplained_before;
    for image in [Image::Fixed, Image::Moving] {
        let (source, other) = match image {
            Image::Fixed => (&fixed_block, &moving_block),
            Image::Moving => (&moving_block, &fixed_block),
        };
        for &sigma in &CANDIDATE_SIGMAS[1..] {
            let mut blurred = source.clone();
            gaussian_blur(&mut blurred, size, sigma);
            // Always the fixed side first, so that "unexplained" is of the moving image.
            let (mse, unexplained) = match image {
                Image::Fixed => inner_differences(&blurred, other, size, floor, grey),
                Image::Moving => inner_differences(other, &blurred, size, floor, grey),
            };
            // A blur must also bring the images closer as they are: a fit alone would accept
            // blurring any smooth image.
            if unexplained < lowest && mse < mse_before {
                lowest = unexplained;
                best = ResolutionMatch { blurred: image, sigma_voxels: sigma, mse_before, mse_after: mse };
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn estimate(fixed: &[f32], moving: &[f32], shape: [usize; 3], grey: GreyValues) -> ResolutionMatch {
        estimate_with(fixed, shape, grey, |[i, j, k]| moving[i + shape[0] * (j + shape[1] * k)])
    }
    use crate::phantom::head::synthetic_head;
    use crate::volume::Calibration;

    /// A head in density, the same blurred by σ 1.5 voxels, and their grid.
    fn head_and_blurred() -> (Vec<f32>, Vec<f32>, [usize; 3]) {
        let head = Calibration::default().apply(&synthetic_head([72, 80, 72], [2.5, 2.5, 2.5]));
        let shape = head.geometry.shape;
        let mut blurred = head.voxels.clone();
        gaussian_blur(&mut blurred, shape, 1.5);
        (head.voxels, blurred, shape)
    }

    /// A head blurred by a known σ: the estimate finds that σ and which image was blurred, and
    /// an unblurred pair needs none, whichever way grey values are allowed for.
    #[test]
    fn finds_the_blur_that_made_one_image_from_the_other() {
        let (head, blurred, shape) = head_and_blurred();
        for grey in [GreyValues::Linear, GreyValues::Monotone] {
            let found = estimate(&head, &blurred, shape, grey);
            assert_eq!((found.blurred, found.sigma_voxels), (Image::Fixed, 1.5), "{grey:?}: {found:?}");
            assert!(found.mse_after < 0.01 * found.mse_before, "{found:?}");
            let pair = found.apply(&head, &blurred, shape);
            assert_eq!(pair.moving(), blurred.as_slice(), "the blurrier image is left as it is");
            let error = pair.fixed().iter().zip(&blurred).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(error < 1e-5, "the sharper one becomes the blurrier one ({error})");
            let found = estimate(&blurred, &head, shape, grey);
            assert_eq!((found.blurred, found.sigma_voxels), (Image::Moving, 1.5), "{grey:?}: {found:?}");
            let found = estimate(&head, &head, shape, grey);
            assert_eq!(found.sigma_voxels, 0.0, "{grey:?}: {found:?}");
        }
    }

    /// A pseudo-CT-like pair, blurred and then given other grey values per tissue (bone
    /// compressed, soft tissue offset), as `phantom::appearance` does: allowing a monotone map,
    /// the estimate finds the blur.
    #[test]
    fn finds_the_blur_under_a_change_of_grey_values() {
        let (head, mut moving, shape) = head_and_blurred();
        for v in &mut moving {
            *v = if *v > 1.12 {
                1.12 + 0.75 * (*v - 1.12)
            } else if *v > 0.85 {
                *v + 0.01
            } else {
                *v
            };
        }
        let found = estimate(&head, &moving, shape, GreyValues::Monotone);
        assert_eq!((found.blurred, found.sigma_voxels), (Image::Fixed, 1.5), "{found:?}");
    }
}

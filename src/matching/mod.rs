//! Matching a pair before it is compared (SPEC §4): a pseudo-CT is blurrier than the CT and
//! gets tissue densities somewhat wrong, so the sharper image is blurred to the other's
//! resolution (`resolution`) and the fixed image's grey values mapped onto the moving image's
//! (`intensity`), both estimated with the moving image warped by the deformation so far. The
//! optimiser matches before each level; a network sees the pair as matched at the rigid
//! alignment (`matched_at_alignment`).

pub mod intensity;
pub mod resolution;

use crate::diffeo::VectorField;
use crate::diffeo::integrate::exp;
use crate::diffeo::pyramid::{level_shape, refined_at};
use crate::diffeo::warp::{Outside, sample};
use intensity::IntensityMatch;
use resolution::{GreyValues, MatchedPair, ResolutionMatch};

/// Which matches to make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Switches {
    pub resolution: bool,
    pub intensity: bool,
}

/// Both images compared through the resolution and grey-value matches estimated at the rigid
/// alignment (no velocity yet): what a network trained on matched pairs sees, and what its
/// training compares (`UNetConfig::matched_input`). Both matches are always made, as the
/// models were trained, whatever the optimiser's own switches say.
pub fn matched_at_alignment(fixed: &[f32], moving: &[f32], shape: [usize; 3]) -> (Vec<f32>, Vec<f32>) {
    let factor = 4;
    let rest = (VectorField::zeros(level_shape(shape, factor)), factor);
    let (pair, _, _) = match_pair(fixed, moving, shape, &rest, Switches { resolution: true, intensity: true }, 1);
    (pair.fixed().to_vec(), pair.moving().to_vec())
}

/// The pair as compared, with the resolution and grey-value matches found, given the velocity
/// it starts from (in voxels of level `from`, exponentiated in `steps` squarings). The order
/// follows how a pseudo-CT differs from the CT: blurred, then its grey values changed; the blur
/// is judged by how well a grey-value map of the blurred image predicts the other.
pub fn match_pair<'a>(
    fixed: &'a [f32],
    moving: &'a [f32],
    shape: [usize; 3],
    (velocity, from): &(VectorField, usize),
    switches: Switches,
    steps: u32,
) -> (MatchedPair<'a>, Option<ResolutionMatch>, Option<IntensityMatch>) {
    let displacement = exp(velocity, steps);
    // The value of `image` warped by the velocity at a voxel of the fixed grid.
    let warped_at = |image: &[f32], index: [usize; 3]| -> f32 {
        let u = refined_at(&displacement, index, *from, 1);
        let p: [f32; 3] = std::array::from_fn(|d| index[d] as f32 + u[d]);
        sample(image, shape, p, Outside::Mask).unwrap_or(f32::NAN)
    };
    let mut pair = MatchedPair::unchanged(fixed, moving);
    let mut resolution = None;
    if switches.resolution {
        let grey = if switches.intensity { GreyValues::Monotone } else { GreyValues::Linear };
        let found = resolution::estimate_with(fixed, shape, grey, |index| warped_at(moving, index));
        if found.sigma_voxels > 0.0 {
            pair = found.apply(fixed, moving, shape);
        }
        resolution = Some(found);
    }
    let map = if switches.intensity {
        intensity::estimate_with(pair.fixed(), shape, |index| warped_at(pair.moving(), index))
    } else {
        None
    };
    if let Some(map) = &map {
        map.apply(pair.fixed_mut());
    }
    (pair, resolution, map)
}

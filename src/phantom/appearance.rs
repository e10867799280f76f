//! A pseudo-CT appearance model: what a CT synthesised from MRI typically gets wrong.
//! Applied to HU values on the moving grid.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::phantom::random::SeededRng;
use crate::volume::Volume;
use crate::volume::filter::gaussian_blur;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PseudoCtAppearance {
    /// HU above `bone_threshold_hu` are compressed by this factor (bone under-estimated).
    pub bone_scale: f32,
    pub bone_threshold_hu: f32,
    /// Added to soft tissue (−150..150 HU).
    pub soft_tissue_offset_hu: f32,
    /// Gaussian blur, standard deviation in voxels (0: none).
    pub blur_sigma_voxels: f32,
    /// Gaussian noise, standard deviation in HU.
    pub noise_hu: f32,
}

impl Default for PseudoCtAppearance {
    fn default() -> Self {
        PseudoCtAppearance {
            bone_scale: 0.75,
            bone_threshold_hu: 200.0,
            soft_tissue_offset_hu: 12.0,
            blur_sigma_voxels: 1.0,
            noise_hu: 8.0,
        }
    }
}

impl PseudoCtAppearance {
    /// No change at all: the moving image is then the deformed CT itself.
    pub fn identity() -> Self {
        PseudoCtAppearance {
            bone_scale: 1.0,
            bone_threshold_hu: 200.0,
            soft_tissue_offset_hu: 0.0,
            blur_sigma_voxels: 0.0,
            noise_hu: 0.0,
        }
    }

    pub fn apply(&self, image: &mut Volume, rng: &mut SeededRng) {
        if self.blur_sigma_voxels > 0.0 {
            let shape = image.geometry.shape;
            gaussian_blur(&mut image.voxels, shape, self.blur_sigma_voxels);
        }
        image.voxels.par_iter_mut().for_each(|v| {
            if *v > self.bone_threshold_hu {
                *v = self.bone_threshold_hu + self.bone_scale * (*v - self.bone_threshold_hu);
            } else if (-150.0..150.0).contains(v) {
                *v += self.soft_tissue_offset_hu;
            }
        });
        if self.noise_hu > 0.0 {
            for v in image.voxels.iter_mut() {
                *v += self.noise_hu * rng.normal() as f32;
            }
        }
    }
}

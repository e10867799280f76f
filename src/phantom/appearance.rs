//! A pseudo-CT appearance model: what a CT synthesised from MRI typically gets wrong.
//! Applied to HU values on the moving grid, in this order: nothing outside the body (MRI does not
//! see the couch or head rest, and synthesis masks to the body), air cavities inside the head
//! read as soft tissue (MRI shows neither air nor bone), blur, bone under- or over-estimated, soft
//! tissue offset, a smooth multiplicative bias field (the MRI's coil sensitivity), noise.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::phantom::random::SeededRng;
use crate::phantom::smooth_noise;
use crate::volume::Volume;
use crate::volume::filter::{connected_to_border, dilate, gaussian_blur_per_axis, largest_component};

/// Below this a voxel is air (HU).
pub const AIR_HU: f32 = -400.0;
/// Openings narrower than this (nostrils, ear canals) do not link a cavity to the outside, mm.
const CAVITY_SEAL_MM: f64 = 6.0;

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
    /// A further Gaussian blur, standard deviation in mm (on top of `blur_sigma_voxels`).
    #[serde(default)]
    pub blur_sigma_mm: f32,
    /// Largest relative change of the bias field, applied to HU + 1000 (0: none).
    #[serde(default)]
    pub bias_amplitude: f32,
    /// Control spacing of the bias field, mm.
    #[serde(default = "default_bias_length_mm")]
    pub bias_length_mm: f64,
    /// Air inside the head (sinuses, mastoids), enclosed but for openings under 6 mm, set to
    /// `cavity_fill_hu`.
    #[serde(default)]
    pub fill_air_cavities: bool,
    #[serde(default = "default_cavity_fill_hu")]
    pub cavity_fill_hu: f32,
    /// Everything but the largest connected piece of non-air (the patient) set to air.
    #[serde(default)]
    pub body_only: bool,
}

fn default_bias_length_mm() -> f64 {
    80.0
}

fn default_cavity_fill_hu() -> f32 {
    30.0
}

impl Default for PseudoCtAppearance {
    fn default() -> Self {
        PseudoCtAppearance {
            bone_scale: 0.75,
            bone_threshold_hu: 200.0,
            soft_tissue_offset_hu: 12.0,
            blur_sigma_voxels: 1.0,
            noise_hu: 8.0,
            blur_sigma_mm: 0.0,
            bias_amplitude: 0.0,
            bias_length_mm: default_bias_length_mm(),
            fill_air_cavities: false,
            cavity_fill_hu: default_cavity_fill_hu(),
            body_only: false,
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
            ..Self::default()
        }
    }

    pub fn apply(&self, image: &mut Volume, rng: &mut SeededRng) {
        let (shape, spacing_mm) = (image.geometry.shape, image.geometry.spacing_mm);
        if self.body_only {
            let patient = largest_component(&image.voxels.iter().map(|&v| v >= AIR_HU).collect::<Vec<bool>>(), shape);
            image.voxels.iter_mut().zip(patient).filter(|(_, p)| !p).for_each(|(v, _)| *v = -1000.0);
        }
        if self.fill_air_cavities {
            let cavities = air_cavities(image);
            for (value, cavity) in image.voxels.iter_mut().zip(cavities) {
                if cavity {
                    *value = self.cavity_fill_hu;
                }
            }
        }
        if self.blur_sigma_voxels > 0.0 || self.blur_sigma_mm > 0.0 {
            let sigma = std::array::from_fn(|d| {
                let from_mm = self.blur_sigma_mm / spacing_mm[d] as f32;
                (self.blur_sigma_voxels.powi(2) + from_mm.powi(2)).sqrt()
            });
            gaussian_blur_per_axis(&mut image.voxels, shape, sigma);
        }
        image.voxels.par_iter_mut().for_each(|v| {
            if *v > self.bone_threshold_hu {
                *v = self.bone_threshold_hu + self.bone_scale * (*v - self.bone_threshold_hu);
            } else if (-150.0..150.0).contains(v) {
                *v += self.soft_tissue_offset_hu;
            }
        });
        if self.bias_amplitude > 0.0 {
            let field = smooth_noise(&image.geometry, self.bias_length_mm, rng);
            let peak = field.components_mm[0].iter().fold(0f32, |m, v| m.max(v.abs())).max(f32::MIN_POSITIVE);
            let scale = self.bias_amplitude / peak;
            image.voxels.par_iter_mut().zip(&field.components_mm[0]).for_each(|(v, b)| {
                *v = (*v + 1000.0) * (1.0 + scale * b) - 1000.0;
            });
        }
        if self.noise_hu > 0.0 {
            for v in image.voxels.iter_mut() {
                *v += self.noise_hu * rng.normal() as f32;
            }
        }
    }
}

/// The air voxels of `image` (HU) that no path through air links to the grid's border, once
/// openings narrower than `CAVITY_SEAL_MM` are closed: the sinuses, the mastoid air cells, the
/// airways of a head.
pub fn air_cavities(image: &Volume) -> Vec<bool> {
    let (shape, spacing_mm) = (image.geometry.shape, image.geometry.spacing_mm);
    let air: Vec<bool> = image.voxels.iter().map(|&v| v < AIR_HU).collect();
    let reach: [usize; 3] = std::array::from_fn(|d| (0.5 * CAVITY_SEAL_MM / spacing_mm[d]).round() as usize);
    // Tissue grown by half the seal closes the narrow openings; the outside air found through
    // what is left is grown back by as much, so that it reaches the skin again.
    let mut tissue: Vec<bool> = air.iter().map(|a| !a).collect();
    dilate(&mut tissue, shape, reach);
    let open: Vec<bool> = air.iter().zip(&tissue).map(|(a, t)| *a && !t).collect();
    let mut outside = connected_to_border(&open, shape);
    dilate(&mut outside, shape, reach);
    air.iter().zip(&outside).map(|(a, o)| *a && !o).collect()
}

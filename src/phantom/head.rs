//! A synthetic CT-like head in HU: air, skin and fat, skull and skull base, orbits, sinuses and
//! ear canals, brain with grey/white contrast, a folded cortex and ventricles, with a smooth random texture in each tissue (as real anatomy has, and
//! without which a deformation inside uniform tissue could not be seen). The built-in demo
//! case and many tests start from it.

use rayon::prelude::*;

use crate::diffeo::warp::{Outside, sample};
use crate::phantom::random::SeededRng;
use crate::volume::{Geometry, Volume};

/// Spacing of the random texture's control grid, mm.
const TEXTURE_SPACING_MM: f64 = 8.0;
/// Spacing of the random field whose zero crossings are the sulci, mm.
const FOLD_SPACING_MM: f64 = 14.0;

/// (x/a)² + (y/b)² + (z/c)² of `p` relative to `centre` for semi-axes `axes`: below 1 inside.
fn ellipsoid(p: [f64; 3], centre: [f64; 3], axes: [f64; 3]) -> f64 {
    (0..3).map(|d| ((p[d] - centre[d]) / axes[d]).powi(2)).sum()
}

/// The structures of the head that break its symmetry, in mm from its centre (LPS: +x left,
/// +y posterior, +z superior), scaled by `fit`. Real heads are full of such landmarks (orbits,
/// sinuses, ear canals, skull base, ventricles, sulci); without them a sliding motion along the
/// skull would leave no trace in the images.
struct Anatomy {
    fit: f64,
}

impl Anatomy {
    fn new(fit: f64) -> Self {
        Anatomy { fit }
    }

    fn at(&self, p: [f64; 3], centre: [f64; 3], axes: [f64; 3]) -> bool {
        let f = self.fit;
        ellipsoid(p, centre.map(|c| c * f), axes.map(|a| a * f)) < 1.0
    }

    /// HU at world point `p`; `radii` are the head's semi-axes (mm), `fold` the sulcus field.
    fn hu(&self, p: [f64; 3], radii: [f64; 3], fold: f32) -> f64 {
        let outer = ellipsoid(p, [0.0; 3], radii);
        // Air spaces within the head: nasal cavity, maxillary sinuses, ear canals and mastoids.
        let air = self.at(p, [0.0, -78.0, -52.0], [9.0, 14.0, 16.0])
            || self.at(p, [-24.0, -62.0, -55.0], [13.0, 14.0, 12.0])
            || self.at(p, [24.0, -62.0, -55.0], [13.0, 14.0, 12.0])
            || self.at(p, [-70.0, 8.0, -42.0], [10.0, 6.0, 6.0])
            || self.at(p, [70.0, 8.0, -42.0], [10.0, 6.0, 6.0])
            || self.at(p, [0.0, -86.0, 18.0], [14.0, 5.0, 8.0]);
        if outer > 1.0 || air {
            return -1000.0;
        }
        // The orbits: an eyeball (with a dense lens) in orbital fat.
        for side in [-1.0, 1.0] {
            if self.at(p, [31.0 * side, -80.0, -22.0], [11.5, 11.5, 11.5]) {
                return if self.at(p, [31.0 * side, -91.0, -22.0], [4.0, 1.5, 4.0]) { 90.0 } else { 12.0 };
            }
            if self.at(p, [31.0 * side, -72.0, -22.0], [18.0, 20.0, 16.0]) {
                return -95.0;
            }
        }
        // The skull base: a bony floor above the face, pierced by the foramen magnum.
        let base = (p[2] + 38.0 * self.fit).abs() < 5.0 * self.fit && outer < 0.80;
        if base && !self.at(p, [0.0, 25.0, -38.0], [14.0, 17.0, 10.0]) {
            return 700.0;
        }
        // Skull thicker at the back (occiput) than at the temples.
        let thickness = 0.12 + 0.06 * (p[1] / radii[1]).max(0.0);
        if outer > 0.92 {
            return -90.0; // skin and subcutaneous fat
        }
        if outer > 0.92 - thickness {
            let depth = (0.92 - outer) / thickness;
            // Dense inner and outer tables around the lighter diploë.
            return 1200.0 - 500.0 * (1.0 - (2.0 * depth - 1.0).abs());
        }
        if outer > 0.89 - thickness {
            return 8.0; // cerebrospinal fluid around the brain
        }
        if p[2] < -38.0 * self.fit {
            // Below the skull base: the brainstem and cerebellum in the posterior fossa, muscle in front.
            return if self.at(p, [0.0, 25.0, -60.0], [16.0, 14.0, 30.0]) { 32.0 } else { 50.0 };
        }
        // Midline: the falx, a thin dense membrane between the hemispheres.
        if p[0].abs() < 1.2 * self.fit && p[2] > -10.0 * self.fit {
            return 60.0;
        }
        // Ventricles: two curved lateral horns, the third ventricle, calcified choroid plexus.
        for side in [-1.0, 1.0] {
            if self.at(p, [10.0 * side, -5.0, 14.0], [5.0, 30.0, 7.0])
                || self.at(p, [16.0 * side, 22.0, 2.0], [5.0, 10.0, 12.0])
            {
                return if self.at(p, [16.0 * side, 22.0, 2.0], [2.5, 3.0, 2.5]) { 250.0 } else { 5.0 };
            }
        }
        if self.at(p, [0.0, 0.0, -2.0], [2.0, 14.0, 7.0]) {
            return 5.0;
        }
        // Deep grey matter (basal ganglia), white matter, and a cortex folded into sulci.
        if self.at(p, [-18.0, -4.0, -2.0], [7.0, 12.0, 8.0]) || self.at(p, [18.0, -4.0, -2.0], [7.0, 12.0, 8.0]) {
            return 42.0;
        }
        if outer < 0.45 {
            return 26.0;
        }
        if fold.abs() < 0.12 { 8.0 } else { 38.0 }
    }
}

/// A head of about 180 × 220 × 200 mm (L-R × A-P × S-I) centred in a grid of `shape` voxels
/// of `spacing_mm` (the built-in demo's head: `HeadVariation::DEMO`).
pub fn synthetic_head(shape: [usize; 3], spacing_mm: [f64; 3]) -> Volume {
    varied_head(shape, spacing_mm, &HeadVariation::DEMO)
}

/// What makes one synthetic head differ from another: its size along each axis and the seed of
/// its tissue texture and cortical folds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HeadVariation {
    pub seed: u64,
    /// Semi-axes relative to the demo head's, per axis.
    pub scale: [f64; 3],
}

impl HeadVariation {
    pub const DEMO: HeadVariation = HeadVariation { seed: 2024, scale: [1.0; 3] };

    /// A random head: each semi-axis 85–105 % of the demo head's, its own texture and folds.
    pub fn random(seed: u64) -> HeadVariation {
        let mut rng = SeededRng::new(seed ^ 0x5eed_4ead);
        HeadVariation { seed, scale: std::array::from_fn(|_| rng.range(0.85, 1.05)) }
    }
}

/// A synthetic head (as `synthetic_head`) of another size and texture.
pub fn varied_head(shape: [usize; 3], spacing_mm: [f64; 3], variation: &HeadVariation) -> Volume {
    let extent: [f64; 3] = std::array::from_fn(|d| (shape[d] - 1) as f64 * spacing_mm[d]);
    let origin = extent.map(|e| -e / 2.0);
    let geometry = Geometry::axis_aligned(shape, spacing_mm, origin).expect("a head grid is valid");
    // Semi-axes in mm, scaled down when the grid is smaller than a real head.
    let fit = (0..3).map(|d| extent[d] / [200.0, 240.0, 220.0][d]).fold(1.0f64, f64::min);
    let radii: [f64; 3] = std::array::from_fn(|d| [90.0, 110.0, 100.0][d] * fit * variation.scale[d]);
    let texture_shape: [usize; 3] = std::array::from_fn(|d| (extent[d] / TEXTURE_SPACING_MM).ceil() as usize + 2);
    let mut rng = SeededRng::new(variation.seed);
    let texture: Vec<f32> = (0..texture_shape.iter().product()).map(|_| rng.normal() as f32).collect();
    // A second, finer random field whose zero crossings draw the sulci of the cortex.
    let folds_shape: [usize; 3] = std::array::from_fn(|d| (extent[d] / FOLD_SPACING_MM).ceil() as usize + 2);
    let folds: Vec<f32> = (0..folds_shape.iter().product()).map(|_| rng.normal() as f32).collect();
    // Inner structures follow the head's mean size.
    let anatomy = Anatomy::new(fit * variation.scale.iter().sum::<f64>() / 3.0);
    let mut voxels = vec![0.0f32; geometry.voxel_count()];
    voxels.par_iter_mut().enumerate().for_each(|(n, value)| {
        let t = geometry.index_of(n);
        let p = geometry.index_to_world(t);
        let at = |field: &[f32], field_shape: [usize; 3], spacing: f64| {
            let q: [f32; 3] = std::array::from_fn(|d| (t[d] * spacing_mm[d] / spacing) as f32);
            sample(field, field_shape, q, Outside::Clamp).unwrap_or(0.0)
        };
        let grain = at(&texture, texture_shape, TEXTURE_SPACING_MM);
        let fold = at(&folds, folds_shape, FOLD_SPACING_MM);
        let hu = anatomy.hu(p, radii, fold);
        // Texture amplitude by tissue: none in air, more in bone than in soft tissue.
        let amplitude = if hu <= -999.0 {
            0.0
        } else if hu > 300.0 {
            120.0
        } else {
            12.0
        };
        *value = hu as f32 + amplitude * grain;
    });
    let mut head = Volume { geometry, voxels };
    // A scanner's point-spread function: edges spread over about a millimetre.
    let sigma_voxels = (1.0 / spacing_mm.iter().copied().fold(f64::INFINITY, f64::min)) as f32;
    crate::volume::filter::gaussian_blur(&mut head.voxels, shape, sigma_voxels.clamp(0.3, 1.0));
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn has_every_tissue() {
        let head = synthetic_head([64, 72, 64], [3.0, 3.0, 3.0]);
        let count = |low: f32, high: f32| head.voxels.iter().filter(|&&v| v >= low && v < high).count();
        assert!(count(-1001.0, -999.0) > 10_000, "air");
        assert!(count(-130.0, -50.0) > 1_000, "fat");
        assert!(count(500.0, 1500.0) > 1_000, "bone");
        assert!(count(-20.0, 60.0) > 10_000, "brain and fluid");
    }

    #[test]
    fn varied_heads_differ_and_the_demo_variation_is_the_demo_head() {
        let (shape, spacing) = ([40, 48, 44], [5.0, 5.0, 5.0]);
        let demo = synthetic_head(shape, spacing);
        assert_eq!(demo.voxels, varied_head(shape, spacing, &HeadVariation::DEMO).voxels);
        let other = varied_head(shape, spacing, &HeadVariation::random(7));
        let changed = demo.voxels.iter().zip(&other.voxels).filter(|(a, b)| (*a - *b).abs() > 100.0).count();
        assert!(changed > 500, "only {changed} voxels differ by over 100 HU");
        assert_eq!(other.voxels, varied_head(shape, spacing, &HeadVariation::random(7)).voxels);
    }
}

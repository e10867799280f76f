//! A synthetic CT-like head in HU: air, skin and fat, skull, brain with grey/white contrast
//! and ventricles, with a smooth random texture in each tissue (as real anatomy has, and
//! without which a deformation inside uniform tissue could not be seen). The built-in demo
//! case and many tests start from it.

use crate::diffeo::warp::{Outside, sample};
use crate::phantom::random::SeededRng;
use crate::volume::{Geometry, Volume};

/// Spacing of the random texture's control grid, mm.
const TEXTURE_SPACING_MM: f64 = 8.0;

/// A head of about 180 × 220 × 200 mm (L-R × A-P × S-I) centred in a grid of `shape` voxels
/// of `spacing_mm`.
pub fn synthetic_head(shape: [usize; 3], spacing_mm: [f64; 3]) -> Volume {
    let extent: [f64; 3] = std::array::from_fn(|d| (shape[d] - 1) as f64 * spacing_mm[d]);
    let origin = extent.map(|e| -e / 2.0);
    let geometry = Geometry::axis_aligned(shape, spacing_mm, origin).expect("a head grid is valid");
    // Semi-axes in mm, scaled down when the grid is smaller than a real head.
    let fit = (0..3).map(|d| extent[d] / [200.0, 240.0, 220.0][d]).fold(1.0f64, f64::min);
    let radii = [90.0 * fit, 110.0 * fit, 100.0 * fit];
    let inside = |p: [f64; 3], scale: f64, centre: [f64; 3]| -> f64 {
        (0..3).map(|d| ((p[d] - centre[d]) / (radii[d] * scale)).powi(2)).sum::<f64>()
    };
    let texture_shape: [usize; 3] = std::array::from_fn(|d| (extent[d] / TEXTURE_SPACING_MM).ceil() as usize + 2);
    let mut rng = SeededRng::new(2024);
    let texture: Vec<f32> = (0..texture_shape.iter().product()).map(|_| rng.normal() as f32).collect();
    let mut voxels = Vec::with_capacity(geometry.voxel_count());
    for k in 0..shape[2] {
        for j in 0..shape[1] {
            for i in 0..shape[0] {
                let p = geometry.index_to_world([i as f64, j as f64, k as f64]);
                let t = [i, j, k].map(|x| x as f64);
                let q: [f32; 3] = std::array::from_fn(|d| (t[d] * spacing_mm[d] / TEXTURE_SPACING_MM) as f32);
                let grain = sample(&texture, texture_shape, q, Outside::Clamp).unwrap_or(0.0);
                let outer = inside(p, 1.0, [0.0; 3]);
                let hu = if outer > 1.0 {
                    -1000.0
                } else if outer > 0.92 {
                    -90.0 // skin and subcutaneous fat
                } else if outer > 0.80 {
                    1100.0 - 300.0 * ((outer - 0.80) / 0.12 - 0.5).abs() // skull, densest in the middle
                } else if outer > 0.77 {
                    8.0 // cerebrospinal fluid
                } else {
                    let ventricle_left = inside(p, 0.18, [-12.0 * fit, -8.0 * fit, 12.0 * fit]);
                    let ventricle_right = inside(p, 0.18, [12.0 * fit, -8.0 * fit, 12.0 * fit]);
                    if ventricle_left < 1.0 || ventricle_right < 1.0 {
                        5.0
                    } else if inside(p, 0.55, [0.0, 0.0, 8.0 * fit]) < 1.0 {
                        28.0 // white matter
                    } else {
                        38.0 // grey matter
                    }
                };
                // Texture amplitude by tissue: none in air, more in bone than in soft tissue.
                let amplitude = if hu <= -999.0 {
                    0.0
                } else if hu > 300.0 {
                    120.0
                } else {
                    12.0
                };
                voxels.push(hu as f32 + amplitude * grain);
            }
        }
    }
    let mut head = Volume { geometry, voxels };
    // A scanner's point-spread function: edges spread over about a millimetre.
    let sigma_voxels = (1.0 / spacing_mm.iter().copied().fold(f64::INFINITY, f64::min)) as f32;
    crate::phantom::appearance::gaussian_blur(&mut head, sigma_voxels.clamp(0.3, 1.0));
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
}

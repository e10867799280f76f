//! A synthetic CT-like head in HU: air, skin and fat, skull, brain with grey/white contrast
//! and ventricles. The built-in demo case and many tests start from it.

use crate::volume::{Geometry, Volume};

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
    let mut voxels = Vec::with_capacity(geometry.voxel_count());
    for k in 0..shape[2] {
        for j in 0..shape[1] {
            for i in 0..shape[0] {
                let p = geometry.index_to_world([i as f64, j as f64, k as f64]);
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
                voxels.push(hu as f32);
            }
        }
    }
    Volume { geometry, voxels }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn has_every_tissue() {
        let head = synthetic_head([64, 72, 64], [3.0, 3.0, 3.0]);
        let count = |low: f32, high: f32| head.voxels.iter().filter(|&&v| v >= low && v < high).count();
        assert!(count(-1001.0, -999.0) > 10_000, "air");
        assert!(count(-100.0, -80.0) > 1_000, "fat");
        assert!(count(700.0, 1200.0) > 1_000, "bone");
        assert!(count(0.0, 10.0) > 200, "fluid");
        assert!(count(20.0, 40.0) > 10_000, "brain");
    }
}

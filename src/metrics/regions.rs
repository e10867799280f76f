//! Where in the head an error sits: endpoint error per tissue and per depth below the skin.
//! A registration can be good on bone and poor in the flat grey of the brain; the mean over the
//! body hides that.
//!
//! Regions of the target image (HU, calibrated to density): bone, soft tissue ("water"), fat
//! (SPEC §7's classes), the band 0–5 mm below the skin, and what lies deeper than 20 mm. Depth
//! is the exact Euclidean distance (mm) to the nearest voxel outside the body, the body's
//! enclosed air (sinuses) counted as inside.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::metrics::{BODY_DENSITY, Distances, TISSUES, endpoint_error};
use crate::volume::filter::connected_to_border;
use crate::volume::{DisplacementField, Volume};

/// The skin band's depth and the depth beyond which tissue counts as deep, mm.
pub const SKIN_BAND_MM: f32 = 5.0;
pub const DEEP_MM: f32 = 20.0;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegionError {
    pub region: String,
    pub voxels: usize,
    pub error: Distances,
}

/// The named regions of an image of densities (kg/dm³) on a grid with voxels of `spacing_mm`.
pub fn regions(density: &[f32], shape: [usize; 3], spacing_mm: [f64; 3]) -> Vec<(&'static str, Vec<bool>)> {
    let body: Vec<bool> = density.iter().map(|&d| d >= BODY_DENSITY).collect();
    let depth = depth_below_skin_mm(&body, shape, spacing_mm);
    let tissue = |name: &str| {
        let t = TISSUES.iter().find(|t| t.name == name).expect("a SPEC tissue");
        density.iter().map(|&d| d >= t.low && d < t.high).collect::<Vec<bool>>()
    };
    vec![
        ("bone", tissue("bone")),
        ("soft tissue", tissue("water")),
        ("fat", tissue("fat")),
        ("skin band 0-5 mm", body.iter().zip(&depth).map(|(b, d)| *b && *d <= SKIN_BAND_MM).collect()),
        ("deeper than 20 mm", body.iter().zip(&depth).map(|(b, d)| *b && *d > DEEP_MM).collect()),
    ]
}

/// Endpoint error of `field` against `truth` in each region of `target` (HU, on their grid);
/// regions without a voxel are left out.
pub fn endpoint_error_by_region(
    field: &DisplacementField,
    truth: &DisplacementField,
    target_density: &Volume,
) -> Result<Vec<RegionError>> {
    let g = &target_density.geometry;
    let mut out = Vec::new();
    for (name, mask) in regions(&target_density.voxels, g.shape, g.spacing_mm) {
        let voxels = mask.iter().filter(|&&m| m).count();
        if voxels == 0 {
            continue;
        }
        out.push(RegionError { region: name.into(), voxels, error: endpoint_error(field, truth, &mask)? });
    }
    Ok(out)
}

/// For each voxel of `body`, the distance (mm) from its centre to the nearest voxel centre
/// outside the body (0 outside); air enclosed by the body counts as inside. The grid's border
/// is not skin: a CT cut through the neck has its cut deep inside.
pub fn depth_below_skin_mm(body: &[bool], shape: [usize; 3], spacing_mm: [f64; 3]) -> Vec<f32> {
    let outside_air = connected_to_border(&body.iter().map(|b| !b).collect::<Vec<bool>>(), shape);
    let inside: Vec<bool> = outside_air.iter().map(|o| !o).collect();
    squared_distance_to_outside(&inside, shape, spacing_mm).into_iter().map(|d| (d as f32).sqrt()).collect()
}

/// Squared distance standing for "no outside voxel on this line yet", mm².
const FAR: f64 = 1e20;

/// Exact squared Euclidean distance transform (Felzenszwalb and Huttenlocher): one pass of the
/// lower envelope of parabolas per axis. Outside voxels are 0; with none at all, every voxel
/// stays about `FAR`.
fn squared_distance_to_outside(inside: &[bool], shape: [usize; 3], spacing_mm: [f64; 3]) -> Vec<f64> {
    let [nx, ny, nz] = shape;
    let mut d: Vec<f64> = vec![0.0; inside.len()];
    d.par_chunks_mut(nx).enumerate().for_each(|(row, out)| {
        let line: Vec<f64> = (0..nx).map(|i| if inside[row * nx + i] { FAR } else { 0.0 }).collect();
        envelope(&line, spacing_mm[0], out);
    });
    for (axis, n, stride) in [(1usize, ny, nx), (2, nz, nx * ny)] {
        let spacing = spacing_mm[axis];
        let lines: Vec<usize> = (0..d.len()).filter(|&v| (v / stride) % n == 0).collect();
        let results: Vec<(usize, Vec<f64>)> = lines
            .par_iter()
            .map(|&start| {
                let line: Vec<f64> = (0..n).map(|q| d[start + q * stride]).collect();
                let mut out = vec![0.0; n];
                envelope(&line, spacing, &mut out);
                (start, out)
            })
            .collect();
        for (start, out) in results {
            for (q, value) in out.into_iter().enumerate() {
                d[start + q * stride] = value;
            }
        }
    }
    d
}

/// One axis: out[q] = min over p of f(p) + (s·(q − p))².
fn envelope(f: &[f64], s: f64, out: &mut [f64]) {
    let s2 = s * s;
    let points = f.iter().enumerate().map(|(p, &value)| (p as i64, value));
    let mut hull: Vec<(i64, f64)> = Vec::with_capacity(f.len() + 2);
    let mut starts: Vec<f64> = Vec::with_capacity(f.len() + 2);
    // Where the parabolas of a and b cross.
    let meet = |a: (i64, f64), b: (i64, f64)| {
        ((b.1 + s2 * (b.0 * b.0) as f64) - (a.1 + s2 * (a.0 * a.0) as f64)) / (2.0 * s2 * (b.0 - a.0) as f64)
    };
    for point in points {
        while let Some(&last) = hull.last() {
            let x = meet(last, point);
            if x <= *starts.last().expect("one start per hull point") {
                hull.pop();
                starts.pop();
            } else {
                break;
            }
        }
        let start = hull.last().map_or(f64::NEG_INFINITY, |&last| meet(last, point));
        hull.push(point);
        starts.push(start);
    }
    let mut k = 0;
    for (q, value) in out.iter_mut().enumerate() {
        let q = q as f64;
        while k + 1 < hull.len() && starts[k + 1] <= q {
            k += 1;
        }
        let (p, fp) = hull[k];
        *value = fp + s2 * (q - p as f64).powi(2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the brute-force nearest outside voxel, on anisotropic voxels, with an enclosed
    /// hole that counts as inside and a body that touches the grid's border.
    #[test]
    fn depth_equals_the_brute_force_distance() {
        let shape = [14, 11, 9];
        let spacing = [0.9, 1.3, 2.1];
        let count = 14 * 11 * 9;
        let centre = [6.5, 5.0, 4.0];
        let body: Vec<bool> = (0..count)
            .map(|n| {
                let (i, j, k) = (n % 14, (n / 14) % 11, n / 154);
                let r2 = ((i as f64 - centre[0]) * spacing[0]).powi(2)
                    + ((j as f64 - centre[1]) * spacing[1]).powi(2)
                    + ((k as f64 - centre[2]) * spacing[2]).powi(2);
                let hole = (i, j, k) == (6, 5, 4);
                r2 < 7.5f64.powi(2) && !hole || (i == 0 && j == 5)
            })
            .collect();
        let depth = depth_below_skin_mm(&body, shape, spacing);
        assert!(depth[6 + 14 * (5 + 11 * 4)] > 3.0, "the enclosed hole counts as inside");
        let outside: Vec<[i64; 3]> = {
            let mut v = Vec::new();
            for k in 0..9i64 {
                for j in 0..11i64 {
                    for i in 0..14i64 {
                        let n = (i + 14 * (j + 11 * k)) as usize;
                        if !body[n] && (i, j, k) != (6, 5, 4) {
                            v.push([i, j, k]);
                        }
                    }
                }
            }
            v
        };
        for n in 0..count {
            let p = [(n % 14) as i64, ((n / 14) % 11) as i64, (n / 154) as i64];
            let expected = outside
                .iter()
                .map(|o| (0..3).map(|d| ((p[d] - o[d]) as f64 * spacing[d]).powi(2)).sum::<f64>())
                .fold(f64::INFINITY, f64::min)
                .sqrt();
            let inside = body[n] || n == 6 + 14 * (5 + 11 * 4);
            let want = if inside { expected } else { 0.0 };
            assert!((depth[n] as f64 - want).abs() < 1e-4, "voxel {p:?}: {} vs {want}", depth[n]);
        }
    }
}

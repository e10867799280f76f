//! 6-DOF rigid pre-alignment (SPEC §2.3): find T, mapping fixed-space points to moving-space
//! points, that minimises the mean squared density difference between fixed(x) and
//! moving(T(x)) over their overlap. Started from the centres of mass with no rotation and with
//! the rotations that match the bodies' principal axes (the best after a short search goes on),
//! refined coarse to fine by a pattern search on three Euler angles and three translations.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::volume::affine::AffineTransform;
use crate::volume::geometry::{IDENTITY, Mat3, Vec3, det3, mat_mul, sub, transpose};
use crate::volume::resample::{Interpolation, sample};
use crate::volume::{Geometry, Volume};

/// What the rigid search minimises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RigidMetric {
    /// Mean squared density difference.
    Mse,
    /// −NMI (64 × 64 joint histogram of density): indifferent to how the pseudo-CT's grey
    /// values differ from the CT's.
    Nmi,
    /// −Mattes mutual information (Mattes et al. 2003, as ITK's
    /// MattesMutualInformationImageToImageMetric): a 50 × 50 joint histogram filled through a
    /// box window on the fixed values and a cubic B-spline window on the moving ones, so the
    /// cost changes smoothly with the transform; as indifferent to grey values as NMI.
    MattesMi,
}

/// Bins of the Mattes MI histogram on each axis (ITK's default).
pub const MATTES_BINS: usize = 50;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RigidParams {
    pub metric: RigidMetric,
    /// Resolution levels, coarse to fine, as downsampling factors.
    pub levels: Vec<usize>,
    /// First search steps: rotation (degrees) and translation (mm).
    pub initial_rotation_deg: f64,
    pub initial_translation_mm: f64,
    /// The search stops when its steps fall below these.
    pub final_rotation_deg: f64,
    pub final_translation_mm: f64,
    /// Levels finer than the coarsest whose fixed grid would exceed this many voxels are
    /// skipped: a sub-voxel rigid fit at ~2 M voxels is as good as at full size, and the
    /// deformable stage follows anyway.
    pub max_level_voxels: usize,
    /// The MSE of a level visits a regular subset of at most about this many fixed voxels.
    #[serde(default = "default_max_mse_samples")]
    pub max_mse_samples: usize,
    /// Smallest share of the fixed image's samples that must land inside the moving image.
    pub min_overlap: f64,
}

fn default_max_mse_samples() -> usize {
    1_500_000
}

impl Default for RigidParams {
    fn default() -> Self {
        RigidParams {
            metric: RigidMetric::Mse,
            levels: vec![4, 2, 1],
            initial_rotation_deg: 4.0,
            initial_translation_mm: 8.0,
            final_rotation_deg: 0.05,
            final_translation_mm: 0.1,
            max_level_voxels: 2_500_000,
            max_mse_samples: default_max_mse_samples(),
            min_overlap: 0.2,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RigidResult {
    /// Fixed-space points to moving-space points.
    #[serde(skip)]
    pub transform: AffineTransform,
    pub angles_deg: Vec3,
    pub translation_mm: Vec3,
    pub center_mm: Vec3,
    pub mse_before: f64,
    pub mse_after: f64,
    pub overlap: f64,
    pub evaluations: usize,
}

/// Aligns `moving` to `fixed` (both density volumes, each on its own grid).
///
/// The search starts from several poses, because a pseudo-CT may come from another scanner with
/// its own frame of reference (tens of degrees and hundreds of millimetres away): the centres of
/// mass matched with no rotation, and with each of the four rotations that take the fixed
/// image's principal axes (of its body's density) onto the moving image's. Each start is refined
/// briefly at the coarsest level; the best one is searched to the end, coarse to fine.
pub fn align(fixed: &Volume, moving: &Volume, params: &RigidParams, progress: &dyn Progress) -> Result<RigidResult> {
    let center = center_of_mass(fixed).ok_or_else(|| Error::Invalid("the fixed image is empty (no density)".into()))?;
    let moving_center =
        center_of_mass(moving).ok_or_else(|| Error::Invalid("the moving image is empty (no density)".into()))?;
    let transform_of = |p: &[f64; 6]| AffineTransform::from_euler([p[0], p[1], p[2]], [p[3], p[4], p[5]], center);
    let shift = sub(moving_center, center);
    // [angle x, y, z (rad), translation x, y, z (mm)] of each start.
    let starts: Vec<[f64; 6]> = starting_rotations(fixed, moving, center, moving_center)
        .iter()
        .map(|rotation| {
            let [ax, ay, az] = euler_angles(rotation);
            [ax, ay, az, shift[0], shift[1], shift[2]]
        })
        .collect();
    let mut parameters = starts[0];
    let mut evaluations = 0;
    let mut mse_before = f64::NAN;
    for (n, &factor) in params.levels.iter().enumerate() {
        let level_voxels: usize = fixed.geometry.shape.iter().map(|s| s.div_ceil(factor)).product();
        if n > 0 && level_voxels > params.max_level_voxels {
            continue;
        }
        progress.start_stage(&format!("rigid at 1/{factor} resolution"), 0);
        let (fixed_level, moving_level) = (downsample_volume(fixed, factor), downsample_volume(moving, factor));
        // The MSE visits every `stride`-th voxel along each axis so that at most about
        // `max_mse_samples` are visited (the moving image is still sampled at full detail; on the
        // demo, 1/8 of the full-resolution voxels: 2.9 → 0.36 s, endpoint error 0.990 → 0.991 mm).
        let stride = (1..)
            .find(|s| level_voxels.div_ceil(s * s * s) <= params.max_mse_samples.max(1))
            .expect("a stride of the level's size visits one voxel");
        let cost = |p: &[f64; 6]| match params.metric {
            RigidMetric::Mse => mean_squared_difference(&fixed_level, &moving_level, &transform_of(p), stride),
            RigidMetric::Nmi => negative_nmi(&fixed_level, &moving_level, &transform_of(p)),
            RigidMetric::MattesMi => negative_mattes_mi(&fixed_level, &moving_level, &transform_of(p)),
        };
        let mut steps = [params.initial_rotation_deg.to_radians(), params.initial_translation_mm];
        let finals = [params.final_rotation_deg.to_radians(), params.final_translation_mm];
        if n == 0 {
            mse_before = cost(&parameters).0;
            evaluations += 1;
            if starts.len() > 1 {
                // Each start refined to 1° and 1 mm (at most 400 costs); the best one goes on.
                let brief = [1f64.to_radians(), 1.0];
                let mut best: Option<([f64; 6], (f64, f64))> = None;
                for start in &starts {
                    let (found, value, used) = pattern_search(
                        &cost,
                        *start,
                        [20f64.to_radians(), 20.0],
                        brief,
                        400,
                        params.min_overlap,
                        progress,
                    )?;
                    evaluations += used;
                    if value.1 >= params.min_overlap && best.is_none_or(|(_, b)| value.0 < b.0) {
                        best = Some((found, value));
                    }
                }
                if let Some((found, _)) = best {
                    parameters = found;
                    steps = brief;
                }
            }
        } else {
            steps = steps.map(|s| s / 4.0);
        }
        // The evaluation cap only guards against a cost that keeps improving by crumbs.
        let (found, best, used) = pattern_search(&cost, parameters, steps, finals, 4000, params.min_overlap, progress)?;
        (parameters, evaluations) = (found, evaluations + used);
        if best.1 < params.min_overlap {
            return Err(Error::Invalid(format!(
                "the images do not overlap after rigid alignment: only {:.0} % of the fixed image lands in the moving one",
                100.0 * best.1
            )));
        }
    }
    let transform = transform_of(&parameters);
    let (mse_after, overlap) = mean_squared_difference(fixed, moving, &transform, 1);
    Ok(RigidResult {
        transform,
        angles_deg: [parameters[0], parameters[1], parameters[2]].map(f64::to_degrees),
        translation_mm: [parameters[3], parameters[4], parameters[5]],
        center_mm: center,
        mse_before,
        mse_after,
        overlap,
        evaluations,
    })
}

/// A pattern search from `start`: each parameter stepped both ways by its step (rotations by
/// `steps[0]` rad, translations by `steps[1]` mm), the first improvement kept, the steps halved
/// when none improves, until they fall below `finals` or `cap` costs were spent. Returns the
/// parameters, their (cost, overlap) and the costs spent.
fn pattern_search(
    cost: &dyn Fn(&[f64; 6]) -> (f64, f64),
    start: [f64; 6],
    mut steps: [f64; 2],
    finals: [f64; 2],
    cap: usize,
    min_overlap: f64,
    progress: &dyn Progress,
) -> Result<([f64; 6], (f64, f64), usize)> {
    let mut parameters = start;
    let mut best = cost(&parameters);
    let mut evaluations = 1;
    while (steps[0] >= finals[0] || steps[1] >= finals[1]) && evaluations < cap {
        progress.check_cancelled()?;
        let mut improved = false;
        for d in 0..6 {
            let step = steps[d / 3];
            if step < finals[d / 3] {
                continue;
            }
            for sign in [1.0, -1.0] {
                let mut trial = parameters;
                trial[d] += sign * step;
                let value = cost(&trial);
                evaluations += 1;
                if value.0 < best.0 && value.1 >= min_overlap {
                    (parameters, best, improved) = (trial, value, true);
                    break;
                }
            }
        }
        if !improved {
            steps = steps.map(|s| s / 2.0);
        }
    }
    Ok((parameters, best, evaluations))
}

/// Rotations to start the search from (fixed-space directions to moving-space ones): none, and
/// the four proper rotations taking the fixed body's principal axes onto the moving body's
/// (each axis's sign is unknown; an odd number of flips would mirror the head).
fn starting_rotations(fixed: &Volume, moving: &Volume, fixed_center: Vec3, moving_center: Vec3) -> Vec<Mat3> {
    let mut starts = vec![IDENTITY];
    let (Some(fixed_axes), Some(moving_axes)) =
        (principal_axes(fixed, fixed_center), principal_axes(moving, moving_center))
    else {
        return starts;
    };
    for signs in [[1.0, 1.0, 1.0], [1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]] {
        let flipped: Mat3 = std::array::from_fn(|r| std::array::from_fn(|c| moving_axes[r][c] * signs[c]));
        starts.push(mat_mul(&flipped, &transpose(&fixed_axes)));
    }
    starts
}

/// Columns: the unit axes of the body's (density ≥ 0.5) second moments about `center`, largest
/// spread first, as a proper rotation (det +1); None for a body of fewer than 10 voxels.
fn principal_axes(volume: &Volume, center: Vec3) -> Option<Mat3> {
    let g = &volume.geometry;
    let mut moments = [[0.0f64; 3]; 3];
    let mut count = 0usize;
    for (n, &value) in volume.voxels.iter().enumerate() {
        if value >= crate::metrics::BODY_DENSITY {
            let p = sub(g.world_of(n), center);
            for r in 0..3 {
                for c in 0..3 {
                    moments[r][c] += p[r] * p[c];
                }
            }
            count += 1;
        }
    }
    if count < 10 {
        return None;
    }
    let (values, vectors) = symmetric_eigen(&moments);
    let mut order = [0usize, 1, 2];
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    let mut axes: Mat3 = std::array::from_fn(|r| std::array::from_fn(|c| vectors[r][order[c]]));
    if det3(&axes) < 0.0 {
        (0..3).for_each(|r| axes[r][2] = -axes[r][2]);
    }
    Some(axes)
}

/// Eigenvalues and eigenvectors (as columns) of a symmetric 3×3 matrix, by Jacobi rotations.
fn symmetric_eigen(m: &Mat3) -> (Vec3, Mat3) {
    let mut a = *m;
    let mut v = IDENTITY;
    for _ in 0..50 {
        let off = a[0][1].powi(2) + a[0][2].powi(2) + a[1][2].powi(2);
        if off <= 1e-24 * (a[0][0].powi(2) + a[1][1].powi(2) + a[2][2].powi(2)).max(f64::MIN_POSITIVE) {
            break;
        }
        for (p, q) in [(0, 1), (0, 2), (1, 2)] {
            if a[p][q].abs() < f64::MIN_POSITIVE {
                continue;
            }
            let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
            let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
            let t = if theta == 0.0 { 1.0 } else { t };
            let (c, s) = (1.0 / (t * t + 1.0).sqrt(), t / (t * t + 1.0).sqrt());
            // a ← Jᵀ a J, v ← v J, with J the rotation in the (p, q) plane.
            let mut rotation = IDENTITY;
            rotation[p][p] = c;
            rotation[q][q] = c;
            rotation[p][q] = s;
            rotation[q][p] = -s;
            a = mat_mul(&transpose(&rotation), &mat_mul(&a, &rotation));
            v = mat_mul(&v, &rotation);
        }
    }
    ([a[0][0], a[1][1], a[2][2]], v)
}

/// ITK Euler3D angles (radians; R = Rz·Rx·Ry) of a rotation matrix: the inverse of
/// `AffineTransform::from_euler`'s matrix.
pub fn euler_angles(r: &Mat3) -> Vec3 {
    let ax = r[2][1].clamp(-1.0, 1.0).asin();
    let ay = (-r[2][0]).atan2(r[2][2]);
    let az = (-r[0][1]).atan2(r[1][1]);
    [ax, ay, az]
}

/// Density-weighted centre (mm), or None for an image with no positive density.
pub fn center_of_mass(volume: &Volume) -> Option<Vec3> {
    let g = &volume.geometry;
    let mut sum = [0.0f64; 3];
    let mut mass = 0.0f64;
    for (n, &value) in volume.voxels.iter().enumerate() {
        if value > 0.0 {
            let p = g.world_of(n);
            for d in 0..3 {
                sum[d] += value as f64 * p[d];
            }
            mass += value as f64;
        }
    }
    (mass > 0.0).then(|| sum.map(|s| s / mass))
}

/// Mean of (fixed(x) − moving(T(x)))² over fixed voxels whose sample lands inside the moving
/// grid, and the share of fixed voxels that do; only every `stride`-th voxel along each axis is
/// visited (1: all of them).
fn mean_squared_difference(fixed: &Volume, moving: &Volume, transform: &AffineTransform, stride: usize) -> (f64, f64) {
    use rayon::prelude::*;
    let position = moving_index_map(fixed, moving, transform);
    let [nx, ny, _] = fixed.geometry.shape;
    let stride = stride.max(1);
    // Plane by plane, row by row: the voxel's index comes from the loops, not from divisions.
    let (sum, count, visited) = fixed
        .voxels
        .par_chunks(nx * ny)
        .enumerate()
        .filter(|(k, _)| k % stride == 0)
        .map(|(k, plane)| {
            let (mut sum, mut count, mut visited) = (0.0f64, 0usize, 0usize);
            for j in (0..ny).step_by(stride) {
                for i in (0..nx).step_by(stride) {
                    let f = plane[i + nx * j];
                    let m = sample(moving, position.at([i, j, k]), Interpolation::Linear, f32::NAN);
                    visited += 1;
                    if m.is_finite() {
                        sum += ((f - m) as f64).powi(2);
                        count += 1;
                    }
                }
            }
            (sum, count, visited)
        })
        // Combined in plane order: the same cost on every run.
        .collect::<Vec<_>>()
        .into_iter()
        .fold((0.0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2));
    let overlap = count as f64 / visited.max(1) as f64;
    (if count > 0 { sum / count as f64 } else { f64::INFINITY }, overlap)
}

/// −NMI of the fixed image and the moving one through `transform` over their overlap (lower
/// is better, like the MSE), and the overlap.
fn negative_nmi(fixed: &Volume, moving: &Volume, transform: &AffineTransform) -> (f64, f64) {
    use rayon::prelude::*;
    let position = moving_index_map(fixed, moving, transform);
    let samples: Vec<f32> = (0..fixed.voxels.len())
        .into_par_iter()
        .map(|n| sample(moving, position.of(n), Interpolation::Linear, f32::NAN))
        .collect();
    let mask: Vec<bool> = samples.iter().map(|m| m.is_finite()).collect();
    let count = mask.iter().filter(|&&m| m).count();
    let overlap = count as f64 / fixed.voxels.len() as f64;
    if count == 0 {
        return (f64::INFINITY, 0.0);
    }
    (-crate::metrics::nmi(&fixed.voxels, &samples, &mask), overlap)
}

/// −Mattes MI of fixed(x) and moving(T(x)) over the overlap, and the overlap's share.
fn negative_mattes_mi(fixed: &Volume, moving: &Volume, transform: &AffineTransform) -> (f64, f64) {
    let position = moving_index_map(fixed, moving, transform);
    let range = |v: &Volume| v.value_range().map_or((0.0, 1.0), |(l, h)| (l as f64, (h as f64).max(l as f64 + 1e-6)));
    let ((f_low, f_high), (m_low, m_high)) = (range(fixed), range(moving));
    let bins = MATTES_BINS;
    // Values map onto [2, bins − 3]: the B-spline's support (±2) stays inside the histogram.
    let scale = |v: f64, low: f64, high: f64| 2.0 + (v - low) / (high - low) * (bins - 5) as f64;
    // A histogram per fixed chunk of voxels, added in chunk order: the same cost on every run.
    let (histogram, count) = crate::parallel::fold_chunks(
        fixed.voxels.len(),
        |voxels| {
            voxels.fold((vec![0.0f64; bins * bins], 0usize), |(mut h, mut count), n| {
                let m = sample(moving, position.of(n), Interpolation::Linear, f32::NAN);
                if m.is_finite() {
                    count += 1;
                    let row = scale(fixed.voxels[n] as f64, f_low, f_high).floor() as usize;
                    let t = scale(m as f64, m_low, m_high);
                    let first = t.floor() as isize - 1;
                    for k in first..first + 4 {
                        let weight = cubic_bspline(t - k as f64);
                        if weight > 0.0 {
                            h[row.min(bins - 1) * bins + (k as usize).min(bins - 1)] += weight;
                        }
                    }
                }
                (h, count)
            })
        },
        (vec![0.0f64; bins * bins], 0usize),
        |(mut a, ca), (b, cb)| {
            a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
            (a, ca + cb)
        },
    );
    let overlap = count as f64 / fixed.voxels.len() as f64;
    let total: f64 = histogram.iter().sum();
    if count == 0 || total <= 0.0 {
        return (f64::INFINITY, overlap);
    }
    let p: Vec<f64> = histogram.iter().map(|v| v / total).collect();
    let fixed_marginal: Vec<f64> = (0..bins).map(|r| p[r * bins..(r + 1) * bins].iter().sum()).collect();
    let moving_marginal: Vec<f64> = (0..bins).map(|k| (0..bins).map(|r| p[r * bins + k]).sum()).collect();
    let mut mi = 0.0;
    for r in 0..bins {
        for k in 0..bins {
            let pj = p[r * bins + k];
            if pj > 0.0 {
                mi += pj * (pj / (fixed_marginal[r] * moving_marginal[k])).ln();
            }
        }
    }
    (-mi, overlap)
}

/// The cubic B-spline β³(x): support (−2, 2), the weights at x − k for the four k around x sum to 1.
fn cubic_bspline(x: f64) -> f64 {
    let a = x.abs();
    if a < 1.0 {
        (4.0 - 6.0 * a * a + 3.0 * a * a * a) / 6.0
    } else if a < 2.0 {
        (2.0 - a).powi(3) / 6.0
    } else {
        0.0
    }
}

/// Where fixed voxels land in the moving image's continuous index through `transform`. Fixed
/// index → moving index is affine: its value at the origin and its three columns are computed
/// once, so each voxel costs one multiply-add per axis.
struct IndexMap {
    origin: [f64; 3],
    columns: [[f64; 3]; 3],
    nx: usize,
    ny: usize,
}

impl IndexMap {
    /// The moving index of fixed voxel [i, j, k].
    #[inline]
    fn at(&self, index: [usize; 3]) -> [f64; 3] {
        let [i, j, k] = index.map(|x| x as f64);
        let (o, c) = (&self.origin, &self.columns);
        std::array::from_fn(|r| o[r] + c[0][r] * i + c[1][r] * j + c[2][r] * k)
    }

    /// The moving index of fixed voxel n (linear index).
    #[inline]
    fn of(&self, n: usize) -> [f64; 3] {
        self.at([n % self.nx, (n / self.nx) % self.ny, n / (self.nx * self.ny)])
    }
}

fn moving_index_map(fixed: &Volume, moving: &Volume, transform: &AffineTransform) -> IndexMap {
    let g = &fixed.geometry;
    let to_moving_index = moving.geometry.world_to_index_map();
    let map = |index: [f64; 3]| to_moving_index.apply(transform.apply(g.index_to_world(index)));
    let origin = map([0.0; 3]);
    let columns: [[f64; 3]; 3] = std::array::from_fn(|d| {
        let mut unit = [0.0; 3];
        unit[d] = 1.0;
        sub(map(unit), origin)
    });
    IndexMap { origin, columns, nx: g.shape[0], ny: g.shape[1] }
}

/// Box average by `factor` with the geometry that goes with it: each new voxel sits at the
/// centre of the block it averages.
pub fn downsample_volume(volume: &Volume, factor: usize) -> Volume {
    if factor == 1 {
        return volume.clone();
    }
    let g = &volume.geometry;
    let voxels = crate::diffeo::pyramid::downsample(&volume.voxels, g.shape, factor);
    let shape = crate::diffeo::pyramid::level_shape(g.shape, factor);
    let half = (factor as f64 - 1.0) / 2.0;
    let geometry = Geometry {
        shape,
        spacing_mm: g.spacing_mm.map(|s| s * factor as f64),
        origin_mm: g.index_to_world([half; 3]),
        direction: g.direction,
    };
    Volume { geometry, voxels }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn euler_angles_invert_from_euler() {
        for angles in [[0.3, -0.5, 1.2], [-1.0, 0.2, -2.8], [0.0, 0.0, 0.0], [1.4, 1.3, -0.4]] {
            let matrix = AffineTransform::from_euler(angles, [0.0; 3], [0.0; 3]).matrix;
            let back = euler_angles(&matrix);
            let again = AffineTransform::from_euler(back, [0.0; 3], [0.0; 3]).matrix;
            for r in 0..3 {
                for c in 0..3 {
                    assert!((matrix[r][c] - again[r][c]).abs() < 1e-12, "{angles:?} → {back:?}");
                }
            }
        }
    }

    /// V·diag(λ)·Vᵀ gives the matrix back, and V is orthonormal.
    #[test]
    fn eigen_decomposition_rebuilds_the_matrix() {
        let m = [[4.0, 1.5, -0.7], [1.5, 2.0, 0.3], [-0.7, 0.3, 9.0]];
        let (values, vectors) = symmetric_eigen(&m);
        let scaled: Mat3 = std::array::from_fn(|r| std::array::from_fn(|c| vectors[r][c] * values[c]));
        let rebuilt = mat_mul(&scaled, &transpose(&vectors));
        let identity = mat_mul(&transpose(&vectors), &vectors);
        for r in 0..3 {
            for c in 0..3 {
                assert!((rebuilt[r][c] - m[r][c]).abs() < 1e-9, "{rebuilt:?}");
                assert!((identity[r][c] - IDENTITY[r][c]).abs() < 1e-9);
            }
        }
    }
}

//! The registration energy of SPEC §3 for one pair on one grid, and its gradient with respect
//! to the momentum:
//! E(m) = λ⟨v, m⟩ + ½ ε(M ∘ φ, F) + ½ ε(F ∘ φ⁻¹, M),  v = K⁻¹ m, φ = exp(v), φ⁻¹ = exp(−v),
//! with F the fixed and M the moving image on the same grid. ⟨v, m⟩ is the mean over voxels of
//! v·m (voxel units), ε the mean over the voxels whose sample fell inside the grid. A `Region`
//! may leave voxels far from tissue out of ε's sum; they still count in its mean, as matched.

use std::ops::Range;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::diffeo::VectorField;
use crate::diffeo::integrate::{exp_backward, exp_with_trace};
use crate::diffeo::local_ncc;
use crate::diffeo::pyramid::{coarse_position, level_shape};
use crate::diffeo::region::Region;
use crate::diffeo::smooth::Smoother;
use crate::diffeo::warp::{Outside, sample_with_gradient, warp_image, warp_image_backward, within_voxels};

/// ε, the image dissimilarity.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Similarity {
    /// mean(x²)
    Mse,
    /// mean(x² / (a² + x²)): bounded, so large local mismatches (pseudo-CT bone) weigh less.
    NormalizedMse { a: f32 },
    /// mean(1 − cc), cc the squared local correlation within windows of (2 radius + 1)³ voxels
    /// of each level (`local_ncc`): blind to the local grey scale, so robust to a pseudo-CT's
    /// density errors, and as sensitive to faint contrast as to strong.
    LocalNcc { radius: u32 },
}

impl Similarity {
    #[inline]
    fn value(self, x: f32) -> f32 {
        match self {
            Similarity::Mse => x * x,
            Similarity::NormalizedMse { a } => x * x / (a * a + x * x),
            Similarity::LocalNcc { .. } => unreachable!("local NCC is not a voxel-wise measure"),
        }
    }

    #[inline]
    fn derivative(self, x: f32) -> f32 {
        match self {
            Similarity::Mse => 2.0 * x,
            Similarity::NormalizedMse { a } => {
                let d = a * a + x * x;
                2.0 * x * a * a / (d * d)
            }
            Similarity::LocalNcc { .. } => unreachable!("local NCC is not a voxel-wise measure"),
        }
    }

    /// `value` and `derivative` together (one division for the normalised MSE).
    #[inline]
    fn value_and_derivative(self, x: f32) -> (f32, f32) {
        match self {
            Similarity::Mse => (x * x, 2.0 * x),
            Similarity::NormalizedMse { a } => {
                let inverse = 1.0 / (a * a + x * x);
                (x * x * inverse, 2.0 * x * a * a * inverse * inverse)
            }
            Similarity::LocalNcc { .. } => unreachable!("local NCC is not a voxel-wise measure"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnergyParams {
    pub lambda: f32,
    pub similarity: Similarity,
    pub steps: u32,
}

impl Default for EnergyParams {
    fn default() -> Self {
        EnergyParams { lambda: 1e-4, similarity: Similarity::NormalizedMse { a: 0.2 }, steps: 7 }
    }
}

/// The energy's parts at one momentum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct EnergyTerms {
    pub regularisation: f64,
    /// ε(M ∘ φ, F): the moving image brought to the fixed one.
    pub forward: f64,
    /// ε(F ∘ φ⁻¹, M): the fixed image brought to the moving one.
    pub backward: f64,
}

impl EnergyTerms {
    pub fn total(&self) -> f64 {
        self.regularisation + 0.5 * self.forward + 0.5 * self.backward
    }
}

/// The energy and its gradient with respect to `momentum` (v = K⁻¹ m).
pub fn energy_and_gradient(
    fixed: &[f32],
    moving: &[f32],
    momentum: &VectorField,
    smoother: &Smoother,
    params: &EnergyParams,
) -> (EnergyTerms, VectorField) {
    energy_and_gradient_from(fixed, moving, None, momentum, smoother, params)
}

/// As `energy_and_gradient`, with the velocity v = base + K⁻¹ m: the images see the whole v,
/// the regulariser only the part m carries. Coarse-to-fine optimisation keeps the coarser
/// levels' velocity as the base and optimises a new momentum on top of it.
pub fn energy_and_gradient_from(
    fixed: &[f32],
    moving: &[f32],
    base: Option<&VectorField>,
    momentum: &VectorField,
    smoother: &Smoother,
    params: &EnergyParams,
) -> (EnergyTerms, VectorField) {
    let velocity = smoother.apply(momentum);
    energy_and_sobolev_gradient(fixed, moving, base, &velocity, momentum, smoother, params)
}

/// The energy at momentum m (velocity K⁻¹ m = `velocity`, on top of `base`) and its gradient
/// with respect to m: K⁻¹ ∂E/∂v + 2λ K⁻¹m / N.
fn energy_and_sobolev_gradient(
    fixed: &[f32],
    moving: &[f32],
    base: Option<&VectorField>,
    velocity: &VectorField,
    momentum: &VectorField,
    smoother: &Smoother,
    params: &EnergyParams,
) -> (EnergyTerms, VectorField) {
    let count = momentum.voxel_count() as f64;
    let regularisation = params.lambda as f64 * velocity.dot(momentum) / count;
    let (forward, backward, grad_v) = image_terms(fixed, moving, base, velocity, None, None, params);
    // ∂⟨K⁻¹m, m⟩/∂m = 2v.
    let gradient = smoother.apply(&grad_v).plus_scaled((2.0 * params.lambda as f64 / count) as f32, velocity);
    (EnergyTerms { regularisation, forward, backward }, gradient)
}

/// Where the velocity lives when it is coarser than the images: on level `velocity_factor` of
/// a full grid of `full_shape`, the images on level `image_factor`. The displacements exp(±v)
/// are computed there and refined (trilinearly) onto the images' level before warping, so the
/// costly scaling and squaring and its backward pass run on the coarse grid only.
#[derive(Clone, Copy, Debug)]
pub struct Refinement {
    pub full_shape: [usize; 3],
    pub velocity_factor: usize,
    pub image_factor: usize,
}

/// The energy in whitened coordinates z, with v = L⁻¹ z (`half` smooths by L⁻¹, the square
/// root of K⁻¹) on top of `base`, and its gradient with respect to z. With m = K v = L z the
/// regulariser ⟨v, m⟩ = ⟨L⁻¹z, L z⟩ = |z|² (exactly so for a cyclic convolution; with zero
/// padding it is the padded domain's value), so in z it is perfectly conditioned and a step
/// along −∂E/∂z moves v along the Sobolev gradient −K⁻¹ ∂E/∂v rather than −K⁻² ∂E/∂v as a step
/// in m does: the optimiser reaches the fine detail of v hundreds of times sooner. The images are
/// compared over `region` (on their grid; None: everywhere).
#[allow(clippy::too_many_arguments)]
pub fn energy_and_gradient_whitened(
    fixed: &[f32],
    moving: &[f32],
    base: Option<&VectorField>,
    z: &VectorField,
    half: &Smoother,
    refinement: Option<Refinement>,
    region: Option<&Region>,
    params: &EnergyParams,
) -> (EnergyTerms, VectorField) {
    let count = z.voxel_count() as f64;
    let regularisation = params.lambda as f64 * z.dot(z) / count;
    let velocity = half.apply(z);
    let (forward, backward, grad_v) = image_terms(fixed, moving, base, &velocity, refinement, region, params);
    drop(velocity);
    let gradient = half.apply(&grad_v).plus_scaled((2.0 * params.lambda as f64 / count) as f32, z);
    (EnergyTerms { regularisation, forward, backward }, gradient)
}

/// The two image terms at velocity `base + velocity` and the gradient of their half-sum
/// ½ε_f + ½ε_b with respect to that velocity.
fn image_terms(
    fixed: &[f32],
    moving: &[f32],
    base: Option<&VectorField>,
    velocity: &VectorField,
    refinement: Option<Refinement>,
    region: Option<&Region>,
    params: &EnergyParams,
) -> (f64, f64, VectorField) {
    let total = match base {
        Some(base) => base.plus_scaled(1.0, velocity),
        None => velocity.clone(),
    };
    let (forward_u, forward_trace) = exp_with_trace(&total, params.steps);
    let (backward_u, backward_trace) = exp_with_trace(&total.scaled(-1.0), params.steps);
    drop(total);
    let term = |source: &[f32], target: &[f32], u: &VectorField| match refinement {
        Some(r) => refined_similarity_and_gradient(source, target, u, r, region, params.similarity),
        None => similarity_and_gradient(source, target, u, region, params.similarity),
    };
    let (forward, grad_forward_u) = term(moving, fixed, &forward_u);
    let (backward, grad_backward_u) = term(fixed, moving, &backward_u);
    // ½ ∂ε_f/∂v − ½ ∂ε_b/∂(−v).
    let mut grad_v = exp_backward(&forward_trace, grad_forward_u);
    let grad_v_backward = exp_backward(&backward_trace, grad_backward_u);
    for c in 0..3 {
        grad_v.components[c].par_iter_mut().zip(&grad_v_backward.components[c]).for_each(|(f, b)| *f = 0.5 * (*f - b));
    }
    (forward, backward, grad_v)
}

/// ε(source ∘ (x + u), target) over `region` and its gradient with respect to u.
fn similarity_and_gradient(
    source: &[f32],
    target: &[f32],
    u: &VectorField,
    region: Option<&Region>,
    similarity: Similarity,
) -> (f64, VectorField) {
    let (warped, within_grid) = warp_image(source, u);
    let mut inside = within_grid.clone();
    let mut left_out = 0;
    if let Some(region) = region {
        assert_eq!(region.shape(), u.shape, "the region on the images' grid");
        let [nx, ny, _] = u.shape;
        for (n, m) in inside.iter_mut().enumerate() {
            if !region.contains([n % nx, n / nx % ny, n / (nx * ny)]) {
                *m = false;
            }
        }
        left_out = region.left_out();
    }
    let count = (inside.iter().filter(|&&m| m).count() + left_out).max(1) as f64;
    if let Similarity::LocalNcc { radius } = similarity {
        let (total, mut gradient, _) = local_ncc_term(&warped, &inside, target, u.shape, radius);
        let scale = (1.0 / count) as f32;
        gradient.par_iter_mut().zip(&within_grid).for_each(|(g, &within)| *g = if within { *g * scale } else { 0.0 });
        return (total / count, warp_image_backward(source, u, &gradient));
    }
    let total = crate::parallel::fold_chunks(
        warped.len(),
        |r| {
            let (warped, target, inside) = (&warped[r.clone()], &target[r.clone()], &inside[r]);
            warped
                .iter()
                .zip(target)
                .zip(inside)
                .filter(|(_, m)| **m)
                .map(|((w, t), _)| similarity.value(w - t) as f64)
                .sum()
        },
        0.0,
        |a, b| a + b,
    );
    let scale = (1.0 / count) as f32;
    let grad_warped: Vec<f32> = warped
        .par_iter()
        .zip(target)
        .zip(&inside)
        .map(|((w, t), m)| if *m { scale * similarity.derivative(w - t) } else { 0.0 })
        .collect();
    (total / count, warp_image_backward(source, u, &grad_warped))
}

/// Local NCC of `warped` against `target` over the voxels `counted`: the summed cost, its
/// gradient with respect to `warped` (every voxel in some counted voxel's window, counted
/// itself or not) and the box that the counted voxels' windows span (the windows are computed
/// only there, and the gradient is zero outside it).
fn local_ncc_term(
    warped: &[f32],
    counted: &[bool],
    target: &[f32],
    shape: [usize; 3],
    radius: u32,
) -> (f64, Vec<f32>, [Range<usize>; 3]) {
    let radius = radius as usize;
    let [nx, ny, _] = shape;
    let (lower, upper) = counted
        .par_chunks(nx)
        .enumerate()
        .filter_map(|(row, counted)| {
            let first = counted.iter().position(|&c| c)?;
            let last = counted.iter().rposition(|&c| c)?;
            let (j, k) = (row % ny, row / ny);
            Some(([first, j, k], [last + 1, j + 1, k + 1]))
        })
        .reduce(
            || (shape, [0; 3]),
            |(l0, u0), (l1, u1)| (std::array::from_fn(|d| l0[d].min(l1[d])), std::array::from_fn(|d| u0[d].max(u1[d]))),
        );
    let bounds: [Range<usize>; 3] = if (0..3).any(|d| lower[d] >= upper[d]) {
        [0..0, 0..0, 0..0]
    } else {
        std::array::from_fn(|d| lower[d].saturating_sub(radius)..(upper[d] + radius).min(shape[d]))
    };
    let (total, gradient) = local_ncc::cost_and_gradient(warped, target, shape, &bounds, radius, |n| counted[n]);
    (total, gradient, bounds)
}

/// `similarity_and_gradient` for a displacement `u` on the coarser grid of `refinement`: the same
/// as refining u onto the images' grid (`refine_field`), comparing there, and taking the gradient
/// back by the refinement's adjoint (`refine_field_adjoint`), in one pass over the image voxels
/// that keeps no field of the images' size (`refined_adjoint`). Only `region`'s span of each row is
/// visited. Local NCC, which compares whole windows, warps first (`refined_local_ncc_and_gradient`).
fn refined_similarity_and_gradient(
    source: &[f32],
    target: &[f32],
    u: &VectorField,
    refinement: Refinement,
    region: Option<&Region>,
    similarity: Similarity,
) -> (f64, VectorField) {
    if let Similarity::LocalNcc { radius } = similarity {
        return refined_local_ncc_and_gradient(source, target, u, refinement, region, radius);
    }
    let shape = level_shape(refinement.full_shape, refinement.image_factor);
    if let Some(region) = region {
        assert_eq!(region.shape(), shape, "the region on the images' grid");
    }
    let span = |j: usize, k: usize| region.map_or(0..shape[0], |r| r.span(j, k));
    let (total, count, gradient) = refined_adjoint(u, refinement, span, |n, p| {
        if !within_voxels(shape, p) {
            return None;
        }
        let (value, slope) = sample_with_gradient(source, shape, p, Outside::Clamp)?;
        let (cost, derivative) = similarity.value_and_derivative(value - target[n]);
        Some((cost, slope.map(|s| derivative * s)))
    });
    let count = count.max(1) as f64;
    (total / count, gradient.scaled((1.0 / count) as f32))
}

/// Local NCC through a displacement on the coarser grid of `refinement`: the moving image warped
/// through the refined displacement (one pass, no refined field kept), compared over whole
/// windows, and the gradient taken back in a second pass.
fn refined_local_ncc_and_gradient(
    source: &[f32],
    target: &[f32],
    u: &VectorField,
    refinement: Refinement,
    region: Option<&Region>,
    radius: u32,
) -> (f64, VectorField) {
    let shape = level_shape(refinement.full_shape, refinement.image_factor);
    let [nx, ny, _] = shape;
    // Only the voxels within the windows of the region's voxels are warped.
    let reach: [Range<usize>; 3] = match region {
        Some(region) => {
            assert_eq!(region.shape(), shape, "the region on the images' grid");
            let bounds = region.bounds();
            std::array::from_fn(|d| {
                if bounds[d].is_empty() {
                    0..0
                } else {
                    bounds[d].start.saturating_sub(radius as usize)..(bounds[d].end + radius as usize).min(shape[d])
                }
            })
        }
        None => shape.map(|n| 0..n),
    };
    let within_reach =
        |j: usize, k: usize| if reach[1].contains(&j) && reach[2].contains(&k) { reach[0].clone() } else { 0..0 };
    let (warped, slopes, mut counted) = refined_warp(source, u, refinement, within_reach);
    let mut left_out = 0;
    if let Some(region) = region {
        counted.par_chunks_mut(nx).enumerate().for_each(|(row, counted)| {
            let span = region.span(row % ny, row / ny);
            for (i, c) in counted.iter_mut().enumerate() {
                *c &= span.contains(&i);
            }
        });
        left_out = region.left_out();
    }
    let count = (counted.par_iter().filter(|&&c| c).count() + left_out).max(1) as f64;
    let (total, grad_warped, [xs, ys, zs]) = local_ncc_term(&warped, &counted, target, shape, radius);
    drop((warped, counted));
    let span = |j: usize, k: usize| if ys.contains(&j) && zs.contains(&k) { xs.clone() } else { 0..0 };
    let scale = (1.0 / count) as f32;
    // The warp kept each sample's slope (zero where the sample fell outside the grid), so the
    // adjoint samples nothing again.
    let (_, _, gradient) = refined_adjoint(u, refinement, span, |n, _| {
        let g = scale * grad_warped[n];
        Some((0.0, slopes[n].map(|s| g * s)))
    });
    (total / count, gradient)
}

/// Where each row of image voxels reads the coarse displacement of a `Refinement`: the refinement
/// is trilinear and separable, and a row of image voxels (fixed y and z) reads one row of coarse
/// cells, so each row first interpolates the coarse field along y and z into a row buffer.
struct CoarseRows {
    /// Per axis and image index: the coarse cell's lower and upper node and the weight of the upper.
    along: [Vec<(usize, usize, f32)>; 3],
    /// Coarse voxels per image voxel (the displacement's rescaling).
    ratio: f32,
    coarse_shape: [usize; 3],
}

impl CoarseRows {
    fn new(u: &VectorField, refinement: Refinement) -> Self {
        let (from, to) = (refinement.velocity_factor, refinement.image_factor);
        let shape = level_shape(refinement.full_shape, to);
        assert_eq!(
            u.shape,
            level_shape(refinement.full_shape, from),
            "the displacement on the refinement's coarse grid"
        );
        let axis = |d: usize| -> Vec<(usize, usize, f32)> {
            (0..shape[d])
                .map(|x| {
                    let mut index = [0usize; 3];
                    index[d] = x;
                    let last = u.shape[d] - 1;
                    let position = coarse_position(index, from, to)[d].clamp(0.0, last as f32);
                    let lower = (position as usize).min(last.saturating_sub(1));
                    (lower, (lower + 1).min(last), position - lower as f32)
                })
                .collect()
        };
        CoarseRows { along: [axis(0), axis(1), axis(2)], ratio: from as f32 / to as f32, coarse_shape: u.shape }
    }

    /// The four coarse rows image row (j, k) lies between (flat offsets of their first node) and
    /// their weights.
    fn corners(&self, j: usize, k: usize) -> ([usize; 4], [f32; 4]) {
        let [cx, cy, _] = self.coarse_shape;
        let ((y0, y1, fy), (z0, z1, fz)) = (self.along[1][j], self.along[2][k]);
        let rows = [(y0, z0), (y1, z0), (y0, z1), (y1, z1)].map(|(y, z)| cx * (y + cy * z));
        (rows, [(1.0 - fy) * (1.0 - fz), fy * (1.0 - fz), (1.0 - fy) * fz, fy * fz])
    }

    /// The coarse field interpolated along y and z onto `row` (rescaled to image voxels).
    fn interpolate(&self, u: &VectorField, (rows, weights): ([usize; 4], [f32; 4]), row: &mut [Vec<f32>; 3]) {
        for c in 0..3 {
            let data = &u.components[c];
            for (x, value) in row[c].iter_mut().enumerate() {
                *value = self.ratio * (0..4).map(|r| weights[r] * data[rows[r] + x]).sum::<f32>();
            }
        }
    }

    /// The displacement at image voxel i of an interpolated row, with its cell along x.
    #[inline]
    fn at(&self, row: &[Vec<f32>; 3], i: usize) -> ([f32; 3], (usize, usize, f32)) {
        let cell @ (x0, x1, fx) = self.along[0][i];
        (std::array::from_fn(|c| (1.0 - fx) * row[c][x0] + fx * row[c][x1]), cell)
    }
}

/// `source` warped through the refined displacement (`refine_field` of `u`, then `warp_image`),
/// without keeping the refined field, at the voxels within `span(j, k)` of each row: the values,
/// their derivatives with respect to the sampled position, and whether each sample fell within
/// the grid (0, zero and false elsewhere).
fn refined_warp(
    source: &[f32],
    u: &VectorField,
    refinement: Refinement,
    span: impl Fn(usize, usize) -> Range<usize> + Sync,
) -> (Vec<f32>, Vec<[f32; 3]>, Vec<bool>) {
    let shape = level_shape(refinement.full_shape, refinement.image_factor);
    assert_eq!(source.len(), shape.iter().product::<usize>(), "images on the refinement's grid");
    let rows = CoarseRows::new(u, refinement);
    let [nx, ny, _] = shape;
    let cx = u.shape[0];
    let mut values = vec![0f32; source.len()];
    let mut slopes = vec![[0f32; 3]; source.len()];
    let mut within = vec![false; source.len()];
    values
        .par_chunks_mut(nx * ny)
        .zip(slopes.par_chunks_mut(nx * ny))
        .zip(within.par_chunks_mut(nx * ny))
        .enumerate()
        .for_each(|(k, ((values, slopes), within))| {
            let mut row = [vec![0f32; cx], vec![0f32; cx], vec![0f32; cx]];
            for j in 0..ny {
                let span = span(j, k);
                if span.is_empty() {
                    continue;
                }
                rows.interpolate(u, rows.corners(j, k), &mut row);
                for i in span {
                    let (d, _) = rows.at(&row, i);
                    let p = [i as f32 + d[0], j as f32 + d[1], k as f32 + d[2]];
                    if !within_voxels(shape, p) {
                        continue;
                    }
                    if let Some((value, slope)) = sample_with_gradient(source, shape, p, Outside::Clamp) {
                        (values[i + nx * j], slopes[i + nx * j], within[i + nx * j]) = (value, slope, true);
                    }
                }
            }
        });
    (values, slopes, within)
}

/// The adjoint of the refinement, in one pass over the image voxels within `span(j, k)` of each
/// row: `voxel(n, p)` gives, for image voxel n sampled at position p = x + u(x), a cost and its
/// gradient with respect to p (None: the voxel is not counted). Returns the summed cost, the
/// number of voxels counted (those with a value, and those the spans leave out) and the gradient
/// of the summed cost with respect to `u`. Each row gathers its gradient in a row buffer, spread
/// back over y and z once per row; each thread scatters its planes into its own coarse gradient.
fn refined_adjoint(
    u: &VectorField,
    refinement: Refinement,
    span: impl Fn(usize, usize) -> Range<usize> + Sync,
    voxel: impl Fn(usize, [f32; 3]) -> Option<(f32, [f32; 3])> + Sync,
) -> (f64, usize, VectorField) {
    let shape = level_shape(refinement.full_shape, refinement.image_factor);
    let rows = CoarseRows::new(u, refinement);
    let ratio = rows.ratio;
    let [nx, ny, nz] = shape;
    let cx = u.shape[0];
    let threads = rayon::current_num_threads().max(1);
    let planes = nz.div_ceil(threads);
    let partials: Vec<(f64, usize, VectorField)> = (0..threads)
        .into_par_iter()
        .map(|t| {
            let (mut total, mut count, mut local_gradient) = (0.0f64, 0usize, VectorField::zeros(u.shape));
            let mut row = [vec![0f32; cx], vec![0f32; cx], vec![0f32; cx]];
            let mut row_gradient = [vec![0f32; cx], vec![0f32; cx], vec![0f32; cx]];
            for k in t * planes..((t + 1) * planes).min(nz) {
                for j in 0..ny {
                    let span = span(j, k);
                    count += nx - span.len();
                    if span.is_empty() {
                        continue;
                    }
                    let corners @ (coarse_rows, weights) = rows.corners(j, k);
                    rows.interpolate(u, corners, &mut row);
                    let (mut row_total, mut touched) = (0.0f32, false);
                    for i in span {
                        let (d, (x0, x1, fx)) = rows.at(&row, i);
                        let p = [i as f32 + d[0], j as f32 + d[1], k as f32 + d[2]];
                        let Some((cost, force)) = voxel(i + nx * (j + ny * k), p) else {
                            continue;
                        };
                        row_total += cost;
                        count += 1;
                        for c in 0..3 {
                            let g = ratio * force[c];
                            row_gradient[c][x0] += (1.0 - fx) * g;
                            row_gradient[c][x1] += fx * g;
                        }
                        touched = true;
                    }
                    total += row_total as f64;
                    if touched {
                        for c in 0..3 {
                            let target = &mut local_gradient.components[c];
                            for (x, g) in row_gradient[c].iter_mut().enumerate() {
                                for r in 0..4 {
                                    target[coarse_rows[r] + x] += weights[r] * *g;
                                }
                                *g = 0.0;
                            }
                        }
                    }
                }
            }
            (total, count, local_gradient)
        })
        .collect();
    let count = partials.iter().map(|p| p.1).sum::<usize>();
    let total: f64 = partials.iter().map(|p| p.0).sum();
    let mut gradient = VectorField::zeros(u.shape);
    for (_, _, part) in &partials {
        gradient.add_scaled(1.0, part);
    }
    (total, count, gradient)
}

/// Only the energy (for line searches and tests).
pub fn energy(
    fixed: &[f32],
    moving: &[f32],
    momentum: &VectorField,
    smoother: &Smoother,
    params: &EnergyParams,
) -> EnergyTerms {
    energy_and_gradient(fixed, moving, momentum, smoother, params).0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffeo::smooth::SmoothParams;

    /// The gradient against central finite differences along a random direction, for both
    /// similarity measures. Momentum and direction vanish towards the border, so that no
    /// sample leaves the grid (the mask would make the energy jump) and the FD are smooth.
    #[test]
    fn gradient_matches_finite_differences() {
        let shape = [20, 18, 16];
        let blob = |p: [f64; 3], c: [f64; 3]| {
            (-((p[0] - c[0]).powi(2) + (p[1] - c[1]).powi(2) + (p[2] - c[2]).powi(2)) / 10.0).exp()
        };
        let image = |c: [f64; 3]| VectorField::from_fn(shape, |p| [blob(p, c), 0.0, 0.0]).components[0].clone();
        let (fixed, moving) = (image([9.5, 8.5, 7.5]), image([10.3, 8.0, 7.9]));
        let bump = |p: [f64; 3]| {
            (0..3).map(|d| (std::f64::consts::PI * p[d] / (shape[d] - 1) as f64).sin().powi(4)).product::<f64>()
        };
        let wave = |p: [f64; 3], s: f64| {
            bump(p) * ((0.6 * p[0] + s).sin() * (0.5 * p[1] - s).cos() + 0.3 * (0.4 * p[2] * s).sin())
        };
        let momentum = VectorField::from_fn(shape, |p| [0.3 * wave(p, 0.3), -0.2 * wave(p, 1.1), 0.25 * wave(p, 2.0)]);
        let direction = VectorField::from_fn(shape, |p| [wave(p, 2.5), -wave(p, 0.2), wave(p, 1.4)]);
        let smoother = Smoother::new(shape, &SmoothParams { alpha: 1.0, gamma: 1.0, pad: 4, spacing_mm: None });
        for similarity in [Similarity::Mse, Similarity::NormalizedMse { a: 0.2 }, Similarity::LocalNcc { radius: 2 }] {
            let params = EnergyParams { lambda: 1e-2, similarity, steps: 5 };
            let (_, grad) = energy_and_gradient(&fixed, &moving, &momentum, &smoother, &params);
            let analytic = grad.dot(&direction);
            let h = 2e-3f32;
            let at = |sign: f32| {
                let mut m = momentum.clone();
                for c in 0..3 {
                    m.components[c].iter_mut().zip(&direction.components[c]).for_each(|(a, b)| *a += sign * h * b);
                }
                energy(&fixed, &moving, &m, &smoother, &params).total()
            };
            let numeric = (at(1.0) - at(-1.0)) / (2.0 * h as f64);
            assert!(
                (analytic - numeric).abs() < 1e-2 * numeric.abs(),
                "{similarity:?}: analytic {analytic} vs finite differences {numeric}"
            );
        }
    }

    /// The whitened energy: its gradient against central finite differences (with a base
    /// velocity underneath), and its value equal to the momentum form when m = L z: the
    /// regulariser |z|² is ⟨v, m⟩ up to the zero padding.
    #[test]
    fn whitened_gradient_matches_finite_differences() {
        let shape = [20, 18, 16];
        let blob = |p: [f64; 3], c: [f64; 3]| {
            (-((p[0] - c[0]).powi(2) + 0.7 * (p[1] - c[1]).powi(2) + (p[2] - c[2]).powi(2)) / 12.0).exp()
        };
        let image = |c: [f64; 3]| VectorField::from_fn(shape, |p| [blob(p, c), 0.0, 0.0]).components[0].clone();
        let (fixed, moving) = (image([9.5, 8.5, 7.5]), image([10.6, 7.9, 8.2]));
        let bump = |p: [f64; 3]| {
            (0..3).map(|d| (std::f64::consts::PI * p[d] / (shape[d] - 1) as f64).sin().powi(4)).product::<f64>()
        };
        let wave = |p: [f64; 3], s: f64| bump(p) * ((0.6 * p[0] + s).sin() * (0.5 * p[1] - s).cos() + 0.3);
        let z = VectorField::from_fn(shape, |p| [0.4 * wave(p, 0.3), -0.3 * wave(p, 1.1), 0.2 * wave(p, 2.0)]);
        let base = VectorField::from_fn(shape, |p| [0.5 * bump(p), 0.2 * bump(p), -0.3 * bump(p)]);
        let direction = VectorField::from_fn(shape, |p| [wave(p, 2.5), -wave(p, 0.2), wave(p, 1.4)]);
        let params = SmoothParams { alpha: 2.0, gamma: 1.0, pad: 4, spacing_mm: None };
        let half = Smoother::half(shape, &params);
        for similarity in [Similarity::Mse, Similarity::NormalizedMse { a: 0.2 }, Similarity::LocalNcc { radius: 2 }] {
            let energy = EnergyParams { lambda: 1e-2, similarity, steps: 5 };
            let at = |z: &VectorField| {
                energy_and_gradient_whitened(&fixed, &moving, Some(&base), z, &half, None, None, &energy)
            };
            let analytic = at(&z).1.dot(&direction);
            let h = 2e-3f32;
            let numeric = (at(&z.plus_scaled(h, &direction)).0.total() - at(&z.plus_scaled(-h, &direction)).0.total())
                / (2.0 * h as f64);
            assert!(
                (analytic - numeric).abs() < 1e-2 * numeric.abs(),
                "{similarity:?}: analytic {analytic} vs finite differences {numeric}"
            );
        }
        // Without padding the convolutions are cyclic and L⁻¹ L⁻¹ = K⁻¹ exactly: the same
        // velocity and the same ⟨v, m⟩ as the momentum form with m = L z.
        let cyclic = SmoothParams { pad: 0, ..params };
        let (half, full, l) =
            (Smoother::half(shape, &cyclic), Smoother::new(shape, &cyclic), Smoother::with_exponent(shape, &cyclic, 1));
        let m = l.apply(&z);
        let (v_half, v_full) = (half.apply(&z), full.apply(&m));
        let difference = v_half.plus_scaled(-1.0, &v_full).max_norm();
        assert!(difference < 1e-4 * v_half.max_norm(), "velocity differs by {difference}");
        let (zz, vm) = (z.dot(&z), v_full.dot(&m));
        assert!((zz - vm).abs() < 1e-4 * zz, "|z|² = {zz}, ⟨v, m⟩ = {vm}");
    }

    /// The one-pass comparison through a coarse displacement equals refining the displacement,
    /// comparing on the images' grid and taking the gradient back by the refinement's adjoint,
    /// on grids that are no multiple of the factors, with samples leaving the grid, everywhere
    /// and over a region that leaves some of every row out.
    #[test]
    fn refined_comparison_equals_refine_compare_and_adjoint() {
        use crate::diffeo::pyramid::{refine_field, refine_field_adjoint};
        use crate::diffeo::region::TissueMask;
        let full = [23, 19, 17];
        let wave = |p: [f64; 3], s: f64| (0.5 * p[0] + s).sin() * (0.4 * p[1] - s).cos() + 0.3 * (0.7 * p[2] * s).sin();
        let ball = VectorField::from_fn(full, |p| {
            [
                if (p[0] - 10.0).powi(2) + (p[1] - 9.0).powi(2) + (p[2] - 8.0).powi(2) < 16.0 { 1.0 } else { 0.0 },
                0.0,
                0.0,
            ]
        });
        let tissue = TissueMask::around(&ball.components[0], &ball.components[1], full, [1.0; 3], 2.0);
        for ((from, to), with_region) in [(4, 1), (4, 2), (2, 1)].into_iter().flat_map(|f| [(f, false), (f, true)]) {
            let region = with_region.then(|| tissue.at_level(to));
            if let Some(region) = &region {
                let count = level_shape(full, to).iter().product::<usize>();
                assert!(region.left_out() > count / 3 && region.left_out() < count, "{}", region.left_out());
            }
            let shape = level_shape(full, to);
            let image = |s: f64| VectorField::from_fn(shape, |p| [wave(p, s), 0.0, 0.0]).components[0].clone();
            let (source, target) = (image(0.3), image(0.9));
            // Up to ~2 voxels of the coarse grid: some samples leave the images' grid.
            let u =
                VectorField::from_fn(level_shape(full, from), |p| [wave(p, 1.7), -wave(p, 0.4), 0.8 * wave(p, 2.2)]);
            let refinement = Refinement { full_shape: full, velocity_factor: from, image_factor: to };
            for similarity in
                [Similarity::Mse, Similarity::NormalizedMse { a: 0.2 }, Similarity::LocalNcc { radius: 2 }]
            {
                let (value, gradient) =
                    refined_similarity_and_gradient(&source, &target, &u, refinement, region.as_ref(), similarity);
                let fine = refine_field(&u, full, from, to);
                let (_, inside) = warp_image(&source, &fine);
                assert!(inside.iter().any(|m| !m), "some samples should leave the grid");
                let (expected_value, fine_gradient) =
                    similarity_and_gradient(&source, &target, &fine, region.as_ref(), similarity);
                let expected = refine_field_adjoint(&fine_gradient, full, from, to);
                assert!(
                    (value - expected_value).abs() < 1e-6 * expected_value.abs(),
                    "{from}->{to} {similarity:?}: {value} vs {expected_value}"
                );
                let error = gradient.plus_scaled(-1.0, &expected).dot(&gradient.plus_scaled(-1.0, &expected)).sqrt()
                    / expected.dot(&expected).sqrt();
                assert!(error < 1e-5, "{from}->{to} {similarity:?}: gradient differs by {error:e} (relative)");
            }
        }
    }

    /// Local NCC through a coarse velocity and over a region (windows reach voxels the region
    /// leaves out): the whitened gradient against central finite differences.
    #[test]
    fn local_ncc_gradient_through_refinement_and_region_matches_finite_differences() {
        use crate::diffeo::region::TissueMask;
        let full = [30, 26, 22];
        let blob = |p: [f64; 3], c: [f64; 3]| {
            let r2 = (p[0] - c[0]).powi(2) + 0.8 * (p[1] - c[1]).powi(2) + (p[2] - c[2]).powi(2);
            if r2 < 49.0 { 1.0 + 0.05 * (0.9 * p[0]).sin() * (0.7 * p[1]).cos() + 0.1 * (-r2 / 8.0).exp() } else { 0.0 }
        };
        let image = |c: [f64; 3], gain: f64| {
            VectorField::from_fn(full, |p| [gain * blob(p, c), 0.0, 0.0]).components[0].clone()
        };
        // The moving image on another grey scale: local NCC does not mind.
        let (fixed, moving) = (image([14.5, 12.5, 10.5], 1.0), image([15.3, 12.0, 11.0], 1.4));
        let velocity_shape = level_shape(full, 2);
        let bump = |p: [f64; 3]| {
            (0..3)
                .map(|d| (std::f64::consts::PI * p[d] / (velocity_shape[d] - 1) as f64).sin().powi(2))
                .product::<f64>()
        };
        let wave = |p: [f64; 3], s: f64| bump(p) * ((0.8 * p[0] + s).sin() * (0.6 * p[1] - s).cos() + 0.3);
        let z = VectorField::from_fn(velocity_shape, |p| [0.4 * wave(p, 0.3), -0.3 * wave(p, 1.1), 0.2 * wave(p, 2.0)]);
        let direction = VectorField::from_fn(velocity_shape, |p| [wave(p, 2.5), -wave(p, 0.2), wave(p, 1.4)]);
        let half = Smoother::half(velocity_shape, &SmoothParams { alpha: 1.0, gamma: 1.0, pad: 4, spacing_mm: None });
        let refinement = Some(Refinement { full_shape: full, velocity_factor: 2, image_factor: 1 });
        let params = EnergyParams { lambda: 1e-3, similarity: Similarity::LocalNcc { radius: 2 }, steps: 5 };
        let region = TissueMask::around(&fixed, &moving, full, [1.0; 3], 2.0).at_level(1);
        assert!(region.left_out() > 0);
        let at = |z: &VectorField| {
            energy_and_gradient_whitened(&fixed, &moving, None, z, &half, refinement, Some(&region), &params)
        };
        let (terms, gradient) = at(&z);
        assert!(terms.forward > 0.0 && terms.forward < 1.0, "{terms:?}");
        let analytic = gradient.dot(&direction);
        let h = 1e-3f32;
        let numeric = (at(&z.plus_scaled(h, &direction)).0.total() - at(&z.plus_scaled(-h, &direction)).0.total())
            / (2.0 * h as f64);
        assert!(
            (analytic - numeric).abs() < 1e-2 * numeric.abs(),
            "analytic {analytic} vs finite differences {numeric}"
        );
    }

    /// Voxels left out count as matched: where both images are the same constant air around
    /// the region (and the displacement stays within the margin), the energy and its gradient
    /// are those compared everywhere; a region that leaves out mismatched voxels lowers the
    /// energy.
    #[test]
    fn left_out_voxels_count_as_matched() {
        use crate::diffeo::region::{Region, TissueMask};
        use crate::diffeo::smooth::SmoothParams;
        let full = [30, 26, 22];
        let blob = |p: [f64; 3], c: [f64; 3]| {
            let r2 = (p[0] - c[0]).powi(2) + (p[1] - c[1]).powi(2) + (p[2] - c[2]).powi(2);
            if r2 < 36.0 { 1.0 + 0.1 * (-r2 / 8.0).exp() } else { 0.0 }
        };
        let image = |c: [f64; 3]| VectorField::from_fn(full, |p| [blob(p, c), 0.0, 0.0]).components[0].clone();
        let (fixed, moving) = (image([14.5, 12.5, 10.5]), image([15.2, 12.1, 10.9]));
        let velocity_shape = level_shape(full, 2);
        let z = VectorField::from_fn(velocity_shape, |p| [0.3 * (0.5 * p[0]).sin(), 0.2 * (0.4 * p[1]).cos(), 0.1]);
        let half = Smoother::half(velocity_shape, &SmoothParams { alpha: 2.0, gamma: 1.0, pad: 4, spacing_mm: None });
        let refinement = Some(Refinement { full_shape: full, velocity_factor: 2, image_factor: 1 });
        let params = EnergyParams { lambda: 1e-2, similarity: Similarity::NormalizedMse { a: 0.2 }, steps: 5 };
        let region = TissueMask::around(&fixed, &moving, full, [1.0; 3], 3.0).at_level(1);
        assert!(region.left_out() > 0);
        let at = |region: Option<&Region>| {
            energy_and_gradient_whitened(&fixed, &moving, None, &z, &half, refinement, region, &params)
        };
        let ((everywhere, gradient), (within, within_gradient)) = (at(None), at(Some(&region)));
        assert!((everywhere.total() - within.total()).abs() < 1e-6 * everywhere.total(), "{everywhere:?} {within:?}");
        let difference = gradient.plus_scaled(-1.0, &within_gradient).max_norm();
        assert!(difference < 1e-5 * gradient.max_norm(), "gradients differ by {difference}");
        // With noise in the air, leaving it out lowers the image terms.
        let noisy: Vec<f32> =
            moving.iter().enumerate().map(|(n, v)| v + 0.05 * ((n * 7919 % 13) as f32 / 6.0 - 1.0)).collect();
        let at_noisy = |region: Option<&Region>| {
            energy_and_gradient_whitened(&fixed, &noisy, None, &z, &half, refinement, region, &params).0.forward
        };
        assert!(at_noisy(Some(&region)) < 0.9 * at_noisy(None));
    }
}

//! The distillation objective (`Objective::Distill`, after Quicksilver, Yang et al. 2017): the
//! network learns to predict, on its own grid, the velocity that the optimiser finds for each
//! training pair. The optimiser needs no ground truth, so this works on a clinic's own pairs as
//! well as on synthetic ones, and it gives the network the size of the motion directly, where
//! the energy's gradient alone let it under-predict (README, "The network").
//!
//! Each pair's target is one full `register --method optimize` run (tens of seconds), so targets
//! are kept in the model folder (`targets/`), keyed by the pair and every parameter that shaped
//! them; a resumed or repeated training reads them back instead of optimising again.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::diffeo::VectorField;
use crate::diffeo::integrate::exp;
use crate::diffeo::pyramid::{downsample, level_shape, refine_field};
use crate::diffeo::smooth::Smoother;
use crate::error::{Error, Result};
use crate::patch::sampler::PatchRef;
use crate::patch::tiling::extract;
use crate::progress::Progress;
use crate::register::optimize::optimize;
use crate::register::pipeline::RegisterParams;
use crate::volume::DisplacementField;
use crate::volume::affine::AffineTransform;
use crate::volume::geometry::{add, sub};

/// The folder of a model folder that keeps the distillation targets.
pub const TARGETS_DIR: &str = "targets";

/// First bytes of a target file.
const MAGIC: &[u8; 8] = b"DRTARG01";

/// What a target depends on, written at the head of its file and compared when reading it.
#[derive(Serialize)]
struct TargetKey<'a> {
    pair: &'a str,
    /// `content_hash` of the pair's images as the optimiser received them, so that a file
    /// replaced under the same name is optimised again.
    content: u64,
    full_shape: [usize; 3],
    spacing_mm: [f64; 3],
    network_factor: usize,
    register: &'a RegisterParams,
}

/// The velocity the optimiser finds between two density images on one grid (`fixed`, and
/// `moving` rigidly aligned and resampled onto it, as `register` optimises them), expressed on
/// the network's grid (1/`factor` resolution) in that grid's voxels: the distillation target.
pub fn optimiser_velocity(
    fixed: &[f32],
    moving: &[f32],
    shape: [usize; 3],
    spacing_mm: [f64; 3],
    factor: usize,
    register: &RegisterParams,
    progress: &dyn Progress,
) -> Result<VectorField> {
    let options = register.optimize.for_spacing(spacing_mm);
    let found = optimize(fixed, moving, shape, spacing_mm, &options, progress)?;
    Ok(on_level(&found.velocity, shape, found.factor, factor))
}

/// Fixed-point steps `truth_velocity` takes to invert the exponential.
const LOG_STEPS: usize = 8;

/// The velocity, on the network's grid (1/`factor` resolution, in that grid's voxels), whose
/// exponential is the known deformation `truth` (fixed grid, mm: fixed point x maps to moving
/// point x + truth(x)) once the rigid stage's `rigid` (fixed → moving points) is taken out: the
/// deformable part u(x) = rigid⁻¹(x + truth(x)) − x that `register` composes with the rigid
/// transform. u is box-averaged onto the network's grid and v found by v ← v + (u − exp(v))
/// (`LOG_STEPS` times, each exp by scaling and squaring in `steps` steps), which converges for
/// the smooth deformations phantoms hold.
pub fn truth_velocity(truth: &DisplacementField, rigid: &AffineTransform, factor: usize, steps: u32) -> VectorField {
    let back = rigid.inverse();
    let geometry = &truth.geometry;
    let mut components_mm: [Vec<f32>; 3] = Default::default();
    for c in &mut components_mm {
        c.reserve(geometry.voxel_count());
    }
    let [nx, ny, nz] = geometry.shape;
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let x = geometry.index_to_world([i as f64, j as f64, k as f64]);
                let mm = sub(back.apply(add(x, truth.at(geometry.linear_index(i, j, k)))), x);
                for d in 0..3 {
                    components_mm[d].push(mm[d] as f32);
                }
            }
        }
    }
    let deformable = DisplacementField::new(geometry.clone(), components_mm).expect("components on the truth's grid");
    let full = VectorField::from_displacement_mm(&deformable);
    let wanted = on_level(&full, geometry.shape, 1, factor);
    let mut velocity = wanted.clone();
    for _ in 0..LOG_STEPS {
        let reached = exp(&velocity, steps);
        velocity.add_scaled(1.0, &wanted);
        velocity.add_scaled(-1.0, &reached);
    }
    velocity
}

/// A voxel-unit velocity of level `from` on level `to` of a grid of `full_shape`: refined
/// when `to` divides `from`, else refined to full resolution and box-averaged.
pub fn on_level(velocity: &VectorField, full_shape: [usize; 3], from: usize, to: usize) -> VectorField {
    if from.is_multiple_of(to) {
        return refine_field(velocity, full_shape, from, to);
    }
    let full = refine_field(velocity, full_shape, from, 1);
    let shape = level_shape(full_shape, to);
    let components =
        full.components.map(|c| downsample(&c, full_shape, to).into_iter().map(|v| v / to as f32).collect());
    VectorField { shape, components }
}

/// FNV-1a (64 bits) of `bytes`: stable across runs and platforms, unlike std's hasher.
fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// A hash of the values of `images` (FNV-1a of their little-endian bits).
pub fn content_hash(images: &[&[f32]]) -> u64 {
    fnv1a(images.iter().flat_map(|image| image.iter()).flat_map(|v| v.to_le_bytes()))
}

/// The distillation target of pair `name` with images of `content_hash` `content`: read from
/// `cache` when a file there was made for this pair, these images and these parameters,
/// otherwise computed by `compute` (and then stored there).
#[allow(clippy::too_many_arguments)]
pub fn cached_target(
    cache: Option<&Path>,
    name: &str,
    content: u64,
    full_shape: [usize; 3],
    spacing_mm: [f64; 3],
    network_factor: usize,
    register: &RegisterParams,
    compute: impl FnOnce() -> Result<VectorField>,
) -> Result<VectorField> {
    let key = TargetKey { pair: name, content, full_shape, spacing_mm, network_factor, register };
    let key = serde_json::to_string(&key).map_err(|e| Error::Invalid(e.to_string()))?;
    let Some(folder) = cache else { return compute() };
    let path = target_path(folder, name);
    if let Some(field) = read_target(&path, &key)? {
        return Ok(field);
    }
    let field = compute()?;
    std::fs::create_dir_all(folder).map_err(|e| Error::io(folder, e))?;
    crate::io::atomic::write_atomically(&path, |w| {
        let header = [MAGIC.as_slice(), &(key.len() as u64).to_le_bytes(), key.as_bytes()].concat();
        let shape: Vec<u8> = field.shape.iter().flat_map(|&n| (n as u64).to_le_bytes()).collect();
        w.write_all(&header)
            .and_then(|()| w.write_all(&shape))
            .and_then(|()| field.components.iter().flatten().try_for_each(|v| w.write_all(&v.to_le_bytes())))
            .map_err(|e| Error::io(&path, e))
    })?;
    Ok(field)
}

/// Where the target of pair `name` is kept in `folder` (an FNV-1a hash of the name; the file
/// itself records the name).
pub fn target_path(folder: &Path, name: &str) -> PathBuf {
    let hash = fnv1a(name.bytes());
    folder.join(format!("{hash:016x}.target"))
}

/// The field in `path` if it exists and was made for `key`; `None` when absent or made for
/// other parameters; an error naming the file when it is damaged.
fn read_target(path: &Path, key: &str) -> Result<Option<VectorField>> {
    let mut bytes = Vec::new();
    match std::fs::File::open(path) {
        Ok(mut file) => file.read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    let damaged = |what: &str| Error::bad_input(path, format!("is not a distillation target ({what}); delete it"));
    let mut rest = bytes.strip_prefix(MAGIC.as_slice()).ok_or_else(|| damaged("no header"))?;
    let mut take = |n: usize| -> Result<&[u8]> {
        if rest.len() < n {
            return Err(damaged("truncated"));
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let number = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize;
    let key_len = number(take(8)?);
    if take(key_len)? != key.as_bytes() {
        return Ok(None);
    }
    let shape: [usize; 3] = [number(take(8)?), number(take(8)?), number(take(8)?)];
    let n = shape.iter().try_fold(1usize, |a, &b| a.checked_mul(b)).ok_or_else(|| damaged("absurd shape"))?;
    let mut components: [Vec<f32>; 3] = Default::default();
    for component in &mut components {
        let data = take(n.checked_mul(4).ok_or_else(|| damaged("absurd shape"))?)?;
        *component = data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect();
    }
    if !rest.is_empty() {
        return Err(damaged("trailing bytes"));
    }
    Ok(Some(VectorField { shape, components }))
}

/// The distillation loss of one batch and its gradient with respect to the network's output.
/// `z` is the whitened momentum [B, 3, P, P, P] flattened; item b's velocity is L⁻¹z on its
/// patch (`half`, as prediction applies it), compared with the target of its pair
/// (`targets[item.pair]`, on the network's grid) over the patch's voxels inside that grid:
/// loss_b = ½ Σ |L⁻¹z − v*|² / (inside voxels). Returns the batch mean and the gradient of
/// that mean (L⁻¹ is self-adjoint: L⁻¹ of the masked residual, divided by the counts).
pub fn distillation_loss(
    z: &[f32],
    batch: &[PatchRef],
    targets: &[&VectorField],
    patch: usize,
    half: &Smoother,
) -> (f64, Vec<f32>) {
    weighted_distillation_loss(z, batch, targets, &[], patch, half)
}

/// `distillation_loss` with a weight per voxel of each pair's grid (`weights[item.pair]`, none
/// for a pair beyond the slice: weight 1): loss_b = ½ Σ w |L⁻¹z − v*|² / Σ w over the patch's
/// voxels inside the grid (0, with no gradient, where that sum is 0), and its gradient L⁻¹ of
/// the weighted residual divided by Σ w. With w the share of each voxel inside the body, the
/// loss counts the motion where endpoint error is measured, not that of the air around it.
pub fn weighted_distillation_loss(
    z: &[f32],
    batch: &[PatchRef],
    targets: &[&VectorField],
    weights: &[Option<&[f32]>],
    patch: usize,
    half: &Smoother,
) -> (f64, Vec<f32>) {
    let voxels = patch * patch * patch;
    let (mut total, mut gradient) = (0.0f64, vec![0.0f32; z.len()]);
    for (b, item) in batch.iter().enumerate() {
        let target = targets[item.pair];
        let shape = target.shape;
        let wanted = extract(&target.components.each_ref().map(Vec::as_slice), shape, item.start, patch);
        let weight = weights.get(item.pair).copied().flatten().map(|w| extract(&[w], shape, item.start, patch));
        let field = VectorField {
            shape: [patch; 3],
            components: std::array::from_fn(|c| z[(3 * b + c) * voxels..(3 * b + c + 1) * voxels].to_vec()),
        };
        let velocity = half.apply(&field);
        let inside = |d: usize, i: usize| item.start[d] + i < shape[d];
        let mut residual = VectorField::zeros([patch; 3]);
        let (mut sum, mut count) = (0.0f64, 0.0f64);
        for k in (0..patch).filter(|&k| inside(2, k)) {
            for j in (0..patch).filter(|&j| inside(1, j)) {
                for i in (0..patch).filter(|&i| inside(0, i)) {
                    let n = i + patch * (j + patch * k);
                    let w = weight.as_ref().map_or(1.0, |w| w[n]);
                    count += w as f64;
                    for c in 0..3 {
                        let r = velocity.components[c][n] - wanted[c * voxels + n];
                        residual.components[c][n] = w * r;
                        sum += w as f64 * (r as f64) * (r as f64);
                    }
                }
            }
        }
        if count <= 0.0 {
            continue;
        }
        total += 0.5 * sum / count;
        let back = half.apply(&residual);
        let scale = 1.0 / (count as f32 * batch.len() as f32);
        for c in 0..3 {
            let out = &mut gradient[(3 * b + c) * voxels..(3 * b + c + 1) * voxels];
            for (o, g) in out.iter_mut().zip(&back.components[c]) {
                *o = scale * g;
            }
        }
    }
    (total / batch.len().max(1) as f64, gradient)
}

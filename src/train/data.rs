//! Training pairs (SPEC §3): each one calibrated to density, the moving image rigidly aligned
//! and resampled onto the fixed grid (what the network sees at prediction), then downsampled to
//! the network's resolution. Pairs come from a CSV of files or from the built-in synthetic
//! generator (random heads, random smooth deformations, pseudo-CT appearance).

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::diffeo::VectorField;
use crate::diffeo::pyramid::{downsample, level_shape};
use crate::error::{Error, Result};
use crate::io::{self, SeriesChoice};
use crate::phantom::synthetic_phantom;
use crate::progress::Progress;
use crate::register::pipeline::align_rigidly;
use crate::train::{Objective, TrainParams, distill};
use crate::volume::{DisplacementField, Volume};

/// Where the training pairs come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PairSource {
    /// A CSV with one pair per row: fixed path, moving path (DICOM folder or NIfTI; relative
    /// paths start at the CSV's folder). A first row `fixed,moving` is a header.
    Csv(PathBuf),
    /// A folder with one sub-folder per pair, each holding a fixed and a moving image: entries
    /// whose names start with `fixed` and `moving` (NIfTI files or DICOM folders), as the
    /// `phantom` command writes them.
    Folder(PathBuf),
    /// `count` synthetic heads (`HeadVariation::random(first_seed + i)`), each deformed by a
    /// random diffeomorphism of up to `max_mm` (phantom seed `first_seed + i`).
    Synthetic { count: usize, shape: [usize; 3], spacing_mm: [f64; 3], first_seed: u64, max_mm: f64 },
    /// The pairs of each source in turn (a clinic's or real-CT pairs with synthetic heads).
    Mixed(Vec<PairSource>),
}

/// One pair as the network sees it: both density images on one grid, downsampled (matched
/// first for a network with `matched_input`), and for the full-resolution objective the pair at
/// full resolution that its loss compares.
#[derive(Clone, Debug)]
pub struct TrainingPair {
    pub name: String,
    pub fixed: Vec<f32>,
    pub moving: Vec<f32>,
    /// The pooled force channels, for a network with `pooled_force` (else none).
    pub force: Vec<Vec<f32>>,
    pub shape: [usize; 3],
    pub full: Option<FullResolutionPair>,
    /// For the distillation and truth objectives: the optimiser's velocity for this pair, or
    /// its known deformation's, on the network's grid in its voxels, less the local estimate
    /// for a network with a local prior.
    pub target: Option<VectorField>,
    /// The weight of each voxel of the network's grid in the target's loss
    /// (`TrainParams::target_in_body`: its share of body), or none (every voxel alike).
    pub target_weight: Option<Vec<f32>>,
    /// The local estimate the network corrects (a network with a local prior), on its grid.
    pub prior: Option<VectorField>,
    /// The size of a voxel of the network's grid, mm per axis.
    pub voxel_mm: [f64; 3],
}

/// Both density images of a pair on the fixed grid at full resolution, matched as the network's
/// input was.
#[derive(Clone, Debug)]
pub struct FullResolutionPair {
    pub fixed: Vec<f32>,
    pub moving: Vec<f32>,
    pub shape: [usize; 3],
    pub spacing_mm: [f64; 3],
    /// The network's grid is this grid downsampled by this.
    pub factor: usize,
}

/// Aligns `moving` to `fixed` rigidly and keeps both densities on the fixed grid, downsampled
/// by the network's resolution factor (and what `params`' network and objective need besides).
/// Distillation targets are read from, or stored into, `targets` when given; `truth` is the
/// pair's known deformation (fixed grid, fixed → moving points), which the truth objective needs.
pub fn prepare_pair(
    name: &str,
    fixed: &Volume,
    moving: &Volume,
    truth: Option<&DisplacementField>,
    params: &TrainParams,
    targets: Option<&Path>,
    progress: &dyn Progress,
) -> Result<TrainingPair> {
    let aligned = align_rigidly(fixed, moving, &params.register, progress)
        .map_err(|e| Error::Invalid(format!("training pair {name}: {e}")))?;
    let shape = fixed.geometry.shape;
    let spacing_mm = fixed.geometry.spacing_mm;
    let spec = params.spec();
    let factor = spec.factor_for(spacing_mm);
    let level = level_shape(shape, factor);
    if level.iter().any(|&n| n < 4) {
        return Err(Error::Invalid(format!("training pair {name}: {shape:?} is too small at 1/{factor} resolution")));
    }
    // The optimiser's answer, found as `register --method optimize` finds it (before matching).
    let target = match params.objective {
        Objective::Distill => {
            let images = [aligned.fixed_density.voxels.as_slice(), aligned.moving_on_fixed.voxels.as_slice()];
            let content = distill::content_hash(&images);
            Some(distill::cached_target(targets, name, content, shape, spacing_mm, factor, &params.register, || {
                progress.start_stage(&format!("optimising {name} (distillation target)"), 0);
                distill::optimiser_velocity(
                    &aligned.fixed_density.voxels,
                    &aligned.moving_on_fixed.voxels,
                    shape,
                    spacing_mm,
                    factor,
                    &params.register,
                    progress,
                )
                .map_err(|e| Error::Invalid(format!("training pair {name}: {e}")))
            })?)
        }
        Objective::Truth => {
            let truth = truth.ok_or_else(|| {
                Error::Invalid(format!(
                    "training pair {name}: the truth objective needs the pair's known deformation \
                     (synthetic pairs, or pair folders holding a truth_fwd field as `phantom` writes them)"
                ))
            })?;
            if !truth.geometry.same_grid(&fixed.geometry, 1e-3) {
                return Err(Error::Invalid(format!(
                    "training pair {name}: its truth_fwd field does not lie on the fixed image's grid"
                )));
            }
            Some(distill::truth_velocity(
                truth,
                &aligned.rigid.transform,
                factor,
                params.register.optimize.energy.steps,
            ))
        }
        _ => None,
    };
    let target_weight = (target.is_some() && params.target_in_body).then(|| {
        let body: Vec<f32> = aligned
            .fixed_density
            .voxels
            .iter()
            .map(|&density| if density >= crate::metrics::BODY_DENSITY { 1.0 } else { 0.0 })
            .collect();
        downsample(&body, shape, factor)
    });
    let prepared = spec
        .prepare_input(
            &aligned.fixed_density.voxels,
            &aligned.moving_on_fixed.voxels,
            Some(&aligned.moving_coverage),
            shape,
            spacing_mm,
            progress,
        )
        .map_err(|e| Error::Invalid(format!("training pair {name}: {e}")))?;
    // A network with a local prior learns what that estimate leaves.
    let target = match (&prepared.prior, target) {
        (Some(prior), Some(target)) => Some(target.plus_scaled(-1.0, prior)),
        (_, target) => target,
    };
    let full = (params.objective == Objective::FullResolution).then(|| FullResolutionPair {
        moving: match &prepared.prior {
            Some(prior) => spec.warped(&prepared.moving, shape, factor, prior),
            None => prepared.moving.clone(),
        },
        fixed: prepared.fixed,
        shape,
        spacing_mm,
        factor,
    });
    let mut channels = prepared.channels;
    let force = channels.split_off(2);
    let [fixed_level, moving_level]: [Vec<f32>; 2] =
        channels.try_into().expect("the network's input starts with the two images");
    Ok(TrainingPair {
        name: name.to_string(),
        fixed: fixed_level,
        moving: moving_level,
        force,
        shape: level,
        full,
        target,
        target_weight,
        prior: prepared.prior,
        voxel_mm: spacing_mm.map(|s| s * factor as f64),
    })
}

/// The pairs of a CSV: (fixed, moving) paths, resolved against the CSV's folder.
pub fn read_pair_list(csv: &Path) -> Result<Vec<(PathBuf, PathBuf)>> {
    let text = std::fs::read_to_string(csv).map_err(|e| Error::io(csv, e))?;
    let folder = csv.parent().unwrap_or(Path::new("."));
    let mut pairs = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if number == 0 && fields.first().is_some_and(|f| f.eq_ignore_ascii_case("fixed")) {
            continue;
        }
        let [fixed, moving] = fields[..] else {
            return Err(Error::bad_input(
                csv,
                format!("line {}: expected two columns (fixed, moving), found {}", number + 1, fields.len()),
            ));
        };
        pairs.push((folder.join(fixed), folder.join(moving)));
    }
    if pairs.is_empty() {
        return Err(Error::bad_input(csv, "lists no pairs"));
    }
    Ok(pairs)
}

/// The pairs of a folder of pair folders (see `PairSource::Folder`), in name order.
pub fn read_pair_folder(folder: &Path) -> Result<Vec<(PathBuf, PathBuf)>> {
    let entries = |dir: &Path| -> Result<Vec<PathBuf>> {
        let mut list: Vec<PathBuf> =
            std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        list.sort();
        Ok(list)
    };
    let named = |paths: &[PathBuf], prefix: &str| {
        paths.iter().find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix))).cloned()
    };
    let mut pairs = Vec::new();
    for case in entries(folder)?.into_iter().filter(|p| p.is_dir()) {
        let inside = entries(&case)?;
        match (named(&inside, "fixed"), named(&inside, "moving")) {
            (Some(fixed), Some(moving)) => pairs.push((fixed, moving)),
            (None, None) => {}
            _ => return Err(Error::bad_input(&case, "holds a fixed or a moving image but not both")),
        }
    }
    if pairs.is_empty() {
        return Err(Error::bad_input(folder, "holds no pair folders (sub-folders with fixed* and moving* images)"));
    }
    Ok(pairs)
}

/// Loads (or generates) every pair of `params.source`, prepared for its network and objective;
/// distillation targets are kept in `targets` (a model folder's `distill::TARGETS_DIR`) if given.
pub fn load_pairs(params: &TrainParams, targets: Option<&Path>, progress: &dyn Progress) -> Result<Vec<TrainingPair>> {
    load_source(&params.source, params, targets, progress)
}

fn load_source(
    source: &PairSource,
    params: &TrainParams,
    targets: Option<&Path>,
    progress: &dyn Progress,
) -> Result<Vec<TrainingPair>> {
    match source {
        PairSource::Mixed(sources) => {
            let mut pairs = Vec::new();
            for source in sources {
                pairs.extend(load_source(source, params, targets, progress)?);
            }
            Ok(pairs)
        }
        PairSource::Csv(_) | PairSource::Folder(_) => {
            let list = match source {
                PairSource::Csv(csv) => read_pair_list(csv)?,
                PairSource::Folder(folder) => read_pair_folder(folder)?,
                PairSource::Synthetic { .. } | PairSource::Mixed(_) => unreachable!("handled apart"),
            };
            let mut pairs = Vec::with_capacity(list.len());
            for (fixed_path, moving_path) in &list {
                progress.check_cancelled()?;
                let fixed = io::load_volume(fixed_path, &SeriesChoice::LargestCt, progress)?;
                let moving = io::load_volume(moving_path, &SeriesChoice::LargestCt, progress)?;
                let name = format!("{} / {}", fixed_path.display(), moving_path.display());
                let truth = match (source, &params.objective) {
                    (PairSource::Folder(_), Objective::Truth) => truth_beside(fixed_path)?,
                    _ => None,
                };
                let truth = truth.as_ref();
                pairs.push(prepare_pair(&name, &fixed.volume, &moving.volume, truth, params, targets, progress)?);
            }
            Ok(pairs)
        }
        // Each pair is made and aligned on its own, so pairs are made in parallel (the work
        // inside one pair is threaded too, but not all of it).
        PairSource::Synthetic { count, shape, spacing_mm, first_seed, max_mm } => (0..*count as u64)
            .into_par_iter()
            .map(|i| {
                progress.check_cancelled()?;
                let seed = first_seed + i;
                synthetic_pair(seed, *shape, *spacing_mm, *max_mm, params, targets, progress)
            })
            .collect(),
    }
}

/// A synthetic training pair: head `HeadVariation::random(seed)` and its phantom of that seed.
pub fn synthetic_pair(
    seed: u64,
    shape: [usize; 3],
    spacing_mm: [f64; 3],
    max_mm: f64,
    params: &TrainParams,
    targets: Option<&Path>,
    progress: &dyn Progress,
) -> Result<TrainingPair> {
    progress.start_stage(&format!("making synthetic pair {seed}"), 0);
    let phantom = synthetic_phantom(seed, shape, spacing_mm, max_mm)?;
    let truth = Some(&phantom.truth_fwd);
    prepare_pair(&format!("synthetic {seed}"), &phantom.fixed, &phantom.moving, truth, params, targets, progress)
}

/// The known deformation of a pair folder (`PairSource::Folder`): the entry beside the fixed
/// image whose name starts with `truth_fwd`, as `phantom` writes it; none when absent.
pub fn truth_beside(fixed_path: &Path) -> Result<Option<DisplacementField>> {
    let folder = fixed_path.parent().unwrap_or(Path::new("."));
    let mut entries: Vec<PathBuf> = std::fs::read_dir(folder)
        .map_err(|e| Error::io(folder, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("truth_fwd")))
        .collect();
    entries.sort();
    entries.first().map(|path| io::fields::read_field(path)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_lists_resolve_paths_skip_headers_and_name_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("pairs.csv");
        std::fs::write(&csv, "fixed,moving\na/ct.nii.gz, a/pct.nii.gz\n\n/abs/ct,/abs/pct\n").unwrap();
        let pairs = read_pair_list(&csv).unwrap();
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[0], (dir.path().join("a/ct.nii.gz"), dir.path().join("a/pct.nii.gz")));
        assert_eq!(pairs[1].0, PathBuf::from("/abs/ct"));
        std::fs::write(&csv, "x.nii,y.nii\nonly-one\n").unwrap();
        let error = read_pair_list(&csv).unwrap_err().to_string();
        assert!(error.contains("pairs.csv") && error.contains("line 2"), "{error}");
    }

    #[test]
    fn pair_folders_hold_a_fixed_and_a_moving_image_each() {
        let dir = tempfile::tempdir().unwrap();
        for case in ["b", "a"] {
            let folder = dir.path().join(case);
            std::fs::create_dir_all(folder.join("fixed_dicom")).unwrap();
            std::fs::write(folder.join("moving.nii.gz"), b"").unwrap();
            std::fs::write(folder.join("truth_fwd.nii.gz"), b"").unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), b"").unwrap();
        let pairs = read_pair_folder(dir.path()).unwrap();
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[0], (dir.path().join("a/fixed_dicom"), dir.path().join("a/moving.nii.gz")));
        std::fs::create_dir_all(dir.path().join("c")).unwrap();
        std::fs::write(dir.path().join("c/fixed.nii"), b"").unwrap();
        let error = read_pair_folder(dir.path()).unwrap_err().to_string();
        assert!(error.contains("/c") && error.contains("not both"), "{error}");
    }
}

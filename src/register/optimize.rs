//! Registration by direct optimisation (SPEC §4): no network, works on any pair. Coarse to fine
//! over resolution levels, on the SPEC energy written in whitened coordinates z (v = L⁻¹ z,
//! m = L z, see `energy_and_gradient_whitened`), by L-BFGS with a backtracking (Armijo) line
//! search; the first step of a level moves the velocity by at most
//! `initial_step_voxels`. Each finer level keeps the coarser levels' velocity, refined, as a
//! fixed base and optimises a new momentum on top.

use serde::{Deserialize, Serialize};

use crate::diffeo::VectorField;
use crate::diffeo::energy::{EnergyParams, EnergyTerms, Refinement, energy_and_gradient_whitened};
use crate::diffeo::pyramid::{downsample, level_shape, refine_field};
use crate::diffeo::region::TissueMask;
use crate::diffeo::smooth::{SmoothParams, Smoother};
use crate::error::{Error, Result};
use crate::matching::intensity::IntensityMatch;
use crate::matching::resolution::{MatchedPair, ResolutionMatch};
use crate::matching::{Switches, match_pair};
use crate::progress::Progress;
use crate::volume::filter::gaussian_blur;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimizeParams {
    /// Resolution levels, coarse to fine, as downsampling factors of the fixed grid. The
    /// velocity lives on the last (finest) one.
    pub levels: Vec<usize>,
    /// Largest number of L-BFGS iterations per level.
    pub iterations: Vec<usize>,
    /// A level stops when the energy fell by less than this share over the last
    /// `CONVERGENCE_WINDOW` iterations (0: run all iterations).
    pub tolerance: f64,
    /// First step of a level (and after a restart): the largest velocity change, voxels.
    pub initial_step_voxels: f32,
    /// Largest such first step after growing on success, voxels.
    pub max_step_voxels: f32,
    /// The velocity lives on a grid this many times coarser than each level's images (1: the
    /// same grid). K⁻¹ keeps it smooth anyway, and the scaling and squaring, the costliest part,
    /// then runs on 1/64 of the voxels (less coarse where that grid would have fewer than 8
    /// voxels along an axis).
    pub velocity_coarsening: usize,
    /// Gaussian blur of both images at each level coarser than full resolution, after
    /// downsampling, in that level's voxels (0: none). Trilinear sampling of a coarse image
    /// blurs its sharp edges most at half-voxel offsets, which lets a coarse level lower its
    /// energy by shifting edges onto voxel centres rather than onto each other; on a 2 mm head
    /// phantom started from the true field, one voxel of blur cut that drift from 0.81 mm to
    /// 0.21 mm at 1/2 resolution. The full-resolution level keeps its detail.
    pub image_sigma_voxels: f32,
    /// Blur the sharper image to the other's resolution first (`resolution::estimate_with`).
    /// (Absent from records written before it existed: read as off, as those runs were.)
    #[serde(default)]
    pub match_resolution: bool,
    /// A level is skipped when the level before it already has voxels no larger than this
    /// (mean over the axes, mm): there the finer level costs much and adds little (0: run
    /// every level).
    #[serde(default)]
    pub finest_voxel_mm: f64,
    /// A level runs at most this many voxel-iterations (its grid's voxels × iterations), so that
    /// on a large grid the finest level runs fewer iterations than `iterations` asks (0: no
    /// limit). (Absent from older records: read as 0.)
    #[serde(default)]
    pub voxel_iterations: f64,
    /// Compare the fixed image through a monotone map onto the moving image's grey scale
    /// (`intensity::estimate_with`), fitted before each level that starts from a velocity.
    /// (Absent from older records: read as off.)
    #[serde(default)]
    pub match_intensity: bool,
    /// Compare the images only within this distance of tissue in either image (mm; see
    /// `diffeo::region`; 0: everywhere). It must exceed the largest displacement expected.
    /// (Absent from older records: read as 0, as those runs compared everywhere.)
    #[serde(default)]
    pub region_margin_mm: f64,
    /// A start velocity (hybrid's prediction) becomes the first level's starting point, charged
    /// by the regulariser with all that is added to it, rather than a fixed, uncharged base: the
    /// optimisation may then undo what the start got wrong. (Absent from older records: read as
    /// off, as those runs kept the base.)
    #[serde(default)]
    pub regularise_start: bool,
    /// With `regularise_start`, the share of the start that the regulariser charges; the rest
    /// stays a fixed, uncharged base, which the optimisation keeps unless the images ask
    /// otherwise (1: all of it charged; 0: the whole start a base, as without
    /// `regularise_start`). (Absent from older records: read as 1, as those runs charged it all.)
    #[serde(default = "whole_share")]
    pub start_charged_share: f64,
    /// Compare the images only where the moving image has data after the rigid alignment
    /// (`register::pipeline::coverage`). (Absent from older records: read as off, as those runs
    /// compared everywhere.)
    #[serde(default)]
    pub field_of_view: bool,
    pub energy: EnergyParams,
    pub smooth: SmoothParams,
}

impl Default for OptimizeParams {
    fn default() -> Self {
        OptimizeParams {
            levels: vec![4, 2, 1],
            iterations: vec![150, 60, 160],
            initial_step_voxels: 0.25,
            max_step_voxels: 1.0,
            velocity_coarsening: 4,
            tolerance: 1e-4,
            image_sigma_voxels: 1.0,
            match_resolution: true,
            // Measured on the 256×256×128 phantom at 0.9×1.0×1.6 mm (Greedy: 1.24 mm in 108 s):
            // stopping at 1/2 resolution (the limit was 2.5 mm) 1.77 mm in 15 s; full resolution
            // for 45 / 60 / 90 iterations 1.16 / 1.12 / 0.94 mm in 33 / 38 / 49 s. On the
            // 400×400×250 phantom at 0.5×0.6×0.9 mm (Greedy: 0.96 mm in 575 s), levels 1/4 and
            // 1/2 (what a limit of 1.5 mm left) with 60 / 152 iterations at 1/2: 1.34 / 0.99 mm in
            // 61 / 72 s; with 152 at 1/2 and 19 at full resolution 0.93 mm in 107 s. So no level
            // is skipped; the budget below sets the finest levels' iterations. With local NCC on
            // the real-CT development seeds 1–4 (256×256×108), 107 full-resolution iterations
            // (a budget of 7.6e8) gave forward mean EPE 1.25 / 0.50 / 0.86 / 0.87 mm, 70 (5e8)
            // 1.28 / 0.51 / 0.88 / 0.91 mm in 103–131 s against 167–190 s; Greedy took 144–145 s
            // on seeds 1 and 2 in the same session.
            finest_voxel_mm: 0.0,
            voxel_iterations: 5.0e8,
            // On real-CT development pairs (seeds 1–4) mapping the fixed image's grey values
            // onto the moving image's made the result worse (0.537× rigid against 0.373×
            // without; one pair with filled sinuses 2.31 mm against 0.72 mm).
            match_intensity: false,
            region_margin_mm: 12.0,
            regularise_start: false,
            start_charged_share: 1.0,
            field_of_view: true,
            // λ for ⟨v, m⟩ taken as a mean over the velocity grid's voxels, and a = 0.1 in the
            // normalised MSE (SPEC: 0.2; a smaller a weighs soft-tissue contrast more). On the
            // demo phantom with grey-value matching and 200 full-resolution iterations, the
            // velocity 2× coarser than the images: λ 0.005 / 0.01 / 0.02 gave mean endpoint error
            // 1.01 / 1.05 / 1.12 mm, a 0.05 / 0.2 (λ 0.005) 1.01 / 1.09 mm; 4× coarser, λ 0.001 /
            // 0.0025: 0.97 / 0.99 mm at 0.3 s rather than 0.5 s an iteration (a 2× coarser grid
            // makes the same λ charge a field's bending 4× more). 120 iterations: 1.01 mm.
            // The similarity is local NCC (5³ windows): on real-CT development seeds 1–4 forward
            // mean EPE 1.25 / 0.50 / 0.86 / 0.87 mm against the normalised MSE's (a = 0.1)
            // 1.53 / 0.72 / 0.92 / 1.10, at about 2.5× the time (121–148 s against ~55 s).
            energy: EnergyParams {
                lambda: 0.002,
                similarity: crate::diffeo::energy::Similarity::LocalNcc { radius: 2 },
                ..EnergyParams::default()
            },
            // γ 0.05 rather than SPEC's 1: γ is what ⟨v, m⟩ charges for the smoothest part of
            // the field (near-translations over the head), which the images constrain well; on
            // the demo phantom γ 1 / 0.2 / 0.05 / 0.01 gave 1.44 / 1.36 / 1.27 / 1.34 mm (λ 0.003,
            // the same fixed blur).
            smooth: SmoothParams { gamma: 0.05, ..SmoothParams::default() },
        }
    }
}

/// Iterations over which `tolerance` is judged.
pub const CONVERGENCE_WINDOW: usize = 5;

/// Steps L-BFGS remembers for its curvature estimate. Measured on the demo case (full-resolution
/// iterations → mean endpoint error): 8 steps 120 → 1.017 mm, 160 → 1.016, 200 → 0.993; 20 steps
/// 120 → 1.002, 160 → 0.978; 40 steps 100 → 1.087, 130 → 1.055 (more line-search trials).
pub const LBFGS_MEMORY: usize = 20;

/// One energy evaluation during the optimisation.
#[derive(Clone, Debug, Serialize)]
pub struct IterationRecord {
    pub level: usize,
    pub iteration: usize,
    pub energy: EnergyTerms,
}

pub struct Optimized {
    /// The velocity, in voxels of level `factor`, on that level's grid.
    pub velocity: VectorField,
    pub factor: usize,
    pub history: Vec<IterationRecord>,
    /// The blur that matched the two images' resolutions, when it was estimated.
    pub resolution: Option<ResolutionMatch>,
    /// The grey-value map the fixed image was compared through at the last level, when fitted.
    pub intensity: Option<IntensityMatch>,
}

impl OptimizeParams {
    /// These parameters with the levels (and their iterations) that a grid of `spacing_mm`
    /// needs: levels after one whose voxels are already within `finest_voxel_mm` are dropped.
    pub fn for_spacing(&self, spacing_mm: [f64; 3]) -> OptimizeParams {
        let mut params = self.clone();
        if self.finest_voxel_mm > 0.0 {
            let mean_spacing = spacing_mm.iter().sum::<f64>() / 3.0;
            let keep = (1..self.levels.len())
                .find(|&n| self.levels[n - 1] as f64 * mean_spacing <= self.finest_voxel_mm)
                .unwrap_or(self.levels.len());
            params.levels.truncate(keep);
            params.iterations.truncate(keep);
        }
        params
    }

    /// `iterations` on a level grid of `shape`, or fewer where `voxel_iterations` says so.
    pub fn iterations_within_budget(&self, iterations: usize, shape: [usize; 3]) -> usize {
        if self.voxel_iterations > 0.0 {
            let voxels = shape.iter().product::<usize>() as f64;
            iterations.min((self.voxel_iterations / voxels).floor() as usize)
        } else {
            iterations
        }
    }

    /// The iterations each level runs on a full grid of `shape`: as configured, within the
    /// voxel-iteration budget, and those the finest level cannot run within it added to the level
    /// before (within that level's budget): a large grid then converges further at 1/2
    /// resolution, where an iteration costs 1/8, before its few full-resolution iterations.
    pub fn iterations_per_level(&self, shape: [usize; 3]) -> Vec<usize> {
        let mut counts: Vec<usize> = self
            .levels
            .iter()
            .zip(&self.iterations)
            .map(|(&factor, &iterations)| self.iterations_within_budget(iterations, level_shape(shape, factor)))
            .collect();
        let n = counts.len();
        if n >= 2 {
            let short = self.iterations[n - 1] - counts[n - 1];
            counts[n - 2] =
                self.iterations_within_budget(self.iterations[n - 2] + short, level_shape(shape, self.levels[n - 2]));
        }
        counts
    }
}

/// Optimises the velocity between two density images on the same grid of `shape`, with voxels
/// of `spacing_mm`.
pub fn optimize(
    fixed: &[f32],
    moving: &[f32],
    shape: [usize; 3],
    spacing_mm: [f64; 3],
    params: &OptimizeParams,
    progress: &dyn Progress,
) -> Result<Optimized> {
    optimize_from(fixed, moving, None, shape, spacing_mm, params, None, progress)
}

/// As `optimize`, starting from `initial` (a velocity in voxels of its level and that level's
/// factor, e.g. the network's prediction), which the first level keeps as a fixed base and
/// optimises a momentum on top of, or with `regularise_start` starts from and charges (the
/// share `start_charged_share` of it; the rest stays a base). With `covered` (a flag per
/// voxel: the moving image has data there), the images are compared only where it is set.
#[allow(clippy::too_many_arguments)]
pub fn optimize_from(
    fixed: &[f32],
    moving: &[f32],
    covered: Option<&[bool]>,
    shape: [usize; 3],
    spacing_mm: [f64; 3],
    params: &OptimizeParams,
    initial: Option<Optimized>,
    progress: &dyn Progress,
) -> Result<Optimized> {
    if params.levels.is_empty() || params.levels.len() != params.iterations.len() {
        return Err(Error::Invalid("give as many iteration counts as resolution levels".into()));
    }
    if params.levels.windows(2).any(|w| w[1] > w[0] || w[0] % w[1] != 0) {
        return Err(Error::Invalid(format!(
            "levels {:?} must go coarse to fine, each dividing the last",
            params.levels
        )));
    }
    let charge_start = params.regularise_start && initial.is_some();
    let (mut velocity, mut history) = match initial {
        Some(start) => (Some((start.velocity, start.factor)), start.history),
        None => (None, Vec::new()),
    };
    let (mut resolution, mut intensity) = (None, None);
    let tissue = (params.region_margin_mm > 0.0)
        .then(|| TissueMask::around(fixed, moving, shape, spacing_mm, params.region_margin_mm));
    let tissue = match covered {
        Some(covered) => Some(tissue.unwrap_or_else(|| TissueMask::everywhere(shape)).within(covered)),
        None => tissue,
    };
    for (index, (&factor, iterations)) in params.levels.iter().zip(params.iterations_per_level(shape)).enumerate() {
        let level = level_shape(shape, factor);
        if level.contains(&1) {
            return Err(Error::Invalid(format!("the grid {shape:?} is too small for level {factor}")));
        }
        // Every level that starts from a velocity (the coarser levels', or a network's) compares
        // the images at the same resolution and on the same grey scale, both estimated with the
        // moving image warped by that velocity: left misaligned, the pair would ask for more
        // blur and a flatter map than it needs. The first level of a plain optimisation starts
        // from the rigid alignment alone and compares the images as they are.
        let matched = match &velocity {
            Some(start) if params.match_resolution || params.match_intensity => {
                progress.start_stage("matching resolutions and grey values", 0);
                let switches = Switches { resolution: params.match_resolution, intensity: params.match_intensity };
                let found = match_pair(fixed, moving, shape, start, switches, params.energy.steps);
                (resolution, intensity) = (found.1, found.2);
                found.0
            }
            _ => MatchedPair::unchanged(fixed, moving),
        };
        progress.start_stage(&format!("optimising at 1/{factor} resolution"), iterations as u64);
        let (mut fixed_level, mut moving_level) =
            (downsample(matched.fixed(), shape, factor), downsample(matched.moving(), shape, factor));
        drop(matched);
        if factor > 1 {
            gaussian_blur(&mut fixed_level, level, params.image_sigma_voxels);
            gaussian_blur(&mut moving_level, level, params.image_sigma_voxels);
        }
        // The velocity lives `velocity_coarsening` times coarser than the images, or less where
        // that grid would have fewer than 8 voxels along an axis.
        let velocity_factor =
            std::iter::successors(Some(params.velocity_coarsening.max(1)), |&c| (c > 1).then_some(c / 2))
                .map(|c| factor * c)
                .find(|&coarser| level_shape(shape, coarser).iter().all(|&n| n >= 8))
                .unwrap_or(factor);
        let velocity_shape = level_shape(shape, velocity_factor);
        let refinement = (velocity_factor != factor).then_some(Refinement {
            full_shape: shape,
            velocity_factor,
            image_factor: factor,
        });
        let half = Smoother::half(velocity_shape, &params.smooth);
        let region = tissue.as_ref().map(|mask| mask.at_level(factor));
        let mut base = velocity.take().map(|(coarser, from)| refine_field(&coarser, shape, from, velocity_factor));
        let mut momentum = VectorField::zeros(velocity_shape);
        if charge_start
            && index == 0
            && let Some(start) = base.take()
        {
            let charged = params.start_charged_share.clamp(0.0, 1.0) as f32;
            let l = Smoother::with_exponent(velocity_shape, &params.smooth, 1);
            momentum = whitened(&start.scaled(charged), &half, &l);
            if charged < 1.0 {
                base = Some(start.scaled(1.0 - charged));
            }
        }
        let evaluate = |m: &VectorField| -> Result<(EnergyTerms, VectorField)> {
            let (energy, gradient) = energy_and_gradient_whitened(
                &fixed_level,
                &moving_level,
                base.as_ref(),
                m,
                &half,
                refinement,
                region.as_ref(),
                &params.energy,
            );
            if energy.total().is_finite() {
                Ok((energy, gradient))
            } else {
                Err(Error::Invalid(format!("the energy became {} at level {factor}", energy.total())))
            }
        };
        let (mut energy, mut gradient) = evaluate(&momentum)?;
        let mut search = Lbfgs::new(LBFGS_MEMORY);
        let mut radius = params.initial_step_voxels;
        let mut recent = std::collections::VecDeque::with_capacity(CONVERGENCE_WINDOW + 1);
        for iteration in 0..iterations {
            progress.check_cancelled()?;
            history.push(IterationRecord { level: factor, iteration, energy });
            progress.advance(1);
            recent.push_back(energy.total());
            if recent.len() > CONVERGENCE_WINDOW {
                let old = recent.pop_front().unwrap();
                if old - energy.total() < params.tolerance * old.abs() {
                    break;
                }
            }
            let mut direction = search.direction(&gradient);
            let mut slope = gradient.dot(&direction);
            if slope.is_nan() || slope >= 0.0 {
                search.clear();
                direction = gradient.scaled(-1.0);
                slope = gradient.dot(&direction);
            }
            // The first step of a level (no curvature known yet) is sized so that the velocity
            // moves by at most `radius` voxels; later L-BFGS steps have their natural length.
            let mut step = if search.is_empty() {
                let largest = half.apply(&direction).max_norm();
                if largest == 0.0 {
                    break;
                }
                (radius / largest) as f64
            } else {
                1.0
            };
            let mut accepted = None;
            for _ in 0..12 {
                let trial = momentum.plus_scaled(step as f32, &direction);
                let (trial_energy, trial_gradient) = evaluate(&trial)?;
                // Armijo: enough decrease for the slope.
                if trial_energy.total() <= energy.total() + 1e-4 * step * slope {
                    accepted = Some((trial, trial_energy, trial_gradient));
                    break;
                }
                step *= 0.5;
            }
            let Some((trial, trial_energy, trial_gradient)) = accepted else {
                if search.is_empty() {
                    break;
                }
                search.clear();
                radius *= 0.5;
                continue;
            };
            search.remember(trial.plus_scaled(-1.0, &momentum), trial_gradient.plus_scaled(-1.0, &gradient));
            (momentum, energy, gradient) = (trial, trial_energy, trial_gradient);
            radius = (radius * 1.25).min(params.max_step_voxels);
        }
        let mut total = half.apply(&momentum);
        if let Some(base) = &base {
            total = total.plus_scaled(1.0, base);
        }
        velocity = Some((total, velocity_factor));
    }
    let (velocity, factor) = velocity.expect("at least one level ran");
    Ok(Optimized { velocity, factor, history, resolution, intensity })
}

fn whole_share() -> f64 {
    1.0
}

/// The whitened coordinates z of a velocity v: the solution of L⁻¹ z = v on the velocity's grid
/// (`half` is L⁻¹, zero padded and cropped, so symmetric positive definite there), by conjugate
/// gradients from z = L v (`l`), which is exact but for the grid's border: L v computed with
/// zero padding misses the part of L's response that falls outside the grid.
fn whitened(velocity: &VectorField, half: &Smoother, l: &Smoother) -> VectorField {
    let mut z = l.apply(velocity);
    let mut residual = velocity.plus_scaled(-1.0, &half.apply(&z));
    let mut direction = residual.clone();
    let mut squared = residual.dot(&residual);
    let goal = 1e-8 * velocity.dot(velocity);
    for _ in 0..200 {
        if squared <= goal {
            break;
        }
        let applied = half.apply(&direction);
        let step = squared / direction.dot(&applied);
        z.add_scaled(step as f32, &direction);
        residual.add_scaled(-step as f32, &applied);
        let next = residual.dot(&residual);
        direction = residual.plus_scaled((next / squared) as f32, &direction);
        squared = next;
    }
    z
}

/// Limited-memory BFGS (Nocedal & Wright, algorithm 7.4): the search direction from the last
/// few steps and gradient changes.
struct Lbfgs {
    capacity: usize,
    /// (s = step, y = gradient change, 1 / yᵀs)
    pairs: std::collections::VecDeque<(VectorField, VectorField, f64)>,
}

impl Lbfgs {
    fn new(capacity: usize) -> Self {
        Lbfgs { capacity, pairs: std::collections::VecDeque::new() }
    }

    fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    fn clear(&mut self) {
        self.pairs.clear();
    }

    fn remember(&mut self, step: VectorField, gradient_change: VectorField) {
        let curvature = gradient_change.dot(&step);
        // Without positive curvature the pair would break the positive-definite estimate.
        if curvature <= 1e-12 * step.dot(&step).sqrt() * gradient_change.dot(&gradient_change).sqrt() {
            return;
        }
        if self.pairs.len() == self.capacity {
            self.pairs.pop_front();
        }
        self.pairs.push_back((step, gradient_change, 1.0 / curvature));
    }

    /// −H·gradient with the two-loop recursion.
    fn direction(&self, gradient: &VectorField) -> VectorField {
        let mut q = gradient.clone();
        let mut alphas = Vec::with_capacity(self.pairs.len());
        for (s, y, rho) in self.pairs.iter().rev() {
            let alpha = rho * s.dot(&q);
            q.add_scaled(-alpha as f32, y);
            alphas.push(alpha);
        }
        if let Some((s, y, _)) = self.pairs.back() {
            q = q.scaled((s.dot(y) / y.dot(y)) as f32);
        }
        for ((s, y, rho), alpha) in self.pairs.iter().zip(alphas.into_iter().rev()) {
            let beta = rho * y.dot(&q);
            q.add_scaled((alpha - beta) as f32, s);
        }
        for component in &mut q.components {
            component.iter_mut().for_each(|v| *v = -*v);
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffeo::energy::Similarity;
    use crate::progress::Silent;

    /// Levels after one whose voxels are already within `finest_voxel_mm` are dropped.
    #[test]
    fn levels_follow_the_voxel_size() {
        let params = OptimizeParams { finest_voxel_mm: 1.5, ..OptimizeParams::default() };
        assert_eq!((params.levels.clone(), params.iterations.clone()), (vec![4, 2, 1], vec![150, 60, 160]));
        // 1.8 mm voxels: level 2 has 3.6 mm, so full resolution still runs; 0.9–1.6 mm voxels
        // too (level 2: 2.3 mm).
        assert_eq!(params.for_spacing([1.6, 1.9, 1.9]).levels, vec![4, 2, 1]);
        assert_eq!(params.for_spacing([0.9, 1.0, 1.6]).levels, vec![4, 2, 1]);
        // 0.5–0.9 mm voxels: level 2 has 1.3 mm, enough.
        let fine = params.for_spacing([0.5, 0.6, 0.9]);
        assert_eq!((fine.levels, fine.iterations), (vec![4, 2], vec![150, 60]));
        // 0.3 mm voxels: level 4 already has 1.2 mm.
        assert_eq!(params.for_spacing([0.3, 0.3, 0.3]).levels, vec![4]);
        let every = OptimizeParams::default();
        assert_eq!(every.for_spacing([0.5, 0.5, 0.5]).levels, vec![4, 2, 1]);
    }

    /// What the finest level cannot run within the budget, the level before it runs: none on the
    /// demo's grid, 101 on 256×256×128 (its full resolution runs 59 of 160), and on 400×400×250
    /// the level before reaches its own budget (100) while full resolution runs 12.
    #[test]
    fn the_finest_levels_shortfall_goes_to_the_level_before() {
        let params = OptimizeParams::default();
        assert_eq!(params.iterations_per_level([128, 128, 128]), vec![150, 60, 160]);
        assert_eq!(params.iterations_per_level([256, 256, 128]), vec![150, 161, 59]);
        assert_eq!(params.iterations_per_level([256, 256, 108]), vec![150, 150, 70]);
        assert_eq!(params.iterations_per_level([400, 400, 250]), vec![150, 100, 12]);
        let unlimited = OptimizeParams { voxel_iterations: 0.0, ..OptimizeParams::default() };
        assert_eq!(unlimited.iterations_per_level([400, 400, 250]), vec![150, 60, 160]);
        let one = OptimizeParams { levels: vec![1], iterations: vec![160], ..OptimizeParams::default() };
        assert_eq!(one.iterations_per_level([400, 400, 250]), vec![12]);
    }

    /// The demo's 128³ grid runs every iteration asked; a 256×256×128 grid 59 at full
    /// resolution; no budget, all of them.
    #[test]
    fn large_grids_run_fewer_iterations() {
        let params = OptimizeParams::default();
        assert_eq!(params.iterations_within_budget(160, [128, 128, 128]), 160);
        assert_eq!(params.iterations_within_budget(160, [256, 256, 128]), 59);
        assert_eq!(params.iterations_within_budget(60, [128, 128, 64]), 60);
        let unlimited = OptimizeParams { voxel_iterations: 0.0, ..OptimizeParams::default() };
        assert_eq!(unlimited.iterations_within_budget(160, [512, 512, 300]), 160);
    }

    /// Two smooth blobs 3, −2 and 1.5 voxels apart: every level setting finds that shift at the
    /// fixed blob's centre.
    #[test]
    fn recovers_the_shift_between_two_blobs() {
        let shape = [48, 44, 40];
        let blob = |p: [f64; 3], c: [f64; 3]| {
            (-((p[0] - c[0]).powi(2) + 0.5 * (p[1] - c[1]).powi(2) + (p[2] - c[2]).powi(2)) / 60.0).exp()
        };
        let image = |c: [f64; 3]| VectorField::from_fn(shape, |p| [blob(p, c), 0.0, 0.0]).components[0].clone();
        let (fixed, moving) = (image([23.0, 21.0, 19.0]), image([26.0, 19.0, 20.5]));
        for levels in [vec![2], vec![4, 2]] {
            let iterations = levels.iter().map(|_| 80).collect();
            // The blobs fill little of the grid, so their image term is small: a light λ.
            let energy = EnergyParams { lambda: 1e-4, ..EnergyParams::default() };
            let options = OptimizeParams { levels: levels.clone(), iterations, energy, ..OptimizeParams::default() };
            let result = optimize(&fixed, &moving, shape, [1.0; 3], &options, &Silent).unwrap();
            let v = refine_field(&result.velocity, shape, result.factor, 1);
            let at_centre = v.at(23 + 48 * (21 + 44 * 19));
            for (got, want) in at_centre.iter().zip([3.0, -2.0, 1.5]) {
                assert!((got - want).abs() < 0.3, "levels {levels:?}: {at_centre:?}");
            }
            assert!(result.history.last().unwrap().energy.total() < 0.1 * result.history[0].energy.total());
        }
    }

    /// Beyond the moving image's field of view (x ≥ 30 here) the resampled image holds nothing
    /// (air, or whatever the resampling left). Compared only where it has data, the result does
    /// not depend on what is there, once it is farther than the displacement and the local NCC
    /// window reach; compared everywhere, it does.
    #[test]
    fn the_comparison_keeps_to_the_moving_images_field_of_view() {
        let shape = [48, 44, 40];
        let blob = |p: [f64; 3], c: [f64; 3]| {
            (-((p[0] - c[0]).powi(2) + 0.5 * (p[1] - c[1]).powi(2) + (p[2] - c[2]).powi(2)) / 60.0).exp()
        };
        let image = |p: [f64; 3], d: [f64; 3]| {
            blob(p, [18.0 + d[0], 21.0 + d[1], 19.0 + d[2]]) + blob(p, [34.0 + d[0], 21.0 + d[1], 19.0 + d[2]])
        };
        let fixed = VectorField::from_fn(shape, |p| [image(p, [0.0; 3]), 0.0, 0.0]).components[0].clone();
        let moving_with = |beyond: f64| {
            VectorField::from_fn(shape, |p| {
                let value = if p[0] < 30.0 { image(p, [3.0, -2.0, 1.5]) } else { 0.0 };
                [if p[0] >= 38.0 { beyond * (p[1] * 0.7).sin() } else { value }, 0.0, 0.0]
            })
            .components[0]
                .clone()
        };
        let covered: Vec<bool> = (0..fixed.len()).map(|n| n % 48 < 30).collect();
        let options = OptimizeParams {
            levels: vec![1],
            iterations: vec![30],
            region_margin_mm: 0.0,
            ..OptimizeParams::default()
        };
        let velocity = |moving: &[f32], covered: Option<&[bool]>| {
            optimize_from(&fixed, moving, covered, shape, [1.0; 3], &options, None, &Silent).unwrap().velocity
        };
        let (air, noise) = (moving_with(0.0), moving_with(0.8));
        let difference = |a: &VectorField, b: &VectorField| a.plus_scaled(-1.0, b).max_norm();
        let within = difference(&velocity(&air, Some(&covered)), &velocity(&noise, Some(&covered)));
        let everywhere_air = velocity(&air, None);
        let everywhere = difference(&everywhere_air, &velocity(&noise, None));
        assert!(within < 1e-6, "within the field of view: {within} voxels apart");
        assert!(everywhere > 0.05 * everywhere_air.max_norm(), "everywhere: {everywhere} voxels apart");
    }

    /// The whitened coordinates of a velocity give it back through L⁻¹, at the grid's border
    /// too, where L v alone (zero padded) does not.
    #[test]
    fn whitened_coordinates_give_the_velocity_back() {
        let shape = [12, 10, 9];
        let velocity = VectorField::from_fn(shape, |p| {
            [0.5 + 0.3 * (p[1] * 0.6).sin(), 0.2 * (p[0] * 0.5).cos() * (p[2] * 0.3).sin(), -0.4]
        });
        let smooth = SmoothParams { gamma: 0.05, ..SmoothParams::default() };
        let (half, l) = (Smoother::half(shape, &smooth), Smoother::with_exponent(shape, &smooth, 1));
        let off = |z: &VectorField| half.apply(z).plus_scaled(-1.0, &velocity).max_norm();
        let (solved, direct) = (off(&whitened(&velocity, &half, &l)), off(&l.apply(&velocity)));
        assert!(solved < 1e-3, "through the solution: {solved} voxels off");
        assert!(direct > 0.05, "L v alone: {direct} voxels off");
    }

    /// A start velocity that the images do not ask for (the two images are the same): kept as a
    /// fixed base it stays, charged by the regulariser (`regularise_start`) it is undone, and
    /// with half of it charged (`start_charged_share`) about half of it is left.
    #[test]
    fn a_regularised_start_can_be_undone() {
        let shape = [32, 32, 32];
        let image = VectorField::from_fn(shape, |p| {
            [(-((p[0] - 16.0).powi(2) + (p[1] - 15.0).powi(2) + (p[2] - 17.0).powi(2)) / 40.0).exp(), 0.0, 0.0]
        })
        .components[0]
            .clone();
        let start_velocity =
            VectorField::from_fn([8, 8, 8], |p| [0.3 * (p[1] * 0.8).sin(), 0.0, 0.2 * (p[0] * 0.9).cos()]);
        let energy = EnergyParams { lambda: 1e-3, ..EnergyParams::default() };
        let result = |regularise_start: bool, start_charged_share: f64| {
            let options = OptimizeParams {
                levels: vec![4],
                iterations: vec![60],
                energy: energy.clone(),
                region_margin_mm: 0.0,
                regularise_start,
                start_charged_share,
                ..OptimizeParams::default()
            };
            let start = Optimized {
                velocity: start_velocity.clone(),
                factor: 4,
                history: Vec::new(),
                resolution: None,
                intensity: None,
            };
            let result = optimize_from(&image, &image, None, shape, [1.0; 3], &options, Some(start), &Silent).unwrap();
            refine_field(&result.velocity, shape, result.factor, 4)
        };
        let start = start_velocity.max_norm();
        let (kept, undone) = (result(false, 1.0).max_norm(), result(true, 1.0).max_norm());
        assert!(kept > 0.8 * start, "as a base: {kept} of {start}");
        assert!(undone < 0.3 * start, "regularised: {undone} of {start}");
        // The share applies only when the start is charged.
        assert_eq!(result(false, 0.5).components, result(false, 1.0).components);
        let half_charged = result(true, 0.5);
        // Kept whole the start grows here (the optimisation adds to a base it cannot undo),
        // charged whole it goes: half charged leaves about half.
        let left = half_charged.max_norm();
        assert!(left > 0.35 * start && left < 0.8 * start, "half charged: {left} of {start}");
    }

    /// Local NCC finds the same shift when the moving blob is on another grey scale (brighter
    /// by 60 % and offset by 0.3 everywhere), where the normalised MSE is pulled off it.
    #[test]
    fn local_ncc_recovers_the_shift_across_a_grey_value_change() {
        let shape = [48, 44, 40];
        let blob = |p: [f64; 3], c: [f64; 3]| {
            (-((p[0] - c[0]).powi(2) + 0.5 * (p[1] - c[1]).powi(2) + (p[2] - c[2]).powi(2)) / 60.0).exp()
        };
        let image = |c: [f64; 3], gain: f64, offset: f64| {
            VectorField::from_fn(shape, |p| [gain * blob(p, c) + offset, 0.0, 0.0]).components[0].clone()
        };
        let (fixed, moving) = (image([23.0, 21.0, 19.0], 1.0, 0.0), image([26.0, 19.0, 20.5], 1.6, 0.3));
        let shift_at_centre = |similarity: Similarity| {
            let energy = EnergyParams { lambda: 1e-4, similarity, ..EnergyParams::default() };
            let options = OptimizeParams {
                levels: vec![4, 2],
                iterations: vec![80, 80],
                energy,
                region_margin_mm: 0.0,
                ..OptimizeParams::default()
            };
            let result = optimize(&fixed, &moving, shape, [1.0; 3], &options, &Silent).unwrap();
            let v = refine_field(&result.velocity, shape, result.factor, 1);
            let at_centre = v.at(23 + 48 * (21 + 44 * 19));
            at_centre.iter().zip([3.0, -2.0, 1.5]).map(|(got, want)| (got - want).abs()).fold(0f32, f32::max)
        };
        let local = shift_at_centre(Similarity::LocalNcc { radius: 2 });
        assert!(local < 0.3, "local NCC: off by {local} voxels");
        let normalised = shift_at_centre(Similarity::NormalizedMse { a: 0.1 });
        assert!(normalised > local, "normalised MSE off by {normalised}, local NCC by {local}");
    }
}

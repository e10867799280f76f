//! Registration by direct optimisation (SPEC §4): no network, works on any pair. Coarse to fine
//! over resolution levels, on the momentum m of the SPEC energy (v = K⁻¹ m). The gradient G
//! with respect to m is smooth; stepping m by −K·G moves v by about −G (a Sobolev gradient
//! step on v), scaled so that no velocity vector moves by more than a trust radius that grows
//! after each accepted step and halves after each rejected one. Each finer level keeps the
//! coarser levels' velocity, refined, as a fixed base and optimises a new momentum on top.

use serde::{Deserialize, Serialize};

use crate::diffeo::VectorField;
use crate::diffeo::energy::{EnergyParams, EnergyTerms, energy_and_gradient_from};
use crate::diffeo::smooth::{SmoothParams, Smoother};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::register::pyramid::{downsample, level_shape, refine_field};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimizeParams {
    /// Resolution levels, coarse to fine, as downsampling factors of the fixed grid. The
    /// velocity lives on the last (finest) one.
    pub levels: Vec<usize>,
    /// Adam iterations per level.
    pub iterations: Vec<usize>,
    /// First step: the largest velocity change, voxels of the level.
    pub initial_step_voxels: f32,
    /// Largest step the trust radius may grow to, voxels of the level.
    pub max_step_voxels: f32,
    pub energy: EnergyParams,
    pub smooth: SmoothParams,
}

impl Default for OptimizeParams {
    fn default() -> Self {
        OptimizeParams {
            levels: vec![4, 2],
            iterations: vec![150, 60],
            initial_step_voxels: 0.25,
            max_step_voxels: 1.0,
            energy: EnergyParams::default(),
            smooth: SmoothParams::default(),
        }
    }
}

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
}

/// Optimises the velocity between two density images on the same grid of `shape`.
pub fn optimize(
    fixed: &[f32],
    moving: &[f32],
    shape: [usize; 3],
    params: &OptimizeParams,
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
    let mut velocity: Option<(VectorField, usize)> = None;
    let mut history = Vec::new();
    for (&factor, &iterations) in params.levels.iter().zip(&params.iterations) {
        let level = level_shape(shape, factor);
        if level.contains(&1) {
            return Err(Error::Invalid(format!("the grid {shape:?} is too small for level {factor}")));
        }
        progress.start_stage(&format!("optimising at 1/{factor} resolution"), iterations as u64);
        let (fixed_level, moving_level) = (downsample(fixed, shape, factor), downsample(moving, shape, factor));
        let smoother = Smoother::new(level, &params.smooth);
        let base = velocity.take().map(|(coarser, from)| refine_field(&coarser, shape, from, factor));
        let mut momentum = VectorField::zeros(level);
        let evaluate = |m: &VectorField| -> Result<(EnergyTerms, VectorField)> {
            let (energy, gradient) =
                energy_and_gradient_from(&fixed_level, &moving_level, base.as_ref(), m, &smoother, &params.energy);
            if energy.total().is_finite() {
                Ok((energy, gradient))
            } else {
                Err(Error::Invalid(format!("the energy became {} at level {factor}", energy.total())))
            }
        };
        let (mut energy, mut gradient) = evaluate(&momentum)?;
        let operator = Smoother::operator_k(level, &params.smooth);
        let mut radius = params.initial_step_voxels;
        for iteration in 0..iterations {
            progress.check_cancelled()?;
            history.push(IterationRecord { level: factor, iteration, energy });
            progress.advance(1);
            // Stepping m by −K·G moves v by about −G (a Sobolev step): scale by the largest.
            let largest = gradient.max_norm();
            if largest == 0.0 || radius < 1e-3 {
                break;
            }
            let step = operator.apply(&gradient);
            let scale = radius / largest;
            let mut trial = momentum.clone();
            for c in 0..3 {
                trial.components[c].iter_mut().zip(&step.components[c]).for_each(|(m, s)| *m -= scale * s);
            }
            let (trial_energy, trial_gradient) = evaluate(&trial)?;
            if trial_energy.total() < energy.total() {
                (momentum, energy, gradient) = (trial, trial_energy, trial_gradient);
                radius = (radius * 1.25).min(params.max_step_voxels);
            } else {
                radius *= 0.5;
            }
        }
        let mut total = smoother.apply(&momentum);
        if let Some(base) = &base {
            for c in 0..3 {
                total.components[c].iter_mut().zip(&base.components[c]).for_each(|(t, b)| *t += b);
            }
        }
        velocity = Some((total, factor));
    }
    let (velocity, factor) = velocity.expect("at least one level ran");
    Ok(Optimized { velocity, factor, history })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Silent;

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
        for levels in [vec![4], vec![4, 2]] {
            let iterations = levels.iter().map(|_| 80).collect();
            let options = OptimizeParams { levels: levels.clone(), iterations, ..OptimizeParams::default() };
            let result = optimize(&fixed, &moving, shape, &options, &Silent).unwrap();
            let v = refine_field(&result.velocity, shape, result.factor, 1);
            let at_centre = v.at(23 + 48 * (21 + 44 * 19));
            for (got, want) in at_centre.iter().zip([3.0, -2.0, 1.5]) {
                assert!((got - want).abs() < 0.3, "levels {levels:?}: {at_centre:?}");
            }
            assert!(result.history.last().unwrap().energy.total() < 0.1 * result.history[0].energy.total());
        }
    }
}

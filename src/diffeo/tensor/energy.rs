//! The registration energy of SPEC §3 in Burn, for training the network and anything else that
//! wants autodiff: E = λ⟨v, m⟩/N + ½ ε(M∘φ, F) + ½ ε(F∘φ⁻¹, M), v = K⁻¹m, φ = exp(v),
//! φ⁻¹ = exp(−v), each ε averaged over the voxels whose sample stayed inside the grid. The same
//! conventions as the whole-volume `diffeo::energy` (λ per voxel, masked means), so the two agree.

use burn::tensor::Tensor;

use crate::diffeo::energy::{EnergyParams, Similarity};
use crate::diffeo::tensor::integrate::exp;
use crate::diffeo::tensor::smooth::TensorSmoother;
use crate::diffeo::tensor::warp::sample;
use crate::diffeo::warp::Outside;

/// The energy's parts, each a one-element tensor in the autodiff graph.
pub struct TensorEnergy {
    pub regularisation: Tensor<1>,
    /// ε(M ∘ φ, F).
    pub forward: Tensor<1>,
    /// ε(F ∘ φ⁻¹, M).
    pub backward: Tensor<1>,
}

impl TensorEnergy {
    pub fn total(&self) -> Tensor<1> {
        self.regularisation.clone() + (self.forward.clone() + self.backward.clone()) * 0.5
    }
}

/// The energy of `momentum` ([3, Z, Y, X]) for images `fixed` and `moving` ([1, Z, Y, X], density).
pub fn energy(
    fixed: Tensor<4>,
    moving: Tensor<4>,
    momentum: Tensor<4>,
    smoother: &TensorSmoother,
    params: &EnergyParams,
) -> TensorEnergy {
    let [_, nz, ny, nx] = momentum.dims();
    let velocity = smoother.apply(momentum.clone());
    let regularisation = (velocity.clone() * momentum).sum() * (params.lambda / (nx * ny * nz) as f32);
    let forward_u = exp(velocity.clone(), params.steps);
    let backward_u = exp(velocity.neg(), params.steps);
    TensorEnergy {
        regularisation,
        forward: similarity(moving.clone(), fixed.clone(), forward_u, params.similarity),
        backward: similarity(fixed, moving, backward_u, params.similarity),
    }
}

/// ε(source ∘ (x + u), target) over the samples that stayed inside the grid.
fn similarity(source: Tensor<4>, target: Tensor<4>, u: Tensor<4>, measure: Similarity) -> Tensor<1> {
    let (warped, inside) = sample(source, u, Outside::Mask);
    let inside = inside.expect("masked sampling returns a mask").float();
    let difference = warped - target;
    let squared = difference.clone() * difference;
    let values = match measure {
        Similarity::Mse => squared,
        Similarity::NormalizedMse { a } => squared.clone() / (squared + a * a),
    };
    // Which samples count does not depend smoothly on u: the count is a constant for autodiff.
    let count = inside.clone().sum().detach().clamp_min(1.0);
    (values * inside).sum() / count
}

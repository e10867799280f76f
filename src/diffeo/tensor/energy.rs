//! The registration energy of SPEC §3 in Burn, for training the network and anything else that
//! wants autodiff: E = λ⟨v, m⟩/N + ½ ε(M∘φ, F) + ½ ε(F∘φ⁻¹, M), v = K⁻¹m, φ = exp(v),
//! φ⁻¹ = exp(−v), each ε averaged over the voxels whose sample stayed inside the grid. The same
//! conventions as the whole-volume `diffeo::energy` (λ per voxel, masked means), so the two agree.
//! A batch of pairs is computed in one go, each item's energy its own.

use burn::tensor::Tensor;

use crate::diffeo::energy::{EnergyParams, Similarity};
use crate::diffeo::tensor::integrate::exp_batch;
use crate::diffeo::tensor::smooth::TensorSmoother;
use crate::diffeo::tensor::warp::sample_batch;
use crate::diffeo::warp::Outside;

/// The energy's parts in the autodiff graph, one value per batch item ([B]; [1] for one pair).
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
    batch_energy(fixed.unsqueeze(), moving.unsqueeze(), momentum.unsqueeze(), smoother, params)
}

/// The energy of each item of a batch: `momentum` [B, 3, Z, Y, X], images [B, 1, Z, Y, X].
pub fn batch_energy(
    fixed: Tensor<5>,
    moving: Tensor<5>,
    momentum: Tensor<5>,
    smoother: &TensorSmoother,
    params: &EnergyParams,
) -> TensorEnergy {
    let [batch, channels, nz, ny, nx] = momentum.dims();
    // K⁻¹ acts on each channel alone: the batch's channels are smoothed together.
    let velocity =
        smoother.apply(momentum.clone().reshape([batch * channels, nz, ny, nx])).reshape([batch, channels, nz, ny, nx]);
    let regularisation = per_item_sum(velocity.clone() * momentum) * (params.lambda / (nx * ny * nz) as f32);
    let forward_u = exp_batch(velocity.clone(), params.steps);
    let backward_u = exp_batch(velocity.neg(), params.steps);
    TensorEnergy {
        regularisation,
        forward: similarity(moving.clone(), fixed.clone(), forward_u, params.similarity),
        backward: similarity(fixed, moving, backward_u, params.similarity),
    }
}

/// The sum over each batch item: [B, …] → [B].
fn per_item_sum(values: Tensor<5>) -> Tensor<1> {
    let batch = values.dims()[0];
    values.reshape([batch as i32, -1]).sum_dim(1).reshape([batch])
}

/// 1 − cc at each voxel (`diffeo::local_ncc`): box sums over the (2 radius + 1)³ window, cut at
/// the border, as convolutions with a kernel of ones and zero padding.
fn local_ncc_cost(warped: Tensor<5>, target: Tensor<5>, radius: usize) -> Tensor<5> {
    use burn::tensor::module::conv3d;
    use burn::tensor::ops::ConvOptions;
    let device = warped.device();
    let side = 2 * radius + 1;
    let kernel = Tensor::<5>::ones([1, 1, side, side, side], &device);
    let box_sum = |x: Tensor<5>| conv3d(x, kernel.clone(), None, ConvOptions::new([1; 3], [radius; 3], [1; 3], 1));
    let n = box_sum(warped.ones_like());
    let (sum_i, sum_j) = (box_sum(warped.clone()), box_sum(target.clone()));
    let a = box_sum(warped.clone() * target.clone()) - sum_i.clone() * sum_j.clone() / n.clone();
    let b = (box_sum(warped.clone() * warped) - sum_i.clone() * sum_i / n.clone()).clamp_min(0.0);
    let c = (box_sum(target.clone() * target) - sum_j.clone() * sum_j / n.clone()).clamp_min(0.0);
    let floor = n.powi_scalar(4) * crate::diffeo::local_ncc::VARIANCE_PRODUCT_FLOOR;
    (a.clone() * a / (b * c + floor)).neg() + 1.0
}

/// ε(source ∘ (x + u), target) of each batch item over its samples that stayed inside the grid.
fn similarity(source: Tensor<5>, target: Tensor<5>, u: Tensor<5>, measure: Similarity) -> Tensor<1> {
    let (warped, inside) = sample_batch(source, u, Outside::Mask);
    let inside = inside.expect("masked sampling returns a mask").float();
    let values = match measure {
        Similarity::Mse | Similarity::NormalizedMse { .. } => {
            let difference = warped - target;
            let squared = difference.clone() * difference;
            match measure {
                Similarity::NormalizedMse { a } => squared.clone() / (squared + a * a),
                _ => squared,
            }
        }
        Similarity::LocalNcc { radius } => local_ncc_cost(warped, target, radius as usize),
    };
    // Which samples count does not depend smoothly on u: the count is a constant for autodiff.
    let count = per_item_sum(inside.clone()).detach().clamp_min(1.0);
    per_item_sum(values * inside) / count
}

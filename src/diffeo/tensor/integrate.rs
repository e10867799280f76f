//! φ = exp(v) by scaling and squaring in Burn: u₀ = v / 2ᴺ, u_{k+1} = u_k + u_k ∘ (x + u_k),
//! sampling clamped at the border as in the whole-volume kernel. exp(−v) gives the inverse.

use burn::tensor::Tensor;

use crate::diffeo::tensor::warp::sample_batch;
use crate::diffeo::warp::Outside;

/// The displacement (voxels, [3, Z, Y, X]) of exp(v).
pub fn exp(velocity: Tensor<4>, steps: u32) -> Tensor<4> {
    exp_batch(velocity.unsqueeze(), steps).squeeze_dim(0)
}

/// `exp` of each velocity of a batch [B, 3, Z, Y, X].
pub fn exp_batch(velocity: Tensor<5>, steps: u32) -> Tensor<5> {
    let mut u = velocity / (1u64 << steps) as f32;
    for _ in 0..steps {
        let (moved, _) = sample_batch(u.clone(), u.clone(), Outside::Clamp);
        u = u + moved;
    }
    u
}

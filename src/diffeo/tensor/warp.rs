//! Trilinear sampling at x + u(x) in Burn (the spatial transformer), differentiable with respect
//! to both the sampled tensor and the displacement: eight gathers, one per cell corner, weighted
//! by the fractional position. Border rules as in `diffeo::warp::Outside`. A batch of fields is
//! sampled in one go (one gather per corner for the whole batch), which is what keeps a GPU busy.

use burn::tensor::{Bool, Int, Tensor};

use crate::diffeo::tensor::index_grid;
use crate::diffeo::warp::Outside;

/// Samples every channel of `source` ([C, Z, Y, X]) at x + u(x) for each voxel x of the same
/// grid (u: [3, Z, Y, X], voxels). The point is clamped onto the grid (the border value extends
/// outwards). With `Outside::Mask`, as `diffeo::warp::warp_image` does, samples beyond the grid's
/// voxels (more than half a voxel past a border centre) are 0 and the returned mask
/// ([1, Z, Y, X]) is false there; with `Outside::Clamp` there is no mask.
pub fn sample(source: Tensor<4>, u: Tensor<4>, outside: Outside) -> (Tensor<4>, Option<Tensor<4, Bool>>) {
    let (sampled, inside) = sample_batch(source.unsqueeze(), u.unsqueeze(), outside);
    (sampled.squeeze_dim(0), inside.map(|mask| mask.squeeze_dim(0)))
}

/// `sample` for a batch: `source` [B, C, Z, Y, X] sampled at x + u(x) with u [B, 3, Z, Y, X],
/// each item through its own displacement; the mask is [B, 1, Z, Y, X].
pub fn sample_batch(source: Tensor<5>, u: Tensor<5>, outside: Outside) -> (Tensor<5>, Option<Tensor<5, Bool>>) {
    let [batch, channels, nz, ny, nx] = source.dims();
    let [u_batch, u_channels, uz, uy, ux] = u.dims();
    assert_eq!(
        [u_batch, u_channels, uz, uy, ux],
        [batch, 3, nz, ny, nx],
        "the displacement must be a 3-vector field on the source's grid, one per batch item"
    );
    let shape = [nx, ny, nz];
    let device = source.device();
    let points = index_grid(shape, &device).unsqueeze::<5>() + u;
    let strides = [1i64, nx as i64, (nx * ny) as i64];

    let mut inside: Option<Tensor<5, Bool>> = None;
    let mut lower: Vec<Tensor<5, Int>> = Vec::with_capacity(3);
    let mut fractions: Vec<Tensor<5>> = Vec::with_capacity(3);
    for d in 0..3 {
        let last = (shape[d] - 1) as f32;
        let p = points.clone().narrow(1, d, 1);
        let within = p.clone().greater_equal_elem(-0.5).bool_and(p.clone().lower_equal_elem(last + 0.5));
        inside = Some(match inside {
            Some(mask) => mask.bool_and(within),
            None => within,
        });
        if shape[d] == 1 {
            lower.push(p.zeros_like().int());
            fractions.push(p.zeros_like());
            continue;
        }
        let clamped = p.clamp(0.0, last);
        // The cell's lower corner: floor, kept one below the last voxel (no gradient flows here).
        let base = clamped.clone().detach().floor().clamp(0.0, last - 1.0);
        fractions.push(clamped - base.clone());
        lower.push(base.int());
    }
    let inside = inside.expect("three axes");

    let n = nx * ny * nz;
    // Rank-2 gathers (rows: batch items × channels) run twice as fast as rank-3 ones on flex.
    let flat = source.reshape([batch * channels, n]);
    let mut result: Option<Tensor<5>> = None;
    for corner in 0..8 {
        let mut index: Option<Tensor<5, Int>> = None;
        let mut weight: Option<Tensor<5>> = None;
        for d in 0..3 {
            let upper = (corner >> d) & 1 == 1 && shape[d] > 1;
            let position = if upper { lower[d].clone() + 1 } else { lower[d].clone() };
            let term = position * strides[d];
            index = Some(match index {
                Some(i) => i + term,
                None => term,
            });
            let f = &fractions[d];
            let w = if (corner >> d) & 1 == 1 { f.clone() } else { f.clone().neg() + 1.0 };
            weight = Some(match weight {
                Some(v) => v * w,
                None => w,
            });
        }
        let index =
            index.expect("three axes").reshape([batch, 1, n]).repeat_dim(1, channels).reshape([batch * channels, n]);
        let values = flat.clone().gather(1, index).reshape([batch, channels, nz, ny, nx]);
        let term = values * weight.expect("three axes");
        result = Some(match result {
            Some(r) => r + term,
            None => term,
        });
    }
    let sampled = result.expect("eight corners");
    match outside {
        Outside::Mask => (sampled * inside.clone().float(), Some(inside)),
        Outside::Clamp => (sampled, None),
    }
}

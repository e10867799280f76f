//! Trilinear sampling at x + u(x) in Burn (the spatial transformer), differentiable with respect
//! to both the sampled tensor and the displacement: eight gathers, one per cell corner, weighted
//! by the fractional position. Border rules as in `diffeo::warp::Outside`.

use burn::tensor::{Bool, Int, Tensor};

use crate::diffeo::tensor::{grid_shape, index_grid};
use crate::diffeo::warp::Outside;

/// Samples every channel of `source` ([C, Z, Y, X]) at x + u(x) for each voxel x of the same
/// grid (u: [3, Z, Y, X], voxels). The point is clamped onto the grid (the border value extends
/// outwards). With `Outside::Mask`, as `diffeo::warp::warp_image` does, samples beyond the grid's
/// voxels (more than half a voxel past a border centre) are 0 and the returned mask
/// ([1, Z, Y, X]) is false there; with `Outside::Clamp` there is no mask.
pub fn sample(source: Tensor<4>, u: Tensor<4>, outside: Outside) -> (Tensor<4>, Option<Tensor<4, Bool>>) {
    let shape = grid_shape(&source);
    assert_eq!(grid_shape(&u), shape, "the displacement must be on the source's grid");
    let [channels, nz, ny, nx] = source.dims();
    let device = source.device();
    let points = index_grid(shape, &device) + u;
    let strides = [1i64, nx as i64, (nx * ny) as i64];

    let mut inside: Option<Tensor<4, Bool>> = None;
    let mut lower: Vec<Tensor<4, Int>> = Vec::with_capacity(3);
    let mut fractions: Vec<Tensor<4>> = Vec::with_capacity(3);
    for d in 0..3 {
        let last = (shape[d] - 1) as f32;
        let p = points.clone().narrow(0, d, 1);
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
    let flat = source.reshape([channels, n]);
    let mut result: Option<Tensor<4>> = None;
    for corner in 0..8 {
        let mut index: Option<Tensor<4, Int>> = None;
        let mut weight: Option<Tensor<4>> = None;
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
        let index = index.expect("three axes").reshape([1, n]).repeat_dim(0, channels);
        let values = flat.clone().gather(1, index).reshape([channels, nz, ny, nx]);
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

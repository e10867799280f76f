//! Endpoint error on the validation pairs: what chooses the model a training keeps. The
//! network predicts each held-out pair whole, tile by tile, as `register` does; its velocity
//! (with the local estimate it corrects) is exponentiated and compared with the exponential of
//! the pair's target velocity (its known deformation's, or the optimiser's), in millimetres,
//! each voxel of the network's grid weighted by its share of body. Validation energy does not
//! track endpoint error (README, "The network"), so it no longer chooses.

use burn::tensor::Device;

use crate::diffeo::VectorField;
use crate::diffeo::integrate::exp;
use crate::net::UNet;
use crate::net::model::{ModelSpec, predict_momentum};
use crate::patch::tiling::Tiling;
use crate::train::data::TrainingPair;

/// Mean endpoint error (mm) between exp(v) and exp(v*) over the voxels of `shape` weighted by
/// `weight` (every voxel alike when none); `voxel_mm` is the grid's voxel size per axis.
pub fn weighted_endpoint_error(
    velocity: &VectorField,
    target: &VectorField,
    weight: Option<&[f32]>,
    voxel_mm: [f64; 3],
    steps: u32,
) -> Option<f64> {
    let (reached, wanted) = (exp(velocity, steps), exp(target, steps));
    let (mut sum, mut total) = (0.0f64, 0.0f64);
    for n in 0..reached.voxel_count() {
        let w = weight.map_or(1.0, |w| w[n] as f64);
        if w <= 0.0 {
            continue;
        }
        let (a, b) = (reached.at(n), wanted.at(n));
        let squared: f64 = (0..3).map(|d| ((a[d] - b[d]) as f64 * voxel_mm[d]).powi(2)).sum();
        sum += w * squared.sqrt();
        total += w;
    }
    (total > 0.0).then(|| sum / total)
}

/// The mean over `pairs` (those with a target) of the network's endpoint error on the whole
/// pair, dropout off (`model` is an inference copy), predicted in tiles of `tiling` on `device`
/// and made velocity as the model folder `spec` says.
pub fn validation_endpoint_error(
    model: &UNet,
    spec: &ModelSpec,
    pairs: &[&TrainingPair],
    tiling: Tiling,
    device: &Device,
) -> Option<f64> {
    let errors: Vec<f64> = pairs
        .iter()
        .filter_map(|pair| {
            let target = pair.target.as_ref()?;
            let channels: Vec<&[f32]> =
                [&pair.fixed, &pair.moving].into_iter().chain(&pair.force).map(Vec::as_slice).collect();
            let (z, _) = predict_momentum(model, &channels, pair.shape, tiling, device, &|| {});
            let velocity = spec.velocity(&z, pair.prior.as_ref());
            let mut wanted = target.clone();
            if let Some(prior) = &pair.prior {
                wanted.add_scaled(1.0, prior);
            }
            weighted_endpoint_error(&velocity, &wanted, pair.target_weight.as_deref(), pair.voxel_mm, spec.steps)
        })
        .collect();
    (!errors.is_empty()).then(|| errors.iter().sum::<f64>() / errors.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_error_of_a_constant_offset_is_its_length_in_millimetres() {
        let shape = [6, 5, 4];
        let target = VectorField::zeros(shape);
        let mut velocity = VectorField::zeros(shape);
        velocity.components[0].fill(0.5);
        velocity.components[2].fill(0.25);
        // A constant velocity is its own exponential: 0.5 voxel of 2 mm and 0.25 of 4 mm.
        let error = weighted_endpoint_error(&velocity, &target, None, [2.0, 3.0, 4.0], 6).unwrap();
        assert!((error - 2f64.sqrt()).abs() < 1e-5, "{error}");
        // Weights are normalised; none at all measure nothing.
        let weight = vec![3.0f32; velocity.voxel_count()];
        let weighted = weighted_endpoint_error(&velocity, &target, Some(&weight), [2.0, 3.0, 4.0], 6).unwrap();
        assert!((weighted - error).abs() < 1e-9);
        assert_eq!(weighted_endpoint_error(&velocity, &target, Some(&vec![0.0; 120]), [1.0; 3], 6), None);
    }
}

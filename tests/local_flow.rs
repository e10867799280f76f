//! The closed-form local estimate a network with `local_prior` corrects
//! (`register::local_flow`): its pooled products against a direct sum, a translation of a
//! textured volume recovered, nothing found between identical images, and an untrained network
//! with a local prior predicting exactly that estimate.

use diffeoreg::diffeo::VectorField;
use diffeoreg::diffeo::pyramid::level_shape;
use diffeoreg::net::local_flow::{LocalFlowParams, local_displacement, local_velocity, pooled_products};
use diffeoreg::progress::Silent;

const SHAPE: [usize; 3] = [64, 60, 56];
const FACTOR: usize = 4;
const BLOBS: usize = 400;

/// A smooth texture of Gaussian blobs of varied sizes and signs, evaluated at any point (voxels).
fn texture(p: [f64; 3]) -> f32 {
    // splitmix64, one stream for the whole texture.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut uniform = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut value = 0.0;
    for _ in 0..BLOBS {
        let centre = [uniform() * SHAPE[0] as f64, uniform() * SHAPE[1] as f64, uniform() * SHAPE[2] as f64];
        let sigma = 2.0 + 2.0 * uniform();
        let weight = uniform() - 0.4;
        let r2: f64 = (0..3).map(|a| (p[a] - centre[a]).powi(2)).sum();
        value += weight * (-r2 / (2.0 * sigma * sigma)).exp();
    }
    value as f32
}

fn sampled(shift: [f64; 3]) -> Vec<f32> {
    let [nx, ny, nz] = SHAPE;
    let mut out = Vec::with_capacity(nx * ny * nz);
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                out.push(texture([x as f64 - shift[0], y as f64 - shift[1], z as f64 - shift[2]]));
            }
        }
    }
    out
}

#[test]
fn pooled_products_are_box_averages_of_difference_times_slope_and_slope_products() {
    let fixed = sampled([0.0; 3]);
    let moving: Vec<f32> = sampled([0.7, -0.4, 0.3]).iter().map(|v| 1.1 * v + 0.02).collect();
    let products = pooled_products(&fixed, &moving, None, SHAPE, FACTOR);
    let coarse = level_shape(SHAPE, FACTOR);
    assert_eq!(products.len(), coarse.iter().product::<usize>());
    // The same sums written out plainly: mean image s, central differences (one-sided at the
    // faces) times the factor, summed over each box in f64 and divided by its voxel count.
    let [nx, ny, nz] = SHAPE;
    let at = |x: usize, y: usize, z: usize| x + nx * (y + ny * z);
    let s = |i: usize| 0.5 * (fixed[i] as f64 + moving[i] as f64);
    for (cx, cy, cz) in [(0, 0, 0), (5, 4, 3), (10, 9, 8), (3, 9, 0)] {
        let mut sums = [0.0f64; 13];
        let mut count = 0.0;
        for z in cz * FACTOR..((cz + 1) * FACTOR).min(nz) {
            for y in cy * FACTOR..((cy + 1) * FACTOR).min(ny) {
                for x in cx * FACTOR..((cx + 1) * FACTOR).min(nx) {
                    let c = [x, y, z];
                    let g: Vec<f64> = (0..3)
                        .map(|a| {
                            let mut lo = c;
                            let mut hi = c;
                            lo[a] = c[a].saturating_sub(1);
                            hi[a] = (c[a] + 1).min(SHAPE[a] - 1);
                            FACTOR as f64 * (s(at(hi[0], hi[1], hi[2])) - s(at(lo[0], lo[1], lo[2])))
                                / (hi[a] - lo[a]) as f64
                        })
                        .collect();
                    let d = moving[at(x, y, z)] as f64 - fixed[at(x, y, z)] as f64;
                    let values = [
                        d * g[0],
                        d * g[1],
                        d * g[2],
                        g[0] * g[0],
                        g[1] * g[1],
                        g[2] * g[2],
                        g[0] * g[1],
                        g[0] * g[2],
                        g[1] * g[2],
                        d,
                        g[0],
                        g[1],
                        g[2],
                    ];
                    for (total, value) in sums.iter_mut().zip(values) {
                        *total += value;
                    }
                    count += 1.0;
                }
            }
        }
        let got = products[cx + coarse[0] * (cy + coarse[1] * cz)];
        for c in 0..13 {
            let expected = sums[c] / count;
            assert!(
                (got[c] as f64 - expected).abs() <= 1e-5 * (1.0 + expected.abs()),
                "box ({cx}, {cy}, {cz}) product {c}: {} against {expected}",
                got[c]
            );
        }
    }
}

#[test]
fn a_translation_of_a_textured_volume_is_recovered_in_a_few_passes() {
    // moving(x) = fixed(x − t): warping the moving image by u = t brings it onto the fixed one.
    let t = [1.2, -0.8, 0.5];
    let fixed = sampled([0.0; 3]);
    let moving = sampled(t);
    let coarse = level_shape(SHAPE, FACTOR);
    // Away from the faces, where content came in from outside the grid.
    let error_of = |v: &VectorField| {
        let mut worst = 0.0f64;
        for z in 2..coarse[2] - 2 {
            for y in 2..coarse[1] - 2 {
                for x in 2..coarse[0] - 2 {
                    let got = v.at(x + coarse[0] * (y + coarse[1] * z));
                    let error: f64 = (0..3).map(|a| (got[a] as f64 * FACTOR as f64 - t[a]).powi(2)).sum::<f64>().sqrt();
                    worst = worst.max(error);
                }
            }
        }
        worst
    };
    let length = (t.iter().map(|x| x * x).sum::<f64>()).sqrt();
    let one = local_displacement(&fixed, &moving, None, SHAPE, [1.0; 3], FACTOR, &LocalFlowParams::default());
    let params = LocalFlowParams { passes: 6, ..LocalFlowParams::default() };
    let velocity = local_velocity(&fixed, &moving, None, SHAPE, [1.0; 3], FACTOR, &params, 7, &Silent).unwrap();
    let (first, last) = (error_of(&one), error_of(&velocity));
    assert!(first < 0.5 * length, "one pass leaves {first} of {length} voxels");
    assert!(last < 0.03 * length && last < 0.5 * first, "six passes leave {last} voxels (one pass {first})");

    // Identical images: no motion (to rounding).
    let still = local_velocity(&fixed, &fixed, None, SHAPE, [1.0; 3], FACTOR, &params, 7, &Silent).unwrap();
    assert!(still.max_norm() < 1e-9, "{}", still.max_norm());
}

/// `sigma_unit_mm` (a model's `grid_mm`): the window and the spread are that many millimetres
/// per unit of σ along each axis, whatever the coarse voxel's size there (closed form); a
/// model config without it (before session 22) keeps them in coarse voxels; on a grid whose
/// coarse voxel is that unit along every axis both give the same estimate to the bit, and on
/// anisotropic voxels they differ.
#[test]
fn window_and_spread_in_millimetres_follow_each_axis_voxel_size() {
    let coarse_mm = [3.828, 3.828, 6.0];
    let mm = LocalFlowParams { sigma_unit_mm: Some(4.45), ..LocalFlowParams::default() };
    let (window, spread) = mm.sigmas(coarse_mm);
    for (got, sigma) in [(window, 0.7), (spread, 3.0)] {
        for axis in 0..3 {
            let expected = sigma * 4.45 / coarse_mm[axis];
            assert!((got[axis] as f64 - expected).abs() < 1e-5, "axis {axis}: {got:?}, expected {expected}");
        }
    }
    let older: LocalFlowParams =
        serde_json::from_str(r#"{"window": 0.7, "spread": 3.0, "regularisation": 0.01, "passes": 10}"#).unwrap();
    assert_eq!(older.sigma_unit_mm, None);
    assert_eq!(older.sigmas(coarse_mm), ([0.7; 3], [3.0; 3]));

    let (fixed, moving) = (sampled([0.0; 3]), sampled([1.2, -0.8, 0.5]));
    let in_unit = LocalFlowParams { sigma_unit_mm: Some(2.0), ..LocalFlowParams::default() };
    let estimate = |spacing: [f64; 3], params: &LocalFlowParams| {
        local_displacement(&fixed, &moving, None, SHAPE, spacing, FACTOR, params).components
    };
    // Voxels of 0.5 mm, coarse voxels of 2 mm: σ × 2 mm ÷ 2 mm is σ coarse voxels.
    let in_voxels = estimate([0.5; 3], &LocalFlowParams::default());
    assert_eq!(estimate([0.5; 3], &in_unit), in_voxels);
    assert_ne!(estimate([0.5, 0.5, 1.0], &in_unit), in_voxels);
    assert_eq!(estimate([0.5, 0.5, 1.0], &LocalFlowParams::default()), in_voxels);
}

/// With `offset`, a grey-value offset between the images (a pseudo-CT's bias) reads as no
/// motion, where the plain estimate moves; a translation under that offset is still recovered.
#[test]
fn an_estimate_that_solves_for_an_offset_ignores_it_and_still_finds_the_motion() {
    let fixed = sampled([0.0; 3]);
    let shifted = |t: [f64; 3]| -> Vec<f32> { sampled(t).iter().map(|v| v + 0.05).collect() };
    let plain = LocalFlowParams { passes: 4, ..LocalFlowParams::default() };
    let offset = LocalFlowParams { offset: true, ..plain.clone() };
    let still = shifted([0.0; 3]);
    let moved = local_velocity(&fixed, &still, None, SHAPE, [1.0; 3], FACTOR, &plain, 7, &Silent).unwrap().max_norm();
    let kept = local_velocity(&fixed, &still, None, SHAPE, [1.0; 3], FACTOR, &offset, 7, &Silent).unwrap().max_norm();
    assert!(moved > 0.1 && kept < 0.02 * moved, "plain {moved} voxels, with the offset solved for {kept}");
    let t = [1.2, -0.8, 0.5];
    let velocity = local_velocity(&fixed, &shifted(t), None, SHAPE, [1.0; 3], FACTOR, &offset, 7, &Silent).unwrap();
    let coarse = level_shape(SHAPE, FACTOR);
    let centre = velocity.at(coarse[0] / 2 + coarse[0] * (coarse[1] / 2 + coarse[1] * (coarse[2] / 2)));
    let error: f64 = (0..3).map(|a| (centre[a] as f64 * FACTOR as f64 - t[a]).powi(2)).sum::<f64>().sqrt();
    assert!(error < 0.1, "centre {centre:?} (coarse voxels), error {error} voxels");
}

#[test]
fn an_untrained_network_with_a_local_prior_predicts_the_estimate_itself() {
    use burn::tensor::Device;
    use diffeoreg::diffeo::smooth::SmoothParams;
    use diffeoreg::net::UNetConfig;
    use diffeoreg::net::model::{Model, ModelSpec};
    use diffeoreg::register::network::{NetworkParams, predict_velocity};
    let fixed = sampled([0.0; 3]);
    let moving = sampled([0.9, 0.6, -0.4]);
    let local = LocalFlowParams { passes: 3, ..LocalFlowParams::default() };
    let config = UNetConfig::new()
        .with_base_channels(2)
        .with_resolution_factor(FACTOR)
        .with_whitened_output(true)
        .with_pooled_force(true)
        .with_local_prior(Some(local.clone()));
    let device = Device::flex();
    let spec = ModelSpec::new(config.clone(), SmoothParams::default(), 7);
    let model = Model { network: config.init(&device), spec, source: "test".into() };
    let expected = local_velocity(&fixed, &moving, None, SHAPE, [1.0; 3], FACTOR, &local, 7, &Silent).unwrap();
    assert!(expected.max_norm() > 0.1, "the estimate moves");
    // The network's head starts at zero: it adds nothing, however often it predicts.
    for cascade in [1, 2] {
        let params = NetworkParams { tile: 12, margin: 2, cascade, ..NetworkParams::default() };
        let (predicted, ..) =
            predict_velocity(&fixed, &moving, None, SHAPE, [1.0; 3], &model, &params, &device, &Silent).unwrap();
        assert_eq!(predicted.factor, FACTOR);
        assert_eq!(predicted.velocity, expected, "cascade {cascade}");
    }
}

/// With `field_of_view`, voxels where the moving image has no data (its field of view ends:
/// the resampled image is air there) are left out: between identical images cut off at one end
/// the plain estimate finds motion towards the cut, the one keeping to the field of view finds
/// none, and a translation is recovered up to the cut. Without a coverage mask, or without the
/// flag, the two agree to the bit.
#[test]
fn an_estimate_keeping_to_the_field_of_view_ignores_where_the_moving_image_has_no_data() {
    let [nx, ny, nz] = SHAPE;
    let cut = 12; // the moving image's data starts at this slice
    let covered: Vec<bool> = (0..nx * ny * nz).map(|n| n / (nx * ny) >= cut).collect();
    let truncated =
        |image: Vec<f32>| -> Vec<f32> { image.iter().zip(&covered).map(|(&v, &c)| if c { v } else { 0.0 }).collect() };
    let fixed = sampled([0.0; 3]);
    let plain = LocalFlowParams { passes: 4, offset: true, ..LocalFlowParams::default() };
    let kept = LocalFlowParams { field_of_view: true, ..plain.clone() };
    let estimate = |moving: &[f32], covered: Option<&[bool]>, params: &LocalFlowParams| {
        local_velocity(&fixed, moving, covered, SHAPE, [1.0; 3], FACTOR, params, 7, &Silent).unwrap()
    };
    let still = truncated(fixed.clone());
    let moved = estimate(&still, Some(&covered), &plain).max_norm();
    let ignored = estimate(&still, Some(&covered), &kept).max_norm();
    assert!(moved > 0.2 && ignored < 1e-6, "plain {moved} coarse voxels, keeping to the field of view {ignored}");
    assert_eq!(estimate(&still, None, &kept), estimate(&still, None, &plain));
    assert_eq!(estimate(&still, Some(&covered), &plain), estimate(&still, None, &plain));

    let t = [1.2, -0.8, 0.5];
    let velocity = estimate(&truncated(sampled(t)), Some(&covered), &kept);
    let coarse = level_shape(SHAPE, FACTOR);
    let mut worst = 0.0f64;
    // Coarse slices from just above the cut, away from the other faces.
    for z in cut / FACTOR + 1..coarse[2] - 2 {
        for y in 2..coarse[1] - 2 {
            for x in 2..coarse[0] - 2 {
                let got = velocity.at(x + coarse[0] * (y + coarse[1] * z));
                let error = (0..3).map(|a| (got[a] as f64 * FACTOR as f64 - t[a]).powi(2)).sum::<f64>().sqrt();
                worst = worst.max(error);
            }
        }
    }
    assert!(worst < 0.15, "worst error {worst} voxels of a {t:?} translation");
}

/// With `unmatched`, a network with `matched_input` gives its local estimate the pair as the
/// rigid alignment left it: the estimate is `local_velocity` of the raw pair to the bit, while
/// the network's own input stays the matched pair. Without it, the estimate reads the matched
/// pair, which here (the moving image brighter by 40 % and offset, as a pseudo-CT's grey values
/// can be) is another pair: the two estimates differ.
#[test]
fn an_unmatched_estimate_reads_the_pair_as_aligned_and_the_network_still_sees_it_matched() {
    use diffeoreg::diffeo::smooth::SmoothParams;
    use diffeoreg::matching::matched_at_alignment;
    use diffeoreg::net::UNetConfig;
    use diffeoreg::net::model::ModelSpec;
    let fixed = sampled([0.0; 3]);
    let moving: Vec<f32> = sampled([0.9, 0.6, -0.4]).iter().map(|v| 1.4 * v + 0.2).collect();
    let prepared = |unmatched: bool| {
        let local = LocalFlowParams { passes: 3, unmatched, ..LocalFlowParams::default() };
        let config = UNetConfig::new()
            .with_base_channels(2)
            .with_resolution_factor(FACTOR)
            .with_whitened_output(true)
            .with_matched_input(true)
            .with_local_prior(Some(local.clone()));
        let spec = ModelSpec::new(config, SmoothParams::default(), 7);
        let input = spec.prepare_input(&fixed, &moving, None, SHAPE, [1.0; 3], &Silent).unwrap();
        (local, input)
    };
    let (local, unmatched) = prepared(true);
    let raw = local_velocity(&fixed, &moving, None, SHAPE, [1.0; 3], FACTOR, &local, 7, &Silent).unwrap();
    assert_eq!(unmatched.prior.as_ref(), Some(&raw));
    let (matched_fixed, matched_moving) = matched_at_alignment(&fixed, &moving, SHAPE);
    assert_eq!((&unmatched.fixed, &unmatched.moving), (&matched_fixed, &matched_moving));
    assert_ne!(matched_moving, moving, "the matching changed the pair");
    let (_, matched) = prepared(false);
    let difference = matched.prior.as_ref().unwrap().plus_scaled(-1.0, &raw).max_norm();
    assert!(difference > 1e-3, "the matched pair gives another estimate ({difference})");
}

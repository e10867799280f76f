//! The dilated U-Net (`net`): shapes, an untrained network predicting no motion, one Adam step on
//! the SPEC energy lowering the loss, a model folder that reloads to the same outputs, refused
//! folders of another format or with missing weights, and the same forward pass on flex and wgpu.

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, DeviceKind, Tensor, TensorData};
use diffeoreg::diffeo::energy::{EnergyParams, Similarity};
use diffeoreg::diffeo::smooth::SmoothParams;
use diffeoreg::diffeo::tensor::energy::energy;
use diffeoreg::diffeo::tensor::smooth::TensorSmoother;
use diffeoreg::diffeo::tensor::tensor_values;
use diffeoreg::net::model::{Model, ModelSpec, save_model};
use diffeoreg::net::{UNet, UNetConfig, load_network, save_network};
use diffeoreg::register::network::NetworkParams;

const SIDE: usize = 16;

/// Two density patches: a ball and the same ball shifted by 1.5 voxels along x.
fn batch(device: &Device) -> Tensor<5> {
    let n = SIDE * SIDE * SIDE;
    let mut values = vec![0.0f32; 2 * n];
    for (channel, shift) in [(0usize, 0.0f32), (1, 1.5)] {
        for k in 0..SIDE {
            for j in 0..SIDE {
                for i in 0..SIDE {
                    let d =
                        ((i as f32 - 7.5 - shift).powi(2) + (j as f32 - 7.5).powi(2) + (k as f32 - 7.5).powi(2)).sqrt();
                    values[channel * n + i + SIDE * (j + SIDE * k)] = 1.0 + 0.5 / (1.0 + (2.0 * (d - 4.0)).exp());
                }
            }
        }
    }
    Tensor::from_data(TensorData::new(values, [1, 2, SIDE, SIDE, SIDE]), device)
}

/// A tiny network deriving force channels, so that their path runs on flex and wgpu too.
fn small() -> UNetConfig {
    UNetConfig::new().with_base_channels(4).with_force_features(true)
}

/// The force channels against their closed form: on a linear ramp moved by a constant, d is that
/// constant and the mean's central differences are the ramp's slopes, inside the patch.
#[test]
fn force_channels_are_difference_times_gradient() {
    use diffeoreg::net::with_force_channels;
    let device = Device::flex();
    let n = SIDE * SIDE * SIDE;
    let slope = [0.05f32, 0.03, 0.02]; // per voxel along the tensor's axes D (k), H (j), W (i)
    let mut values = vec![0.0f32; 2 * n];
    for k in 0..SIDE {
        for j in 0..SIDE {
            for i in 0..SIDE {
                let ramp = 1.0 + slope[0] * k as f32 + slope[1] * j as f32 + slope[2] * i as f32;
                values[i + SIDE * (j + SIDE * k)] = ramp;
                values[n + i + SIDE * (j + SIDE * k)] = ramp + 0.1;
            }
        }
    }
    let input = Tensor::<5>::from_data(TensorData::new(values.clone(), [1, 2, SIDE, SIDE, SIDE]), &device);
    let out = tensor_values(with_force_channels(input, 10.0));
    assert_eq!(out.len(), 8 * n);
    assert_eq!(&out[..2 * n], &values[..], "the images come first, unchanged");
    let weight = 0.2f32.powi(4) / (0.04f32 + 0.01).powi(2);
    let mut checked = 0;
    for k in 1..SIDE - 1 {
        for j in 1..SIDE - 1 {
            for i in 1..SIDE - 1 {
                let at = i + SIDE * (j + SIDE * k);
                for axis in 0..3 {
                    let plain = out[(2 + axis) * n + at];
                    let normalised = out[(5 + axis) * n + at];
                    assert!((plain - 10.0 * 0.1 * slope[axis]).abs() < 1e-5, "axis {axis}: {plain}");
                    assert!((normalised - 10.0 * 0.1 * slope[axis] * weight).abs() < 1e-5, "axis {axis}: {normalised}");
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 3 * (SIDE - 2).pow(3));
}

fn loss(model: &UNet, input: Tensor<5>, smoother: &TensorSmoother) -> Tensor<1> {
    let params = EnergyParams { lambda: 1e-3, similarity: Similarity::Mse, steps: 5 };
    let momentum = model.forward(input.clone()).reshape([3, SIDE, SIDE, SIDE]);
    let fixed = input.clone().narrow(1, 0, 1).reshape([1, SIDE, SIDE, SIDE]);
    let moving = input.narrow(1, 1, 1).reshape([1, SIDE, SIDE, SIDE]);
    energy(fixed, moving, momentum, smoother, &params).total()
}

#[test]
fn trains_saves_reloads_and_runs_on_flex_and_wgpu() {
    let device = Device::flex().autodiff();
    let config = small();
    let mut model = config.init(&device);
    let input = batch(&device);
    let output = model.forward(input.clone());
    assert_eq!(output.dims(), [1, 3, SIDE, SIDE, SIDE]);
    assert!(tensor_values(output).iter().all(|v| *v == 0.0), "an untrained network predicts no motion");

    // A few Adam steps on the SPEC energy lower it on this fixed batch.
    let smoother =
        TensorSmoother::new([SIDE; 3], &SmoothParams { alpha: 2.0, pad: 4, ..SmoothParams::default() }, &device);
    let mut optimizer = AdamConfig::new().init();
    let first = tensor_values(loss(&model, input.clone(), &smoother))[0];
    for _ in 0..3 {
        let value = loss(&model, input.clone(), &smoother);
        let gradients = GradientsParams::from_grads(value.backward(), &model);
        model = optimizer.step(1e-3, model, gradients);
    }
    let last = tensor_values(loss(&model, input.clone(), &smoother))[0];
    assert!(last < first, "loss {first} → {last}");

    // The folder reloads to the same outputs (dropout is off outside autodiff).
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("model");
    let inference = model.valid();
    let cpu = Device::flex();
    let expected = tensor_values(inference.forward(batch(&cpu)));
    assert!(expected.iter().any(|v| *v != 0.0), "the trained head predicts motion");
    let spec = ModelSpec::new(config.clone(), SmoothParams::default(), 7);
    save_model(&folder, &spec, &inference).unwrap();
    let loaded = Model::load(&folder, &cpu).unwrap();
    assert_eq!(loaded.spec, spec);
    assert_eq!(tensor_values(loaded.network.forward(batch(&cpu))), expected);

    // The same model on wgpu (lavapipe without a GPU) agrees within 1e-4.
    let gpu = Device::wgpu(DeviceKind::DefaultDevice);
    let on_gpu = Model::load(&folder, &gpu).unwrap().network;
    let gpu_values = tensor_values(on_gpu.forward(batch(&gpu)));
    let diff = gpu_values.iter().zip(&expected).map(|(a, b)| (a - b).powi(2) as f64).sum::<f64>().sqrt();
    let norm = expected.iter().map(|b| (*b as f64).powi(2)).sum::<f64>().sqrt();
    assert!(diff / norm < 1e-4, "wgpu vs flex forward: relative difference {:e}", diff / norm);
}

/// The pooled force (`net::pooled_force`): at factor 1 its force channels are the network's own
/// (the same central differences, zero outside; its axes x, y, z are the tensor's W, H, D),
/// and on a ramp moved by a constant, pooled by 2, every box holds the closed form: d times the
/// slopes per network voxel, and their products for the structure tensor.
#[test]
fn the_pooled_force_is_the_derived_force_averaged_over_boxes() {
    use diffeoreg::net::pooled_force::{POOLED_FORCE_CHANNELS, pooled_force_channels};
    use diffeoreg::net::with_force_channels;
    let device = Device::flex();
    let n = SIDE * SIDE * SIDE;
    let index = |i: usize, j: usize, k: usize| i + SIDE * (j + SIDE * k);
    let mut fixed = vec![0.0f32; n];
    let mut moving = vec![0.0f32; n];
    for k in 0..SIDE {
        for j in 0..SIDE {
            for i in 0..SIDE {
                let (x, y, z) = (i as f32, j as f32, k as f32);
                fixed[index(i, j, k)] = 1.0 + 0.3 * (0.7 * x + 0.2 * y).sin() * (0.4 * z).cos();
                moving[index(i, j, k)] = 1.0 + 0.3 * (0.7 * x + 0.2 * y + 0.5).sin() * (0.4 * z - 0.3).cos();
            }
        }
    }
    let shape = [SIDE; 3];
    let pooled = pooled_force_channels(&fixed, &moving, shape, 1, 10.0);
    assert_eq!(pooled.len(), POOLED_FORCE_CHANNELS);
    let input = Tensor::<5>::from_data(
        TensorData::new([fixed.clone(), moving.clone()].concat(), [1, 2, SIDE, SIDE, SIDE]),
        &device,
    );
    let derived = tensor_values(with_force_channels(input, 10.0));
    for axis in 0..3 {
        for (ours, theirs) in [(axis, 2 + (2 - axis)), (3 + axis, 5 + (2 - axis))] {
            for v in 0..n {
                let (a, b) = (pooled[ours][v], derived[theirs * n + v]);
                assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "channel {ours}, voxel {v}: {a} against {b}");
            }
        }
    }

    // A ramp moved by d = 0.1, pooled by 2: the slope per network voxel is twice the slope per voxel.
    let slope = [0.02f32, 0.03, 0.05];
    for k in 0..SIDE {
        for j in 0..SIDE {
            for i in 0..SIDE {
                let ramp = 1.0 + slope[0] * i as f32 + slope[1] * j as f32 + slope[2] * k as f32;
                fixed[index(i, j, k)] = ramp;
                moving[index(i, j, k)] = ramp + 0.1;
            }
        }
    }
    let pooled = pooled_force_channels(&fixed, &moving, shape, 2, 10.0);
    let g = slope.map(|s| 2.0 * s);
    let weight = 0.2f32.powi(4) / (0.04f32 + 0.01).powi(2);
    let products = [(0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2)];
    let half = SIDE / 2;
    let mut checked = 0;
    // Boxes away from the border, whose voxels all have both neighbours.
    for k in 1..half - 1 {
        for j in 1..half - 1 {
            for i in 1..half - 1 {
                let at = i + half * (j + half * k);
                let mut expected = Vec::new();
                expected.extend(g.map(|s| 10.0 * 0.1 * s));
                expected.extend(g.map(|s| 10.0 * 0.1 * weight * s));
                expected.extend(products.map(|(a, b)| 10.0 * g[a] * g[b]));
                for (channel, want) in expected.iter().enumerate() {
                    let got = pooled[channel][at];
                    assert!((got - want).abs() < 1e-5, "channel {channel} at box {at}: {got} against {want}");
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 12 * (half - 2).pow(3));
}

#[test]
fn model_folders_of_another_format_or_incomplete_are_refused() {
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("model");
    let config = small();
    let smooth = SmoothParams { alpha: 1.0, gamma: 1.0, ..SmoothParams::default() };
    let spec = ModelSpec::new(config.clone(), smooth.clone(), 7);
    save_model(&folder, &spec, &config.init(&device)).unwrap();
    let config_path = folder.join("config.json");
    let bundle = std::fs::read_to_string(&config_path).unwrap();
    assert_eq!(Model::load(&folder, &device).unwrap().spec, spec);

    // Every part of the bundle is needed: a folder lacking one is refused, naming it.
    for field in ["smooth", "steps", "network"] {
        let mut value: serde_json::Value = serde_json::from_str(&bundle).unwrap();
        value.as_object_mut().unwrap().remove(field);
        std::fs::write(&config_path, value.to_string()).unwrap();
        let error = Model::load(&folder, &device).err().expect(field).to_string();
        assert!(error.contains("config.json"), "{field}: {error}");
        if field != "network" {
            assert!(error.contains(field), "{field}: {error}");
        }
    }
    let mut value: serde_json::Value = serde_json::from_str(&bundle).unwrap();
    value["format_version"] = 99.into();
    std::fs::write(&config_path, value.to_string()).unwrap();
    let error = Model::load(&folder, &device).err().unwrap().to_string();
    assert!(error.contains("format version 99") && error.contains("config.json"), "{error}");

    // The share of its prediction that hybrid charges is the model's to name, or not (a model
    // trained here names none: the whole prediction), and lies within 0–1.
    let mut value: serde_json::Value = serde_json::from_str(&bundle).unwrap();
    assert!(value["hybrid_charged_share"].is_null(), "{bundle}");
    value.as_object_mut().unwrap().remove("hybrid_charged_share");
    std::fs::write(&config_path, value.to_string()).unwrap();
    assert_eq!(Model::load(&folder, &device).unwrap().spec, spec);
    value["hybrid_charged_share"] = 0.5.into();
    std::fs::write(&config_path, value.to_string()).unwrap();
    assert_eq!(Model::load(&folder, &device).unwrap().spec.hybrid_charged_share, Some(0.5));
    value["hybrid_charged_share"] = 1.5.into();
    std::fs::write(&config_path, value.to_string()).unwrap();
    let error = Model::load(&folder, &device).err().unwrap().to_string();
    assert!(error.contains("hybrid_charged_share") && error.contains("config.json"), "{error}");

    // A bare network (what a training checkpoint keeps) is not a model.
    save_network(&folder, &config, &config.init(&device)).unwrap();
    let error = Model::load(&folder, &device).err().unwrap().to_string();
    assert!(error.contains("bare network") && error.contains("smoothing"), "{error}");

    // Networks of version 1 (before whitened output and matched input), 2 (before force
    // channels), 3 (before the pooled force) and 4 (before the local prior) read as ones with
    // the later fields off.
    let plain = UNetConfig::new().with_base_channels(4);
    save_network(&folder, &plain, &plain.init(&device)).unwrap();
    let text = std::fs::read_to_string(&config_path).unwrap();
    assert!(text.contains("\"format_version\": 6"), "{text}");
    let versions = [
        (1, &["whitened_output", "matched_input", "force_", "pooled_force", "local_prior"][..]),
        (2, &["force_", "pooled_force", "local_prior"][..]),
        (3, &["pooled_force", "local_prior"][..]),
        (4, &["local_prior"][..]),
        (5, &[][..]),
    ];
    for (version, dropped) in versions {
        let old: String = text
            .lines()
            .filter(|l| !dropped.iter().any(|field| l.contains(field)))
            .map(|l| l.replace("\"format_version\": 6", &format!("\"format_version\": {version}")) + "\n")
            .collect();
        let old = old.replace(",\n}", "\n}");
        std::fs::write(&config_path, &old).unwrap();
        let (read, _) = load_network(&folder, &device).unwrap();
        assert_eq!(read, plain, "{old}");
    }

    // A model folder of version 5 or older kept its smoothing in training.json: read from
    // there, and the folder refused when that is missing or does not record it.
    let old = text.replace("\"format_version\": 6", "\"format_version\": 5");
    std::fs::write(&config_path, &old).unwrap();
    let params = NetworkParams { model: Some(folder.clone()), ..NetworkParams::default() };
    let refused = |what: &str| {
        let error = diffeoreg::register::network::load(&params, &device).err().expect(what).to_string();
        assert!(error.contains("training.json"), "{what}: {error}");
        error
    };
    let error = refused("no training.json");
    assert!(error.contains("smoothing"), "{error}");
    std::fs::write(folder.join("training.json"), r#"{"epochs": 3}"#).unwrap();
    assert!(refused("no smoothing recorded").contains("\"smooth\""));
    std::fs::write(
        folder.join("training.json"),
        r#"{"smooth": {"alpha": 1.0, "gamma": 1.0, "pad": 12, "spacing_mm": null}}"#,
    )
    .unwrap();
    let loaded = diffeoreg::register::network::load(&params, &device).unwrap();
    assert_eq!(loaded.spec, ModelSpec::new(plain.clone(), smooth, 7));

    save_network(&folder, &config, &config.init(&device)).unwrap();
    std::fs::remove_file(folder.join("weights.bpk")).unwrap();
    let error = load_network(&folder, &device).unwrap_err().to_string();
    assert!(error.contains("weights.bpk"), "{error}");

    // Weights of a wider network do not fit a narrower config.
    save_network(
        &folder,
        &UNetConfig::new().with_base_channels(8),
        &UNetConfig::new().with_base_channels(8).init(&device),
    )
    .unwrap();
    std::fs::write(&config_path, serde_json::to_string(&config).unwrap()).unwrap();
    let error = load_network(&folder, &device).unwrap_err().to_string();
    assert!(error.contains("does not fit"), "{error}");
}

/// Patch-wise prediction of a volume larger than a patch: one patch covering a sub-volume gives the
/// same centre values as the network run on that sub-volume directly, and every patch is counted.
#[test]
fn patchwise_prediction_assembles_the_networks_centres() {
    use diffeoreg::net::model::predict_momentum;
    use diffeoreg::patch::tiling::{Tiling, tiles};
    let device = Device::flex();
    let mut model = small().init(&device.clone().autodiff());
    // Train a little so the prediction is not all zeros.
    let smoother = TensorSmoother::new(
        [SIDE; 3],
        &SmoothParams { alpha: 2.0, pad: 4, ..SmoothParams::default() },
        &model.devices()[0],
    );
    let mut optimizer = AdamConfig::new().init();
    for _ in 0..2 {
        let value = loss(&model, batch(&model.devices()[0]), &smoother);
        let gradients = GradientsParams::from_grads(value.backward(), &model);
        model = optimizer.step(1e-3, model, gradients);
    }
    let model = model.valid();
    let shape = [40, 28, 20];
    let n: usize = shape.iter().product();
    let fixed: Vec<f32> = (0..n).map(|v| 1.0 + 0.3 * ((v % 40) as f32 * 0.3).sin()).collect();
    let moving: Vec<f32> = (0..n).map(|v| 1.0 + 0.3 * ((v % 40) as f32 * 0.3 + 0.4).sin()).collect();
    let tiling = Tiling { patch: SIDE, margin: 4 };
    let (momentum, statistics) = predict_momentum(&model, &[&fixed, &moving], shape, tiling, &device, &|| {});
    assert_eq!(statistics.patches(), tiles(shape, tiling).len());
    assert!(momentum.components[0].iter().any(|v| *v != 0.0));

    // Every tile's kept box equals the network's output on that tile's patch.
    for tile in tiles(shape, tiling) {
        let patch = diffeoreg::patch::tiling::extract(&[&fixed, &moving], shape, tile.start, SIDE);
        let input = Tensor::<5>::from_data(TensorData::new(patch, [1, 2, SIDE, SIDE, SIDE]), &device);
        let direct = tensor_values(model.forward(input));
        let z = tile.keep_from[2];
        let y = tile.keep_from[1];
        let x = tile.keep_from[0];
        let local = (x - tile.start[0]) + SIDE * ((y - tile.start[1]) + SIDE * (z - tile.start[2]));
        for c in 0..3 {
            let assembled = momentum.components[c][x + shape[0] * (y + shape[1] * z)];
            assert_eq!(assembled, direct[c * SIDE * SIDE * SIDE + local], "tile {tile:?}, channel {c}");
        }
    }
}

/// The full-resolution objective (`train::full_resolution_energy`): on a batch it is the mean of
/// each item's energy on its box of the full-resolution pair, its gradient is laid out per item
/// and channel as the network's output and divided by the batch size, it agrees with a central
/// difference along a random direction, and Adam steps of the network through that gradient
/// lower it.
#[test]
fn the_full_resolution_objective_is_each_boxes_energy_and_trains_the_network() {
    use diffeoreg::diffeo::VectorField;
    use diffeoreg::diffeo::energy::{Refinement, energy_and_gradient_whitened};
    use diffeoreg::diffeo::pyramid::downsample;
    use diffeoreg::diffeo::smooth::Smoother;
    use diffeoreg::patch::sampler::PatchRef;
    use diffeoreg::train::data::FullResolutionPair;
    use diffeoreg::train::full_resolution_energy;

    let (factor, patch) = (4, 8);
    let side = factor * patch;
    let n = side * side * side;
    // A head-like ball of density 1.05 in air, and the same ball 2.5 voxels further along x.
    let ball = |shift: f32| -> Vec<f32> {
        (0..n)
            .map(|v| {
                let (i, j, k) = (v % side, v / side % side, v / (side * side));
                let d =
                    ((i as f32 - 15.5 - shift).powi(2) + (j as f32 - 15.5).powi(2) + (k as f32 - 15.5).powi(2)).sqrt();
                1.05 / (1.0 + (1.5 * (d - 9.0)).exp()) + 0.3 / (1.0 + (1.5 * (d - 4.0)).exp())
            })
            .collect()
    };
    let pair =
        FullResolutionPair { fixed: ball(0.0), moving: ball(2.5), shape: [side; 3], spacing_mm: [1.0; 3], factor };
    let smooth = SmoothParams { alpha: 2.0, gamma: 0.05, pad: 4, ..SmoothParams::default() };
    let half = Smoother::half([patch; 3], &smooth);
    let params = EnergyParams { lambda: 2e-3, similarity: Similarity::NormalizedMse { a: 0.1 }, steps: 7 };
    let margin = 4.0;
    let voxels = patch * patch * patch;
    let z: Vec<f32> = (0..3 * voxels).map(|v| 0.3 * ((v as f32 * 0.37).sin())).collect();
    let item = PatchRef { pair: 0, start: [0, 0, 0] };

    // One item: the energy of the whole volume (its box), computed directly.
    let (single, single_gradient) = full_resolution_energy(&z, &[item], &[&pair], patch, &half, margin, &params);
    let field = VectorField {
        shape: [patch; 3],
        components: std::array::from_fn(|c| z[c * voxels..(c + 1) * voxels].to_vec()),
    };
    let region = diffeoreg::diffeo::region::TissueMask::around(&pair.fixed, &pair.moving, [side; 3], [1.0; 3], margin)
        .at_level(1);
    let refinement = Some(Refinement { full_shape: [side; 3], velocity_factor: factor, image_factor: 1 });
    let (direct, direct_gradient) = energy_and_gradient_whitened(
        &pair.fixed,
        &pair.moving,
        None,
        &field,
        &half,
        refinement,
        Some(&region),
        &params,
    );
    assert!((single - direct.total()).abs() < 1e-9 * direct.total().abs(), "{single} vs {}", direct.total());
    for c in 0..3 {
        assert_eq!(&single_gradient[c * voxels..(c + 1) * voxels], &direct_gradient.components[c][..]);
    }

    // Two items (the second with no motion): the mean energy, each gradient halved, in place.
    let mut two_z = z.clone();
    two_z.extend(std::iter::repeat_n(0.0, 3 * voxels));
    let (mean, gradient) = full_resolution_energy(&two_z, &[item, item], &[&pair], patch, &half, margin, &params);
    let (still, still_gradient) =
        full_resolution_energy(&vec![0.0; 3 * voxels], &[item], &[&pair], patch, &half, margin, &params);
    assert!((mean - 0.5 * (single + still)).abs() < 1e-9 * mean.abs());
    for (v, (g, s)) in gradient.iter().zip(single_gradient.iter().chain(&still_gradient)).enumerate() {
        assert!((g - 0.5 * s).abs() <= 1e-6 * s.abs().max(1e-6), "voxel {v}: {g} vs {s}/2");
    }

    // A central difference along a random direction (f64 sums, f32 fields: 1e-2).
    let direction: Vec<f32> = (0..3 * voxels).map(|v| ((v * 7919 % 113) as f32 / 56.5 - 1.0) * 0.1).collect();
    let at = |t: f32| -> f64 {
        let moved: Vec<f32> = z.iter().zip(&direction).map(|(a, d)| a + t * d).collect();
        full_resolution_energy(&moved, &[item], &[&pair], patch, &half, margin, &params).0
    };
    let eps = 1e-2;
    let numeric = (at(eps) - at(-eps)) / (2.0 * eps as f64);
    let analytic: f64 = single_gradient.iter().zip(&direction).map(|(g, d)| (*g as f64) * (*d as f64)).sum();
    assert!((numeric - analytic).abs() < 1e-2 * analytic.abs(), "central difference {numeric} vs gradient {analytic}");

    // Adam steps on the network through that gradient lower the energy of its prediction.
    let device = Device::flex().autodiff();
    let config = small().with_resolution_factor(factor).with_whitened_output(true).with_matched_input(true);
    let mut model = config.init(&device);
    let input: Vec<f32> = downsample(&pair.fixed, [side; 3], factor)
        .into_iter()
        .chain(downsample(&pair.moving, [side; 3], factor))
        .collect();
    let input = Tensor::<5>::from_data(TensorData::new(input, [1, 2, patch, patch, patch]), &device);
    let mut optimizer = AdamConfig::new().init();
    let mut energies = Vec::new();
    for _ in 0..6 {
        let out = model.forward(input.clone());
        let (value, gradient) =
            full_resolution_energy(&tensor_values(out.clone()), &[item], &[&pair], patch, &half, margin, &params);
        energies.push(value);
        let gradient = Tensor::<5>::from_data(TensorData::new(gradient, out.dims()), &device);
        let gradients = GradientsParams::from_grads((out * gradient).sum().backward(), &model);
        model = optimizer.step(3e-3, model, gradients);
    }
    assert!(energies.last().unwrap() < &(0.98 * energies[0]), "energies {energies:?}");
}

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
use diffeoreg::net::{UNet, UNetConfig, load_model, save_model};

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

fn small() -> UNetConfig {
    UNetConfig::new().with_base_channels(4)
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
    save_model(&folder, &config, &inference).unwrap();
    let (loaded_config, loaded) = load_model(&folder, &cpu).unwrap();
    assert_eq!(loaded_config, config);
    assert_eq!(tensor_values(loaded.forward(batch(&cpu))), expected);

    // The same model on wgpu (lavapipe without a GPU) agrees within 1e-4.
    let gpu = Device::wgpu(DeviceKind::DefaultDevice);
    let (_, on_gpu) = load_model(&folder, &gpu).unwrap();
    let gpu_values = tensor_values(on_gpu.forward(batch(&gpu)));
    let diff = gpu_values.iter().zip(&expected).map(|(a, b)| (a - b).powi(2) as f64).sum::<f64>().sqrt();
    let norm = expected.iter().map(|b| (*b as f64).powi(2)).sum::<f64>().sqrt();
    assert!(diff / norm < 1e-4, "wgpu vs flex forward: relative difference {:e}", diff / norm);
}

#[test]
fn model_folders_of_another_format_or_incomplete_are_refused() {
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("model");
    let config = small();
    save_model(&folder, &config, &config.init(&device)).unwrap();

    let config_path = folder.join("config.json");
    let text = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(&config_path, text.replace("\"format_version\": 1", "\"format_version\": 99")).unwrap();
    let error = load_model(&folder, &device).unwrap_err().to_string();
    assert!(error.contains("format version 99") && error.contains("config.json"), "{error}");

    save_model(&folder, &config, &config.init(&device)).unwrap();
    std::fs::remove_file(folder.join("weights.bpk")).unwrap();
    let error = load_model(&folder, &device).unwrap_err().to_string();
    assert!(error.contains("weights.bpk"), "{error}");

    // Weights of a wider network do not fit a narrower config.
    save_model(
        &folder,
        &UNetConfig::new().with_base_channels(8),
        &UNetConfig::new().with_base_channels(8).init(&device),
    )
    .unwrap();
    std::fs::write(&config_path, serde_json::to_string(&config).unwrap()).unwrap();
    let error = load_model(&folder, &device).unwrap_err().to_string();
    assert!(error.contains("does not fit"), "{error}");
}

/// Patch-wise prediction of a volume larger than a patch: one patch covering a sub-volume gives the
/// same centre values as the network run on that sub-volume directly, and every patch is counted.
#[test]
fn patchwise_prediction_assembles_the_networks_centres() {
    use diffeoreg::net::predict_momentum;
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
    let (momentum, statistics) = predict_momentum(&model, &fixed, &moving, shape, tiling, &device, &|| {});
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

//! Speed of the network on Burn's CPU device (flex), or on wgpu with `--wgpu`: inference patches/s
//! (no gradients) and training patches/s (a batch: forward, the SPEC energy per patch, backward,
//! one Adam step). Run: `cargo bench --bench network_speed [-- --wgpu] [--patch 48 --batch 12
//! --base 16]` (the defaults: SPEC's patches and batch, the default U-Net); prints one JSON line.

use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, DeviceKind, Distribution, Tensor};
use diffeoreg::diffeo::energy::EnergyParams;
use diffeoreg::diffeo::smooth::SmoothParams;
use diffeoreg::diffeo::tensor::smooth::TensorSmoother;
use diffeoreg::diffeo::tensor::tensor_values;
use diffeoreg::net::UNetConfig;
use diffeoreg::train::{batch_loss, energies_together};

/// `--name value` from the command line, or the default.
fn argument(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let gpu = std::env::args().any(|a| a == "--wgpu");
    let plain = if gpu { Device::wgpu(DeviceKind::DefaultDevice) } else { Device::flex() };
    let device = plain.clone().autodiff();
    let (patch, batch_size, base) = (argument("--patch", 48), argument("--batch", 12), argument("--base", 16));
    let config = UNetConfig::new().with_base_channels(base);
    let mut model = config.init(&device);
    let input = |device: &Device, batch: usize| {
        Tensor::<5>::random([batch, 2, patch, patch, patch], Distribution::Uniform(0.0, 1.5), device)
    };

    // Inference.
    let inference = model.valid();
    let warm = input(&plain, 1);
    tensor_values(inference.forward(warm.clone()));
    let clock = Instant::now();
    let repeats = 3;
    for _ in 0..repeats {
        tensor_values(inference.forward(warm.clone()));
    }
    let inference_s = clock.elapsed().as_secs_f64() / repeats as f64;

    // Training steps.
    let smoother = TensorSmoother::new([patch; 3], &SmoothParams::default(), &device);
    let params = EnergyParams::default();
    let mut optimizer = AdamConfig::new().init();
    let mut step_s = Vec::new();
    for _ in 0..2 {
        let clock = Instant::now();
        let together = energies_together(&plain, batch_size);
        let loss = batch_loss(&model, input(&device, batch_size), &smoother, &params, together);
        let gradients = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(1e-4, model, gradients);
        tensor_values(model.forward(input(&device, 1)).detach());
        step_s.push(clock.elapsed().as_secs_f64());
    }
    let step = step_s.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "{{\"device\":\"{}\",\"patch\":{patch},\"inference_s_per_patch\":{inference_s:.3},\"inference_patches_per_s\":{:.2},\
         \"train_batch\":{batch_size},\"train_step_s\":{step:.2},\"train_patches_per_s\":{:.2}}}",
        if gpu { "wgpu" } else { "flex" },
        1.0 / inference_s,
        batch_size as f64 / step
    );
}

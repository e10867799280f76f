//! Speed of the network on Burn's CPU device (flex), or on wgpu with `--wgpu`: inference patches/s
//! (48³, no gradients) and training patches/s (batch of 12 patches of 48³: forward, the SPEC energy
//! per patch, backward, one Adam step). Run: `cargo bench --bench network_speed [-- --wgpu]`;
//! prints one JSON line.

use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, DeviceKind, Distribution, Tensor};
use diffeoreg::diffeo::energy::EnergyParams;
use diffeoreg::diffeo::smooth::SmoothParams;
use diffeoreg::diffeo::tensor::energy::energy;
use diffeoreg::diffeo::tensor::smooth::TensorSmoother;
use diffeoreg::diffeo::tensor::tensor_values;
use diffeoreg::net::UNetConfig;

const PATCH: usize = 48;
const BATCH: usize = 12;

fn main() {
    let gpu = std::env::args().any(|a| a == "--wgpu");
    let plain = if gpu { Device::wgpu(DeviceKind::DefaultDevice) } else { Device::flex() };
    let device = plain.clone().autodiff();
    let config = UNetConfig::new();
    let mut model = config.init(&device);
    let input = |device: &Device, batch: usize| {
        Tensor::<5>::random([batch, 2, PATCH, PATCH, PATCH], Distribution::Uniform(0.0, 1.5), device)
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
    let smoother = TensorSmoother::new([PATCH; 3], &SmoothParams::default(), &device);
    let params = EnergyParams::default();
    let mut optimizer = AdamConfig::new().init();
    let mut step_s = Vec::new();
    for _ in 0..2 {
        let clock = Instant::now();
        let batch = input(&device, BATCH);
        let momentum = model.forward(batch.clone());
        let mut total: Option<Tensor<1>> = None;
        for b in 0..BATCH {
            let patch = |c: usize| batch.clone().narrow(0, b, 1).narrow(1, c, 1).reshape([1, PATCH, PATCH, PATCH]);
            let m = momentum.clone().narrow(0, b, 1).reshape([3, PATCH, PATCH, PATCH]);
            let e = energy(patch(0), patch(1), m, &smoother, &params).total();
            total = Some(match total {
                Some(t) => t + e,
                None => e,
            });
        }
        let loss = total.expect("a batch") / BATCH as f32;
        let gradients = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(1e-4, model, gradients);
        tensor_values(model.forward(input(&device, 1)).detach());
        step_s.push(clock.elapsed().as_secs_f64());
    }
    let step = step_s.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "{{\"device\":\"{}\",\"patch\":{PATCH},\"inference_s_per_patch\":{inference_s:.3},\"inference_patches_per_s\":{:.2},\
         \"train_batch\":{BATCH},\"train_step_s\":{step:.2},\"train_patches_per_s\":{:.2}}}",
        if gpu { "wgpu" } else { "flex" },
        1.0 / inference_s,
        BATCH as f64 / step
    );
}

//! Speed of one evaluation of the optimiser's energy and gradient at full resolution, as its
//! last level runs it (the velocity 4× coarser than the images, the images compared over the
//! tissue region), for each similarity, and of local NCC's own kernel on the region's box.
//! The pair is the synthetic head (256×256×108 at 0.9×0.9×1.6 mm by default, the size of the
//! real-CT pairs) against itself shifted and rescaled in grey value. Run:
//! `cargo bench --bench energy_speed [-- --repeat 5]`; prints one JSON line per measurement,
//! the median over the repeats in seconds.

use std::time::Instant;

use diffeoreg::diffeo::VectorField;
use diffeoreg::diffeo::energy::{EnergyParams, Refinement, Similarity, energy_and_gradient_whitened};
use diffeoreg::diffeo::local_ncc;
use diffeoreg::diffeo::pyramid::level_shape;
use diffeoreg::diffeo::region::TissueMask;
use diffeoreg::diffeo::smooth::{SmoothParams, Smoother};
use diffeoreg::phantom::head::synthetic_head;

fn argument(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The median wall time of `repeat` runs of `run`, after one untimed run.
fn median_seconds(repeat: usize, mut run: impl FnMut()) -> f64 {
    run();
    let mut times: Vec<f64> = (0..repeat)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    diffeoreg::heap::keep_freed_blocks();
    let repeat = argument("--repeat", 5).max(1);
    let shape = [argument("--nx", 256), argument("--ny", 256), argument("--nz", 108)];
    let spacing = [0.9, 0.9, 1.6];
    let fixed = synthetic_head(shape, spacing).voxels;
    let [nx, ny, _] = shape;
    // The moving image: the head 1.5 voxels along x and 1 along z away, 1.1× denser.
    let moving: Vec<f32> = (0..fixed.len())
        .map(|n| {
            let (i, j, k) = (n % nx, n / nx % ny, n / (nx * ny));
            let (i, k) = (i.saturating_sub(1).min(nx - 1), k.saturating_sub(1));
            1.1 * 0.5 * (fixed[i + nx * (j + ny * k)] + fixed[(i + 2).min(nx - 1) + nx * (j + ny * k)])
        })
        .collect();
    let region = TissueMask::around(&fixed, &moving, shape, spacing, 12.0).at_level(1);
    let refinement = Refinement { full_shape: shape, velocity_factor: 4, image_factor: 1 };
    let velocity_shape = level_shape(shape, 4);
    let half = Smoother::half(velocity_shape, &SmoothParams { gamma: 0.05, ..SmoothParams::default() });
    // A momentum with some structure, so the warps are not the identity.
    let mut z = VectorField::zeros(velocity_shape);
    for (c, component) in z.components.iter_mut().enumerate() {
        for (n, value) in component.iter_mut().enumerate() {
            *value = 0.3 * ((n as f32 * 0.01 + c as f32).sin());
        }
    }
    for (name, similarity) in
        [("local NCC r2", Similarity::LocalNcc { radius: 2 }), ("normalised MSE", Similarity::NormalizedMse { a: 0.1 })]
    {
        let params = EnergyParams { lambda: 0.002, similarity, ..EnergyParams::default() };
        let seconds = median_seconds(repeat, || {
            let (energy, _) = energy_and_gradient_whitened(
                &fixed,
                &moving,
                None,
                &z,
                &half,
                Some(refinement),
                Some(&region),
                &params,
            );
            assert!(energy.total().is_finite());
        });
        println!(
            "{{\"measure\": \"energy and gradient\", \"similarity\": \"{name}\", \"shape\": {shape:?}, \"seconds\": {seconds:.4}, \"threads\": {}}}",
            rayon::current_num_threads()
        );
    }
    let whole = shape.map(|n| 0..n);
    let seconds = median_seconds(repeat, || {
        let (cost, _) = local_ncc::cost_and_gradient(&moving, &fixed, shape, &whole, 2, |_| true);
        assert!(cost.is_finite());
    });
    println!(
        "{{\"measure\": \"local NCC kernel, whole grid\", \"radius\": 2, \"shape\": {shape:?}, \"seconds\": {seconds:.4}}}"
    );
}

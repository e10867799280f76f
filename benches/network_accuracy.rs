//! Accuracy and speed of the learned registration on synthetic phantoms held out from training
//! (heads and deformations of seeds the training never saw; `train --synthetic` uses seeds from
//! 1000): endpoint error inside the body for rigid only, network, hybrid and direct
//! optimisation, folding voxels, and the stage times; the network also with tiles of the
//! training patch size (32, margin 8) against one large tile (64, margin 8), to show the larger
//! tiles keep accuracy.
//!
//! Run: `cargo bench --bench network_accuracy [-- MODEL_DIR] [--seeds 9000,9001,…] [--methods network,hybrid]
//! [--cascade N] [--hybrid-levels 4,2 --hybrid-iterations 40,40]` (N predictions per case,
//! `NetworkParams::cascade`; the levels and iterations of hybrid's optimisation); prints one
//! JSON line per case and method, then the means.

use std::path::PathBuf;
use std::time::Instant;

use diffeoreg::metrics::{body_mask, endpoint_error};
use diffeoreg::phantom::{DEMO_SHAPE, DEMO_SPACING_MM, synthetic_phantom};
use diffeoreg::progress::Silent;
use diffeoreg::register::pipeline::{Method, RegisterParams, register_volumes};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let mut model = None;
    let mut seeds: Vec<u64> = vec![9000, 9001, 9002, 9003];
    let mut only: Option<Vec<String>> = None;
    let mut cascade = 1;
    let (mut hybrid_levels, mut hybrid_iterations): (Option<Vec<usize>>, Option<Vec<usize>>) = (None, None);
    let mut i = 0;
    while i < args.len() {
        if args[i] == "--seeds" {
            seeds = args[i + 1].split(',').map(|s| s.parse().expect("seeds are numbers")).collect();
            i += 2;
        } else if args[i] == "--cascade" {
            cascade = args[i + 1].parse().expect("cascade is a number");
            i += 2;
        } else if args[i] == "--hybrid-levels" {
            hybrid_levels = Some(args[i + 1].split(',').map(|v| v.parse().expect("levels are numbers")).collect());
            i += 2;
        } else if args[i] == "--hybrid-iterations" {
            hybrid_iterations =
                Some(args[i + 1].split(',').map(|v| v.parse().expect("iterations are numbers")).collect());
            i += 2;
        } else if args[i] == "--methods" {
            only = Some(args[i + 1].split(',').map(str::to_string).collect());
            i += 2;
        } else {
            model = Some(PathBuf::from(&args[i]));
            i += 1;
        }
    }
    let mut variants: Vec<(&str, Method, usize, usize)> = vec![
        ("network", Method::Network, 64, 8),
        ("network-tiles-32", Method::Network, 32, 8),
        ("hybrid", Method::Hybrid, 64, 8),
        ("optimize", Method::Optimize, 64, 8),
    ];
    if let Some(only) = only {
        variants.retain(|v| only.iter().any(|name| name == v.0));
    }
    let mut sums = std::collections::BTreeMap::<String, (f64, f64, usize, usize)>::new();
    for &seed in &seeds {
        let phantom = synthetic_phantom(seed, DEMO_SHAPE, DEMO_SPACING_MM, 7.0).expect("a phantom");
        let body = body_mask(&phantom.fixed, &RegisterParams::default().calibration);
        for (name, method, tile, margin) in &variants {
            let mut params = RegisterParams { method: method.clone(), ..RegisterParams::default() };
            params.network.model = model.clone();
            params.network.cascade = cascade;
            if let Some(levels) = &hybrid_levels {
                params.network.hybrid_levels = levels.clone();
            }
            if let Some(iterations) = &hybrid_iterations {
                params.network.hybrid_iterations = iterations.clone();
            }
            (params.network.tile, params.network.margin) = (*tile, *margin);
            let clock = Instant::now();
            let result = register_volumes(&phantom.fixed, &phantom.moving, &params, &Silent).expect("registers");
            let wall = clock.elapsed().as_secs_f64();
            let epe = endpoint_error(&result.warp_fwd, &phantom.truth_fwd, &body).expect("same grid");
            let rigid_field = result.rigid.transform.to_displacement_field(&phantom.fixed.geometry);
            let rigid = endpoint_error(&rigid_field, &phantom.truth_fwd, &body).expect("same grid");
            let t = &result.timings;
            println!(
                "{{\"seed\":{seed},\"method\":\"{name}\",\"rigid_epe_mm\":{:.3},\"epe_mm\":{:.3},\"epe_p95_mm\":{:.3},\
                 \"ratio_to_rigid\":{:.3},\"folding_voxels\":{},\"wall_s\":{wall:.2},\"local_estimate_s\":{:.2},\"predict_s\":{:.2},\"smooth_s\":{:.2},\
                 \"optimize_s\":{:.2}}}",
                rigid.mean_mm,
                epe.mean_mm,
                epe.p95_mm,
                epe.mean_mm / rigid.mean_mm,
                result.quality.folding_voxels,
                t.local_estimate_s,
                t.predict_s,
                t.smooth_s,
                t.optimize_s
            );
            let entry = sums.entry(name.to_string()).or_default();
            entry.0 += epe.mean_mm;
            entry.1 += rigid.mean_mm;
            entry.2 += result.quality.folding_voxels;
            entry.3 += 1;
        }
    }
    for (name, (epe, rigid, folding, n)) in sums {
        println!(
            "{{\"summary\":\"{name}\",\"cases\":{n},\"mean_epe_mm\":{:.3},\"mean_rigid_epe_mm\":{:.3},\"ratio\":{:.3},\"folding_voxels\":{folding}}}",
            epe / n as f64,
            rigid / n as f64,
            epe / rigid
        );
    }
}

//! `register --method network` and `--method hybrid` with the built-in model, on a synthetic
//! phantom held out from training (its head and deformation seeds are not among the training
//! seeds): every output is written, with the patch-border plot; no voxel folds; the network
//! leaves at most three quarters of the rigid stage's endpoint error; its prediction is the
//! same with several tiles as with one large tile; hybrid is never worse than the network
//! alone; on the GPU (wgpu) the field is the CPU's.
//! A model folder that is not one is refused.

use diffeoreg::metrics::{body_mask, endpoint_error};
use diffeoreg::phantom::{DEMO_SHAPE, DEMO_SPACING_MM, synthetic_phantom};
use diffeoreg::progress::Silent;
use diffeoreg::register::pipeline::{Method, RegisterParams, input_in_memory, register_volumes, write_outputs};

#[test]
fn network_and_hybrid_register_a_held_out_phantom() {
    let phantom = synthetic_phantom(9100, DEMO_SHAPE, DEMO_SPACING_MM, 7.0).unwrap();
    let body = body_mask(&phantom.fixed, &RegisterParams::default().calibration);
    let error = |params: &RegisterParams| {
        let result = register_volumes(&phantom.fixed, &phantom.moving, params, &Silent).unwrap();
        let epe = endpoint_error(&result.warp_fwd, &phantom.truth_fwd, &body).unwrap();
        (result, epe.mean_mm)
    };
    let network = RegisterParams { method: Method::Network, ..RegisterParams::default() };
    let (result, network_epe) = error(&network);
    assert_eq!(result.quality.folding_voxels, 0);
    assert!(result.timings.predict_s > 0.0 && result.model.as_deref().unwrap().contains("built-in"));
    let (statistics, margin) = result.border.as_ref().expect("patch-border statistics");
    assert!(statistics.patches() >= 1);
    assert_eq!(*margin, network.network.margin);
    let rigid_field = result.rigid.transform.to_displacement_field(&phantom.fixed.geometry);
    let rigid_epe = endpoint_error(&rigid_field, &phantom.truth_fwd, &body).unwrap().mean_mm;
    // The shipped model on a held-out synthetic phantom (it trained on real-CT pairs and
    // synthetic heads; its real-CT test is in tests/real_ct.rs). Since session 26 its local
    // estimate reads the pair as the rigid alignment left it, not matched in grey values and
    // resolution: on real-CT pairs that took the network from 0.532× to 0.349× rigid (README),
    // while on this synthetic head it went from 1.287 mm (0.45× rigid) to 1.942 mm (0.68×;
    // session 27's longer training: 1.756 mm): here the match helps the estimate (on the demo
    // case its zero head reads 1.01 mm matched, 1.60 mm unmatched).
    assert!(network_epe <= 0.75 * rigid_epe, "network {network_epe:.3} mm, rigid {rigid_epe:.3} mm");
    assert!(result.timings.local_estimate_s > 0.0, "the built-in model corrects the local estimate");

    let dir = tempfile::tempdir().unwrap();
    let inputs = vec![
        input_in_memory("fixed", "phantom", &phantom.fixed),
        input_in_memory("moving", "phantom", &phantom.moving),
    ];
    let report = write_outputs(dir.path(), &phantom.fixed, &result, &network, inputs, vec![], None, &Silent).unwrap();
    assert!(report.model.is_some());
    for name in ["warp_fwd.nii.gz", "warp_inv.nii.gz", "moving_warped.nii.gz", "report.json", "qa/patch_border.png"] {
        assert!(dir.path().join(name).is_file(), "{name} missing");
    }

    // Tiles smaller than the network's grid (the built-in model sees the 128³ phantom of
    // 1.6–1.9 mm at 1/3 resolution, its grid_mm of 4.45 mm: a 43³ grid; 36³ tiles with the
    // default margin of 12, 8 of them, against one tile). Its correction is smoothed mildly, so a
    // narrower margin shows where tiles meet: with session 27's model, 28³ tiles with a margin
    // of 8 were 0.106 mm from one tile, 32³ with 10 0.019 mm, 36³ with 12 0.001 mm.
    let mut tiled = network.clone();
    tiled.network.tile = 36;
    let (tiled_result, tiled_epe) = error(&tiled);
    assert!(tiled_result.border.as_ref().unwrap().0.patches() > statistics.patches());
    assert!((tiled_epe - network_epe).abs() < 0.05, "tiles 28: {tiled_epe:.3} mm, one tile: {network_epe:.3} mm");

    // The refinement compares grey values as they are (the optimiser's default since real-CT
    // pairs decided it), at 1/2 then full resolution with the prediction charged by the
    // regulariser (since session 24; three quarters of it since session 31). Hybrid never hands
    // back less than it started from: the network's prediction is returned, with a warning,
    // when the refinement made the images agree less. With the model of sessions 20–25 the refinement helped here (network 1.287,
    // hybrid 1.169 mm); from the shipped model's start (1.942 mm) it makes the density MSE the
    // guard judges worse (0.00339 → 0.00358 on the demo case), and the prediction is kept. On
    // the held-out real-CT pairs the refinement is kept on every pair (README).
    let hybrid = RegisterParams { method: Method::Hybrid, ..RegisterParams::default() };
    let (hybrid_result, hybrid_epe) = error(&hybrid);
    assert_eq!(hybrid_result.quality.folding_voxels, 0);
    let mse = |r: &diffeoreg::register::pipeline::Registration| {
        diffeoreg::metrics::verdict::mean_both_ways(&r.metrics.result, |d| d.image.mse)
    };
    // Two runs (network, then hybrid) each align and predict anew: the same field to rounding.
    let (network_mse, hybrid_mse) = (mse(&result), mse(&hybrid_result));
    assert!(hybrid_mse <= network_mse * (1.0 + 1e-9), "MSE: network {network_mse}, hybrid {hybrid_mse}");
    let returned = hybrid_result.warnings.iter().any(|w| w.contains("the network's prediction is returned"));
    if returned {
        assert!(
            (hybrid_epe - network_epe).abs() <= 1e-6 * network_epe,
            "the prediction is returned as the network made it: {hybrid_epe} against {network_epe} mm"
        );
    } else {
        assert!(hybrid_epe < network_epe, "network {network_epe:.3}, refined {hybrid_epe:.3} mm");
    }
    assert!(
        hybrid_epe <= 0.75 * rigid_epe,
        "rigid {rigid_epe:.3}, network {network_epe:.3}, hybrid {hybrid_epe:.3} mm"
    );
    eprintln!(
        "held-out phantom: rigid {rigid_epe:.3} mm, network {network_epe:.3} (tiles 36: {tiled_epe:.3}), hybrid {hybrid_epe:.3}"
    );
}

#[test]
fn a_folder_that_is_not_a_model_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let phantom = synthetic_phantom(9101, [40, 44, 40], [5.0, 5.5, 5.5], 7.0).unwrap();
    let mut params = RegisterParams { method: Method::Network, ..RegisterParams::default() };
    params.network.model = Some(dir.path().to_path_buf());
    let error = register_volumes(&phantom.fixed, &phantom.moving, &params, &Silent).err().expect("refused").to_string();
    assert!(error.contains("config.json"), "{error}");
}

/// `--gpu`: the prediction on Burn's wgpu device (lavapipe where there is no GPU) gives the
/// field the CPU gives.
#[test]
fn the_gpu_predicts_the_cpus_field() {
    let phantom = synthetic_phantom(9101, DEMO_SHAPE, DEMO_SPACING_MM, 7.0).unwrap();
    let register = |gpu: bool| {
        let mut params = RegisterParams { method: Method::Network, ..RegisterParams::default() };
        params.network.gpu = gpu;
        register_volumes(&phantom.fixed, &phantom.moving, &params, &Silent).unwrap()
    };
    let (cpu, gpu) = (register(false), register(true));
    let largest_difference = |a: &[Vec<f32>; 3], b: &[Vec<f32>; 3]| {
        a.iter().zip(b).flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs())).fold(0f32, f32::max)
    };
    let rigid = cpu.rigid.transform.to_displacement_field(&phantom.fixed.geometry);
    let network_part = largest_difference(&cpu.warp_fwd.components_mm, &rigid.components_mm);
    assert!(network_part > 0.1, "the network should move something beyond the rigid motion: {network_part} mm");
    let difference = largest_difference(&cpu.warp_fwd.components_mm, &gpu.warp_fwd.components_mm);
    eprintln!("wgpu against flex: up to {difference:e} mm apart (network part {network_part} mm)");
    assert!(difference < 1e-3, "wgpu and flex fields differ by up to {difference} mm (network part {network_part} mm)");
    // Another device sums in another order: bit-identical fields would mean `gpu` was ignored.
    assert!(difference > 0.0, "the --gpu field is bit-identical to the CPU's: was it predicted on the GPU?");
}

/// Hybrid charges the share of the network's start that its model names (the built-in model:
/// three quarters), the whole start for a model that names none (a model trained here), and
/// the share given on the command line over either; the report records the share used.
#[test]
fn hybrid_charges_the_share_its_model_names() {
    use diffeoreg::net::model::{Model, save_model};
    let phantom = synthetic_phantom(9101, [40, 44, 40], [5.0, 5.5, 5.5], 7.0).unwrap();
    let device = burn::tensor::Device::flex();
    let builtin = Model::builtin(&device).unwrap();
    assert_eq!(builtin.spec.hybrid_charged_share, Some(0.75));
    let dir = tempfile::tempdir().unwrap();
    let unnamed = dir.path().join("unnamed");
    let spec = diffeoreg::net::model::ModelSpec { hybrid_charged_share: None, ..builtin.spec.clone() };
    save_model(&unnamed, &spec, &builtin.network).unwrap();
    let run = |model: Option<std::path::PathBuf>, share: Option<f64>| {
        let mut params = RegisterParams { method: Method::Hybrid, ..RegisterParams::default() };
        params.network.model = model;
        params.network.hybrid_charged_share = share;
        (register_volumes(&phantom.fixed, &phantom.moving, &params, &Silent).unwrap(), params)
    };
    let (shipped, shipped_params) = run(None, None);
    let (whole, _) = run(Some(unnamed.clone()), None);
    let (told, _) = run(Some(unnamed), Some(0.75));
    assert_eq!(shipped.hybrid_charged_share, Some(0.75));
    assert_eq!(whole.hybrid_charged_share, Some(1.0));
    assert_eq!(told.hybrid_charged_share, Some(0.75));
    // The same weights: only the share tells the two models' refinements apart.
    assert_eq!(told.warp_fwd, shipped.warp_fwd);
    assert_ne!(whole.warp_fwd, shipped.warp_fwd);
    let network = RegisterParams { method: Method::Network, ..RegisterParams::default() };
    assert_eq!(
        register_volumes(&phantom.fixed, &phantom.moving, &network, &Silent).unwrap().hybrid_charged_share,
        None
    );
    // Not charging the start at all is a share of none, whatever the model names.
    let mut base = RegisterParams { method: Method::Hybrid, ..RegisterParams::default() };
    base.network.hybrid_regularise_start = false;
    let based = register_volumes(&phantom.fixed, &phantom.moving, &base, &Silent).unwrap();
    assert_eq!(based.hybrid_charged_share, Some(0.0));
    assert_ne!(based.warp_fwd, shipped.warp_fwd);

    let out = dir.path().join("out");
    let inputs = vec![
        input_in_memory("fixed", "phantom", &phantom.fixed),
        input_in_memory("moving", "phantom", &phantom.moving),
    ];
    write_outputs(&out, &phantom.fixed, &shipped, &shipped_params, inputs, vec![], None, &Silent).unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["parameters"]["network"]["hybrid_charged_share"], 0.75);
}

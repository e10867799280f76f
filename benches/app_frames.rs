//! UI-thread time per frame of the app with a 512×512×300 pair loaded, while the slice and the
//! window/level change every frame, and while a registration runs on the worker.
//! Run: `cargo bench --bench app_frames` (prints one JSON line).
//!
//! The frame time is what `DiffeoregApp::ui` spends on the UI thread (input, panels, building
//! the views' draw calls); drawing itself happens on the GPU. The time of a full kittest frame
//! rendered by wgpu (lavapipe draws on the CPU here) is printed too, for reference.

use std::time::{Duration, Instant};

use diffeoreg::app::{AppOptions, DiffeoregApp};
use diffeoreg::phantom::head::synthetic_head;
use diffeoreg::volume::Volume;
use egui_kittest::Harness;

fn wait_until_idle(harness: &mut Harness<'_, DiffeoregApp>) {
    while harness.state().is_busy() {
        harness.step();
        std::thread::sleep(Duration::from_millis(20));
    }
    harness.step();
}

fn stats(ms: &[f64]) -> (f64, f64, f64) {
    let mut sorted = ms.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    (mean, sorted[(sorted.len() * 95 / 100).min(sorted.len() - 1)], sorted[sorted.len() - 1])
}

fn main() {
    let shape = [512, 512, 300];
    let clock = Instant::now();
    let fixed = synthetic_head(shape, [0.5, 0.5, 0.8]);
    // The moving image: the same head one slice lower (a different image on the same grid).
    let mut moving = Volume::filled(fixed.geometry.clone(), -1000.0);
    let plane = shape[0] * shape[1];
    moving.voxels[plane..].copy_from_slice(&fixed.voxels[..fixed.voxels.len() - plane]);
    let build_s = clock.elapsed().as_secs_f64();

    let options = AppOptions { load_demo: false, ..AppOptions::default() };
    let mut harness =
        Harness::builder().with_size([1500.0, 950.0]).wgpu().build_eframe(move |cc| DiffeoregApp::new(cc, options));
    let clock = Instant::now();
    harness.state_mut().load_volumes("512×512×300 head".into(), fixed, moving);
    // The frame that receives the loaded case also uploads its textures.
    while harness.state().is_busy() {
        std::thread::sleep(Duration::from_millis(20));
        harness.step();
    }
    let upload_ms = harness.state().last_frame_time().as_secs_f64() * 1e3;
    let load_s = clock.elapsed().as_secs_f64();
    assert!(harness.state().case().is_some(), "{:?}", harness.state().message());

    let mut ui_ms = Vec::new();
    let mut rendered_ms = Vec::new();
    for frame in 0..60 {
        let app = harness.state_mut();
        let mut cursor = app.cursor();
        cursor[2] = (cursor[2] + 1.0) % 300.0;
        app.set_cursor(cursor);
        app.display.window = app.display.window.dragged(if frame % 2 == 0 { 3.0 } else { -3.0 }, 1.0);
        let clock = Instant::now();
        if frame % 10 == 0 {
            harness.step();
            harness.render().expect("wgpu renders the frame");
            rendered_ms.push(clock.elapsed().as_secs_f64() * 1e3);
        } else {
            harness.step();
        }
        ui_ms.push(harness.state().last_frame_time().as_secs_f64() * 1e3);
    }

    // While a registration runs, the UI keeps stepping; measure its frames for a while, then cancel.
    harness.state_mut().start_registration();
    let mut busy_ms = Vec::new();
    let clock = Instant::now();
    while clock.elapsed() < Duration::from_secs(20) && harness.state().is_busy() {
        harness.step();
        busy_ms.push(harness.state().last_frame_time().as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_millis(16));
    }
    harness.state().cancel();
    wait_until_idle(&mut harness);

    let (mean, p95, max) = stats(&ui_ms);
    let (busy_mean, busy_p95, busy_max) = stats(&busy_ms);
    let (rendered_mean, _, _) = stats(&rendered_ms);
    println!(
        "{{\"shape\":[512,512,300],\"build_s\":{build_s:.1},\"load_s\":{load_s:.1},\"upload_frame_ms\":{upload_ms:.1},\
         \"ui_frame_ms\":{{\"mean\":{mean:.2},\"p95\":{p95:.2},\"max\":{max:.2}}},\
         \"ui_frame_ms_while_registering\":{{\"frames\":{},\"mean\":{busy_mean:.2},\"p95\":{busy_p95:.2},\"max\":{busy_max:.2}}},\
         \"kittest_rendered_frame_ms\":{rendered_mean:.0},\"adapter\":\"{}\"}}",
        busy_ms.len(),
        harness.state().gpu_name().unwrap_or_default()
    );
}

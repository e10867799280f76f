//! The desktop app driven through egui_kittest, rendered by wgpu (Mesa's lavapipe on machines
//! without a GPU): the demo loads and is drawn, a registration runs to completion from the work
//! panel, every overlay draws something of its own, a view exports as a PNG, a running job
//! cancels, and a failing job leaves the app usable.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use diffeoreg::app::view::Orientation;
use diffeoreg::app::{AppOptions, DiffeoregApp, Overlay, Row};
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use image::RgbaImage;

fn harness(options: AppOptions) -> Harness<'static, DiffeoregApp> {
    Harness::builder()
        .with_size([1400.0, 900.0])
        .with_pixels_per_point(1.0)
        .wgpu()
        .build_eframe(move |cc| DiffeoregApp::new(cc, options))
}

fn wait_until_idle(harness: &mut Harness<'_, DiffeoregApp>, limit: Duration) {
    let start = Instant::now();
    loop {
        harness.step();
        if !harness.state().is_busy() {
            harness.step();
            return;
        }
        assert!(start.elapsed() < limit, "the job did not finish within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The pixels of one view from a rendered frame.
fn crop(frame: &RgbaImage, app: &DiffeoregApp, row: Row, orientation: Orientation) -> RgbaImage {
    let rect = app.view_rect(row, orientation).expect("the view was drawn");
    let (x, y) = (rect.left().ceil() as u32, rect.top().ceil() as u32);
    let (w, h) = (rect.width().floor() as u32 - 1, rect.height().floor() as u32 - 1);
    image::imageops::crop_imm(frame, x, y, w, h).to_image()
}

fn grey_std(image: &RgbaImage) -> f64 {
    let values: Vec<f64> = image.pixels().map(|p| (p[0] as f64 + p[1] as f64 + p[2] as f64) / 3.0).collect();
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64).sqrt()
}

fn mean_abs_difference(a: &RgbaImage, b: &RgbaImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let sum: f64 =
        a.pixels().zip(b.pixels()).map(|(p, q)| (0..3).map(|c| (p[c] as f64 - q[c] as f64).abs()).sum::<f64>()).sum();
    sum / (3.0 * a.pixels().len() as f64)
}

/// How far a difference map is from white (no difference), averaged over the volume's pixels
/// (the black around the slice, where the view is wider than the volume, is left out).
fn mean_colour_deviation(image: &RgbaImage) -> f64 {
    let inside: Vec<f64> = image
        .pixels()
        .filter(|p| p[0].max(p[1]).max(p[2]) > 60)
        .map(|p| 255.0 - p[0].min(p[1]).min(p[2]) as f64)
        .collect();
    inside.iter().sum::<f64>() / inside.len().max(1) as f64
}

fn render(harness: &mut Harness<'_, DiffeoregApp>) -> RgbaImage {
    harness.step();
    harness.render().expect("wgpu renders the frame")
}

#[test]
fn the_calibration_curve_loads_and_the_patient_only_switch_toggles() {
    let mut harness = harness(AppOptions { load_demo: false, ..AppOptions::default() });
    harness.step();
    harness.get_by_label("Load…");
    let dir = tempfile::tempdir().unwrap();
    let (good, bad) = (dir.path().join("site.txt"), dir.path().join("broken.txt"));
    std::fs::write(&good, "# site curve\n-1000 0\n0 1.0\n1500 1.9\n").unwrap();
    std::fs::write(&bad, "-1000 0\n0 one\n").unwrap();
    harness.state_mut().load_calibration(good.clone());
    harness.step();
    assert_eq!(harness.state().params.calibration.points, vec![[-1000.0, 0.0], [0.0, 1.0], [1500.0, 1.9]]);
    harness.get_by_label("Default");
    harness.state_mut().load_calibration(bad.clone());
    harness.step();
    let (is_error, line) = harness.state().message().cloned().unwrap();
    assert!(is_error && line.contains("broken.txt") && line.contains("line 2"), "{line}");
    assert_eq!(harness.state().params.calibration.points.len(), 3, "a bad file leaves the curve as it was");
    assert_eq!(harness.state().calibration_file.as_deref(), Some(good.as_path()));
    assert!(harness.state().params.patient_only);
    harness.get_by_label("compare only the patient (not the couch or head rest)").click();
    harness.step();
    assert!(!harness.state().params.patient_only);
}

/// A pair made from the real head CT (2 mm, varied development seed 3) loads, registers and shows
/// its verdict; the frame is saved as `real-ct-pair.png` (the README's screenshot).
#[test]
fn a_real_ct_pair_registers_in_the_app() {
    use diffeoreg::phantom::{PhantomParams, make_phantom};
    let phantom = make_phantom(&common::real_ct_at(2.0), &PhantomParams::varied(3, false)).unwrap();
    let mut harness = harness(AppOptions { load_demo: false, ..AppOptions::default() });
    harness.state_mut().load_volumes("real CT, varied seed 3".into(), phantom.fixed, phantom.moving);
    wait_until_idle(&mut harness, Duration::from_secs(120));
    harness.get_by_label("Register").click();
    harness.step();
    wait_until_idle(&mut harness, Duration::from_secs(600));
    let app = harness.state();
    let result = app.result().unwrap_or_else(|| panic!("registration finished: {:?}", app.message()));
    assert_eq!(
        result.registration.verdict.status,
        diffeoreg::metrics::verdict::Status::Ok,
        "{:?}",
        result.registration.verdict
    );
    harness.get_by_label("Verdict");
    harness.state_mut().display.overlay = Overlay::Checkerboard;
    let frame = render(&mut harness);
    frame.save(Path::new(env!("CARGO_TARGET_TMPDIR")).join("real-ct-pair.png")).unwrap();
    assert!(grey_std(&crop(&frame, harness.state(), Row::Fixed, Orientation::Axial)) > 10.0, "the CT is drawn");
}

#[test]
fn demo_registers_and_every_overlay_draws() {
    // The demo exactly as the app opens on it, registered with the default parameters.
    let mut harness = harness(AppOptions::default());
    assert!(harness.state().is_busy(), "the demo starts loading at once");
    wait_until_idle(&mut harness, Duration::from_secs(120));
    assert!(harness.state().case().is_some(), "demo loaded: {:?}", harness.state().message());

    // Every view shows an image, not a flat colour.
    let frame = render(&mut harness);
    for row in Row::ALL {
        for orientation in Orientation::ALL {
            let view = crop(&frame, harness.state(), row, orientation);
            assert!(grey_std(&view) > 20.0, "{row:?} {orientation:?} is nearly flat ({:.1})", grey_std(&view));
        }
    }
    // Fixed and moving differ (a deformation and a pseudo-CT appearance lie between them).
    let fixed = crop(&frame, harness.state(), Row::Fixed, Orientation::Axial);
    let moving = crop(&frame, harness.state(), Row::Moving, Orientation::Axial);
    assert!(mean_abs_difference(&fixed, &moving) > 3.0);

    harness.state_mut().display.overlay = Overlay::Difference;
    let before = crop(&render(&mut harness), harness.state(), Row::Compared, Orientation::Axial);

    // Register from the work panel's button; the UI keeps stepping while the worker runs.
    harness.get_by_label("Register").click();
    harness.step();
    assert!(harness.state().is_busy(), "registration started");
    harness.get_by_label("Cancel"); // the Cancel button exists while a job runs
    wait_until_idle(&mut harness, Duration::from_secs(600));
    let app = harness.state();
    let result = app.result().unwrap_or_else(|| panic!("registration finished: {:?}", app.message()));
    assert_eq!(result.registration.quality.folding_voxels, 0);
    let (rigid, ours) = (result.rigid_endpoint_error.clone().unwrap(), result.endpoint_error.clone().unwrap());
    assert!(ours.mean_mm < rigid.mean_mm, "deformable {:.2} mm vs rigid {:.2} mm", ours.mean_mm, rigid.mean_mm);
    assert!(harness.get_all_by_label("NMI").count() >= 1, "the metrics table is shown");
    let status = result.registration.verdict.status;
    assert_eq!(status, diffeoreg::metrics::verdict::Status::Ok, "{:?}", result.registration.verdict);
    harness.get_by_label("Verdict");
    harness.get_by_label("OK");

    // The difference map is closer to white after registration than before it.
    let after = crop(&render(&mut harness), harness.state(), Row::Compared, Orientation::Axial);
    before.save(Path::new(env!("CARGO_TARGET_TMPDIR")).join("difference-before.png")).unwrap();
    after.save(Path::new(env!("CARGO_TARGET_TMPDIR")).join("difference-after.png")).unwrap();
    let (deviation_before, deviation_after) = (mean_colour_deviation(&before), mean_colour_deviation(&after));
    assert!(deviation_after < 0.8 * deviation_before, "difference {deviation_before:.1} → {deviation_after:.1}");

    // Each overlay changes the comparison row, and shows what it should.
    harness.state_mut().display.overlay = Overlay::None;
    let frame = render(&mut harness);
    let plain = crop(&frame, harness.state(), Row::Compared, Orientation::Axial);
    let fixed = crop(&frame, harness.state(), Row::Fixed, Orientation::Axial);
    // The momentum overlay needs the network; this registration optimised (checked below).
    assert!(!harness.state().overlay_available(Overlay::Momentum));
    for overlay in Overlay::ALL.into_iter().skip(1).filter(|&o| o != Overlay::Momentum) {
        harness.state_mut().display.overlay = overlay;
        let frame = render(&mut harness);
        let snapshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("app-{overlay:?}.png").to_lowercase());
        frame.save(&snapshot).unwrap();
        let view = crop(&frame, harness.state(), Row::Compared, Orientation::Axial);
        let change = mean_abs_difference(&plain, &view);
        assert!(change > 0.5, "{overlay:?} changed the view by only {change:.2}");
        // The fixed row never carries the overlay.
        let fixed_now = crop(&frame, harness.state(), Row::Fixed, Orientation::Axial);
        assert!(mean_abs_difference(&fixed_now, &fixed) < 0.01, "{overlay:?} leaked into the fixed row");
        let count = |test: &dyn Fn(&image::Rgba<u8>) -> bool| view.pixels().filter(|p| test(p)).count();
        match overlay {
            Overlay::Jacobian => {
                // A registration both expands and compresses: red and blue both appear, no folding green.
                assert!(count(&|p| p[0] as i32 - p[2] as i32 > 20) > 10, "no expansion drawn");
                assert!(count(&|p| p[2] as i32 - p[0] as i32 > 20) > 10, "no compression drawn");
                assert_eq!(count(&|p| p[1] as i32 - p[0].max(p[2]) as i32 > 80), 0, "folding drawn");
            }
            Overlay::Tissues => {
                assert!(count(&|p| (p[0] as i32 + p[1] as i32) / 2 - p[2] as i32 > 40) > 20, "no shared bone drawn");
            }
            Overlay::Grid => {
                assert!(
                    count(&|p| p[0] as i32 - p[2] as i32 > 40 && p[1] as i32 - p[2] as i32 > 30) > 50,
                    "no grid lines"
                );
            }
            _ => {}
        }
    }

    // A view exports as a PNG through the GPU, written by the worker.
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("view.png");
    harness.state_mut().export_view_png(Row::Compared, Orientation::Coronal, 320, 240, png.clone());
    wait_until_idle(&mut harness, Duration::from_secs(30));
    let exported = image::open(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display())).to_rgba8();
    assert_eq!(exported.dimensions(), (320, 240));
    assert!(grey_std(&exported) > 20.0, "the exported view has content");

    // Results export from the app into a folder (the same files as `register`).
    let out = dir.path().join("results");
    harness.state_mut().export_results(out.clone());
    wait_until_idle(&mut harness, Duration::from_secs(60));
    for name in ["warp_fwd.nii.gz", "warp_inv.nii.gz", "moving_warped.nii.gz", "rigid.tfm", "report.json", "qa"] {
        assert!(out.join(name).exists(), "{name} missing: {:?}", harness.state().message());
    }
}

#[test]
fn jobs_cancel_and_failures_leave_the_app_usable() {
    let options = AppOptions { demo_shape: [48, 48, 48], demo_spacing_mm: [4.3, 5.1, 4.8], ..AppOptions::default() };
    let mut harness = harness(options);
    wait_until_idle(&mut harness, Duration::from_secs(120));
    assert!(harness.state().case().is_some());

    // A registration with the default (slow) parameters, cancelled once it is under way.
    harness.get_by_label("Register").click();
    harness.step();
    assert!(harness.state().is_busy());
    std::thread::sleep(Duration::from_millis(300));
    harness.step();
    harness.get_by_label("Cancel").click();
    wait_until_idle(&mut harness, Duration::from_secs(60));
    let (is_error, line) = harness.state().message().cloned().expect("an outcome line");
    assert!(!is_error && line.contains("cancelled"), "{line}");
    assert!(harness.state().result().is_none(), "a cancelled registration leaves no result");

    // Loading files that do not exist fails with the path named; the demo stays loaded.
    let missing = Path::new("/nonexistent/fixed.nii.gz");
    harness.state_mut().load_files(missing.to_path_buf(), missing.with_file_name("moving.nii.gz"));
    wait_until_idle(&mut harness, Duration::from_secs(30));
    let (is_error, line) = harness.state().message().cloned().expect("an outcome line");
    assert!(is_error && line.contains("/nonexistent/fixed.nii.gz"), "{line}");
    assert!(harness.state().case().is_some(), "the loaded case survives a failed load");
    let frame = render(&mut harness);
    assert!(grey_std(&crop(&frame, harness.state(), Row::Fixed, Orientation::Sagittal)) > 20.0);
}

#[test]
fn trains_from_the_training_tab_stops_resumes_and_registers_with_the_model() {
    use diffeoreg::register::pipeline::Method;
    use diffeoreg::train::data::PairSource;
    let options = AppOptions { demo_shape: [48, 48, 48], demo_spacing_mm: [4.3, 5.1, 4.8], ..AppOptions::default() };
    let mut harness = harness(options);
    wait_until_idle(&mut harness, Duration::from_secs(120));
    harness.get_by_label("Training").click();
    harness.step();
    // The loss radio sets the objective and what its network needs.
    harness.get_by_label("optimiser's velocity (one optimisation per pair first)").click();
    harness.step();
    let params = &harness.state().training.params;
    assert_eq!(params.objective, diffeoreg::train::Objective::Distill);
    assert!(params.network.whitened_output && params.network.matched_input);
    harness.get_by_label("known deformation's velocity (synthetic pairs, phantom folders)").click();
    harness.step();
    assert_eq!(harness.state().training.params.objective, diffeoreg::train::Objective::Truth);
    // The local prior's checkbox gives the network the estimate's default passes; the body
    // weighting is on by default and its checkbox turns it off.
    harness.get_by_label("network corrects a closed-form local estimate (Lucas–Kanade, 10 passes)").click();
    harness.step();
    let prior = harness.state().training.params.network.local_prior.clone();
    assert_eq!(prior.map(|p| p.passes), Some(10));
    harness.get_by_label("network corrects a closed-form local estimate (Lucas–Kanade, 10 passes)").click();
    harness.step();
    assert!(harness.state().training.params.network.local_prior.is_none());
    assert!(harness.state().training.params.target_in_body);
    harness.get_by_label("compare velocities inside the body only (distillation, known deformation)").click();
    harness.step();
    assert!(!harness.state().training.params.target_in_body);
    harness.get_by_label("patch energy at the network's resolution").click();
    harness.step();
    assert_eq!(harness.state().training.params.objective, diffeoreg::train::Objective::PatchEnergy);
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("model");
    {
        let tab = &mut harness.state_mut().training;
        tab.out = folder.clone();
        tab.synthetic_count = 3;
        tab.params.source = PairSource::Synthetic {
            count: 3,
            shape: [48, 48, 48],
            spacing_mm: [4.3, 5.0, 4.8],
            first_seed: 1000,
            max_mm: 7.0,
        };
        tab.params.sampler.patch = 16;
        tab.params.sampler.batch = 4;
        tab.params.sampler.patches_per_pair = 16;
        tab.params.network.base_channels = 2;
        tab.params.network.resolution_factor = 2;
        tab.params.epochs = 3;
    }
    harness.get_by_label("Start").click();
    harness.step();
    assert!(harness.state().is_busy());
    // Stop once the first epoch is in the curves and the second has begun.
    let start = Instant::now();
    loop {
        harness.step();
        let live = harness.state().training.live();
        if !live.epochs.is_empty() && live.steps.iter().any(|s| s.epoch == 2) {
            break;
        }
        assert!(harness.state().is_busy(), "training ended early: {:?}", harness.state().message());
        assert!(start.elapsed() < Duration::from_secs(300), "no epoch finished");
        std::thread::sleep(Duration::from_millis(20));
    }
    let frame = render(&mut harness);
    assert!(frame.width() > 0);
    harness.get_by_label("Stop").click();
    wait_until_idle(&mut harness, Duration::from_secs(120));
    let (is_error, line) = harness.state().message().cloned().expect("an outcome line");
    assert!(!is_error && line.contains("stopped"), "{line}");
    assert!(folder.join("checkpoints/epoch-0001").is_dir());

    harness.get_by_label("Resume").click();
    wait_until_idle(&mut harness, Duration::from_secs(300));
    let (is_error, line) = harness.state().message().cloned().expect("an outcome line");
    assert!(!is_error && line.contains("training done"), "{line}");
    let live = harness.state().training.live();
    assert_eq!(live.epochs.iter().map(|e| e.epoch).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(live.epochs.iter().all(|e| e.train_loss.is_finite() && e.validation_loss.is_some()));
    assert_eq!(harness.state().params.network.model.as_deref(), Some(folder.as_path()));
    let _ = render(&mut harness);

    // The trained model registers the loaded case (the network method, from the work panel).
    harness.get_by_label("Registration").click();
    harness.step();
    harness.state_mut().params.method = Method::Network;
    // Tiles of 16 (margin 4) on the 24³ network grid, so that tile borders cross the views.
    (harness.state_mut().params.network.tile, harness.state_mut().params.network.margin) = (16, 4);
    harness.step();
    harness.get_by_label("Register").click();
    harness.step();
    assert!(harness.state().is_busy(), "{:?}", harness.state().message());
    wait_until_idle(&mut harness, Duration::from_secs(120));
    let result = harness.state().result().unwrap_or_else(|| panic!("not registered: {:?}", harness.state().message()));
    assert_eq!(result.registration.model.as_deref(), Some(folder.display().to_string().as_str()));
    assert_eq!(result.registration.quality.folding_voxels, 0);

    // The momentum overlay draws |m| over the warped image, and the planes where tiles meet.
    let plain = crop(&render(&mut harness), harness.state(), Row::Compared, Orientation::Axial);
    harness.state_mut().display.overlay = Overlay::Momentum;
    let frame = render(&mut harness);
    let view = crop(&frame, harness.state(), Row::Compared, Orientation::Axial);
    assert!(mean_abs_difference(&plain, &view) > 0.5);
    let border = |p: &image::Rgba<u8>| p[0] < 60 && p[1] > 200 && p[2] > 220;
    assert!(view.pixels().filter(|p| border(p)).count() > 50, "no tile borders drawn");
    let fixed_row = crop(&frame, harness.state(), Row::Fixed, Orientation::Axial);
    assert!(!fixed_row.pixels().any(border), "borders leaked into the fixed row");
}

/// An RT Structure Set drawn on the pseudo-CT: read in the app, carried after registering,
/// drawn in each region's colour on the CT's axial view, and exported with the DICOM outputs.
/// The difference and Jacobian overlays show their colour bars.
#[test]
fn structures_are_carried_drawn_and_exported_from_the_app() {
    let case = common::reference_folder("structure-case");
    let mut harness = harness(AppOptions { load_demo: false, ..AppOptions::default() });
    harness.state_mut().load_files(case.join("ct"), case.join("pseudo_ct"));
    wait_until_idle(&mut harness, Duration::from_secs(120));
    assert!(harness.state().case().is_some(), "{:?}", harness.state().message());
    harness.state_mut().load_structures(case.join("RS.dcm"));
    wait_until_idle(&mut harness, Duration::from_secs(60));
    assert_eq!(harness.state().structures.as_ref().map(|s| s.masks.len()), Some(3), "{:?}", harness.state().message());
    assert!(harness.state().carried.is_empty(), "nothing to carry before registering");
    harness.get_by_label("Register").click();
    harness.step();
    wait_until_idle(&mut harness, Duration::from_secs(300));
    // Registering is followed by carrying the structures.
    wait_until_idle(&mut harness, Duration::from_secs(60));
    let carried = &harness.state().carried;
    assert_eq!(carried.len(), 3, "{:?}", harness.state().message());
    let tumour = carried.iter().find(|c| c.roi.name == "Tumour").unwrap();
    let (slice, _) = tumour.contours[tumour.contours.len() / 2];
    let mut cursor = harness.state().cursor();
    cursor[2] = slice as f32;
    harness.state_mut().set_cursor(cursor);
    let frame = render(&mut harness);
    let red = |image: &RgbaImage| image.pixels().filter(|p| p[0] > 200 && p[1] < 60 && p[2] < 60).count();
    let fixed_view = crop(&frame, harness.state(), Row::Fixed, Orientation::Axial);
    assert!(red(&fixed_view) > 30, "the tumour's contour is drawn in red on the CT: {} red pixels", red(&fixed_view));
    let coronal = crop(&frame, harness.state(), Row::Fixed, Orientation::Coronal);
    assert_eq!(red(&coronal), 0, "contours lie on axial slices only");
    harness.get_by_label_contains("Tumour: ");

    // The difference and Jacobian overlays draw their colour bar in the title strip of the
    // compared views: blue through white to red, above the image, not on it.
    for overlay in [Overlay::Difference, Overlay::Jacobian] {
        harness.state_mut().display.overlay = overlay;
        let frame = render(&mut harness);
        let view = harness.state().view_rect(Row::Compared, Orientation::Axial).unwrap();
        let strip = image::imageops::crop_imm(
            &frame,
            view.left().ceil() as u32,
            (view.top() - 15.0).ceil() as u32,
            view.width().floor() as u32,
            13,
        )
        .to_image();
        let blue = strip.pixels().filter(|p| p[2] > 200 && p[0] < 120 && p[1] < 120).count();
        let red = strip.pixels().filter(|p| p[0] > 200 && p[1] < 120 && p[2] < 120).count();
        assert!(blue > 20 && red > 20, "{overlay:?}: colour bar in the title strip ({blue} blue, {red} red pixels)");
    }

    let out = tempfile::tempdir().unwrap();
    assert!(harness.state().export_dicom, "DICOM export is on by default");
    harness.state_mut().export_results(out.path().to_path_buf());
    wait_until_idle(&mut harness, Duration::from_secs(120));
    for file in ["dicom/registration.dcm", "dicom/structures.dcm", "qa/report.html", "report.json"] {
        assert!(out.path().join(file).exists(), "{file} exported: {:?}", harness.state().message());
    }
    let report = common::read_json(&out.path().join("report.json"));
    assert_eq!(report["dicom"]["structures"].as_array().unwrap().len(), 3);
    assert_eq!(report["dicom"]["inputs_were_dicom"], true);
}

/// `diffeoreg view OUT` (the app opened on a finished register folder): the inputs, result,
/// verdict and carried structures come back without registering again.
#[test]
fn a_finished_register_folder_opens_with_its_result_and_structures() {
    let case = common::reference_folder("structure-case");
    let out = tempfile::tempdir().unwrap();
    let run = std::process::Command::new(common::binary())
        .arg("register")
        .arg("--fixed")
        .arg(case.join("ct"))
        .arg("--moving")
        .arg(case.join("pseudo_ct"))
        .arg("--out")
        .arg(out.path())
        .arg("--structures")
        .arg(case.join("RS.dcm"))
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let report = common::read_json(&out.path().join("report.json"));
    let options = AppOptions { load_demo: false, open_folder: Some(out.path().to_path_buf()), ..AppOptions::default() };
    let mut harness = harness(options);
    wait_until_idle(&mut harness, Duration::from_secs(120));
    let app = harness.state();
    let result = app.result().unwrap_or_else(|| panic!("opened: {:?}", app.message()));
    assert_eq!(result.registration.verdict.status.name(), report["verdict"]["status"].as_str().unwrap());
    assert!(result.registration.history.is_empty(), "nothing was registered again");
    let saved = diffeoreg::io::read_field(&out.path().join("warp_fwd.nii.gz")).unwrap();
    assert_eq!(result.registration.warp_fwd.components_mm, saved.components_mm);
    assert_eq!(app.carried.len(), 3);
    let tumour = app.carried.iter().find(|c| c.roi.name == "Tumour").unwrap();
    let reported = report["dicom"]["structures"].as_array().unwrap().iter().find(|s| s["name"] == "Tumour").unwrap();
    assert!((tumour.carried_ml - reported["carried_ml"].as_f64().unwrap()).abs() < 1e-9);
    assert!(app.overlay_available(Overlay::Jacobian));
    harness.get_by_label("Verdict");
    let (slice, _) = tumour.contours[tumour.contours.len() / 2];
    let mut cursor = harness.state().cursor();
    cursor[2] = slice as f32;
    harness.state_mut().set_cursor(cursor);
    harness.state_mut().display.overlay = Overlay::Checkerboard;
    let frame = render(&mut harness);
    let compared = crop(&frame, harness.state(), Row::Compared, Orientation::Axial);
    let red = compared.pixels().filter(|p| p[0] > 200 && p[1] < 60 && p[2] < 60).count();
    assert!(red > 30, "the carried tumour is drawn on the warped view: {red} red pixels");
}

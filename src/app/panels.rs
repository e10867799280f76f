//! The panels around the views: the display bar (window/level, overlay and its settings), the
//! work panel (case, method and parameters, run/cancel, progress, metrics, export, log) and the
//! status bar (position and values under the mouse, the last job's outcome).

use eframe::egui::{self, Color32, RichText};

use crate::app::view::WindowLevel;
use crate::app::{DialogAnswer, DiffeoregApp, Overlay, Tab};
use crate::diffeo::energy::Similarity;
use crate::metrics::TISSUES;
use crate::metrics::evaluation::{DirectionMetrics, Evaluation};
use crate::metrics::verdict::{Status, Verdict};
use crate::register::pipeline::Method;
use crate::rigid::RigidMetric;

/// Text from elsewhere (library messages, file names) with every character the UI font cannot
/// draw replaced by a close ASCII spelling (or '?').
pub(crate) fn displayable(ui: &egui::Ui, text: &str) -> String {
    let font = egui::TextStyle::Body.resolve(ui.style());
    ui.ctx().fonts_mut(|fonts| {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            if fonts.has_glyph(&font, c) {
                out.push(c);
                continue;
            }
            out.push_str(match c {
                '→' => "->",
                '←' => "<-",
                '≤' => "<=",
                '≥' => ">=",
                '−' => "-",
                '±' => "+/-",
                '∘' => " o ",
                '⁻' => "^-",
                '¹' => "1",
                '₂' => "2",
                _ => "?",
            });
        }
        out
    })
}

pub fn top_bar(app: &mut DiffeoregApp, ui: &mut egui::Ui) {
    egui::Panel::top("tabs").show(ui, |ui| {
        ui.horizontal(|ui| {
            ui.selectable_value(&mut app.tab, Tab::Registration, "Registration");
            ui.selectable_value(&mut app.tab, Tab::Training, "Training");
        });
    });
    if app.tab == Tab::Training {
        return;
    }
    egui::Panel::top("display").show(ui, |ui| {
        ui.horizontal_wrapped(|ui| {
            ui.label("Window:");
            for (name, preset) in WindowLevel::PRESETS {
                if ui.selectable_label(app.display.window == preset, name).clicked() {
                    app.display.window = preset;
                }
            }
            let window = &mut app.display.window;
            ui.add(egui::DragValue::new(&mut window.width).range(1.0..=5000.0).prefix("W ").suffix(" HU"));
            ui.add(egui::DragValue::new(&mut window.center).range(-1500.0..=3000.0).prefix("L ").suffix(" HU"));
            ui.separator();
            egui::ComboBox::from_label("overlay").selected_text(app.display.overlay.name()).show_ui(ui, |ui| {
                for overlay in Overlay::ALL {
                    let enabled = app.overlay_available(overlay);
                    ui.add_enabled_ui(enabled, |ui| {
                        ui.selectable_value(&mut app.display.overlay, overlay, overlay.name())
                            .on_disabled_hover_text("needs a registration result");
                    });
                }
            });
            let d = &mut app.display;
            if d.overlay != Overlay::None && d.overlay != Overlay::Difference && d.overlay != Overlay::Checkerboard {
                ui.add(egui::Slider::new(&mut d.opacity, 0.0..=1.0).text("opacity"));
            }
            match d.overlay {
                Overlay::Checkerboard => {
                    ui.add(egui::Slider::new(&mut d.checker_voxels, 2.0..=64.0).text("cell, voxels"));
                }
                Overlay::Grid => {
                    ui.add(egui::Slider::new(&mut d.grid_spacing_mm, 2.0..=40.0).text("spacing, mm"));
                }
                Overlay::Jacobian => {
                    ui.add(egui::Slider::new(&mut d.jacobian_log2_range, 0.1..=3.0).text("|log2 det| at full colour"));
                    ui.label(RichText::new("folding (det J <= 0)").color(Color32::from_rgb(0, 230, 50)));
                }
                Overlay::Difference => {
                    ui.add(egui::Slider::new(&mut d.difference_hu, 10.0..=2000.0).text("HU at full colour"));
                }
                Overlay::Tissues => {
                    egui::ComboBox::from_id_salt("tissue").selected_text(TISSUES[d.tissue].name).show_ui(ui, |ui| {
                        for (i, tissue) in TISSUES.iter().enumerate() {
                            ui.selectable_value(&mut d.tissue, i, tissue.name);
                        }
                    });
                    ui.label(RichText::new("fixed only").color(Color32::from_rgb(255, 64, 64)));
                    ui.label(RichText::new("moving only").color(Color32::from_rgb(64, 153, 255)));
                    ui.label(RichText::new("both").color(Color32::from_rgb(255, 230, 25)));
                    if let Some(dice) = tissue_dice(app) {
                        ui.label(format!("Dice {dice:.3}"));
                    }
                }
                _ => {}
            }
        });
    });
}

/// Dice of the selected tissue between the fixed image and the moving-warped one.
fn tissue_dice(app: &DiffeoregApp) -> Option<f64> {
    let result = app.result.as_ref()?;
    let name = TISSUES[app.display.tissue].name;
    result.registration.metrics.result.forward.image.dice.iter().find(|d| d.tissue == name).map(|d| d.dice)
}

pub fn status_bar(app: &mut DiffeoregApp, ui: &mut egui::Ui) {
    egui::Panel::bottom("status").show(ui, |ui| {
        ui.horizontal(|ui| {
            match &app.hover {
                Some(hover) => {
                    let [x, y, z] = hover.world_mm;
                    let [i, j, k] = hover.index;
                    let mut text = format!("LPS ({x:.1}, {y:.1}, {z:.1}) mm · voxel ({i:.0}, {j:.0}, {k:.0})");
                    for (name, value, unit) in &hover.values {
                        text += &format!(" · {name} {value:.2} {unit}");
                    }
                    ui.monospace(text);
                }
                None => {
                    ui.label("Click: cursor · scroll: slice · Ctrl+scroll: zoom · middle-drag: pan · right-drag: window/level");
                }
            }
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                ui.weak(format!("frame {:.1} ms", app.last_frame_time.as_secs_f64() * 1e3));
            });
        });
    });
}

pub fn work_panel(app: &mut DiffeoregApp, ui: &mut egui::Ui) {
    egui::Panel::left("work").default_size(330.0).show(ui, |ui| {
        egui::ScrollArea::vertical().show(ui, |ui| {
            case_section(app, ui);
            ui.separator();
            registration_section(app, ui);
            ui.separator();
            progress_section(app, ui);
            if let Some(result) = &app.result {
                ui.separator();
                verdict_section(ui, &result.registration.verdict);
                ui.separator();
                ui.heading("Metrics");
                metrics_table(ui, &result.registration.metrics.rigid, &result.registration.metrics.result);
                if let (Some(rigid), Some(ours)) = (&result.rigid_endpoint_error, &result.endpoint_error) {
                    ui.label(format!(
                        "Endpoint error vs the known answer (mean / p95 mm): rigid {:.2} / {:.2}, result {:.2} / {:.2}",
                        rigid.mean_mm, rigid.p95_mm, ours.mean_mm, ours.p95_mm
                    ));
                }
                if let Some(found) = &result.registration.resolution {
                    ui.label(if found.sigma_voxels > 0.0 {
                        format!(
                            "Resolutions matched: {:?} image blurred by σ {} voxels",
                            found.blurred, found.sigma_voxels
                        )
                    } else {
                        "Resolutions matched as they were: no blur".to_string()
                    });
                }
                if let Some(map) = &result.registration.intensity {
                    ui.label(format!(
                        "Grey values: the fixed image compared through a monotone map onto the moving image's \
                         ({} knots; mean squared difference {:.5} before, {:.5} after)",
                        map.knots.len(),
                        map.mse_before,
                        map.mse_after
                    ));
                }
                let t = &result.registration.timings;
                let stages: Vec<String> =
                    t.stages().iter().map(|(name, seconds)| format!("{name} {seconds:.1}")).collect();
                ui.label(format!("Time {:.1} s: {}", t.total_s, stages.join(", ")));
            }
            ui.separator();
            export_section(app, ui);
            ui.separator();
            ui.collapsing("Log", |ui| {
                for line in app.log.iter().rev().take(200) {
                    let line = displayable(ui, line);
                    ui.monospace(line);
                }
            });
        });
    });
}

fn case_section(app: &mut DiffeoregApp, ui: &mut egui::Ui) {
    ui.heading("Case");
    match &app.case {
        Some(case) => ui.label(displayable(ui, &case.name)),
        None => ui.label("none loaded"),
    };
    let idle = !app.worker.is_busy();
    ui.horizontal(|ui| {
        if ui.add_enabled(idle, egui::Button::new("Open fixed…")).clicked() {
            app.ask(DialogAnswer::Fixed, false, "Fixed image (CT): NIfTI file or DICOM file", None);
        }
        if ui.add_enabled(idle, egui::Button::new("Fixed folder…")).clicked() {
            app.ask(DialogAnswer::Fixed, true, "Fixed image (CT): DICOM folder", None);
        }
    });
    ui.horizontal(|ui| {
        if ui.add_enabled(idle, egui::Button::new("Open moving…")).clicked() {
            app.ask(DialogAnswer::Moving, false, "Moving image (pseudo-CT): NIfTI file or DICOM file", None);
        }
        if ui.add_enabled(idle, egui::Button::new("Moving folder…")).clicked() {
            app.ask(DialogAnswer::Moving, true, "Moving image (pseudo-CT): DICOM folder", None);
        }
    });
    for (role, path) in [("fixed", &app.pending_fixed), ("moving", &app.pending_moving)] {
        if let Some(path) = path {
            let line = displayable(ui, &format!("{role}: {}", path.display()));
            ui.small(line);
        }
    }
    ui.horizontal(|ui| {
        let complete = app.pending_fixed.is_some() && app.pending_moving.is_some();
        if ui.add_enabled(idle && complete, egui::Button::new("Load pair")).clicked() {
            app.load_pending_pair();
        }
        if ui.add_enabled(idle, egui::Button::new("Demo case")).clicked() {
            app.load_demo();
        }
        if ui.add_enabled(idle, egui::Button::new("Open result…")).clicked() {
            app.ask(DialogAnswer::ResultFolder, true, "A folder that register (or Export) wrote", None);
        }
    });
    ui.small("Or drop files or folders on the window (first fixed, then moving).");
}

fn registration_section(app: &mut DiffeoregApp, ui: &mut egui::Ui) {
    ui.heading("Registration");
    ui.horizontal(|ui| {
        ui.label("Method:");
        for (method, name) in [(Method::Optimize, "optimise"), (Method::Network, "network"), (Method::Hybrid, "hybrid")]
        {
            ui.selectable_value(&mut app.params.method, method, name);
        }
    });
    if app.params.method != Method::Optimize {
        ui.horizontal(|ui| {
            let model = app.params.network.model.as_ref().map_or("built-in".to_string(), |p| p.display().to_string());
            let line = displayable(ui, &format!("model: {model}"));
            ui.small(line);
            if ui.small_button("Choose…").clicked() {
                app.ask(DialogAnswer::ModelFolder, true, "Model folder (config.json, weights.bpk)", None);
            }
            if app.params.network.model.is_some() && ui.small_button("Built-in").clicked() {
                app.params.network.model = None;
            }
        });
    }
    ui.horizontal(|ui| {
        let source = app.calibration_file.as_ref().map_or("SPEC default".to_string(), |p| p.display().to_string());
        let points = app.params.calibration.points.len();
        ui.small(displayable(ui, &format!("HU → density: {source} ({points} points)")));
        if ui.small_button("Load…").clicked() {
            app.ask(DialogAnswer::Calibration, false, "HU → density curve (JSON or HU density lines)", None);
        }
        if app.calibration_file.is_some() && ui.small_button("Default").clicked() {
            app.params.calibration = crate::volume::Calibration::default();
            app.calibration_file = None;
        }
    });
    let params = &mut app.params;
    egui::Grid::new("parameters").num_columns(2).show(ui, |ui| {
        parameter(
            ui,
            "λ (regularisation)",
            egui::DragValue::new(&mut params.optimize.energy.lambda).speed(1e-4).range(0.0..=10.0),
        );
        ui.end_row();
        parameter(ui, "α", egui::DragValue::new(&mut params.optimize.smooth.alpha).speed(0.5).range(0.0..=1000.0));
        ui.end_row();
        parameter(ui, "γ", egui::DragValue::new(&mut params.optimize.smooth.gamma).speed(0.05).range(0.01..=100.0));
        ui.end_row();
        parameter(ui, "padding p, voxels", egui::DragValue::new(&mut params.optimize.smooth.pad).range(0..=64));
        ui.end_row();
        parameter(ui, "scaling and squaring N", egui::DragValue::new(&mut params.optimize.energy.steps).range(1..=12));
        ui.end_row();
        ui.label("similarity");
        let similarity = &mut params.optimize.energy.similarity;
        #[derive(PartialEq, Clone, Copy)]
        enum Kind {
            Mse,
            Normalised,
            Local,
        }
        let mut kind = match similarity {
            Similarity::Mse => Kind::Mse,
            Similarity::NormalizedMse { .. } => Kind::Normalised,
            Similarity::LocalNcc { .. } => Kind::Local,
        };
        let before = kind;
        ui.horizontal(|ui| {
            ui.radio_value(&mut kind, Kind::Mse, "MSE");
            ui.radio_value(&mut kind, Kind::Normalised, "normalised MSE");
            ui.radio_value(&mut kind, Kind::Local, "local NCC");
        });
        if kind != before {
            *similarity = match kind {
                Kind::Mse => Similarity::Mse,
                Kind::Normalised => Similarity::NormalizedMse { a: 0.1 },
                Kind::Local => Similarity::LocalNcc { radius: 2 },
            };
        }
        ui.end_row();
        match similarity {
            Similarity::NormalizedMse { a } => {
                parameter(ui, "a", egui::DragValue::new(a).speed(0.01).range(0.01..=5.0));
                ui.end_row();
            }
            Similarity::LocalNcc { radius } => {
                parameter(ui, "window radius, voxels", egui::DragValue::new(radius).range(1..=8));
                ui.end_row();
            }
            Similarity::Mse => {}
        }
        ui.label("patient only");
        ui.checkbox(&mut params.patient_only, "compare only the patient (not the couch or head rest)");
        ui.end_row();
        ui.label("resolutions");
        ui.checkbox(&mut params.optimize.match_resolution, "blur the sharper image to match the other");
        ui.end_row();
        ui.label("grey values");
        ui.checkbox(&mut params.optimize.match_intensity, "map the fixed image's onto the moving image's");
        ui.end_row();
        ui.label("field of view");
        ui.checkbox(&mut params.optimize.field_of_view, "compare only where the moving image has data");
        ui.end_row();
        ui.label("rigid metric");
        ui.horizontal(|ui| {
            ui.radio_value(&mut params.rigid.metric, RigidMetric::Mse, "MSE");
            ui.radio_value(&mut params.rigid.metric, RigidMetric::Nmi, "NMI");
            ui.radio_value(&mut params.rigid.metric, RigidMetric::MattesMi, "Mattes MI");
        });
        ui.end_row();
        ui.label("iterations per level");
        ui.label(format!("{:?} at 1/{:?}", params.optimize.iterations, params.optimize.levels));
        ui.end_row();
    });
    ui.horizontal(|ui| {
        let can_run = app.case.is_some() && !app.worker.is_busy();
        if ui.add_enabled(can_run, egui::Button::new("Register")).clicked() {
            app.start_registration();
        }
        if ui.add_enabled(app.worker.is_busy(), egui::Button::new("Cancel")).clicked() {
            app.cancel();
        }
        if ui.button("Defaults").clicked() {
            app.params = app.options.params.clone();
        }
    });
}

/// A labelled number in the parameter grid (the label names the field for screen readers).
fn parameter(ui: &mut egui::Ui, label: &str, value: egui::DragValue<'_>) {
    let label = ui.label(label);
    ui.add(value).labelled_by(label.id);
}

pub(crate) fn progress_section(app: &mut DiffeoregApp, ui: &mut egui::Ui) {
    let board = app.worker.board();
    match &board.job {
        Some(job) => {
            let elapsed = board.started.map_or(0.0, |t| t.elapsed().as_secs_f32());
            ui.label(format!("{job}: {} ({elapsed:.0} s)", board.stage));
            let bar = match board.fraction() {
                Some(fraction) => egui::ProgressBar::new(fraction).show_percentage(),
                None => egui::ProgressBar::new(0.0).animate(true),
            };
            ui.add(bar);
        }
        None => {
            ui.label("Idle");
        }
    }
    if let Some((is_error, line)) = &app.message {
        let colour = if *is_error { Color32::from_rgb(255, 110, 110) } else { ui.visuals().text_color() };
        ui.label(RichText::new(displayable(ui, line)).color(colour));
    }
}

/// The verdict on the result, in the colours of the terminal: green ok, amber warning, red failed.
pub(crate) fn verdict_section(ui: &mut egui::Ui, verdict: &Verdict) {
    let colour = |status: Status| match status {
        Status::Ok => Color32::from_rgb(90, 200, 110),
        Status::Warning => Color32::from_rgb(240, 180, 60),
        Status::Failed => Color32::from_rgb(255, 90, 90),
    };
    ui.horizontal(|ui| {
        ui.heading("Verdict");
        ui.label(RichText::new(verdict.status.name().to_uppercase()).strong().size(18.0).color(colour(verdict.status)));
    });
    if verdict.reasons.is_empty() {
        ui.small("similarity, overlap, folding, inverse consistency and size all within limits");
    }
    for reason in &verdict.reasons {
        ui.label(
            RichText::new(displayable(ui, &format!("{}: {}", reason.status.name(), reason.message)))
                .color(colour(reason.status)),
        );
    }
}

fn metrics_table(ui: &mut egui::Ui, rigid: &Evaluation, result: &Evaluation) {
    let rows: Vec<(&str, Option<&DirectionMetrics>)> = vec![
        ("rigid, fwd", Some(&rigid.forward)),
        ("rigid, inv", rigid.backward.as_ref()),
        ("result, fwd", Some(&result.forward)),
        ("result, inv", result.backward.as_ref()),
    ];
    egui::Grid::new("metrics").striped(true).num_columns(7).show(ui, |ui| {
        for title in ["", "NMI", "MSE", "MAE", "Dice bone", "Dice fat", "folding %"] {
            ui.strong(title);
        }
        ui.end_row();
        for (name, metrics) in rows {
            let Some(m) = metrics else { continue };
            let dice = |tissue: &str| m.image.dice.iter().find(|d| d.tissue == tissue).map_or(f64::NAN, |d| d.dice);
            ui.label(name);
            ui.monospace(format!("{:.3}", m.image.nmi));
            ui.monospace(format!("{:.4}", m.image.mse));
            ui.monospace(format!("{:.4}", m.image.mae));
            ui.monospace(format!("{:.3}", dice("bone")));
            ui.monospace(format!("{:.3}", dice("fat")));
            ui.monospace(format!("{:.3}", 100.0 * m.jacobian.folding_share));
            ui.end_row();
        }
    });
    ui.small("fwd: moving warped to fixed (fixed space); inv: fixed warped to moving. MSE, MAE of density (kg/dm³).");
}

fn export_section(app: &mut DiffeoregApp, ui: &mut egui::Ui) {
    ui.heading("Export");
    let idle = !app.worker.is_busy();
    ui.horizontal(|ui| {
        if ui.add_enabled(idle && app.case.is_some(), egui::Button::new("Structures…")).clicked() {
            app.ask(DialogAnswer::Structures, false, "RT Structure Set drawn on the moving image", None);
        }
        match (&app.structures, &app.structures_file) {
            (Some(structures), Some(file)) => {
                let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                ui.label(format!("{name}: {} regions", structures.masks.len()));
            }
            _ => {
                ui.small("none: contours to carry onto the CT");
            }
        }
    });
    for carried in &app.carried {
        let [r, g, b] = carried.roi.colour.unwrap_or([255, 0, 0]);
        ui.horizontal(|ui| {
            let (swatch, _) = ui.allocate_exact_size(egui::vec2(10.0, 10.0), egui::Sense::hover());
            ui.painter().rect_filled(swatch, 0.0, Color32::from_rgb(r, g, b));
            let line = format!(
                "{}: {:.2} ml on the moving image → {:.2} ml on the CT, {} contours",
                carried.roi.name,
                carried.moving_ml,
                carried.carried_ml,
                carried.contours.len()
            );
            ui.small(displayable(ui, &line));
        });
    }
    ui.checkbox(&mut app.export_dicom, "with DICOM for the planning system")
        .on_hover_text("dicom/: the warped moving image as a series in the CT's study and frame of reference, registration.dcm, and the structures carried onto the CT");
    ui.horizontal(|ui| {
        if ui.add_enabled(idle && app.result.is_some(), egui::Button::new("Results…")).clicked() {
            app.ask(DialogAnswer::ExportFolder, true, "Folder for fields, warped images and report", None);
        }
        if ui.add_enabled(idle && app.case.is_some(), egui::Button::new("View as PNG…")).clicked() {
            let (row, orientation) = app.selected_view;
            let name = format!("{:?}_{}.png", row, orientation.name()).to_lowercase();
            app.ask(DialogAnswer::ViewPng, false, "Save the selected view", Some(&name));
        }
    });
    ui.small("The selected view (highlighted title; click a view to select it) is what \"View as PNG\" saves.");
}

//! The training tab (SPEC §8): choose pairs (a CSV, or synthetic pairs), set the training
//! parameters of SPEC §3, Start / Stop / Resume, and watch the step and epoch losses live with
//! the current epoch and an ETA. Training runs on the app's worker like any job; when it ends
//! (or is stopped after an epoch), its model becomes the one `network` and `hybrid` use.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use eframe::egui;
use egui_plot::{Legend, Line, Plot, PlotPoints, Points};

use crate::app::DiffeoregApp;
use crate::app::case::JobOutput;
use crate::diffeo::energy::Similarity;
use crate::train::checkpoint::{BatchRecord, EpochRecord};
use crate::train::data::{PairSource, load_pairs};
use crate::train::{Objective, TrainEvent, TrainParams, train};

/// What the running (or last) training has reported, shared with the worker thread.
#[derive(Clone, Debug, Default)]
pub struct LiveLog {
    pub epochs: Vec<EpochRecord>,
    pub steps: Vec<BatchRecord>,
    pub total_epochs: usize,
    /// Steps taken since this run (re)started, and when it started stepping.
    pub steps_this_run: usize,
    pub first_step_at: Option<Instant>,
}

impl LiveLog {
    /// Steps of one epoch, once one has finished.
    fn steps_per_epoch(&self) -> Option<usize> {
        let first = self.epochs.first()?.epoch;
        Some(self.steps.iter().filter(|s| s.epoch == first).count())
    }

    /// Seconds left, from the pace of this run's steps.
    pub fn eta_seconds(&self) -> Option<f64> {
        let per_epoch = self.steps_per_epoch()?;
        let started = self.first_step_at?;
        if self.steps_this_run < 2 {
            return None;
        }
        let pace = started.elapsed().as_secs_f64() / (self.steps_this_run - 1) as f64;
        let done = self.epochs.last().map_or(0, |e| e.epoch);
        let current = self.steps.iter().filter(|s| s.epoch == done + 1).count();
        let left = (self.total_epochs.saturating_sub(done) * per_epoch).saturating_sub(current);
        Some(pace * left as f64)
    }
}

pub struct TrainingTab {
    pub params: TrainParams,
    /// The CSV of pairs or a folder of pair folders; synthetic pairs when none.
    pub pairs_csv: Option<PathBuf>,
    pub synthetic_count: usize,
    /// The model folder training writes (and resumes from).
    pub out: PathBuf,
    pub live: Arc<Mutex<LiveLog>>,
}

impl Default for TrainingTab {
    fn default() -> Self {
        let params = TrainParams::default();
        let synthetic_count = match &params.source {
            PairSource::Synthetic { count, .. } => *count,
            PairSource::Csv(_) | PairSource::Folder(_) | PairSource::Mixed(_) => 16,
        };
        TrainingTab {
            params,
            pairs_csv: None,
            synthetic_count,
            out: std::env::temp_dir().join("diffeoreg-model"),
            live: Arc::new(Mutex::new(LiveLog::default())),
        }
    }
}

impl TrainingTab {
    pub fn live(&self) -> LiveLog {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The parameters with the chosen pair source.
    fn effective_params(&self) -> TrainParams {
        let mut params = self.params.clone();
        params.source = match &self.pairs_csv {
            Some(list) if list.is_dir() => PairSource::Folder(list.clone()),
            Some(csv) => PairSource::Csv(csv.clone()),
            None => match &params.source {
                PairSource::Synthetic { shape, spacing_mm, first_seed, max_mm, .. } => PairSource::Synthetic {
                    count: self.synthetic_count,
                    shape: *shape,
                    spacing_mm: *spacing_mm,
                    first_seed: *first_seed,
                    max_mm: *max_mm,
                },
                PairSource::Csv(_) | PairSource::Folder(_) | PairSource::Mixed(_) => TrainParams::default().source,
            },
        };
        params
    }
}

impl DiffeoregApp {
    /// Starts a new training (`resume` false) or continues the one in the output folder.
    pub fn start_training(&mut self, resume: bool) {
        let out = self.training.out.clone();
        let mut params = self.training.effective_params();
        if resume {
            match crate::train::read_params(&out) {
                Ok(stored) => params = TrainParams { epochs: params.epochs.max(stored.epochs), ..stored },
                Err(error) => {
                    self.message = Some((true, format!("cannot resume: {error}")));
                    return;
                }
            }
        }
        let live = self.training.live.clone();
        {
            let mut log = live.lock().unwrap_or_else(|p| p.into_inner());
            if !resume {
                *log = LiveLog::default();
            }
            log.total_epochs = params.epochs;
            log.steps_this_run = 0;
            log.first_step_at = None;
        }
        self.start_job(
            if resume { "resume training" } else { "train" },
            Box::new(move |board| {
                let pairs = load_pairs(&params, Some(&out.join(crate::train::distill::TARGETS_DIR)), board)?;
                let device = burn::tensor::Device::flex();
                let result = train(&pairs, &out, &params, resume, &device, board, &mut |event| {
                    let mut log = live.lock().unwrap_or_else(|p| p.into_inner());
                    match event {
                        TrainEvent::Step(step) => {
                            // On resume, the steps of the interrupted epoch are taken again.
                            log.steps
                                .retain(|s| s.epoch < step.epoch || (s.epoch == step.epoch && s.batch < step.batch));
                            log.steps.push(*step);
                            log.steps_this_run += 1;
                            if log.first_step_at.is_none() {
                                log.first_step_at = Some(Instant::now());
                            }
                        }
                        TrainEvent::Epoch(epoch) => {
                            log.epochs.retain(|e| e.epoch < epoch.epoch);
                            log.epochs.push(epoch.clone());
                        }
                    }
                });
                let state = result?;
                let mut log = live.lock().unwrap_or_else(|p| p.into_inner());
                log.epochs = state.history.clone();
                log.steps = state.batches.clone();
                Ok(JobOutput::Trained(out, state.epochs_done))
            }),
        );
    }

    /// After a finished training: its model is the one registration uses from now on.
    pub fn use_trained_model(&mut self, folder: PathBuf, epochs: usize) {
        self.log.push(format!("trained {epochs} epochs; registration now uses the model in {}", folder.display()));
        self.params.network.model = Some(folder.clone());
        self.message = Some((false, format!("training done ({epochs} epochs): model {}", folder.display())));
    }
}

/// The tab: parameters and controls on the left, the loss curves on the right.
pub fn panel(app: &mut DiffeoregApp, ui: &mut egui::Ui) {
    let idle = !app.worker.is_busy();
    egui::Panel::left("training-parameters").default_size(330.0).show(ui, |ui| {
        egui::ScrollArea::vertical().show(ui, |ui| {
            ui.heading("Training pairs");
            let tab = &mut app.training;
            let mut synthetic = tab.pairs_csv.is_none();
            ui.radio_value(&mut synthetic, true, "synthetic heads (no patient data)");
            if synthetic {
                tab.pairs_csv = None;
                ui.horizontal(|ui| {
                    let label = ui.label("pairs");
                    ui.add(egui::DragValue::new(&mut tab.synthetic_count).range(1..=500)).labelled_by(label.id);
                });
            }
            ui.horizontal(|ui| {
                ui.radio_value(&mut synthetic, false, "pairs from a CSV or a folder");
            });
            ui.horizontal(|ui| {
                if ui.add_enabled(idle, egui::Button::new("Choose pairs CSV…")).clicked() {
                    app.ask(super::DialogAnswer::PairsCsv, false, "Training pairs: CSV of fixed, moving paths", None);
                }
                if ui.add_enabled(idle, egui::Button::new("Pairs folder…")).clicked() {
                    app.ask(
                        super::DialogAnswer::PairsCsv,
                        true,
                        "Training pairs: a folder with one sub-folder (fixed*, moving*) per pair",
                        None,
                    );
                }
            });
            if let Some(csv) = &app.training.pairs_csv {
                ui.small(super::panels::displayable(ui, &csv.display().to_string()));
            }
            ui.separator();
            ui.heading("Parameters");
            let params = &mut app.training.params;
            egui::Grid::new("training-grid").num_columns(2).show(ui, |ui| {
                let row = |ui: &mut egui::Ui, label: &str, value: egui::DragValue<'_>| {
                    let label = ui.label(label);
                    ui.add(value).labelled_by(label.id);
                    ui.end_row();
                };
                row(ui, "epochs", egui::DragValue::new(&mut params.epochs).range(1..=10_000));
                row(ui, "patch side, voxels", egui::DragValue::new(&mut params.sampler.patch).range(8..=128).speed(4));
                row(ui, "batch", egui::DragValue::new(&mut params.sampler.batch).range(1..=64));
                row(ui, "patches per pair", egui::DragValue::new(&mut params.sampler.patches_per_pair).range(1..=512));
                row(ui, "pairs at a time", egui::DragValue::new(&mut params.sampler.pairs_at_a_time).range(1..=64));
                row(ui, "base channels", egui::DragValue::new(&mut params.network.base_channels).range(1..=64));
                row(ui, "resolution factor", egui::DragValue::new(&mut params.network.resolution_factor).range(1..=4));
                row(ui, "λ", egui::DragValue::new(&mut params.energy.lambda).speed(1e-4).range(0.0..=10.0));
                row(ui, "learning rate", egui::DragValue::new(&mut params.learning_rate).speed(1e-5).range(1e-6..=1.0));
                row(ui, "warm-up epochs (λ × 0.1)", egui::DragValue::new(&mut params.warmup_epochs).range(0..=100));
                row(
                    ui,
                    "validation share",
                    egui::DragValue::new(&mut params.validation_share).speed(0.01).range(0.0..=0.9),
                );
                row(ui, "seed", egui::DragValue::new(&mut params.seed));
            });
            let similarity = &mut app.training.params.energy.similarity;
            let mut normalised = matches!(similarity, Similarity::NormalizedMse { .. });
            ui.horizontal(|ui| {
                ui.label("similarity");
                if ui.radio_value(&mut normalised, false, "MSE").clicked() {
                    *similarity = Similarity::Mse;
                }
                if ui.radio_value(&mut normalised, true, "normalised MSE").clicked() {
                    *similarity = Similarity::NormalizedMse { a: 0.2 };
                }
            });
            let mut objective = app.training.params.objective.clone();
            ui.horizontal(|ui| {
                ui.label("loss");
                let choices = [
                    (Objective::PatchEnergy, "patch energy at the network's resolution"),
                    (Objective::FullResolution, "optimiser's energy at full resolution"),
                    (Objective::Distill, "optimiser's velocity (one optimisation per pair first)"),
                    (Objective::Truth, "known deformation's velocity (synthetic pairs, phantom folders)"),
                ];
                for (choice, label) in choices {
                    if ui.radio_value(&mut objective, choice, label).clicked() {
                        app.training.params = app.training.params.clone().for_objective(objective.clone());
                    }
                }
            });
            ui.checkbox(
                &mut app.training.params.network.force_features,
                "network input: also the force at the identity (difference × gradient)",
            );
            ui.checkbox(
                &mut app.training.params.network.pooled_force,
                "network input: the force and slopes measured at full resolution, averaged onto its grid",
            );
            ui.checkbox(
                &mut app.training.params.target_in_body,
                "compare velocities inside the body only (distillation, known deformation)",
            );
            let mut prior = app.training.params.network.local_prior.is_some();
            if ui
                .checkbox(&mut prior, "network corrects a closed-form local estimate (Lucas–Kanade, 10 passes)")
                .changed()
            {
                app.training.params.network.local_prior = prior.then(crate::net::local_flow::LocalFlowParams::default);
            }
            ui.separator();
            ui.heading("Model folder");
            ui.small(super::panels::displayable(ui, &app.training.out.display().to_string()));
            if ui.add_enabled(idle, egui::Button::new("Choose folder…")).clicked() {
                app.ask(super::DialogAnswer::TrainingFolder, true, "Folder for the trained model", None);
            }
            ui.horizontal(|ui| {
                if ui.add_enabled(idle, egui::Button::new("Start")).clicked() {
                    app.start_training(false);
                }
                if ui.add_enabled(!idle, egui::Button::new("Stop")).clicked() {
                    app.cancel();
                }
                if ui.add_enabled(idle, egui::Button::new("Resume")).clicked() {
                    app.start_training(true);
                }
            });
            ui.small("Stop keeps the last finished epoch; Resume continues from it.");
            super::panels::progress_section(app, ui);
        });
    });
    egui::CentralPanel::default().show(ui, |ui| {
        let live = app.training.live();
        let done = live.epochs.last().map_or(0, |e| e.epoch);
        let eta = live.eta_seconds().map_or(String::new(), |s| format!(", about {:.0} min left", s / 60.0));
        ui.heading(format!("Epoch {done} of {}{eta}", live.total_epochs));
        if let Some(last) = live.epochs.last() {
            let validation = last.validation_loss.map_or("—".into(), |v| format!("{v:.5}"));
            ui.label(format!(
                "last epoch: train loss {:.5}, validation {validation}, {:.0} s, {:.2} patches/s",
                last.train_loss, last.seconds, last.patches_per_s
            ));
        }
        let steps: Vec<[f64; 2]> = {
            let mut per_epoch = std::collections::HashMap::new();
            for s in &live.steps {
                *per_epoch.entry(s.epoch).or_insert(0usize) += 1;
            }
            let width = live.steps_per_epoch().unwrap_or(1).max(1);
            live.steps
                .iter()
                .map(|s| {
                    [
                        s.epoch as f64 - 1.0 + (s.batch as f64 + 0.5) / width.max(per_epoch[&s.epoch]) as f64,
                        s.loss as f64,
                    ]
                })
                .collect()
        };
        let train: Vec<[f64; 2]> = live.epochs.iter().map(|e| [e.epoch as f64, e.train_loss]).collect();
        let validation: Vec<[f64; 2]> =
            live.epochs.iter().filter_map(|e| e.validation_loss.map(|v| [e.epoch as f64, v])).collect();
        Plot::new("loss-curves")
            .legend(Legend::default())
            .x_axis_label("epoch")
            .y_axis_label("loss (SPEC energy)")
            .show(ui, |plot| {
                plot.points(Points::new("step", PlotPoints::from(steps)).radius(1.5).color(egui::Color32::GRAY));
                plot.line(Line::new("train (epoch mean)", PlotPoints::from(train)).color(egui::Color32::WHITE));
                plot.line(
                    Line::new("validation", PlotPoints::from(validation)).color(egui::Color32::from_rgb(255, 160, 40)),
                );
            });
    });
}

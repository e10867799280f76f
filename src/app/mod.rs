//! The desktop app (SPEC §8): an eframe/egui window on the wgpu renderer that opens on the
//! built-in demo case, loads pairs, registers them on a background worker and shows the result
//! in slice views drawn by the WGSL shaders of `shaders/`. It calls the same library as the CLI.
//!
//! `case` owns the data and the jobs that make it, `worker` the background thread, `view` the
//! slice geometry, `render` the GPU side, `views` the 3×3 grid of slices, `panels` the rest.

pub mod case;
mod panels;
pub mod render;
pub mod training;
pub mod view;
mod views;
pub mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

use eframe::egui;

use crate::app::case::{Case, CaseResult, JobOutput};
use crate::app::render::slice::{SliceRenderer, TextureData, ViewUniform};
use crate::app::view::{Camera, Orientation, WindowLevel};
use crate::app::worker::{Outcome, Worker};
use crate::contours::carry::CarriedRoi;
use crate::metrics::verdict::Status;
use crate::phantom::{DEMO_SHAPE, DEMO_SPACING_MM};
use crate::progress::Progress;
use crate::qa::draw::write_png;
use crate::register::dicom_export::StructuresToCarry;
use crate::register::pipeline::{RegisterParams, input_file, input_in_memory, write_outputs};

/// What the app starts with.
#[derive(Clone, Debug)]
pub struct AppOptions {
    /// Load the built-in demo case at start-up.
    pub load_demo: bool,
    pub demo_shape: [usize; 3],
    pub demo_spacing_mm: [f64; 3],
    /// The registration parameters the work panel starts from.
    pub params: RegisterParams,
    /// A finished `register` folder to open at start-up (instead of the demo).
    pub open_folder: Option<PathBuf>,
}

impl Default for AppOptions {
    fn default() -> Self {
        AppOptions {
            load_demo: true,
            demo_shape: DEMO_SHAPE,
            demo_spacing_mm: DEMO_SPACING_MM,
            params: RegisterParams::default(),
            open_folder: None,
        }
    }
}

/// What the comparison row draws over the moving-warped image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overlay {
    None,
    Blend,
    Checkerboard,
    Difference,
    Grid,
    Jacobian,
    Tissues,
    /// The network's predicted momentum length, with the planes where its tiles meet.
    Momentum,
}

impl Overlay {
    pub const ALL: [Overlay; 8] = [
        Overlay::None,
        Overlay::Blend,
        Overlay::Checkerboard,
        Overlay::Difference,
        Overlay::Grid,
        Overlay::Jacobian,
        Overlay::Tissues,
        Overlay::Momentum,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Overlay::None => "none",
            Overlay::Blend => "blend",
            Overlay::Checkerboard => "checkerboard",
            Overlay::Difference => "difference",
            Overlay::Grid => "deformed grid",
            Overlay::Jacobian => "Jacobian determinant",
            Overlay::Tissues => "tissue overlap",
            Overlay::Momentum => "momentum |m| and patch borders",
        }
    }

    /// A short name for the views' titles.
    pub fn short_name(self) -> &'static str {
        match self {
            Overlay::Grid => "grid",
            Overlay::Jacobian => "det J",
            Overlay::Tissues => "tissues",
            Overlay::Momentum => "|m|",
            other => other.name(),
        }
    }

    /// The overlay's number in `slice.wgsl`.
    fn shader_code(self) -> u32 {
        Overlay::ALL.iter().position(|&o| o == self).unwrap_or(0) as u32
    }

    /// Whether the overlay shows something only a registration result has.
    fn needs_result(self) -> bool {
        matches!(self, Overlay::Grid | Overlay::Jacobian | Overlay::Momentum)
    }
}

/// The three rows of views.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Row {
    Fixed,
    Moving,
    Compared,
}

impl Row {
    pub const ALL: [Row; 3] = [Row::Fixed, Row::Moving, Row::Compared];
}

/// How the views look: shared by every view.
#[derive(Clone, Debug)]
pub struct Display {
    pub window: WindowLevel,
    pub overlay: Overlay,
    /// 0..1: weight of the overlay (or, for blend, of the moving-warped image).
    pub opacity: f32,
    pub checker_voxels: f32,
    pub grid_spacing_mm: f32,
    /// Index into `metrics::TISSUES`.
    pub tissue: usize,
    /// |log₂ det J| drawn at full colour.
    pub jacobian_log2_range: f32,
    /// HU difference drawn at full colour.
    pub difference_hu: f32,
}

impl Default for Display {
    fn default() -> Self {
        Display {
            window: WindowLevel::PRESETS[1].1,
            overlay: Overlay::None,
            opacity: 0.5,
            checker_voxels: 16.0,
            grid_spacing_mm: 10.0,
            tissue: 2,
            jacobian_log2_range: 0.5,
            difference_hu: 300.0,
        }
    }
}

/// Answers of file dialogs, which run on their own threads.
pub(crate) enum DialogAnswer {
    Fixed(PathBuf),
    Moving(PathBuf),
    ExportFolder(PathBuf),
    ViewPng(PathBuf),
    PairsCsv(PathBuf),
    TrainingFolder(PathBuf),
    ModelFolder(PathBuf),
    Calibration(PathBuf),
    Structures(PathBuf),
    ResultFolder(PathBuf),
}

/// The app's two pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tab {
    Registration,
    Training,
}

pub struct DiffeoregApp {
    options: AppOptions,
    pub tab: Tab,
    pub training: training::TrainingTab,
    worker: Worker<JobOutput>,
    case: Option<Case>,
    result: Option<CaseResult>,
    pub display: Display,
    /// Shared by all views: the voxel index (fixed grid) the crosshairs meet at.
    cursor: [f32; 3],
    cameras: [Camera; 3],
    /// The view the last click went to: what "Export view" saves.
    selected_view: (Row, Orientation),
    pub params: RegisterParams,
    /// Where `params.calibration` was read from (None: SPEC's default curve).
    pub calibration_file: Option<PathBuf>,
    log: Vec<String>,
    /// The last job's end, as a line for the status bar; errors are flagged.
    message: Option<(bool, String)>,
    pending_fixed: Option<PathBuf>,
    pending_moving: Option<PathBuf>,
    dialog_sender: Sender<DialogAnswer>,
    dialog_answers: Receiver<DialogAnswer>,
    /// Texture data waiting for the renderer (uploaded at the start of the next frame).
    pending_textures: Vec<TextureData>,
    render_state: Option<eframe::egui_wgpu::RenderState>,
    hover: Option<views::Hover>,
    last_frame_time: Duration,
    /// Grid voxels per texel of the displacement texture.
    field_subsampling: usize,
    /// Where each view was drawn in the last frame (points).
    view_rects: Vec<((Row, Orientation), egui::Rect)>,
    /// A structure set drawn on the moving image, and its regions carried onto the fixed grid
    /// by the current result (drawn on the fixed and warped views, exported as DICOM).
    pub structures: Option<Arc<StructuresToCarry>>,
    pub structures_file: Option<PathBuf>,
    pub carried: Vec<CarriedRoi>,
    /// Whether "Results…" also writes the DICOM outputs (series, registration, structures).
    pub export_dicom: bool,
}

impl DiffeoregApp {
    pub fn new(cc: &eframe::CreationContext<'_>, options: AppOptions) -> DiffeoregApp {
        if let Some(render_state) = &cc.wgpu_render_state {
            let renderer = SliceRenderer::new(&render_state.device, render_state.target_format);
            render_state.renderer.write().callback_resources.insert(renderer);
        }
        let ctx = cc.egui_ctx.clone();
        let (dialog_sender, dialog_answers) = channel();
        let mut app = DiffeoregApp {
            tab: Tab::Registration,
            training: training::TrainingTab::default(),
            worker: Worker::new(move || ctx.request_repaint()),
            case: None,
            result: None,
            display: Display::default(),
            cursor: [0.0; 3],
            cameras: [Camera::default(); 3],
            selected_view: (Row::Compared, Orientation::Axial),
            params: options.params.clone(),
            calibration_file: None,
            log: Vec::new(),
            message: None,
            pending_fixed: None,
            pending_moving: None,
            dialog_sender,
            dialog_answers,
            pending_textures: Vec::new(),
            render_state: cc.wgpu_render_state.clone(),
            hover: None,
            last_frame_time: Duration::ZERO,
            field_subsampling: 1,
            view_rects: Vec::new(),
            structures: None,
            structures_file: None,
            carried: Vec::new(),
            export_dicom: true,
            options,
        };
        if let Some(folder) = app.options.open_folder.clone() {
            app.open_result_folder(folder);
        } else if app.options.load_demo {
            app.load_demo();
        }
        app
    }

    pub fn is_busy(&self) -> bool {
        self.worker.is_busy()
    }

    pub fn case(&self) -> Option<&Case> {
        self.case.as_ref()
    }

    pub fn result(&self) -> Option<&CaseResult> {
        self.result.as_ref()
    }

    /// The last job's outcome line and whether it was an error.
    pub fn message(&self) -> Option<&(bool, String)> {
        self.message.as_ref()
    }

    /// Time the UI thread spent on the last frame (this app's part of it).
    pub fn last_frame_time(&self) -> Duration {
        self.last_frame_time
    }

    /// The GPU adapter drawing the views (name and backend).
    pub fn gpu_name(&self) -> Option<String> {
        let info = self.render_state.as_ref()?.adapter.get_info();
        Some(format!("{} ({:?})", info.name, info.backend))
    }

    /// Where a view was drawn in the last frame, in points.
    pub fn view_rect(&self, row: Row, orientation: Orientation) -> Option<egui::Rect> {
        self.view_rects.iter().find(|(key, _)| *key == (row, orientation)).map(|(_, rect)| *rect)
    }

    pub fn cursor(&self) -> [f32; 3] {
        self.cursor
    }

    pub fn set_cursor(&mut self, cursor: [f32; 3]) {
        self.cursor = self.clamp_to_grid(cursor);
    }

    fn clamp_to_grid(&self, index: [f32; 3]) -> [f32; 3] {
        match &self.case {
            Some(case) => std::array::from_fn(|d| index[d].clamp(0.0, case.fixed.geometry.shape[d] as f32 - 1.0)),
            None => index,
        }
    }

    pub fn load_demo(&mut self) {
        let (shape, spacing) = (self.options.demo_shape, self.options.demo_spacing_mm);
        self.start_job("load demo", Box::new(move |board| case::load_demo(shape, spacing, board)));
    }

    /// Shows a pair already in memory (HU, each on its own grid).
    pub fn load_volumes(&mut self, name: String, fixed: crate::volume::Volume, moving: crate::volume::Volume) {
        self.start_job("load pair", Box::new(move |board| case::load_volumes(name, fixed, moving, board)));
    }

    pub fn load_files(&mut self, fixed: PathBuf, moving: PathBuf) {
        self.start_job("load pair", Box::new(move |board| case::load_files(&fixed, &moving, board)));
    }

    /// Uses the site's HU → density curve from `path` (JSON or "HU density" lines) for the next
    /// registrations; a file that cannot be used leaves the curve as it was and says why.
    pub fn load_calibration(&mut self, path: PathBuf) {
        match crate::volume::Calibration::load(&path) {
            Ok(calibration) => {
                self.message = Some((false, format!("HU → density curve from {}", path.display())));
                self.params.calibration = calibration;
                self.calibration_file = Some(path);
            }
            Err(error) => self.message = Some((true, format!("calibration not changed: {error}"))),
        }
    }

    /// Opens a finished `register` folder: its inputs, result, verdict, metrics and carried
    /// structures, without registering again.
    pub fn open_result_folder(&mut self, folder: PathBuf) {
        self.start_job("open result", Box::new(move |board| case::open_result_folder(&folder, board)));
    }

    /// Reads an RT Structure Set drawn on the moving image; with a result, carries it at once.
    pub fn load_structures(&mut self, path: PathBuf) {
        let Some(case) = &self.case else { return };
        let (identities, moving) = (case.identities.clone(), case.moving.clone());
        let registration = self.result.as_ref().map(|r| r.registration.clone());
        self.structures_file = Some(path.clone());
        self.start_job(
            "read structures",
            Box::new(move |board| case::load_structures(&path, &identities, &moving, registration.as_deref(), board)),
        );
    }

    /// Carries the loaded structures through the current result.
    fn carry_structures(&mut self) {
        let (Some(structures), Some(result)) = (&self.structures, &self.result) else { return };
        let (structures, registration) = (structures.clone(), result.registration.clone());
        self.start_job(
            "carry structures",
            Box::new(move |board| {
                let carried = case::carry_all(&structures, &registration, board)?;
                Ok(JobOutput::Structures(Some(structures), carried))
            }),
        );
    }

    /// Registers the loaded pair with the work panel's parameters.
    pub fn start_registration(&mut self) {
        let Some(case) = &self.case else { return };
        let (fixed, moving, truth) = (case.fixed.clone(), case.moving.clone(), case.truth.clone());
        let params = self.params.clone();
        self.start_job(
            "register",
            Box::new(move |board| case::register_case(&fixed, &moving, truth.as_deref(), &params, board)),
        );
    }

    /// Writes the result's fields, warped images, QA figures and report into `folder`, and with
    /// `export_dicom` the DICOM outputs (with the loaded structures carried).
    pub fn export_results(&mut self, folder: PathBuf) {
        let (Some(case), Some(result)) = (&self.case, &self.result) else { return };
        let dicom = self.export_dicom.then(|| crate::register::dicom_export::DicomOutputs {
            identities: case.identities.clone(),
            structures: self.structures.clone(),
        });
        let (fixed, moving) = (case.fixed.clone(), case.moving.clone());
        let paths = (case.fixed_path.clone(), case.moving_path.clone());
        let warnings = case.warnings.clone();
        let (registration, params) = (result.registration.clone(), result.params.clone());
        self.start_job(
            "export results",
            Box::new(move |board| {
                let inputs = match paths {
                    (Some(f), Some(m)) => vec![input_file("fixed", &f, &fixed)?, input_file("moving", &m, &moving)?],
                    _ => vec![
                        input_in_memory("fixed", "(built-in demo, in memory)", &fixed),
                        input_in_memory("moving", "(built-in demo, in memory)", &moving),
                    ],
                };
                let report =
                    write_outputs(&folder, &fixed, &registration, &params, inputs, warnings, dicom.as_ref(), board)?;
                let dicom = if report.dicom.is_some() { ", DICOM in dicom/" } else { "" };
                Ok(JobOutput::Saved(format!(
                    "results written to {}{dicom}, QA record qa/report.html ({} warnings)",
                    folder.display(),
                    report.warnings.len()
                )))
            }),
        );
    }

    /// Renders one view off-screen at `width` × `height` and writes it as a PNG (on the worker).
    pub fn export_view_png(&mut self, row: Row, orientation: Orientation, width: u32, height: u32, path: PathBuf) {
        let image = match self.render_view_image(row, orientation, width, height) {
            Ok(image) => image,
            Err(message) => {
                self.message = Some((true, message));
                return;
            }
        };
        self.start_job(
            "export view",
            Box::new(move |_| {
                let (width, height) = image.dimensions();
                write_png(&path, image.as_raw(), width, height, image::ExtendedColorType::Rgba8)?;
                Ok(JobOutput::Saved(format!("view saved to {}", path.display())))
            }),
        );
    }

    /// The pixels of one view as the GPU draws it.
    pub fn render_view_image(
        &self,
        row: Row,
        orientation: Orientation,
        width: u32,
        height: u32,
    ) -> Result<image::RgbaImage, String> {
        let render_state = self.render_state.as_ref().ok_or("no GPU renderer: cannot draw views")?;
        let uniform = self
            .view_uniform(row, orientation, [0.0, 0.0, width as f32, height as f32])
            .ok_or("nothing loaded to draw")?;
        let renderer = render_state.renderer.read();
        let slices = renderer.callback_resources.get::<SliceRenderer>().ok_or("the slice renderer is missing")?;
        slices.render_image(&render_state.device, &render_state.queue, &uniform, width, height)
    }

    pub fn cancel(&self) {
        self.worker.cancel();
    }

    fn start_job(&mut self, name: &str, job: worker::Job<JobOutput>) {
        // Textures go up to the GPU on the worker too (wgpu's device and queue are thread-safe),
        // so the UI thread only swaps them in.
        let gpu = self.render_state.as_ref().map(|rs| (rs.device.clone(), rs.queue.clone()));
        let job: worker::Job<JobOutput> = Box::new(move |board| {
            let mut output = job(board)?;
            if let Some((device, queue)) = &gpu {
                board.start_stage("uploading to the GPU", 0);
                for texture in output.textures_mut() {
                    texture.upload(device, queue);
                }
            }
            Ok(output)
        });
        if self.worker.start(name, job) {
            self.message = None;
        } else {
            self.message = Some((true, format!("cannot start '{name}': another job is running")));
        }
    }

    /// Takes a finished job's outcome and the answers of file dialogs.
    fn poll(&mut self) {
        while let Ok(answer) = self.dialog_answers.try_recv() {
            match answer {
                DialogAnswer::Fixed(path) => self.pending_fixed = Some(path),
                DialogAnswer::Moving(path) => self.pending_moving = Some(path),
                DialogAnswer::ExportFolder(path) => self.export_results(path),
                DialogAnswer::PairsCsv(path) => self.training.pairs_csv = Some(path),
                DialogAnswer::TrainingFolder(path) => self.training.out = path,
                DialogAnswer::ModelFolder(path) => self.params.network.model = Some(path),
                DialogAnswer::Calibration(path) => self.load_calibration(path),
                DialogAnswer::Structures(path) => self.load_structures(path),
                DialogAnswer::ResultFolder(path) => self.open_result_folder(path),
                DialogAnswer::ViewPng(path) => {
                    let (row, orientation) = self.selected_view;
                    self.export_view_png(row, orientation, 768, 768, path);
                }
            }
        }
        let Some((name, outcome)) = self.worker.poll() else { return };
        let board = self.worker.board();
        self.log.extend(board.log.iter().map(|line| format!("[{name}] {line}")));
        let elapsed = board.started.map_or(0.0, |t| t.elapsed().as_secs_f64());
        match outcome {
            Outcome::Done(JobOutput::Loaded(case, textures)) => {
                let shape = case.fixed.geometry.shape;
                self.cursor = shape.map(|n| (n / 2) as f32);
                self.cameras = [Camera::default(); 3];
                self.message = Some((false, format!("loaded {} in {elapsed:.1} s", case.name)));
                for warning in &case.warnings {
                    self.log.push(format!("warning: {warning}"));
                }
                self.case = Some(*case);
                self.result = None;
                self.structures = None;
                self.structures_file = None;
                self.carried.clear();
                self.field_subsampling = 1;
                self.pending_textures = textures;
            }
            Outcome::Done(JobOutput::Registered(result, textures)) => {
                let quality = &result.registration.quality;
                let mut line = format!(
                    "registered in {elapsed:.1} s, verdict {}: {} folding voxels, inverse consistency {:.3} mm",
                    result.registration.verdict.status.name(),
                    quality.folding_voxels,
                    quality.inverse_consistency_mean_mm
                );
                if let Some(epe) = &result.endpoint_error {
                    line += &format!(", endpoint error {:.2} mm (mean, inside the body)", epe.mean_mm);
                }
                self.message = Some((result.registration.verdict.status == Status::Failed, line));
                self.log.extend(result.registration.verdict.lines().into_iter().map(|l| format!("verdict {l}")));
                if let Some(case) = &self.case {
                    self.field_subsampling = case::field_subsampling(case.fixed.geometry.shape);
                }
                self.result = Some(*result);
                self.pending_textures = textures;
                self.carried.clear();
                self.carry_structures();
            }
            Outcome::Done(JobOutput::Opened(case, result, textures, carried)) => {
                let shape = case.fixed.geometry.shape;
                self.cursor = shape.map(|n| (n / 2) as f32);
                self.cameras = [Camera::default(); 3];
                for warning in &case.warnings {
                    self.log.push(format!("warning: {warning}"));
                }
                self.log.extend(result.registration.verdict.lines().into_iter().map(|l| format!("verdict {l}")));
                self.message = Some((
                    result.registration.verdict.status == Status::Failed,
                    format!(
                        "opened {} in {elapsed:.1} s: verdict {}, {} structures",
                        case.name,
                        result.registration.verdict.status.name(),
                        carried.len()
                    ),
                ));
                self.field_subsampling = case::field_subsampling(shape);
                self.params = result.params.clone();
                self.case = Some(*case);
                self.result = Some(*result);
                self.structures = None;
                self.structures_file = None;
                self.carried = carried;
                self.pending_textures = textures;
            }
            Outcome::Done(JobOutput::Structures(structures, carried)) => {
                let names: Vec<String> =
                    structures.iter().flat_map(|s| s.masks.iter().map(|m| m.roi.name.clone())).collect();
                let state =
                    if carried.is_empty() { "read; carried after registering" } else { "carried onto the fixed CT" };
                self.message = Some((false, format!("{} structures {state}: {}", names.len(), names.join(", "))));
                self.structures = structures;
                self.carried = carried;
            }
            Outcome::Done(JobOutput::Saved(line)) => self.message = Some((false, line)),
            Outcome::Done(JobOutput::Trained(folder, epochs)) => self.use_trained_model(folder, epochs),
            Outcome::Cancelled if name.contains("train") => {
                self.message =
                    Some((false, "training stopped; the last finished epoch is kept, Resume continues".into()))
            }
            Outcome::Cancelled => self.message = Some((false, format!("'{name}' cancelled; nothing changed"))),
            Outcome::Failed(error) => self.message = Some((true, format!("'{name}' failed: {error}"))),
        }
        if let Some((is_error, line)) = &self.message {
            self.log.push(if *is_error { format!("error: {line}") } else { line.clone() });
        }
    }

    fn upload_pending_textures(&mut self) {
        if self.pending_textures.is_empty() {
            return;
        }
        let textures = std::mem::take(&mut self.pending_textures);
        if let Some(render_state) = &self.render_state {
            let mut renderer = render_state.renderer.write();
            if let Some(slices) = renderer.callback_resources.get_mut::<SliceRenderer>() {
                slices.set_textures(&render_state.device, &render_state.queue, textures);
            }
        }
    }

    /// Whether the current result (if any) has what `overlay` draws.
    pub fn overlay_available(&self, overlay: Overlay) -> bool {
        match (&self.result, overlay) {
            (None, o) => !o.needs_result(),
            (Some(result), Overlay::Momentum) => result.registration.momentum.is_some(),
            (Some(_), _) => true,
        }
    }

    /// The shader's view block for one view in a rectangle (points or pixels).
    fn view_uniform(&self, row: Row, orientation: Orientation, rect: [f32; 4]) -> Option<ViewUniform> {
        let case = self.case.as_ref()?;
        let view = self.slice_view(orientation, rect)?;
        let [origin, across, down] = view.index_frame();
        let geometry = &case.fixed.geometry;
        let shape = geometry.shape.map(|n| n as f32);
        let factor = self.field_subsampling as f32;
        let field_shape = if self.result.is_some() {
            geometry.shape.map(|n| n.div_ceil(self.field_subsampling) as f32)
        } else {
            [1.0; 3]
        };
        let d = &self.display;
        let overlay = if self.overlay_available(d.overlay) { d.overlay } else { Overlay::None };
        let momentum_max = self.result.as_ref().map_or(0.0, |r| r.momentum_max);
        let image = match row {
            Row::Fixed => 0,
            Row::Moving => 1,
            Row::Compared => 2,
        };
        let (plane, spacing) = (view.plane, geometry.spacing_mm);
        Some(ViewUniform {
            origin: [origin[0], origin[1], origin[2], 0.0],
            across: [across[0], across[1], across[2], 0.0],
            down: [down[0], down[1], down[2], 0.0],
            shape: [shape[0], shape[1], shape[2], factor],
            field_shape: [field_shape[0], field_shape[1], field_shape[2], 0.0],
            spacing: [spacing[0] as f32, spacing[1] as f32, spacing[2] as f32, 0.0],
            window: [d.window.center - d.window.width / 2.0, d.window.width, d.opacity, d.checker_voxels],
            extra: [d.grid_spacing_mm, d.jacobian_log2_range, d.difference_hu, momentum_max],
            modes: [image, overlay.shader_code(), d.tissue as u32, (plane.horizontal + 4 * plane.vertical) as u32],
        })
    }

    fn slice_view(&self, orientation: Orientation, rect: [f32; 4]) -> Option<view::SliceView> {
        let case = self.case.as_ref()?;
        let geometry = &case.fixed.geometry;
        let plane = view::Plane::new(orientation, geometry);
        let column = Orientation::ALL.iter().position(|&o| o == orientation).unwrap_or(0);
        Some(view::SliceView {
            plane,
            shape: geometry.shape,
            spacing_mm: geometry.spacing_mm,
            slice: self.cursor[plane.normal],
            camera: self.cameras[column],
            rect,
        })
    }
}

impl eframe::App for DiffeoregApp {
    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        let start = Instant::now();
        if self.render_state.is_none() {
            self.render_state = frame.wgpu_render_state().cloned();
        }
        self.poll();
        self.upload_pending_textures();
        self.take_dropped_files(ui.ctx());
        panels::top_bar(self, ui);
        panels::status_bar(self, ui);
        match self.tab {
            Tab::Registration => {
                panels::work_panel(self, ui);
                egui::CentralPanel::default().show(ui, |ui| views::grid(self, ui));
            }
            Tab::Training => training::panel(self, ui),
        }
        if self.worker.is_busy() {
            // The worker wakes the UI on progress; this keeps the elapsed time moving in between.
            ui.ctx().request_repaint_after(Duration::from_millis(250));
        }
        self.last_frame_time = start.elapsed();
    }
}

impl DiffeoregApp {
    /// Files dropped on the window: two fill fixed and moving (in order); one fills the empty slot
    /// (or replaces the moving image). A complete pair is loaded at once.
    fn take_dropped_files(&mut self, ctx: &egui::Context) {
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw.dropped_files.iter().map(|f| f.path().to_path_buf()).filter(|p| !p.as_os_str().is_empty()).collect()
        });
        if dropped.is_empty() {
            return;
        }
        match dropped.as_slice() {
            [fixed, moving, ..] => {
                self.pending_fixed = Some(fixed.clone());
                self.pending_moving = Some(moving.clone());
            }
            [one] if self.pending_fixed.is_none() => self.pending_fixed = Some(one.clone()),
            [one] => self.pending_moving = Some(one.clone()),
            [] => {}
        }
        self.load_pending_pair();
    }

    fn load_pending_pair(&mut self) {
        if let (Some(fixed), Some(moving)) = (self.pending_fixed.clone(), self.pending_moving.clone()) {
            self.load_files(fixed, moving);
        }
    }

    /// Opens a native file dialog on its own thread; the answer arrives in `poll`.
    pub(crate) fn ask(&self, kind: fn(PathBuf) -> DialogAnswer, folder: bool, title: &str, save_name: Option<&str>) {
        let sender = self.dialog_sender.clone();
        let title = title.to_string();
        let save_name = save_name.map(str::to_string);
        std::thread::spawn(move || {
            let dialog = rfd::FileDialog::new().set_title(&title);
            let picked = match (&save_name, folder) {
                (Some(name), _) => dialog.set_file_name(name).save_file(),
                (None, true) => dialog.pick_folder(),
                (None, false) => dialog.pick_file(),
            };
            if let Some(path) = picked {
                let _ = sender.send(kind(path));
            }
        });
    }
}

/// Opens the app's window on the demo case (the binary's default command).
pub fn run_app() -> anyhow::Result<()> {
    run_app_with(AppOptions::default())
}

/// Opens the app's window with `options` (e.g. a finished register folder to show).
pub fn run_app_with(app_options: AppOptions) -> anyhow::Result<()> {
    let native = eframe::NativeOptions {
        renderer: eframe::Renderer::Wgpu,
        viewport: egui::ViewportBuilder::default().with_title("diffeoreg").with_inner_size([1500.0, 950.0]),
        ..Default::default()
    };
    eframe::run_native("diffeoreg", native, Box::new(|cc| Ok(Box::new(DiffeoregApp::new(cc, app_options)))))
        .map_err(|e| anyhow::anyhow!("cannot open the app's window: {e}"))
}

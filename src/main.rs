//! The `diffeoreg` command line: parse, call the library, print.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use diffeoreg::io::{self, SeriesChoice, StoredType};
use diffeoreg::progress::{CancelFlag, Progress};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(name = "diffeoreg", version, about = "Diffeomorphic deformable registration of CT and pseudo-CT")]
struct Cli {
    /// Without a command, the desktop app opens on the built-in demo case.
    #[command(subcommand)]
    command: Option<Command>,
}

// Parsed once per run: the size of its largest variant (train's many options) costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Describe a volume (NIfTI file, DICOM folder or file, InVesalius .inv3 project): geometry,
    /// values, series.
    Info {
        path: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// SeriesInstanceUID to describe when a folder holds several.
        #[arg(long)]
        series: Option<String>,
    },
    /// Open a finished `register` folder in the desktop app: its inputs, both fields, the
    /// verdict and metrics, every overlay and the structures it carried, without registering
    /// again.
    View { folder: PathBuf },
    /// Convert a DICOM series or a NIfTI file to NIfTI (.nii or .nii.gz).
    Convert {
        input: PathBuf,
        output: PathBuf,
        /// SeriesInstanceUID to convert when a folder holds several (default: the largest CT).
        #[arg(long)]
        series: Option<String>,
    },
    /// Register a moving image (pseudo-CT) to a fixed one (CT): rigid, then diffeomorphic, both
    /// directions. Writes warp_fwd/warp_inv (ITK displacement fields), both warped images,
    /// rigid.tfm and report.json into OUT.
    Register {
        /// The fixed image (CT): NIfTI file or DICOM folder. Leave out --fixed and --moving to
        /// register the built-in demo case (a synthetic head and its pseudo-CT, known answer).
        #[arg(long, requires = "moving")]
        fixed: Option<PathBuf>,
        /// The moving image (pseudo-CT).
        #[arg(long, requires = "fixed")]
        moving: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        /// optimize (direct optimisation, any pair), network (the trained model's patch-wise
        /// prediction) or hybrid (the network, then an optimisation started from its prediction).
        #[arg(long, default_value = "optimize")]
        method: String,
        /// Model folder for network/hybrid (config.json, weights.bpk); default: the built-in model.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Inference tile side and discarded margin, voxels of the model's grid (default 64,12).
        #[arg(long, value_delimiter = ',')]
        tile: Option<Vec<usize>>,
        /// Network and hybrid: how many times the network predicts, each time on the moving
        /// image warped by the deformation so far (default 1).
        #[arg(long)]
        cascade: Option<usize>,
        /// Network and hybrid: predict on the GPU (wgpu) instead of the CPU.
        #[arg(long)]
        gpu: bool,
        /// Resolution levels of the optimisation, coarse to fine (default 4,2,1, where levels
        /// after one with voxels of 1.5 mm or less are skipped; levels given here all run).
        #[arg(long, value_delimiter = ',')]
        levels: Option<Vec<usize>>,
        /// Iterations per level, e.g. 150,60,60 (given here, all run; by default a large grid runs fewer at its finest level)
        #[arg(long, value_delimiter = ',')]
        iterations: Option<Vec<usize>>,
        /// Weight λ of the regulariser ⟨v, m⟩ (taken per voxel).
        #[arg(long)]
        lambda: Option<f32>,
        /// What the rigid stage minimises: mse, nmi or mattes (−Mattes mutual information).
        #[arg(long)]
        rigid_metric: Option<String>,
        /// Compare the images as they are, without blurring the sharper one to the other's
        /// resolution first.
        #[arg(long)]
        no_resolution_match: bool,
        /// Compare the images' grey values as they are, without mapping the fixed image's onto
        /// the moving image's scale first (the default; kept for scripts that name it).
        #[arg(long, conflicts_with = "intensity_match")]
        no_intensity_match: bool,
        /// Map the fixed image's grey values onto the moving image's scale before comparing
        /// (off by default: on real-CT pairs it made the result worse).
        #[arg(long)]
        intensity_match: bool,
        /// Exit with status 3 when the verdict is `failed` (the outputs are still written, for
        /// inspection).
        #[arg(long)]
        strict: bool,
        /// Also write OUT/dicom/: the moving image warped onto the fixed grid as a DICOM series
        /// in the fixed CT's study and frame of reference, and registration.dcm, the
        /// deformation as a DICOM Deformable Spatial Registration.
        #[arg(long)]
        dicom: bool,
        /// An RT Structure Set drawn on the moving image's series: carried onto the fixed CT as
        /// OUT/dicom/structures.dcm (implies --dicom).
        #[arg(long, requires = "moving")]
        structures: Option<PathBuf>,
        /// Compare everything in the images, the CT's couch and head rest included (by default
        /// only the patient, the largest connected piece of body in each image, is compared).
        #[arg(long)]
        keep_outside_patient: bool,
        /// The site's HU → density curve: JSON ({"points": [[hu, density], …], "max_density":
        /// 6.714}) or "HU density" lines (default: SPEC §2's curve).
        #[arg(long)]
        calibration: Option<PathBuf>,
        /// α and γ of the smoothing operator L = −α∇² + γ (K = L²; voxel units).
        #[arg(long)]
        alpha: Option<f64>,
        #[arg(long)]
        gamma: Option<f64>,
        /// Zero padding of the momentum before the cyclic FFT, voxels on every side.
        #[arg(long)]
        pad: Option<usize>,
        /// Scaling and squaring steps N (the velocity is divided by 2ᴺ).
        #[arg(long)]
        steps: Option<u32>,
        /// The optimiser's image term: lncc (local normalised cross-correlation with
        /// --similarity-radius; the default), nmse (normalised MSE with --similarity-a) or mse.
        #[arg(long)]
        similarity: Option<String>,
        /// The scale a of the normalised MSE, kg/dm³.
        #[arg(long)]
        similarity_a: Option<f32>,
        /// The half-width of local NCC's cubic window, voxels of each level (default 2).
        #[arg(long)]
        similarity_radius: Option<u32>,
        /// Hybrid: levels and iterations of the optimisation that refines the network's
        /// prediction (default 2,1 and 60,70).
        #[arg(long, value_delimiter = ',')]
        hybrid_levels: Option<Vec<usize>>,
        #[arg(long, value_delimiter = ',')]
        hybrid_iterations: Option<Vec<usize>>,
        /// Hybrid: charge the regulariser with the whole velocity, the network's start included
        /// (true), or only with what the refinement adds to it (false).
        #[arg(long)]
        hybrid_regularise_start: Option<bool>,
        /// Hybrid, charging the start: the share of the network's prediction the regulariser
        /// charges (0–1; default: the model's, 0.75 for the built-in one, 1 for a model that
        /// names none); the rest stays a fixed base.
        #[arg(long)]
        hybrid_charged_share: Option<f64>,
        /// Optimize and hybrid: compare the images only where the moving image has data after
        /// the rigid alignment (true), or everywhere (false).
        #[arg(long)]
        field_of_view: Option<bool>,
    },
    /// Measure a registration made by any tool (SPEC §7): NMI, MSE, MAE, tissue Dice, folding,
    /// Jacobian, inverse consistency, and endpoint error against a ground truth. Writes
    /// OUT/evaluation.json and prints a table.
    Evaluate {
        #[arg(long, required_unless_present = "batch")]
        fixed: Option<PathBuf>,
        #[arg(long, required_unless_present = "batch")]
        moving: Option<PathBuf>,
        /// Forward field on the fixed grid (ITK convention: fixed point x ↦ moving point x + u(x)).
        #[arg(long, required_unless_present = "batch")]
        warp: Option<PathBuf>,
        /// A CSV of cases (columns case, method, fixed, moving, warp, and optionally inverse,
        /// truth, truth_inverse, rigid): writes metrics.csv, summary.csv and boxplots.png.
        #[arg(long, conflicts_with_all = ["fixed", "moving", "warp"])]
        batch: Option<PathBuf>,
        /// Inverse field on the moving grid, for the fixed → moving direction.
        #[arg(long)]
        inverse: Option<PathBuf>,
        /// Ground-truth forward field (e.g. a phantom's truth_fwd.nii.gz), for endpoint error.
        #[arg(long)]
        truth: Option<PathBuf>,
        /// Ground-truth inverse field (truth_inv.nii.gz), for endpoint error in moving space.
        #[arg(long)]
        truth_inverse: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        /// The site's HU → density curve (JSON or "HU density" lines; see register).
        #[arg(long)]
        calibration: Option<PathBuf>,
    },
    /// Carry a registration over to another image (e.g. the MRI behind the pseudo-CT): resample
    /// IMAGE onto the REFERENCE grid through WARP (which lies on that grid).
    Apply {
        #[arg(long)]
        warp: PathBuf,
        #[arg(long)]
        image: PathBuf,
        #[arg(long)]
        reference: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// The image is a label map: nearest neighbour, no new labels.
        #[arg(long)]
        labels: bool,
        /// Also write the result into this folder as a DICOM series (MR image storage for an
        /// MRI, CT otherwise) in the reference CT's study and frame of reference.
        #[arg(long)]
        dicom: Option<PathBuf>,
    },
    /// Train the network without labels on pairs from a CSV (columns fixed, moving) or on
    /// built-in synthetic pairs; writes the model (config.json, weights.bpk), training.json,
    /// losses.csv, batch_losses.csv, loss_curves.png and checkpoints/ into OUT.
    Train {
        /// The pairs: a CSV (fixed path, moving path per row, relative to the CSV's folder), or a
        /// folder with one sub-folder per pair holding fixed* and moving* images (NIfTI or DICOM
        /// folders; what `phantom` writes).
        #[arg(long)]
        pairs: Option<PathBuf>,
        /// Train on this many synthetic pairs (random heads, deformations and pseudo-CT
        /// appearance): instead of --pairs when that is left out (16 by default), besides them
        /// when both are given.
        #[arg(long)]
        synthetic: Option<usize>,
        #[arg(long)]
        out: PathBuf,
        /// Continue the training in OUT from its latest checkpoint (its parameters; --epochs may raise the total).
        #[arg(long)]
        resume: bool,
        #[arg(long)]
        epochs: Option<usize>,
        #[arg(long)]
        learning_rate: Option<f64>,
        /// Adam's ε (10⁻⁸ by default).
        #[arg(long)]
        adam_epsilon: Option<f64>,
        /// Patch side, voxels (a multiple of 4; SPEC default 48).
        #[arg(long)]
        patch: Option<usize>,
        #[arg(long)]
        batch: Option<usize>,
        /// Patches drawn from each pair per epoch.
        #[arg(long)]
        patches_per_pair: Option<usize>,
        /// Patches drawn once from each held-out pair for the validation loss (8 by default).
        #[arg(long)]
        validation_patches_per_pair: Option<usize>,
        /// Channels at full resolution of the U-Net (16 by default).
        #[arg(long)]
        base_channels: Option<usize>,
        /// The network works on images downsampled by this factor (1 = full resolution).
        #[arg(long)]
        resolution_factor: Option<usize>,
        /// The size of the network's voxels, mm: each pair is downsampled by the whole factor
        /// closest to it ÷ its voxel size (geometric mean), at training and at registration, so
        /// that one model serves 0.5–2 mm grids, and a local prior's window and spread are σ × this
        /// many mm along each axis; without it, always by --resolution-factor (σ in coarse voxels)
        #[arg(long)]
        grid_mm: Option<f64>,
        /// Factor on the network's output (momentum), for faster learning.
        #[arg(long)]
        output_scale: Option<f64>,
        /// Whether the network also derives the energy's force at the identity from its two
        /// images (difference times gradient) and sees it beside them: true or false (true by
        /// default for `--objective full`, false for `patch`).
        #[arg(long)]
        force_features: Option<bool>,
        /// Whether the network's input also carries the force at the identity measured on the
        /// full-resolution pair and averaged onto its grid, with the images' structure tensor
        /// (12 channels; it then derives no force of its own, whatever --force-features says):
        /// true or false (default false).
        #[arg(long)]
        pooled_force: Option<bool>,
        /// Passes of the closed-form local estimate (Lucas–Kanade spread by normalised
        /// convolution) that the network corrects: its velocity is the estimate's plus its own,
        /// and it sees the moving image warped by the estimate. 0: the network alone (default).
        #[arg(long)]
        local_prior_passes: Option<usize>,
        /// Whether the local estimate solves for a grey-value offset in each window beside the
        /// displacement, so that a pseudo-CT's bias field reads as no motion: true or false
        /// (default false)
        #[arg(long)]
        local_prior_offset: Option<bool>,
        /// Whether the local estimate leaves out the voxels where the moving image has no data
        /// (beyond its field of view after the rigid alignment): true or false (default false)
        #[arg(long)]
        local_prior_field_of_view: Option<bool>,
        /// Whether the local estimate reads the pair as the rigid alignment left it rather than
        /// matched in resolution and grey values (the network's channels stay matched): true or
        /// false (default false)
        #[arg(long)]
        local_prior_unmatched: Option<bool>,
        /// Whether the distill and truth objectives count each voxel by its share of body (where
        /// endpoint error is measured) rather than all alike: true or false (default true).
        #[arg(long)]
        target_in_body: Option<bool>,
        /// α and γ of the smoothing that takes the network's output to velocity (K⁻¹, or L⁻¹
        /// for whitened output; voxels of the network's grid). Default: the optimiser's for
        /// the full, distill and truth objectives, SPEC's for patch.
        #[arg(long)]
        smooth_alpha: Option<f64>,
        #[arg(long)]
        smooth_gamma: Option<f64>,
        /// λ of the regulariser (per voxel).
        #[arg(long)]
        lambda: Option<f32>,
        /// mse, nmse (normalised MSE, a = 0.2) or lncc (local NCC, window radius 2).
        #[arg(long)]
        similarity: Option<String>,
        /// Epochs trained with a lower λ (×0.1) first.
        #[arg(long)]
        warmup_epochs: Option<usize>,
        #[arg(long)]
        seed: Option<u64>,
        /// Grid of the synthetic heads, voxels.
        #[arg(long, value_delimiter = ',')]
        synthetic_shape: Option<Vec<usize>>,
        /// Spacing of the synthetic heads, mm.
        #[arg(long, value_delimiter = ',')]
        synthetic_spacing_mm: Option<Vec<f64>>,
        /// First seed of the synthetic pairs (pair i uses seed + i).
        #[arg(long)]
        synthetic_seed: Option<u64>,
        /// flex (CPU) or wgpu (the GPU).
        #[arg(long, default_value = "flex")]
        device: String,
        /// What a step minimises: patch (the SPEC energy of each patch at the network's
        /// resolution, the thesis' loss) or full (the optimiser's energy on the patch's box at full
        /// resolution, images matched first, the network predicting whitened momentum from the
        /// images and their force channels; its smoothing then defaults to the optimiser's,
        /// γ 0.05) or distill (the same network taught the velocity `register --method optimize`
        /// finds for each pair: one optimisation per pair first, kept in OUT/targets/) or truth
        /// (the same network taught the velocity of each pair's known deformation: synthetic
        /// pairs, or pair folders holding the truth_fwd field `phantom` writes).
        #[arg(long, default_value = "patch")]
        objective: String,
        /// Start from this model folder's weights (fine-tuning) instead of a fresh network; the
        /// options above must describe its network.
        #[arg(long)]
        init_from: Option<PathBuf>,
        /// The site's HU → density curve (JSON or "HU density" lines; see register).
        #[arg(long)]
        calibration: Option<PathBuf>,
    },
    /// Make a digital phantom with a known answer from a CT (or from the built-in synthetic head):
    /// a pseudo-CT deformed by a random smooth diffeomorphism and a small rigid offset, and the
    /// true displacement fields both ways.
    Phantom {
        /// The CT (DICOM folder, NIfTI or InVesalius .inv3); the built-in synthetic head when
        /// left out.
        #[arg(long)]
        ct: Option<PathBuf>,
        /// Output folder (created).
        #[arg(long)]
        out: PathBuf,
        /// Largest velocity magnitude of the deformation, mm (7 by default; with --varied, drawn
        /// from the seed unless given).
        #[arg(long)]
        max_mm: Option<f64>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Draw the whole case from the seed across what real pseudo-CTs show: deformation
        /// scales and size, rigid offset up to 8° and 10 mm, the pseudo-CT's grid, blur, bone
        /// under- or over-estimated, soft-tissue offset, bias field, filled air cavities, noise.
        #[arg(long)]
        varied: bool,
        /// Place the pseudo-CT in an unrelated world frame (another scanner: up to 30° and
        /// 200 mm away), as a new frame of reference would.
        #[arg(long)]
        unrelated_frame: bool,
        /// Voxels of the built-in head when no --ct is given.
        #[arg(long, value_delimiter = ',', default_value = "128,128,128")]
        head_shape: Vec<usize>,
        /// Spacing of the built-in head, mm.
        #[arg(long, value_delimiter = ',', default_value = "1.6,1.9,1.8")]
        head_spacing_mm: Vec<f64>,
    },
}

fn main() {
    let cli = Cli::parse();
    // The commands run one job and exit: they keep what they free for the next evaluation. The
    // desktop app, which runs for hours, leaves the heap as it is.
    if cli.command.is_some() {
        diffeoreg::heap::keep_freed_blocks();
    }
    if let Err(error) = run(cli) {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let cancel = Arc::new(CancelFlag::default());
    let Some(command) = cli.command else {
        return diffeoreg::app::run_app().context(
            "the desktop app needs a display; without one, `diffeoreg register --out DIR` registers the demo case",
        );
    };
    match command {
        Command::Info { path, json, series } => {
            info(&path, json, &choice(series), &TerminalProgress::new(cancel, !json))
        }
        Command::Register {
            fixed,
            moving,
            out,
            method,
            model,
            tile,
            cascade,
            gpu,
            levels,
            iterations,
            lambda,
            rigid_metric,
            no_resolution_match,
            no_intensity_match,
            intensity_match,
            strict,
            dicom,
            structures,
            keep_outside_patient,
            calibration,
            alpha,
            gamma,
            pad,
            steps,
            similarity,
            similarity_a,
            similarity_radius,
            hybrid_levels,
            hybrid_iterations,
            hybrid_regularise_start,
            hybrid_charged_share,
            field_of_view,
        } => {
            stop_on_ctrl_c(&cancel);
            let progress = TerminalProgress::new(cancel.clone(), true);
            let inputs = fixed.zip(moving);
            let mut params = diffeoreg::register::pipeline::RegisterParams {
                method: diffeoreg::register::pipeline::Method::parse(&method)?,
                ..Default::default()
            };
            params.network.model = model;
            params.network.gpu = gpu;
            params.patient_only = !keep_outside_patient;
            if let Some(cascade) = cascade {
                params.network.cascade = cascade;
            }
            if let Some(tile) = tile {
                let [side, margin] = tile[..] else { anyhow::bail!("--tile takes two values: side,margin") };
                (params.network.tile, params.network.margin) = (side, margin);
            }
            if let Some(levels) = levels {
                params.optimize.levels = levels;
                params.optimize.finest_voxel_mm = 0.0;
            }
            params.optimize.match_resolution = !no_resolution_match;
            params.optimize.match_intensity = intensity_match && !no_intensity_match;
            if let Some(iterations) = iterations {
                params.optimize.iterations = iterations;
                params.optimize.voxel_iterations = 0.0;
            }
            if let Some(lambda) = lambda {
                params.optimize.energy.lambda = lambda;
            }
            if let Some(path) = calibration {
                params.calibration = diffeoreg::volume::Calibration::load(&path)?;
            }
            let (smooth, energy) = (&mut params.optimize.smooth, &mut params.optimize.energy);
            alpha.inspect(|&v| smooth.alpha = v);
            gamma.inspect(|&v| smooth.gamma = v);
            pad.inspect(|&v| smooth.pad = v);
            steps.inspect(|&v| energy.steps = v);
            energy.similarity =
                parse_similarity(similarity.as_deref(), similarity_a, similarity_radius, energy.similarity)?;
            hybrid_levels.inspect(|v| params.network.hybrid_levels = v.clone());
            hybrid_iterations.inspect(|v| params.network.hybrid_iterations = v.clone());
            hybrid_regularise_start.inspect(|&v| params.network.hybrid_regularise_start = v);
            if let Some(share) = hybrid_charged_share {
                anyhow::ensure!((0.0..=1.0).contains(&share), "--hybrid-charged-share must lie in 0–1, not {share}");
                params.network.hybrid_charged_share = Some(share);
            }
            field_of_view.inspect(|&v| params.optimize.field_of_view = v);
            use diffeoreg::rigid::RigidMetric;
            match rigid_metric.as_deref() {
                None => {}
                Some("mse") => params.rigid.metric = RigidMetric::Mse,
                Some("nmi") => params.rigid.metric = RigidMetric::Nmi,
                Some("mattes") => params.rigid.metric = RigidMetric::MattesMi,
                Some(other) => anyhow::bail!("unknown --rigid-metric {other:?}: use mse, nmi or mattes"),
            }
            let dicom = (dicom || structures.is_some())
                .then(|| diffeoreg::register::dicom_export::DicomRequest { structures: structures.clone() });
            let status = register(inputs.as_ref(), &out, &params, dicom.as_ref(), &progress)?;
            if strict && status == diffeoreg::metrics::verdict::Status::Failed {
                std::process::exit(3);
            }
            Ok(())
        }
        Command::Train { .. } => {
            stop_on_ctrl_c(&cancel);
            let progress = TerminalProgress::new(cancel.clone(), true);
            train(command, &progress)
        }
        Command::Phantom { ct, out, max_mm, seed, varied, unrelated_frame, head_shape, head_spacing_mm } => {
            let (Ok(shape), Ok(spacing)) = (<[usize; 3]>::try_from(head_shape), <[f64; 3]>::try_from(head_spacing_mm))
            else {
                anyhow::bail!("--head-shape and --head-spacing-mm take three values each");
            };
            use diffeoreg::phantom::{PhantomParams, UNRELATED_FRAME_ROTATION_DEG, UNRELATED_FRAME_TRANSLATION_MM};
            let mut params = if varied {
                PhantomParams::varied(seed, unrelated_frame)
            } else if unrelated_frame {
                PhantomParams {
                    seed,
                    frame_rotation_deg: UNRELATED_FRAME_ROTATION_DEG,
                    frame_translation_mm: UNRELATED_FRAME_TRANSLATION_MM,
                    ..PhantomParams::default()
                }
            } else {
                PhantomParams { seed, ..PhantomParams::default() }
            };
            if let Some(max_mm) = max_mm {
                params.max_mm = max_mm;
            }
            phantom(ct.as_deref(), &out, &params, (shape, spacing), &TerminalProgress::new(cancel, true))
        }
        Command::Evaluate { fixed, moving, warp, batch, inverse, truth, truth_inverse, out, calibration } => {
            use diffeoreg::metrics::evaluation::{EvaluationInputs, evaluate_files, summary_table};
            let progress = TerminalProgress::new(cancel, true);
            let calibration =
                calibration.map(|p| diffeoreg::volume::Calibration::load(&p)).transpose()?.unwrap_or_default();
            if let Some(cases) = batch {
                let rows = diffeoreg::metrics::batch::evaluate_batch(&cases, &out, &calibration, &progress)?;
                progress.finish();
                println!("evaluated {} rows of {} → {}", rows.len(), cases.display(), out.display());
                let named: Vec<(String, &diffeoreg::metrics::evaluation::Evaluation)> =
                    rows.iter().map(|r| (format!("{} {}", r.case, r.method), &r.evaluation)).collect();
                let table: Vec<(&str, &diffeoreg::metrics::evaluation::Evaluation)> =
                    named.iter().map(|(n, e)| (n.as_str(), *e)).collect();
                print!("{}", summary_table(&table));
                return Ok(());
            }
            let (Some(fixed), Some(moving), Some(warp)) = (fixed, moving, warp) else {
                anyhow::bail!("give --fixed, --moving and --warp, or --batch");
            };
            let inputs = EvaluationInputs {
                fixed: &fixed,
                moving: &moving,
                forward: &warp,
                inverse: inverse.as_deref(),
                truth_forward: truth.as_deref(),
                truth_inverse: truth_inverse.as_deref(),
            };
            let report = evaluate_files(&inputs, &out, &calibration, &progress)?;
            progress.finish();
            println!(
                "evaluated {} in {:.1} s (reading {:.1}, metrics {:.1}, figures {:.1}) → {}",
                warp.display(),
                report.seconds,
                report.load_s,
                report.metrics_s,
                report.figures_s,
                out.join("evaluation.json").display()
            );
            print!("{}", summary_table(&[("field", &report.evaluation)]));
            print_verdict(&report.verdict);
            Ok(())
        }
        Command::Apply { warp, image, reference, out, labels, dicom } => {
            let progress = TerminalProgress::new(cancel, true);
            let result =
                diffeoreg::apply::apply_files(&warp, &image, &reference, &out, labels, dicom.as_deref(), &progress)?;
            progress.finish();
            println!("wrote {} ({:?} voxels)", out.display(), result.geometry.shape);
            if let Some(folder) = &dicom {
                println!("wrote {} (DICOM series in the reference's frame of reference)", folder.display());
            }
            Ok(())
        }
        Command::View { folder } => {
            if !folder.join("report.json").exists() {
                anyhow::bail!("{}: no report.json: not a folder that `register` wrote", folder.display());
            }
            diffeoreg::app::run_app_with(diffeoreg::app::AppOptions {
                open_folder: Some(folder),
                load_demo: false,
                ..Default::default()
            })
            .context("the desktop app needs a display")
        }
        Command::Convert { input, output, series } => {
            convert(&input, &output, &choice(series), &TerminalProgress::new(cancel, true))
        }
    }
}

/// Ctrl-C raises `cancel` (the work stops cleanly at its next check); a second Ctrl-C while
/// stopping ends the process the usual way.
fn stop_on_ctrl_c(cancel: &Arc<CancelFlag>) {
    let flag = cancel.clone();
    let _ = ctrlc::set_handler(move || {
        if flag.is_set() {
            std::process::exit(130);
        }
        flag.cancel();
    });
}

/// `--similarity` (mse, nmse or lncc), `--similarity-a` and `--similarity-radius` over `current`.
fn parse_similarity(
    name: Option<&str>,
    a: Option<f32>,
    radius: Option<u32>,
    current: diffeoreg::diffeo::energy::Similarity,
) -> Result<diffeoreg::diffeo::energy::Similarity> {
    use diffeoreg::diffeo::energy::Similarity;
    let name = name.or(match current {
        Similarity::Mse => Some("mse"),
        Similarity::NormalizedMse { .. } => Some("nmse"),
        Similarity::LocalNcc { .. } => Some("lncc"),
    });
    let (current_a, current_radius) = match current {
        Similarity::NormalizedMse { a } => (a, 2),
        Similarity::LocalNcc { radius } => (0.1, radius),
        Similarity::Mse => (0.1, 2),
    };
    if a.is_some() && name != Some("nmse") {
        anyhow::bail!("--similarity-a applies to nmse only");
    }
    if radius.is_some() && name != Some("lncc") {
        anyhow::bail!("--similarity-radius applies to lncc only");
    }
    Ok(match name {
        Some("mse") => Similarity::Mse,
        Some("nmse") => {
            let a = a.unwrap_or(current_a);
            if !(a.is_finite() && a > 0.0) {
                anyhow::bail!("--similarity-a must be a positive number, not {a}");
            }
            Similarity::NormalizedMse { a }
        }
        Some("lncc") => {
            let radius = radius.unwrap_or(current_radius);
            if !(1..=8).contains(&radius) {
                anyhow::bail!("--similarity-radius must be 1 to 8 voxels, not {radius}");
            }
            Similarity::LocalNcc { radius }
        }
        Some(other) => anyhow::bail!("unknown --similarity {other:?}: use mse, nmse or lncc"),
        None => current,
    })
}

fn choice(series: Option<String>) -> SeriesChoice {
    series.map_or(SeriesChoice::LargestCt, SeriesChoice::Uid)
}

fn info(path: &Path, json: bool, series: &SeriesChoice, progress: &TerminalProgress) -> Result<()> {
    if path.is_file() && io::dicom_registration::is_deformable_registration(path) {
        return info_registration(path, json);
    }
    if path.is_file() && io::dicom_structures::is_structure_set(path) {
        return info_structures(path, json);
    }
    let loaded = io::load_volume(path, series, progress)?;
    progress.finish();
    let volume = &loaded.volume;
    let g = &volume.geometry;
    let (low, high) = volume.value_range().unwrap_or((f32::NAN, f32::NAN));
    let (box_low, box_high) = g.bounding_box();
    if json {
        let report = serde_json::json!({
            "path": path,
            "source": loaded.source,
            "geometry": g,
            "orientation": g.orientation_code(),
            "bounding_box_lps_mm": [box_low, box_high],
            "value_range": [low, high],
            "warnings": loaded.warnings,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("{}", path.display());
    match &loaded.source {
        io::Source::Nifti(_) => println!("  format       NIfTI"),
        io::Source::Inv3(_) => println!("  format       InVesalius 3 project"),
        io::Source::Dicom { series_uid, modality, description, .. } => {
            println!("  format       DICOM, modality {modality}, series {series_uid} {description:?}")
        }
    }
    println!("  shape        {} × {} × {} voxels", g.shape[0], g.shape[1], g.shape[2]);
    println!("  spacing      {:.4} × {:.4} × {:.4} mm", g.spacing_mm[0], g.spacing_mm[1], g.spacing_mm[2]);
    println!("  origin       ({:.3}, {:.3}, {:.3}) mm LPS", g.origin_mm[0], g.origin_mm[1], g.origin_mm[2]);
    println!("  orientation  {}  direction {:?}", g.orientation_code(), g.direction);
    println!(
        "  extent       L {:.1}..{:.1}  P {:.1}..{:.1}  S {:.1}..{:.1} mm",
        box_low[0], box_high[0], box_low[1], box_high[1], box_low[2], box_high[2]
    );
    println!("  values       {low} .. {high}");
    if let io::Source::Dicom { series_found, skipped_files, .. } = &loaded.source {
        println!("  series found {}", series_found.len());
        for s in series_found {
            println!(
                "    {} {} {} frames in {} files {:?}",
                s.series_uid, s.modality, s.frame_count, s.file_count, s.description
            );
        }
        if *skipped_files > 0 {
            println!("  skipped      {skipped_files} file(s) that are not DICOM images");
        }
    }
    for warning in &loaded.warnings {
        println!("  warning      {warning}");
    }
    Ok(())
}

/// Describes a DICOM Deformable Spatial Registration object: frames, grid, displacement.
fn info_registration(path: &Path, json: bool) -> Result<()> {
    let object = io::dicom_registration::read_registration(path)?;
    let g = &object.field.geometry;
    let max_mm = object.field.max_norm_mm();
    if json {
        let report = serde_json::json!({
            "path": path,
            "format": "DICOM Deformable Spatial Registration",
            "sop_instance_uid": object.sop_instance_uid,
            "description": object.description,
            "registered_frame_of_reference_uid": object.registered_frame_of_reference,
            "source_frame_of_reference_uid": object.source_frame_of_reference,
            "referenced_source_images": object.referenced_images,
            "pre_or_post_matrix": object.has_matrices,
            "grid": g,
            "max_displacement_mm": max_mm,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("{}", path.display());
    println!("  format       DICOM Deformable Spatial Registration {:?}", object.description);
    println!("  registered   frame of reference {} (points x here…)", object.registered_frame_of_reference);
    println!("  source       frame of reference {} (…map to x + u(x) there)", object.source_frame_of_reference);
    println!("  references   {} source image(s)", object.referenced_images);
    println!(
        "  matrices     {}",
        if object.has_matrices {
            "pre/post deformation matrices applied"
        } else {
            "identity (rigid part in the vectors)"
        }
    );
    println!("  grid         {} × {} × {} points", g.shape[0], g.shape[1], g.shape[2]);
    println!("  spacing      {:.4} × {:.4} × {:.4} mm", g.spacing_mm[0], g.spacing_mm[1], g.spacing_mm[2]);
    println!("  origin       ({:.3}, {:.3}, {:.3}) mm LPS", g.origin_mm[0], g.origin_mm[1], g.origin_mm[2]);
    println!("  orientation  {}  direction {:?}", g.orientation_code(), g.direction);
    println!("  displacement max {max_mm:.2} mm");
    Ok(())
}

/// Describes an RT Structure Set: frame of reference and each region's contours.
fn info_structures(path: &Path, json: bool) -> Result<()> {
    let set = io::dicom_structures::read_structure_set(path)?;
    let rows: Vec<serde_json::Value> = set
        .rois
        .iter()
        .map(|roi| {
            let mut z: Vec<f64> = roi.contours.iter().map(|c| c[0][2]).collect();
            z.sort_by(f64::total_cmp);
            serde_json::json!({
                "number": roi.number,
                "name": roi.name,
                "colour": roi.colour,
                "type": roi.interpreted_type,
                "contours": roi.contours.len(),
                "points": roi.contours.iter().map(Vec::len).sum::<usize>(),
                "z_range_mm": [z.first(), z.last()],
            })
        })
        .collect();
    if json {
        let report = serde_json::json!({
            "path": path,
            "format": "DICOM RT Structure Set",
            "label": set.label,
            "frame_of_reference_uid": set.frame_of_reference_uid,
            "rois": rows,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("{}", path.display());
    println!("  format       DICOM RT Structure Set {:?}", set.label);
    println!("  frame        {}", set.frame_of_reference_uid);
    for row in rows {
        println!(
            "  ROI {:>4}     {:<24} {:<8} {:>4} contours, z {} .. {} mm, colour {}",
            row["number"],
            row["name"].as_str().unwrap_or(""),
            row["type"].as_str().unwrap_or(""),
            row["contours"],
            row["z_range_mm"][0],
            row["z_range_mm"][1],
            row["colour"]
        );
    }
    Ok(())
}

fn convert(input: &Path, output: &Path, series: &SeriesChoice, progress: &TerminalProgress) -> Result<()> {
    let name = output.to_string_lossy().to_ascii_lowercase();
    if !(name.ends_with(".nii") || name.ends_with(".nii.gz")) {
        anyhow::bail!("{}: the output must end in .nii or .nii.gz", output.display());
    }
    let loaded = io::load_volume(input, series, progress)?;
    progress.start_stage("writing NIfTI", 0);
    io::write_volume(output, &loaded.volume, StoredType::Automatic)
        .with_context(|| format!("writing {}", output.display()))?;
    progress.finish();
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    let g = &loaded.volume.geometry;
    eprintln!("wrote {} ({} × {} × {} voxels)", output.display(), g.shape[0], g.shape[1], g.shape[2]);
    Ok(())
}

fn register(
    inputs: Option<&(PathBuf, PathBuf)>,
    out: &Path,
    params: &diffeoreg::register::pipeline::RegisterParams,
    dicom: Option<&diffeoreg::register::dicom_export::DicomRequest>,
    progress: &TerminalProgress,
) -> Result<diffeoreg::metrics::verdict::Status> {
    use diffeoreg::register::pipeline::{register_demo, register_files};
    let params = params.clone();
    let outcome = match inputs {
        Some((fixed, moving)) => {
            register_files(fixed, moving, out, &params, dicom, progress).map(|report| (report, None))
        }
        None => register_demo(out, &params, dicom.is_some(), progress).map(|(report, error)| (report, Some(error))),
    };
    let (report, demo_error) = match outcome {
        Err(diffeoreg::Error::Cancelled) => {
            progress.finish();
            anyhow::bail!("cancelled; nothing was written to {}", out.display())
        }
        other => other?,
    };
    progress.finish();
    let t = &report.timings;
    let q = &report.deformable_quality;
    match inputs {
        Some((fixed, moving)) => {
            println!("registered {} to {} in {:.1} s → {}", moving.display(), fixed.display(), t.total_s, out.display())
        }
        None => println!("registered the built-in demo case in {:.1} s → {}", t.total_s, out.display()),
    }
    if let Some(error) = demo_error {
        println!(
            "  endpoint error vs the known answer, inside the body: mean {:.2} mm  p95 {:.2} mm  max {:.2} mm",
            error.mean_mm, error.p95_mm, error.max_mm
        );
    }
    let stages: Vec<String> = t.stages().iter().map(|(name, seconds)| format!("{name} {seconds:.1}")).collect();
    println!("  stages (s)   {}", stages.join("  "));
    if let Some(model) = &report.model {
        println!("  model        {model}");
    }
    let r = &report.rigid;
    println!(
        "  rigid        angles {:.2}° {:.2}° {:.2}°  translation {:.2} {:.2} {:.2} mm  MSE {:.4} → {:.4}",
        r.angles_deg[0],
        r.angles_deg[1],
        r.angles_deg[2],
        r.translation_mm[0],
        r.translation_mm[1],
        r.translation_mm[2],
        r.mse_before,
        r.mse_after
    );
    println!(
        "  deformation  max {:.2} mm  folding voxels {}  det J min {:.3} mean {:.3}  |φ∘φ⁻¹ − Id| mean {:.3} max {:.3} mm",
        q.max_deformation_mm,
        q.folding_voxels,
        q.jacobian_min,
        q.jacobian_mean,
        q.inverse_consistency_mean_mm,
        q.inverse_consistency_max_mm
    );
    print!(
        "{}",
        diffeoreg::metrics::evaluation::summary_table(&[
            ("rigid", &report.metrics.rigid),
            ("result", &report.metrics.result)
        ])
    );
    if let Some(dicom) = &report.dicom {
        println!(
            "  DICOM        {}: moving_warped/ ({} {} slices, series {}), registration.dcm{}",
            dicom.folder,
            dicom.slices,
            dicom.modality,
            dicom.series_uid,
            if dicom.inputs_were_dicom { "" } else { " (inputs not DICOM: patient and study made up)" }
        );
        for roi in &dicom.structures {
            println!(
                "  structure    {:>3} {:<20} {:>4} contours  {:.2} ml on the moving image → {:.2} ml on the fixed CT",
                roi.number, roi.name, roi.contours, roi.moving_ml, roi.carried_ml
            );
        }
    }
    for warning in &report.warnings {
        println!("  warning      {warning}");
    }
    print_verdict(&report.verdict);
    Ok(report.verdict.status)
}

/// The verdict, last, in colour on a terminal: green ok, yellow warning, red failed.
fn print_verdict(verdict: &diffeoreg::metrics::verdict::Verdict) {
    use diffeoreg::metrics::verdict::Status;
    use std::io::IsTerminal;
    let colour = |status: Status, text: &str| {
        if !std::io::stdout().is_terminal() {
            return text.to_string();
        }
        let code = match status {
            Status::Ok => "32",
            Status::Warning => "33",
            Status::Failed => "1;31",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    };
    println!("  verdict      {}", colour(verdict.status, &verdict.status.name().to_uppercase()));
    for reason in &verdict.reasons {
        println!("    {}", colour(reason.status, &format!("{}: {}", reason.status.name(), reason.message)));
    }
}

fn train(command: Command, progress: &TerminalProgress) -> Result<()> {
    use diffeoreg::train::TrainParams;
    use diffeoreg::train::data::{PairSource, load_pairs};
    let Command::Train {
        pairs,
        synthetic,
        out,
        resume,
        epochs,
        learning_rate,
        adam_epsilon,
        patch,
        batch,
        patches_per_pair,
        validation_patches_per_pair,
        base_channels,
        resolution_factor,
        grid_mm,
        output_scale,
        force_features,
        pooled_force,
        local_prior_passes,
        local_prior_offset,
        local_prior_field_of_view,
        local_prior_unmatched,
        target_in_body,
        smooth_alpha,
        smooth_gamma,
        lambda,
        similarity,
        warmup_epochs,
        seed,
        synthetic_shape,
        synthetic_spacing_mm,
        synthetic_seed,
        device,
        objective,
        init_from,
        calibration,
    } = command
    else {
        unreachable!("called for the train command")
    };
    let mut params = if resume {
        diffeoreg::train::read_params(&out)?
    } else {
        let mut params = TrainParams::default();
        let files = pairs.map(|list| if list.is_dir() { PairSource::Folder(list) } else { PairSource::Csv(list) });
        if let PairSource::Synthetic { count, shape, spacing_mm, first_seed, .. } = &mut params.source {
            if let Some(n) = synthetic {
                *count = n;
            }
            if let Some(v) = synthetic_shape {
                *shape = v.try_into().map_err(|_| anyhow::anyhow!("--synthetic-shape takes three values"))?;
            }
            if let Some(v) = synthetic_spacing_mm {
                *spacing_mm = v.try_into().map_err(|_| anyhow::anyhow!("--synthetic-spacing-mm takes three values"))?;
            }
            if let Some(s) = synthetic_seed {
                *first_seed = s;
            }
        }
        params.source = match (files, synthetic) {
            (Some(files), Some(_)) => PairSource::Mixed(vec![files, params.source]),
            (Some(files), None) => files,
            (None, _) => params.source,
        };
        macro_rules! set {
            ($option:expr, $field:expr) => {
                if let Some(value) = $option {
                    $field = value;
                }
            };
        }
        set!(learning_rate, params.learning_rate);
        set!(adam_epsilon, params.adam_epsilon);
        set!(patch, params.sampler.patch);
        set!(batch, params.sampler.batch);
        set!(patches_per_pair, params.sampler.patches_per_pair);
        set!(validation_patches_per_pair, params.validation_patches_per_pair);
        set!(base_channels, params.network.base_channels);
        set!(resolution_factor, params.network.resolution_factor);
        params.grid_mm = grid_mm;
        set!(output_scale, params.network.output_scale);
        set!(lambda, params.energy.lambda);
        set!(warmup_epochs, params.warmup_epochs);
        set!(seed, params.seed);
        match objective.as_str() {
            "patch" => {}
            "full" => params = params.for_objective(diffeoreg::train::Objective::FullResolution),
            "distill" => params = params.for_objective(diffeoreg::train::Objective::Distill),
            "truth" => params = params.for_objective(diffeoreg::train::Objective::Truth),
            other => anyhow::bail!("unknown --objective {other:?}: use patch, full, distill or truth"),
        }
        set!(force_features, params.network.force_features);
        set!(pooled_force, params.network.pooled_force);
        set!(target_in_body, params.target_in_body);
        set!(smooth_alpha, params.smooth.alpha);
        set!(smooth_gamma, params.smooth.gamma);
        if let Some(passes) = local_prior_passes {
            let offset = local_prior_offset.unwrap_or(false);
            let field_of_view = local_prior_field_of_view.unwrap_or(false);
            let unmatched = local_prior_unmatched.unwrap_or(false);
            // With a grid in mm, the estimate's window and spread are in mm too (σ × grid_mm).
            params.network.local_prior = (passes > 0).then(|| diffeoreg::net::local_flow::LocalFlowParams {
                passes,
                offset,
                sigma_unit_mm: grid_mm,
                field_of_view,
                unmatched,
                ..Default::default()
            });
        } else if local_prior_offset.is_some() || local_prior_field_of_view.is_some() || local_prior_unmatched.is_some()
        {
            anyhow::bail!(
                "--local-prior-offset, --local-prior-field-of-view and --local-prior-unmatched need --local-prior-passes"
            );
        }
        params.initial_model = init_from;
        if let Some(path) = calibration {
            params.register.calibration = diffeoreg::volume::Calibration::load(&path)?;
        }
        params.energy.similarity = parse_similarity(similarity.as_deref(), None, None, params.energy.similarity)?;
        params
    };
    if let Some(n) = epochs {
        params.epochs = n;
    }
    let device = match device.as_str() {
        "flex" => burn::tensor::Device::flex(),
        "wgpu" => burn::tensor::Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        other => anyhow::bail!("unknown --device {other:?}: use flex or wgpu"),
    };
    let clock = std::time::Instant::now();
    let pairs = load_pairs(&params, Some(&out.join(diffeoreg::train::distill::TARGETS_DIR)), progress)?;
    progress.finish();
    eprintln!(
        "{} pairs ready in {:.1} s (1/{} resolution: {:?} voxels each, first pair)",
        pairs.len(),
        clock.elapsed().as_secs_f64(),
        params.network.resolution_factor,
        pairs[0].shape
    );
    let bar = progress.bar.clone();
    let mut report = |event: diffeoreg::train::TrainEvent| {
        let diffeoreg::train::TrainEvent::Epoch(r) = event else { return };
        let validation = r.validation_loss.map_or("-".to_string(), |v| format!("{v:.5}"));
        let epe = r.validation_epe_mm.map_or(String::new(), |v| format!(" (endpoint error {v:.3} mm)"));
        let line = format!(
            "epoch {:3}  λ {:.1e}  train {:.5}  validation {validation}{epe}  {:.0} s  {:.2} patches/s",
            r.epoch, r.lambda, r.train_loss, r.seconds, r.patches_per_s
        );
        if bar.is_hidden() { eprintln!("{line}") } else { bar.println(line) }
    };
    match diffeoreg::train::train(&pairs, &out, &params, resume, &device, progress, &mut report) {
        Err(diffeoreg::Error::Cancelled) => {
            progress.finish();
            anyhow::bail!(
                "stopped; the last finished epoch is kept in {}; continue with --resume",
                out.join("checkpoints").display()
            )
        }
        Err(other) => Err(other.into()),
        Ok(state) => {
            progress.finish();
            println!("trained {} epochs → {}", state.epochs_done, out.display());
            let best = state
                .history
                .iter()
                .filter_map(|r| r.validation_epe_mm.map(|e| (e, r.epoch)))
                .min_by(|a, b| a.0.total_cmp(&b.0));
            if let (Some(start), Some((epe, epoch))) = (state.initial_validation_epe_mm, best) {
                println!(
                    "validation endpoint error: {start:.3} mm before training (zero head), {epe:.3} mm at epoch {epoch} (kept)"
                );
            }
            Ok(())
        }
    }
}

fn phantom(
    ct: Option<&Path>,
    out: &Path,
    params: &diffeoreg::phantom::PhantomParams,
    head: ([usize; 3], [f64; 3]),
    progress: &TerminalProgress,
) -> Result<()> {
    use diffeoreg::phantom::{head::synthetic_head, make_phantom};
    let ct_volume = match ct {
        Some(path) => io::load_volume(path, &SeriesChoice::LargestCt, progress)?.volume,
        None => {
            diffeoreg::volume::Geometry::axis_aligned(head.0, head.1, [0.0; 3])?;
            synthetic_head(head.0, head.1)
        }
    };
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    progress.start_stage("deforming", 0);
    let phantom = make_phantom(&ct_volume, params)?;
    progress.start_stage("writing", 0);
    io::write_volume(&out.join("fixed.nii.gz"), &phantom.fixed, StoredType::Automatic)?;
    io::write_volume(&out.join("moving.nii.gz"), &phantom.moving, StoredType::Automatic)?;
    io::write_field(&out.join("truth_fwd.nii.gz"), &phantom.truth_fwd)?;
    io::write_field(&out.join("truth_inv.nii.gz"), &phantom.truth_inv)?;
    // ITK convention: the file maps fixed points to moving points, the inverse of `rigid`.
    io::write_transform(&out.join("truth_rigid.tfm"), &phantom.rigid.inverse())?;
    let report = serde_json::json!({
        "ct": ct.map_or("built-in synthetic head".to_string(), |p| p.display().to_string()),
        "parameters": params,
        "max_deformation_mm": phantom.max_deformation_mm,
        "fixed_geometry": phantom.fixed.geometry,
        "moving_geometry": phantom.moving.geometry,
        "version": env!("CARGO_PKG_VERSION"),
    });
    let json = serde_json::to_string_pretty(&report)?;
    diffeoreg::io::atomic::write_atomically(&out.join("phantom.json"), |w| {
        w.write_all(json.as_bytes()).map_err(|e| diffeoreg::Error::io(out.join("phantom.json"), e))
    })?;
    progress.finish();
    eprintln!("wrote the phantom to {} (largest deformation {:.2} mm)", out.display(), phantom.max_deformation_mm);
    Ok(())
}

/// Progress on the terminal: one indicatif bar per stage, drawn to stderr.
struct TerminalProgress {
    bar: ProgressBar,
    cancel: Arc<CancelFlag>,
}

impl TerminalProgress {
    fn new(cancel: Arc<CancelFlag>, visible: bool) -> Self {
        let bar = if visible { ProgressBar::new(0) } else { ProgressBar::hidden() };
        TerminalProgress { bar, cancel }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Progress for TerminalProgress {
    fn start_stage(&self, name: &str, total: u64) {
        let template = if total > 0 {
            "{msg:28} [{bar:30}] {pos}/{len} {elapsed_precise} ETA {eta}"
        } else {
            "{msg:28} {spinner} {elapsed_precise}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            self.bar.set_style(style.progress_chars("=> "));
        }
        self.bar.set_message(name.to_string());
        self.bar.set_length(total);
        self.bar.set_position(0);
        self.bar.tick();
    }

    fn advance(&self, units: u64) {
        self.bar.inc(units);
    }

    fn is_cancelled(&self) -> bool {
        self.cancel.is_set()
    }
}

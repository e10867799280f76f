//! The loss log of a training: `losses.csv` (one row per epoch), `batch_losses.csv` (one row per
//! step, appended as training goes) and `loss_curves.png` (step losses grey, epoch means white,
//! validation orange, against epochs; the axis labels are the epoch count and the loss range).

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};
use crate::qa::draw::{Canvas, Rgb};
use crate::train::checkpoint::{BatchRecord, EpochRecord, TrainState};

pub const EPOCHS_CSV: &str = "losses.csv";
pub const BATCHES_CSV: &str = "batch_losses.csv";
pub const CURVES_PNG: &str = "loss_curves.png";

/// One row per epoch; a row for epoch 0 holds the validation loss before training.
pub fn write_epochs_csv(out: &Path, state: &TrainState) -> Result<()> {
    let history = &state.history;
    let path = out.join(EPOCHS_CSV);
    crate::io::atomic::write_atomically(&path, |w| {
        let mut text =
            String::from("epoch,lambda,train_loss,validation_loss,validation_epe_mm,seconds,patches_per_s\n");
        if state.initial_validation_loss.is_some() || state.initial_validation_epe_mm.is_some() {
            let validation = state.initial_validation_loss.map_or(String::new(), |v| format!("{v:e}"));
            let epe = state.initial_validation_epe_mm.map_or(String::new(), |v| format!("{v:.4}"));
            text += &format!("0,,,{validation},{epe},,\n");
        }
        for r in history {
            let validation = r.validation_loss.map_or(String::new(), |v| format!("{v:e}"));
            let epe = r.validation_epe_mm.map_or(String::new(), |v| format!("{v:.4}"));
            text += &format!(
                "{},{:e},{:e},{validation},{epe},{:.2},{:.3}\n",
                r.epoch, r.lambda, r.train_loss, r.seconds, r.patches_per_s
            );
        }
        w.write_all(text.as_bytes()).map_err(|e| Error::io(&path, e))
    })
}

/// Rewrites the step log from `batches` (dropping steps of an interrupted epoch).
pub fn restart_batches_csv(out: &Path, batches: &[BatchRecord]) -> Result<()> {
    let path = out.join(BATCHES_CSV);
    let mut text = String::from("epoch,batch,loss\n");
    for b in batches {
        text += &format!("{},{},{:e}\n", b.epoch, b.batch, b.loss);
    }
    std::fs::write(&path, text).map_err(|e| Error::io(&path, e))
}

pub fn append_batch(out: &Path, batch: &BatchRecord) -> Result<()> {
    let path = out.join(BATCHES_CSV);
    let mut file =
        std::fs::OpenOptions::new().append(true).create(true).open(&path).map_err(|e| Error::io(&path, e))?;
    writeln!(file, "{},{},{:e}", batch.epoch, batch.batch, batch.loss).map_err(|e| Error::io(&path, e))
}

/// Draws the curves; `steps_per_epoch` places the step losses along the epoch axis.
pub fn write_curves_png(out: &Path, history: &[EpochRecord], batches: &[BatchRecord]) -> Result<()> {
    let (width, height, left, top, right, bottom) = (900usize, 420usize, 70usize, 20usize, 20usize, 40usize);
    let mut canvas = Canvas::new(width, height);
    canvas.fill(0, 0, width, height, Rgb([24, 24, 28]));
    let (plot_w, plot_h) = (width - left - right, height - top - bottom);
    canvas.fill(left, top, plot_w, plot_h, Rgb([40, 40, 46]));
    let values = batches
        .iter()
        .map(|b| b.loss as f64)
        .chain(history.iter().map(|r| r.train_loss))
        .chain(history.iter().filter_map(|r| r.validation_loss))
        .filter(|v| v.is_finite());
    let (low, high) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(v), h.max(v)));
    let epochs = history.len().max(batches.last().map_or(0, |b| b.epoch)).max(1) as f64;
    if low.is_finite() {
        let span = (high - low).max(1e-12);
        let x_of = |epoch: f64| left + ((epoch / epochs) * (plot_w - 1) as f64).round() as usize;
        let y_of = |loss: f64| top + (((high - loss) / span) * (plot_h - 4) as f64).round() as usize;
        let mut per_epoch = std::collections::HashMap::new();
        for b in batches {
            *per_epoch.entry(b.epoch).or_insert(0usize) += 1;
        }
        for b in batches {
            let steps = per_epoch[&b.epoch] as f64;
            let x = x_of(b.epoch as f64 - 1.0 + (b.batch as f64 + 0.5) / steps);
            canvas.fill(x, y_of(b.loss as f64), 2, 2, Rgb([120, 120, 130]));
        }
        for r in history {
            let x = x_of(r.epoch as f64);
            canvas.fill(x.saturating_sub(3), y_of(r.train_loss).saturating_sub(3), 7, 7, Rgb([235, 235, 235]));
            if let Some(v) = r.validation_loss {
                canvas.fill(x.saturating_sub(3), y_of(v).saturating_sub(3), 7, 7, Rgb([255, 160, 40]));
            }
        }
        canvas.text(4, top, &format!("{high:.4}"), 2, Rgb([200, 200, 200]));
        canvas.text(4, top + plot_h - 12, &format!("{low:.4}"), 2, Rgb([200, 200, 200]));
    }
    canvas.text(left, top + plot_h + 10, "0", 2, Rgb([200, 200, 200]));
    canvas.text(left + plot_w - 30, top + plot_h + 10, &format!("{}", epochs as usize), 2, Rgb([200, 200, 200]));
    canvas.save_png(&out.join(CURVES_PNG))
}

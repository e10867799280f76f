//! Many registrations judged at once (thesis tables 5.1–5.3, figs 5.1–5.2): a CSV of cases in,
//! a CSV of every metric per case, method and direction, a summary per method (mean and
//! standard deviation), and box plots per metric and method out.
//!
//! The input CSV has a header naming its columns; `case`, `method`, `fixed`, `moving` and
//! `warp` are required, `inverse`, `truth`, `truth_inverse` and `rigid` (an ITK `.tfm`, fixed →
//! moving points) are optional. Relative paths are taken from the CSV's folder. A case with a
//! `rigid` transform also gets a "Rigid" row (the rigid-only start), once per case.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::io::{self, SeriesChoice};
use crate::metrics::evaluation::{DirectionMetrics, Evaluation, Fields, evaluate};
use crate::progress::Progress;
use crate::qa::draw::{Canvas, Rgb};
use crate::volume::calibration::Calibration;
use crate::volume::geometry::sub;
use crate::volume::{DisplacementField, Volume};

/// One line of the cases CSV.
#[derive(Clone, Debug)]
pub struct BatchCase {
    pub case: String,
    pub method: String,
    pub fixed: PathBuf,
    pub moving: PathBuf,
    pub warp: PathBuf,
    pub inverse: Option<PathBuf>,
    pub truth: Option<PathBuf>,
    pub truth_inverse: Option<PathBuf>,
    pub rigid: Option<PathBuf>,
}

/// Reads the cases CSV.
pub fn read_cases(path: &Path) -> Result<Vec<BatchCase>> {
    let bad = |problem: String| Error::BadInput { path: path.to_path_buf(), problem };
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let folder = path.parent().unwrap_or(Path::new("."));
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'));
    let (_, header) = lines.next().ok_or_else(|| bad("the file is empty".into()))?;
    let columns: Vec<String> = header.split(',').map(|c| c.trim().to_lowercase()).collect();
    let position = |name: &str| columns.iter().position(|c| c == name);
    for required in ["case", "method", "fixed", "moving", "warp"] {
        if position(required).is_none() {
            return Err(bad(format!("the header has no `{required}` column (it has {})", columns.join(", "))));
        }
    }
    let mut cases = Vec::new();
    for (number, line) in lines {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if cells.len() != columns.len() {
            return Err(bad(format!("line {} has {} cells, the header {}", number + 1, cells.len(), columns.len())));
        }
        let cell = |name: &str| position(name).map(|i| cells[i]).filter(|c| !c.is_empty());
        let file = |name: &str| cell(name).map(|c| folder.join(c));
        let required =
            |name: &str| file(name).ok_or_else(|| bad(format!("line {}: the `{name}` cell is empty", number + 1)));
        cases.push(BatchCase {
            case: cell("case").ok_or_else(|| bad(format!("line {}: no case name", number + 1)))?.to_string(),
            method: cell("method").ok_or_else(|| bad(format!("line {}: no method name", number + 1)))?.to_string(),
            fixed: required("fixed")?,
            moving: required("moving")?,
            warp: required("warp")?,
            inverse: file("inverse"),
            truth: file("truth"),
            truth_inverse: file("truth_inverse"),
            rigid: file("rigid"),
        });
    }
    if cases.is_empty() {
        return Err(bad("no cases after the header".into()));
    }
    Ok(cases)
}

/// One evaluated (case, method).
#[derive(Clone, Debug, serde::Serialize)]
pub struct BatchRow {
    pub case: String,
    pub method: String,
    pub evaluation: Evaluation,
}

/// The metrics of a direction as named numbers, in the column order of the CSVs.
fn named_values(d: &DirectionMetrics, inverse_consistency: Option<f64>) -> NamedValues {
    let dice = |name: &str| d.image.dice.iter().find(|x| x.tissue == name).map_or(f64::NAN, |x| x.dice);
    let epe = d.endpoint_error.as_ref();
    vec![
        ("nmi", d.image.nmi),
        ("mse", d.image.mse),
        ("mae", d.image.mae),
        ("dice_fat", dice("fat")),
        ("dice_water", dice("water")),
        ("dice_bone", dice("bone")),
        ("dice_body", dice("body")),
        ("folding_percent", 100.0 * d.jacobian.folding_share),
        ("jacobian_mean", d.jacobian.mean),
        ("epe_mean_mm", epe.map_or(f64::NAN, |e| e.mean_mm)),
        ("epe_p95_mm", epe.map_or(f64::NAN, |e| e.p95_mm)),
        ("epe_max_mm", epe.map_or(f64::NAN, |e| e.max_mm)),
        ("inverse_consistency_mm", inverse_consistency.unwrap_or(f64::NAN)),
    ]
}

/// Evaluates every case, in file order (a "Rigid" row follows each case's first line when it
/// names a rigid transform).
pub fn evaluate_cases(
    cases: &[BatchCase],
    calibration: &Calibration,
    progress: &dyn Progress,
) -> Result<Vec<BatchRow>> {
    let mut rows = Vec::new();
    let mut rigid_done = std::collections::HashSet::new();
    progress.start_stage("evaluating cases", cases.len() as u64);
    for case in cases {
        progress.check_cancelled()?;
        let fixed = io::load_volume(&case.fixed, &SeriesChoice::LargestCt, progress)?.volume;
        let moving = io::load_volume(&case.moving, &SeriesChoice::LargestCt, progress)?.volume;
        let field = |path: &Option<PathBuf>| path.as_deref().map(io::read_field).transpose();
        let (truth, truth_inverse) = (field(&case.truth)?, field(&case.truth_inverse)?);
        let named = |e: Error, path: &Path| match e {
            Error::Invalid(problem) => Error::BadInput { path: path.to_path_buf(), problem },
            other => other,
        };
        let run = |forward: &DisplacementField, inverse: Option<&DisplacementField>, path: &Path| {
            let fields =
                Fields { forward, inverse, truth_forward: truth.as_ref(), truth_inverse: truth_inverse.as_ref() };
            evaluate(&fixed, &moving, &fields, calibration).map_err(|e| named(e, path))
        };
        let (forward, inverse) = (io::read_field(&case.warp)?, field(&case.inverse)?);
        let evaluation = run(&forward, inverse.as_ref(), &case.warp)?;
        rows.push(BatchRow { case: case.case.clone(), method: case.method.clone(), evaluation });
        if let Some(rigid_path) = &case.rigid
            && rigid_done.insert(case.case.clone())
        {
            let (forward, inverse) = rigid_fields(rigid_path, &fixed, &moving)?;
            let evaluation = run(&forward, Some(&inverse), rigid_path)?;
            rows.push(BatchRow { case: case.case.clone(), method: "Rigid".into(), evaluation });
        }
        progress.advance(1);
    }
    Ok(rows)
}

/// The rigid-only fields of a `.tfm` (fixed → moving points): forward on the fixed grid,
/// inverse on the moving grid.
fn rigid_fields(path: &Path, fixed: &Volume, moving: &Volume) -> Result<(DisplacementField, DisplacementField)> {
    let transform = io::read_transform(path)?;
    let back = transform.inverse();
    Ok((
        DisplacementField::from_fn(fixed.geometry.clone(), |x| sub(transform.apply(x), x)),
        DisplacementField::from_fn(moving.geometry.clone(), |y| sub(back.apply(y), y)),
    ))
}

fn directions(row: &BatchRow) -> Vec<(&'static str, &DirectionMetrics)> {
    let mut out = vec![("moving_to_fixed", &row.evaluation.forward)];
    if let Some(backward) = &row.evaluation.backward {
        out.push(("fixed_to_moving", backward));
    }
    out
}

/// `metrics.csv`: one line per case, method and direction.
pub fn metrics_csv(rows: &[BatchRow]) -> String {
    let mut out = String::new();
    for (n, row) in rows.iter().enumerate() {
        let ic = row.evaluation.inverse_consistency.as_ref().map(|d| d.mean_mm);
        for (direction, metrics) in directions(row) {
            let values = named_values(metrics, ic);
            if n == 0 && out.is_empty() {
                out += "case,method,direction";
                for (name, _) in &values {
                    out += &format!(",{name}");
                }
                out.push('\n');
            }
            out += &format!("{},{},{direction}", row.case, row.method);
            for (_, value) in &values {
                out += &format!(",{value}");
            }
            out.push('\n');
        }
    }
    out
}

/// A case's metrics as (name, value) pairs.
type NamedValues = Vec<(&'static str, f64)>;

/// Per (method, direction): the named metric values of each case.
type Groups = BTreeMap<(String, &'static str), Vec<NamedValues>>;

/// Per method and direction: the values of each metric over the cases.
fn grouped(rows: &[BatchRow]) -> Groups {
    let mut groups = Groups::new();
    for row in rows {
        let ic = row.evaluation.inverse_consistency.as_ref().map(|d| d.mean_mm);
        for (direction, metrics) in directions(row) {
            groups.entry((row.method.clone(), direction)).or_default().push(named_values(metrics, ic));
        }
    }
    groups
}

/// `summary.csv`: per method and direction, each metric's mean and standard deviation over the
/// cases (NaN where a metric is unknown).
pub fn summary_csv(rows: &[BatchRow]) -> String {
    let groups = grouped(rows);
    let mut out = String::new();
    for ((method, direction), cases) in &groups {
        if out.is_empty() {
            out += "method,direction,cases";
            for (name, _) in &cases[0] {
                out += &format!(",{name}_mean,{name}_sd");
            }
            out.push('\n');
        }
        out += &format!("{method},{direction},{}", cases.len());
        for column in 0..cases[0].len() {
            let values: Vec<f64> = cases.iter().map(|c| c[column].1).collect();
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            let sd = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>()
                / values.len().max(2).saturating_sub(1) as f64)
                .sqrt();
            out += &format!(",{mean},{sd}");
        }
        out.push('\n');
    }
    out
}

/// The metrics drawn as box plots.
pub const PLOTTED: [&str; 6] = ["nmi", "mse", "dice_bone", "dice_fat", "epe_mean_mm", "folding_percent"];

/// Box plots (moving → fixed direction): one panel per metric of `PLOTTED`, one box per method
/// (median line, quartile box, whiskers to the extremes), the panel's range printed above it.
pub fn box_plots(rows: &[BatchRow]) -> Canvas {
    let groups = grouped(rows);
    let methods: Vec<&String> =
        groups.keys().filter(|(_, d)| *d == "moving_to_fixed").map(|(m, _)| m).collect::<Vec<_>>();
    let palette =
        [Rgb([70, 130, 220]), Rgb([230, 120, 40]), Rgb([60, 170, 90]), Rgb([200, 60, 60]), Rgb([150, 90, 200])];
    let (panel_w, panel_h, margin) = (40 + 40 * methods.len(), 220, 30);
    let mut canvas = Canvas::new(PLOTTED.len() * (panel_w + 10) + 10, panel_h + 2 * margin + 30);
    canvas.fill(0, 0, canvas.width, canvas.height, Rgb([255, 255, 255]));
    for (p, metric) in PLOTTED.iter().enumerate() {
        let left = 10 + p * (panel_w + 10);
        let series: Vec<Vec<f64>> = methods
            .iter()
            .map(|m| {
                let column = |c: &NamedValues| c.iter().find(|(n, _)| n == metric).map_or(f64::NAN, |x| x.1);
                let mut v: Vec<f64> =
                    groups[&((*m).clone(), "moving_to_fixed")].iter().map(column).filter(|v| v.is_finite()).collect();
                v.sort_by(f64::total_cmp);
                v
            })
            .collect();
        let all: Vec<f64> = series.iter().flatten().copied().collect();
        let (low, high) = all.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
        canvas.fill(left, margin, panel_w, panel_h, Rgb([240, 240, 240]));
        if !low.is_finite() {
            continue;
        }
        let span = if high > low { high - low } else { 1.0 };
        let y = |v: f64| margin + panel_h - 10 - ((v - low) / span * (panel_h - 20) as f64).round() as usize;
        canvas.text(left, 4, &format!("{high:.3}"), 2, Rgb([0, 0, 0]));
        canvas.text(left, margin + panel_h + 4, &format!("{low:.3}"), 2, Rgb([0, 0, 0]));
        canvas.text(left, margin + panel_h + 18, &format!("{}", p + 1), 2, Rgb([0, 0, 0]));
        for (m, values) in series.iter().enumerate() {
            if values.is_empty() {
                continue;
            }
            let quantile = |q: f64| values[((q * (values.len() - 1) as f64).round() as usize).min(values.len() - 1)];
            let x = left + 30 + m * 40;
            let colour = palette[m % palette.len()];
            let (q1, median, q3) = (y(quantile(0.25)), y(quantile(0.5)), y(quantile(0.75)));
            let (lowest, highest) = (y(values[0]), y(*values.last().unwrap()));
            canvas.fill(x + 10, highest, 2, lowest - highest + 1, Rgb([80, 80, 80]));
            canvas.fill(x, q3, 22, q1 - q3 + 1, colour);
            canvas.fill(x, median, 22, 2, Rgb([0, 0, 0]));
        }
    }
    canvas
}

/// Reads the cases, evaluates them, writes `metrics.csv`, `summary.csv`, `metrics.json` (every
/// row in full, endpoint error per region included) and `boxplots.png` (whose panels follow
/// `PLOTTED`, boxes in method order of `summary.csv`) into `out`.
pub fn evaluate_batch(
    cases_path: &Path,
    out: &Path,
    calibration: &Calibration,
    progress: &dyn Progress,
) -> Result<Vec<BatchRow>> {
    let cases = read_cases(cases_path)?;
    let rows = evaluate_cases(&cases, calibration, progress)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let json = serde_json::to_string_pretty(&rows).map_err(|e| Error::Invalid(e.to_string()))?;
    for (name, text) in
        [("metrics.csv", metrics_csv(&rows)), ("summary.csv", summary_csv(&rows)), ("metrics.json", json)]
    {
        let path = out.join(name);
        io::atomic::write_atomically(&path, |w| {
            std::io::Write::write_all(w, text.as_bytes()).map_err(|e| Error::io(&path, e))
        })?;
    }
    box_plots(&rows).save_png(&out.join("boxplots.png"))?;
    Ok(rows)
}

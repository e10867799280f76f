//! QA figures (SPEC §6 `qa/*.png`, issue: registration QA): mid slices of the fixed image, the
//! moving image brought onto it and their difference; a checkerboard; the Jacobian
//! determinant with folding voxels marked; the overlap of each tissue with its Dice; and a
//! grid deformed by the field. Each figure has three rows: the mid slices across each index
//! axis (axial, coronal and sagittal for an axial series), drawn in true proportions as
//! radiologists read them, with a title, column headers, orientation letters on every panel
//! and a legend (colour bars with units, or what each colour means).

pub mod draw;
pub mod text;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::metrics::{Dice, TISSUES};
use crate::volume::calibration::Calibration;
use crate::volume::geometry::{Mat3, Vec3, det3, direction_letter};
use crate::volume::{DisplacementField, Geometry, Volume};
use draw::{Canvas, Rgb, diverging, gray};
use text::{draw_text, draw_text_centred, text_width};

/// Display window of CT images in the figures, HU: soft tissue to cortical bone.
pub const WINDOW_HU: (f32, f32) = (-200.0, 800.0);
/// Full scale of the difference image, HU.
pub const DIFFERENCE_HU: f32 = 300.0;
/// Spacing of the deformed grid's lines, mm.
pub const GRID_SPACING_MM: f64 = 10.0;

pub struct QaInputs<'a> {
    /// The fixed image in HU.
    pub fixed: &'a Volume,
    /// The moving image brought onto the fixed grid, in HU.
    pub moving_warped: &'a Volume,
    /// The forward field on the fixed grid.
    pub warp: &'a DisplacementField,
    pub calibration: &'a Calibration,
    /// Dice per tissue (printed under each tissue's panel).
    pub dice: &'a [Dice],
}

/// A 2D cut: the two in-plane index axes, the held one, and which way each in-plane axis runs
/// on screen.
#[derive(Clone, Copy, Debug)]
pub struct Cut {
    /// (horizontal axis, vertical axis, held axis)
    pub axes: (usize, usize, usize),
    pub at: usize,
    /// The horizontal axis runs right to left (its index grows leftwards).
    pub flip_u: bool,
    /// The vertical axis runs bottom to top (its index grows upwards).
    pub flip_v: bool,
    pub name: &'static str,
}

/// The three mid cuts, each shown as radiologists read them: the patient's right on the
/// image's left, anterior up on axial cuts, superior up on coronal and sagittal ones, anterior
/// left on sagittal ones (whatever order the grid's axes are stored in).
pub fn cuts(geometry: &Geometry) -> [Cut; 3] {
    let shape = geometry.shape;
    let column = |a: usize| [geometry.direction[0][a], geometry.direction[1][a], geometry.direction[2][a]];
    let dominant = |v: Vec3| (0..3).max_by(|&a, &b| v[a].abs().total_cmp(&v[b].abs())).unwrap_or(0);
    // Screen right: patient left (+x), posterior (+y) or superior (+z), by the axis' main direction.
    let grows_right = |a: usize| {
        let v = column(a);
        v[dominant(v)] > 0.0
    };
    // Screen up: superior (+z), anterior (−y) or right (−x).
    let grows_up = |a: usize| {
        let v = column(a);
        let d = dominant(v);
        if d == 2 { v[d] > 0.0 } else { v[d] < 0.0 }
    };
    let make = |u: usize, v: usize, held: usize, name| Cut {
        axes: (u, v, held),
        at: shape[held] / 2,
        flip_u: !grows_right(u),
        flip_v: grows_up(v),
        name,
    };
    // Name each cut by the world axis its held index axis runs along.
    let name_of = |held: usize| match dominant(column(held)) {
        2 => "axial",
        1 => "coronal",
        _ => "sagittal",
    };
    // The vertical axis is the in-plane one nearest superior, else anterior-posterior.
    let ordered = |a: usize, b: usize| if dominant(column(a)) > dominant(column(b)) { (b, a) } else { (a, b) };
    let cut = |a: usize, b: usize, held: usize| {
        let (u, v) = ordered(a, b);
        make(u, v, held, name_of(held))
    };
    [cut(0, 1, 2), cut(0, 2, 1), cut(1, 2, 0)]
}

impl Cut {
    /// The voxel shown at panel position (u, v) in voxels from the panel's top left.
    fn index(&self, shape: [usize; 3], u: usize, v: usize) -> [usize; 3] {
        let mut index = [0; 3];
        index[self.axes.0] = if self.flip_u { shape[self.axes.0] - 1 - u } else { u };
        index[self.axes.1] = if self.flip_v { shape[self.axes.1] - 1 - v } else { v };
        index[self.axes.2] = self.at;
        index
    }

    /// Orientation letters at the panel's left, right, top and bottom edges.
    pub fn letters(&self, geometry: &Geometry) -> [char; 4] {
        let column = |a: usize, sign: f64| {
            [sign * geometry.direction[0][a], sign * geometry.direction[1][a], sign * geometry.direction[2][a]]
        };
        let right = column(self.axes.0, if self.flip_u { -1.0 } else { 1.0 });
        let down = column(self.axes.1, if self.flip_v { -1.0 } else { 1.0 });
        [
            direction_letter(right.map(|c| -c)),
            direction_letter(right),
            direction_letter(down.map(|c| -c)),
            direction_letter(down),
        ]
    }
}

fn linear(shape: [usize; 3], index: [usize; 3]) -> usize {
    index[0] + shape[0] * (index[1] + shape[1] * index[2])
}

/// Where everything of a figure lies, in pixels.
#[derive(Clone, Debug)]
pub struct Layout {
    pub cuts: [Cut; 3],
    pub columns: usize,
    /// Pixels per mm (the same in every panel, so panels show true proportions).
    pub scale: f64,
    pub width: usize,
    pub height: usize,
    /// Top-left corner and size of each row's panels: (x of column 0, y, panel width, height).
    rows: [(usize, usize, usize, usize); 3],
    column_step: usize,
    legend_top: usize,
}

const MARGIN_LEFT: usize = 84;
const TITLE_HEIGHT: usize = 34;
const HEADER_HEIGHT: usize = 24;
const GAP: usize = 8;
const LEGEND_ROW: usize = 46;
const TEXT: Rgb = Rgb([235, 235, 235]);
const LETTERS: Rgb = Rgb([255, 210, 60]);

impl Layout {
    pub fn new(geometry: &Geometry, columns: usize, legend_rows: usize) -> Layout {
        let cuts = cuts(geometry);
        let extent = |a: usize| geometry.shape[a] as f64 * geometry.spacing_mm[a];
        let largest = (0..3).map(extent).fold(0.0, f64::max).max(1e-6);
        // About 300 pixels for the longest side, never less than one pixel per voxel.
        let smallest_spacing = geometry.spacing_mm.iter().copied().fold(f64::INFINITY, f64::min);
        let scale = (300.0 / largest).max(1.0 / smallest_spacing).min(8.0 / smallest_spacing);
        let size = |cut: &Cut| {
            let (u, v, _) = cut.axes;
            ((extent(u) * scale).round().max(1.0) as usize, (extent(v) * scale).round().max(1.0) as usize)
        };
        let panel_width = cuts.iter().map(|c| size(c).0).max().unwrap_or(1).max(120);
        let column_step = panel_width + GAP;
        let mut rows = [(0, 0, 0, 0); 3];
        let mut top = TITLE_HEIGHT + HEADER_HEIGHT;
        for (row, cut) in rows.iter_mut().zip(&cuts) {
            let (w, h) = size(cut);
            *row = (MARGIN_LEFT + (panel_width - w) / 2, top, w, h);
            top += h + GAP;
        }
        let width = MARGIN_LEFT + columns * column_step;
        let height = top + legend_rows * LEGEND_ROW + 6;
        Layout { cuts, columns, scale, width, height, rows, column_step, legend_top: top }
    }

    /// (x, y, width, height) of the panel in `column`, `row`.
    pub fn panel(&self, column: usize, row: usize) -> (usize, usize, usize, usize) {
        let (x, y, w, h) = self.rows[row];
        (x + column * self.column_step, y, w, h)
    }

    /// The voxel shown at pixel (x, y) of the panel in `row`, given in pixels from its top left.
    pub fn voxel_at(&self, geometry: &Geometry, row: usize, x: usize, y: usize) -> [usize; 3] {
        let cut = &self.cuts[row];
        let (a, b, _) = cut.axes;
        let pick = |axis: usize, pixel: usize| {
            let voxel = ((pixel as f64 + 0.5) / (self.scale * geometry.spacing_mm[axis])).floor() as usize;
            voxel.min(geometry.shape[axis] - 1)
        };
        cut.index(geometry.shape, pick(a, x), pick(b, y))
    }
}

/// A colour bar under a figure: `map` takes 0..1 along the bar, the ticks are (position 0..1,
/// label), and `label` names the quantity and its unit.
pub struct ColourBar {
    pub label: String,
    pub map: Box<dyn Fn(f32) -> Rgb>,
    pub ticks: Vec<(f32, String)>,
}

/// What a figure's legend holds.
pub enum Legend {
    Bar(ColourBar),
    /// Coloured squares with their meaning.
    Swatches(Vec<(Rgb, String)>),
    Note(String),
}

/// One figure: a title, a header per column, a row per cut with its name, orientation letters
/// on every panel, and legends below; pixel colours from `paint(column, voxel index)`.
fn figure(
    geometry: &Geometry,
    title: &str,
    headers: &[String],
    legends: &[Legend],
    warning: Option<&str>,
    paint: impl Fn(usize, &Cut, [usize; 3]) -> Rgb,
) -> Canvas {
    let layout = Layout::new(geometry, headers.len(), legends.len());
    let mut canvas = Canvas::new(layout.width, layout.height);
    canvas.fill(0, 0, layout.width, layout.height, Rgb([24, 24, 28]));
    draw_text(&mut canvas, 10.0, 23.0, title, 17.0, Rgb([255, 255, 255]));
    if let Some(warning) = warning {
        let left = 20.0 + text_width(title, 17.0);
        draw_text(&mut canvas, left, 23.0, warning, 15.0, Rgb([255, 80, 70]));
    }
    for (column, header) in headers.iter().enumerate() {
        let centre =
            MARGIN_LEFT as f32 + (column * layout.column_step) as f32 + (layout.column_step - GAP) as f32 / 2.0;
        draw_text_centred(&mut canvas, centre, (TITLE_HEIGHT + 17) as f32, header, 14.0, TEXT);
    }
    for (row, cut) in layout.cuts.iter().enumerate() {
        let (_, y, _, h) = layout.panel(0, row);
        draw_text(&mut canvas, 8.0, (y + h / 2 + 5) as f32, cut.name, 14.0, TEXT);
        let letters = cut.letters(geometry);
        for column in 0..layout.columns {
            let (x, y, w, h) = layout.panel(column, row);
            for py in 0..h {
                for px in 0..w {
                    let index = layout.voxel_at(geometry, row, px, py);
                    canvas.fill(x + px, y + py, 1, 1, paint(column, cut, index));
                }
            }
            let (x, y, w, h) = (x as f32, y as f32, w as f32, h as f32);
            let size = 13.0;
            let right = text_width(&letters[1].to_string(), size);
            // Each letter over a dark shadow, readable on white panels too.
            for (offset, colour) in [(1.0, Rgb([0, 0, 0])), (0.0, LETTERS)] {
                let (dx, dy) = (x + offset, y + offset);
                draw_text(&mut canvas, dx + 3.0, dy + h / 2.0 + 5.0, &letters[0].to_string(), size, colour);
                draw_text(&mut canvas, dx + w - right - 3.0, dy + h / 2.0 + 5.0, &letters[1].to_string(), size, colour);
                draw_text_centred(&mut canvas, dx + w / 2.0, dy + 14.0, &letters[2].to_string(), size, colour);
                draw_text_centred(&mut canvas, dx + w / 2.0, dy + h - 4.0, &letters[3].to_string(), size, colour);
            }
        }
    }
    for (n, legend) in legends.iter().enumerate() {
        let top = (layout.legend_top + n * LEGEND_ROW) as f32;
        draw_legend(&mut canvas, MARGIN_LEFT as f32, top, layout.width as f32 - MARGIN_LEFT as f32 - 10.0, legend);
    }
    canvas
}

fn draw_legend(canvas: &mut Canvas, left: f32, top: f32, width: f32, legend: &Legend) {
    match legend {
        Legend::Bar(bar) => {
            let label_width = text_width(&bar.label, 13.0) + 14.0;
            draw_text(canvas, left, top + 15.0, &bar.label, 13.0, TEXT);
            let (x0, length) = (left + label_width, (width - label_width).clamp(60.0, 320.0));
            for px in 0..length as usize {
                let colour = (bar.map)(px as f32 / (length - 1.0).max(1.0));
                canvas.fill((x0 as usize) + px, top as usize + 4, 1, 14, colour);
            }
            for (position, text) in &bar.ticks {
                let x = x0 + position * (length - 1.0);
                canvas.fill(x as usize, top as usize + 18, 1, 5, TEXT);
                draw_text_centred(canvas, x, top + 36.0, text, 12.0, TEXT);
            }
        }
        Legend::Swatches(items) => {
            let mut x = left;
            for (colour, text) in items {
                canvas.fill(x as usize, top as usize + 6, 14, 14, *colour);
                x += 20.0;
                x += draw_text(canvas, x, top + 18.0, text, 13.0, TEXT) + 18.0;
            }
        }
        Legend::Note(text) => {
            draw_text(canvas, left, top + 18.0, text, 13.0, TEXT);
        }
    }
}

/// det(∂φ/∂x) at a voxel of the field, central differences in index space.
fn jacobian_at(field: &DisplacementField, to_world_inverse: &Mat3, index: [usize; 3]) -> f64 {
    let shape = field.geometry.shape;
    let mut gradient = [[0.0f64; 3]; 3]; // ∂u_c/∂i_a
    for a in 0..3 {
        let (low, high) = (index[a].saturating_sub(1), (index[a] + 1).min(shape[a] - 1));
        if high == low {
            continue;
        }
        let mut lo = index;
        lo[a] = low;
        let mut hi = index;
        hi[a] = high;
        let (p, q) = (linear(shape, lo), linear(shape, hi));
        for c in 0..3 {
            gradient[c][a] = (field.components_mm[c][q] - field.components_mm[c][p]) as f64 / (high - low) as f64;
        }
    }
    // ∂u/∂x = (∂u/∂i)(∂i/∂x)
    let mut jacobian = [[0.0f64; 3]; 3];
    for r in 0..3 {
        for c in 0..3 {
            jacobian[r][c] = (0..3).map(|k| gradient[r][k] * to_world_inverse[k][c]).sum::<f64>();
        }
        jacobian[r][r] += 1.0;
    }
    det3(&jacobian)
}

/// Whether an image shows nothing (every voxel air or below): a collapsed result.
fn looks_empty(volume: &Volume) -> bool {
    volume.voxels.iter().all(|&v| v <= -900.0)
}

fn hu_bar() -> ColourBar {
    let (low, high) = WINDOW_HU;
    let tick = |hu: f32| ((hu - low) / (high - low), format!("{hu:.0}"));
    ColourBar {
        label: "CT window, HU".into(),
        map: Box::new(gray),
        ticks: vec![tick(-200.0), tick(0.0), tick(300.0), tick(800.0)],
    }
}

/// Writes the QA figures into `dir` (created) and returns their paths.
pub fn write_figures(dir: &Path, inputs: &QaInputs) -> Result<Vec<PathBuf>> {
    let geometry = &inputs.fixed.geometry;
    let shape = geometry.shape;
    if inputs.moving_warped.geometry.shape != shape || inputs.warp.geometry.shape != shape {
        return Err(Error::Invalid("QA figures need the warped image and the field on the fixed grid".into()));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let (fixed, warped) = (&inputs.fixed.voxels, &inputs.moving_warped.voxels);
    let window = |v: f32| gray((v - WINDOW_HU.0) / (WINDOW_HU.1 - WINDOW_HU.0));
    let empty = looks_empty(inputs.moving_warped).then_some("the warped moving image is empty (all air)!");
    let mut written = Vec::new();
    let mut save = |name: &str, canvas: Canvas| -> Result<()> {
        let path = dir.join(name);
        canvas.save_png(&path)?;
        written.push(path);
        Ok(())
    };
    let columns = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();

    let difference_bar = ColourBar {
        label: "moving − fixed, HU".into(),
        map: Box::new(|t| diverging(2.0 * t - 1.0)),
        ticks: vec![(0.0, format!("−{DIFFERENCE_HU:.0}")), (0.5, "0".into()), (1.0, format!("+{DIFFERENCE_HU:.0}"))],
    };
    save(
        "slices.png",
        figure(
            geometry,
            "Mid slices on the fixed grid",
            &columns(&["fixed (CT)", "moving, warped onto it", "difference"]),
            &[Legend::Bar(hu_bar()), Legend::Bar(difference_bar)],
            empty,
            |column, _, index| {
                let n = linear(shape, index);
                match column {
                    0 => window(fixed[n]),
                    1 => window(warped[n]),
                    _ => diverging((warped[n] - fixed[n]) / DIFFERENCE_HU),
                }
            },
        ),
    )?;

    let square_mm = (geometry.extent_mm().iter().copied().fold(0.0, f64::max) / 8.0).max(4.0);
    save(
        "checkerboard.png",
        figure(
            geometry,
            "Checkerboard",
            &columns(&["fixed and warped moving, alternating"]),
            &[Legend::Note(format!(
                "squares of {square_mm:.0} mm alternate fixed and warped moving; edges should run on across squares"
            ))],
            empty,
            |_, cut, index| {
                let n = linear(shape, index);
                let square = |axis: usize| (index[axis] as f64 * geometry.spacing_mm[axis] / square_mm) as usize;
                window(if (square(cut.axes.0) + square(cut.axes.1)) % 2 == 0 { fixed[n] } else { warped[n] })
            },
        ),
    )?;

    let to_index: Mat3 = inputs.warp.geometry.world_to_index_matrix();
    let jacobian_bar = ColourBar {
        label: "det J (volume change)".into(),
        map: Box::new(|t| diverging(2.0 * t - 1.0)),
        ticks: vec![
            (0.0, "0.5".into()),
            (0.25, "0.71".into()),
            (0.5, "1".into()),
            (0.75, "1.41".into()),
            (1.0, "2".into()),
        ],
    };
    save(
        "jacobian.png",
        figure(
            geometry,
            "Jacobian determinant of the forward deformation",
            &columns(&["det J"]),
            &[
                Legend::Bar(jacobian_bar),
                Legend::Swatches(vec![(Rgb([0, 255, 0]), "folding (det J ≤ 0): not invertible".into())]),
            ],
            None,
            |_, _, index| {
                let det = jacobian_at(inputs.warp, &to_index, index);
                if det <= 0.0 {
                    Rgb([0, 255, 0]) // folding
                } else {
                    // log₂ det: blue where the field compresses, red where it expands; ±1 = ×2.
                    diverging(det.log2() as f32)
                }
            },
        ),
    )?;

    let density = |v: f32| inputs.calibration.density(v as f64) as f32;
    let tissues = &TISSUES[..3];
    let headers: Vec<String> = tissues
        .iter()
        .map(|tissue| match inputs.dice.iter().find(|d| d.tissue == tissue.name) {
            Some(d) => format!("{}  (Dice {:.3})", tissue.name, d.dice),
            None => tissue.name.to_string(),
        })
        .collect();
    save(
        "tissues.png",
        figure(
            geometry,
            "Tissue overlap",
            &headers,
            &[Legend::Swatches(vec![
                (Rgb([240, 220, 40]), "in both".into()),
                (Rgb([220, 40, 40]), "fixed only".into()),
                (Rgb([40, 200, 60]), "warped moving only".into()),
            ])],
            empty,
            |column, _, index| {
                let n = linear(shape, index);
                let tissue = &tissues[column];
                let within = |v: f32| (tissue.low..tissue.high).contains(&density(v));
                match (within(fixed[n]), within(warped[n])) {
                    (true, true) => Rgb([240, 220, 40]),
                    (true, false) => Rgb([220, 40, 40]),
                    (false, true) => Rgb([40, 200, 60]),
                    (false, false) => {
                        let Rgb([g, _, _]) = window(fixed[n]);
                        Rgb([g / 3, g / 3, g / 3])
                    }
                }
            },
        ),
    )?;

    let world_to_index = geometry.world_to_index_map();
    let spacing = geometry.spacing_mm;
    save(
        "grid.png",
        figure(
            geometry,
            "Deformed grid",
            &columns(&["forward deformation on the fixed CT"]),
            &[Legend::Note(format!(
                "lines {GRID_SPACING_MM:.0} mm apart in the moving image, drawn where they land on the fixed grid"
            ))],
            None,
            |_, cut, index| {
                let n = linear(shape, index);
                let x = geometry.index_to_world(index.map(|i| i as f64));
                let u = inputs.warp.at(n);
                let p = world_to_index.apply(std::array::from_fn(|d| x[d] + u[d]));
                // On a line when the deformed point lies within half a voxel of a grid plane.
                let on_line = [cut.axes.0, cut.axes.1].iter().any(|&a| {
                    let step = GRID_SPACING_MM / spacing[a];
                    let offset = p[a] / step;
                    (offset - offset.round()).abs() * step < 0.5
                });
                if on_line {
                    Rgb([255, 200, 0])
                } else {
                    let Rgb([g, _, _]) = window(fixed[n]);
                    Rgb([g / 2, g / 2, g / 2])
                }
            },
        ),
    )?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letters_by_name(geometry: &Geometry) -> Vec<(&'static str, String)> {
        let mut rows: Vec<(&'static str, String)> =
            cuts(geometry).iter().map(|c| (c.name, c.letters(geometry).iter().collect())).collect();
        rows.sort();
        rows
    }

    #[test]
    fn cuts_are_shown_as_radiologists_read_them_however_the_grid_is_stored() {
        let expected = vec![("axial", "RLAP".to_string()), ("coronal", "RLSI".into()), ("sagittal", "APSI".into())];
        let lps = Geometry::axis_aligned([20, 24, 16], [1.0, 1.0, 2.0], [0.0; 3]).unwrap();
        assert_eq!(letters_by_name(&lps), expected);
        // Stored RAS-wise (x and y reversed), or slices from the top down.
        let ras = Geometry::new(
            [20, 24, 16],
            [1.0, 1.0, 2.0],
            [0.0; 3],
            [[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]],
        );
        assert_eq!(letters_by_name(&ras.unwrap()), expected);
        let downwards = Geometry::new(
            [20, 24, 16],
            [1.0, 1.0, 2.0],
            [0.0; 3],
            [[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]],
        );
        assert_eq!(letters_by_name(&downwards.unwrap()), expected);
        // A sagittal acquisition: index axes along y, z and x.
        let sagittal = Geometry::new(
            [24, 16, 20],
            [1.0, 2.0, 1.0],
            [0.0; 3],
            [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]],
        );
        assert_eq!(letters_by_name(&sagittal.unwrap()), expected);
    }
}

//! QA figures (SPEC §6 `qa/*.png`, issue: registration QA): mid slices of the fixed image, the
//! moving image brought onto it and their difference; a checkerboard; the Jacobian
//! determinant with folding voxels marked; the overlap of each tissue with its Dice; and a
//! grid deformed by the field. Each figure has three rows: axial, coronal and sagittal mid
//! slices (index axes k, j and i held at their middle).

pub mod draw;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::metrics::{Dice, TISSUES};
use crate::volume::calibration::Calibration;
use crate::volume::geometry::{Mat3, det3};
use crate::volume::{DisplacementField, Volume};
use draw::{Canvas, Rgb, diverging, gray};

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

/// A 2D cut: the two in-plane index axes and the index of the held one.
#[derive(Clone, Copy)]
struct Cut {
    /// (horizontal axis, vertical axis, held axis)
    axes: (usize, usize, usize),
    at: usize,
}

fn cuts(shape: [usize; 3]) -> [Cut; 3] {
    [
        Cut { axes: (0, 1, 2), at: shape[2] / 2 },
        Cut { axes: (0, 2, 1), at: shape[1] / 2 },
        Cut { axes: (1, 2, 0), at: shape[0] / 2 },
    ]
}

impl Cut {
    fn size(&self, shape: [usize; 3]) -> (usize, usize) {
        (shape[self.axes.0], shape[self.axes.1])
    }

    /// The voxel index shown at pixel (u, v); rows run from the top, so superior/posterior
    /// structures (higher index) appear at the top for the vertical axis.
    fn index(&self, shape: [usize; 3], u: usize, v: usize) -> [usize; 3] {
        let mut index = [0; 3];
        index[self.axes.0] = u;
        index[self.axes.1] = shape[self.axes.1] - 1 - v;
        index[self.axes.2] = self.at;
        index
    }
}

fn linear(shape: [usize; 3], index: [usize; 3]) -> usize {
    index[0] + shape[0] * (index[1] + shape[1] * index[2])
}

/// Pixels per voxel so that the largest slice is about 256 pixels wide.
fn zoom(shape: [usize; 3]) -> usize {
    (256 / shape.iter().copied().max().unwrap_or(1).max(1)).clamp(1, 4)
}

/// One figure: for each cut, `columns` panels whose pixel colours come from `paint(column,
/// cut, voxel index)`.
fn figure(shape: [usize; 3], columns: usize, paint: impl Fn(usize, &Cut, [usize; 3]) -> Rgb) -> Canvas {
    let z = zoom(shape);
    let cuts = cuts(shape);
    let gap = 4;
    let width = cuts.iter().map(|c| c.size(shape).0).max().unwrap() * z;
    let heights: Vec<usize> = cuts.iter().map(|c| c.size(shape).1 * z).collect();
    let mut canvas = Canvas::new(columns * (width + gap) - gap, heights.iter().sum::<usize>() + 2 * gap);
    let mut top = 0;
    for (cut, height) in cuts.iter().zip(&heights) {
        let (w, h) = cut.size(shape);
        for column in 0..columns {
            let left = column * (width + gap);
            for v in 0..h {
                for u in 0..w {
                    let colour = paint(column, cut, cut.index(shape, u, v));
                    canvas.fill(left + u * z, top + v * z, z, z, colour);
                }
            }
        }
        top += height + gap;
    }
    canvas
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

/// Writes the QA figures into `dir` (created) and returns their paths.
pub fn write_figures(dir: &Path, inputs: &QaInputs) -> Result<Vec<PathBuf>> {
    let shape = inputs.fixed.geometry.shape;
    if inputs.moving_warped.geometry.shape != shape || inputs.warp.geometry.shape != shape {
        return Err(Error::Invalid("QA figures need the warped image and the field on the fixed grid".into()));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let (fixed, warped) = (&inputs.fixed.voxels, &inputs.moving_warped.voxels);
    let window = |v: f32| gray((v - WINDOW_HU.0) / (WINDOW_HU.1 - WINDOW_HU.0));
    let mut written = Vec::new();
    let mut save = |name: &str, canvas: Canvas| -> Result<()> {
        let path = dir.join(name);
        canvas.save_png(&path)?;
        written.push(path);
        Ok(())
    };

    save(
        "slices.png",
        figure(shape, 3, |column, _, index| {
            let n = linear(shape, index);
            match column {
                0 => window(fixed[n]),
                1 => window(warped[n]),
                _ => diverging((warped[n] - fixed[n]) / DIFFERENCE_HU),
            }
        }),
    )?;

    let square = (shape.iter().copied().max().unwrap_or(8) / 8).max(2);
    save(
        "checkerboard.png",
        figure(shape, 1, |_, cut, index| {
            let n = linear(shape, index);
            let (a, b) = (index[cut.axes.0] / square, index[cut.axes.1] / square);
            window(if (a + b) % 2 == 0 { fixed[n] } else { warped[n] })
        }),
    )?;

    let to_index: Mat3 = inputs.warp.geometry.world_to_index_matrix();
    save(
        "jacobian.png",
        figure(shape, 1, |_, _, index| {
            let det = jacobian_at(inputs.warp, &to_index, index);
            if det <= 0.0 {
                Rgb([0, 255, 0]) // folding
            } else {
                // log₂ det: blue where the field compresses, red where it expands; ±1 = ×2.
                diverging(det.log2() as f32)
            }
        }),
    )?;

    let density = |v: f32| inputs.calibration.density(v as f64) as f32;
    let tissues = &TISSUES[..3];
    let mut overlap = figure(shape, tissues.len(), |column, _, index| {
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
    });
    let panel_width = overlap.width / tissues.len();
    for (column, tissue) in tissues.iter().enumerate() {
        if let Some(d) = inputs.dice.iter().find(|d| d.tissue == tissue.name) {
            overlap.text(column * panel_width + 4, 4, &format!("{:.3}", d.dice), 3, Rgb([255, 255, 255]));
        }
    }
    save("tissues.png", overlap)?;

    let world_to_index = inputs.fixed.geometry.world_to_index_matrix();
    let spacing = inputs.fixed.geometry.spacing_mm;
    save(
        "grid.png",
        figure(shape, 1, |_, cut, index| {
            let n = linear(shape, index);
            let x = inputs.fixed.geometry.index_to_world(index.map(|i| i as f64));
            let u = inputs.warp.at(n);
            let y: [f64; 3] = std::array::from_fn(|d| x[d] + u[d] - inputs.fixed.geometry.origin_mm[d]);
            let p: [f64; 3] = std::array::from_fn(|r| (0..3).map(|c| world_to_index[r][c] * y[c]).sum());
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
        }),
    )?;
    Ok(written)
}

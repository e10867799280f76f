//! The patch-border check of thesis fig. 5.3: over all predicted patches, the voxel-wise mean
//! and standard deviation of the momentum's length at each position inside a patch, shown as
//! marginals along each axis. A network that behaves differently near a patch's border (where
//! it saw less context) shows it as a rise or fall of these curves towards both ends.

use std::path::Path;

use crate::error::Result;
use crate::qa::draw::{Canvas, Rgb};

/// Running sums of |m| and |m|² per position in a patch of `size`³ voxels.
pub struct BorderStatistics {
    size: usize,
    patches: usize,
    sum: Vec<f64>,
    sum_of_squares: Vec<f64>,
}

/// Mean and standard deviation along one axis of the patch.
#[derive(Clone, Debug, PartialEq)]
pub struct Marginal {
    /// At each position along the axis: the voxel-wise mean of |m|, averaged over the other two axes.
    pub mean: Vec<f64>,
    /// The same for the voxel-wise standard deviation over patches.
    pub std: Vec<f64>,
}

impl BorderStatistics {
    pub fn new(size: usize) -> Self {
        let n = size * size * size;
        BorderStatistics { size, patches: 0, sum: vec![0.0; n], sum_of_squares: vec![0.0; n] }
    }

    pub fn patches(&self) -> usize {
        self.patches
    }

    /// Adds one predicted patch: three momentum channels, each `size`³ voxels, x fastest.
    pub fn add(&mut self, momentum: &[f32]) {
        let n = self.sum.len();
        assert_eq!(momentum.len(), 3 * n, "a momentum patch has three channels of size³ voxels");
        for v in 0..n {
            let length = (0..3).map(|c| (momentum[c * n + v] as f64).powi(2)).sum::<f64>().sqrt();
            self.sum[v] += length;
            self.sum_of_squares[v] += length * length;
        }
        self.patches += 1;
    }

    /// Voxel-wise mean and (population) standard deviation of |m| over the patches added.
    pub fn mean_and_std(&self) -> (Vec<f64>, Vec<f64>) {
        let count = self.patches.max(1) as f64;
        let mean: Vec<f64> = self.sum.iter().map(|s| s / count).collect();
        let std = self.sum_of_squares.iter().zip(&mean).map(|(sq, m)| (sq / count - m * m).max(0.0).sqrt()).collect();
        (mean, std)
    }

    /// The marginals along x, y and z.
    pub fn marginals(&self) -> [Marginal; 3] {
        let (mean, std) = self.mean_and_std();
        let s = self.size;
        let along = |values: &[f64], axis: usize| -> Vec<f64> {
            let mut out = vec![0.0; s];
            for k in 0..s {
                for j in 0..s {
                    for i in 0..s {
                        out[[i, j, k][axis]] += values[i + s * (j + s * k)];
                    }
                }
            }
            out.iter().map(|v| v / (s * s) as f64).collect()
        };
        std::array::from_fn(|axis| Marginal { mean: along(&mean, axis), std: along(&std, axis) })
    }

    /// Three panels (x, y, z): the mean (white) and standard deviation (orange) of |m| along the
    /// patch, the discarded margins shaded, written as a PNG.
    pub fn write_plot(&self, path: &Path, margin: usize) -> Result<()> {
        let marginals = self.marginals();
        let top = marginals.iter().flat_map(|m| m.mean.iter().chain(&m.std)).fold(1e-12f64, |a, &b| a.max(b));
        let (panel_w, panel_h, pad) = (300usize, 200usize, 20usize);
        let mut canvas = Canvas::new(3 * panel_w + 4 * pad, panel_h + 2 * pad + 20);
        canvas.fill(0, 0, canvas.width, canvas.height, Rgb([24, 24, 28]));
        let s = self.size;
        for (axis, marginal) in marginals.iter().enumerate() {
            let left = pad + axis * (panel_w + pad);
            canvas.fill(left, pad, panel_w, panel_h, Rgb([40, 40, 46]));
            let x_of = |position: usize| left + position * panel_w / s;
            // The margins the prediction discards.
            canvas.fill(left, pad, x_of(margin) - left, panel_h, Rgb([60, 45, 45]));
            canvas.fill(x_of(s - margin), pad, left + panel_w - x_of(s - margin), panel_h, Rgb([60, 45, 45]));
            for (values, colour) in [(&marginal.std, Rgb([255, 160, 40])), (&marginal.mean, Rgb([235, 235, 235]))] {
                for (position, value) in values.iter().enumerate() {
                    let height = ((value / top) * (panel_h - 4) as f64).round() as usize;
                    canvas.fill(x_of(position), pad + panel_h - 2 - height, (panel_w / s).max(2), 3, colour);
                }
            }
            canvas.text(left, pad + panel_h + 6, &format!("{axis}"), 2, Rgb([200, 200, 200]));
        }
        canvas.text(canvas.width - 150, pad + panel_h + 6, &format!("{top:.3}"), 2, Rgb([200, 200, 200]));
        canvas.save_png(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marginals_follow_the_patches_closed_form() {
        let s = 8;
        let n = s * s * s;
        let mut stats = BorderStatistics::new(s);
        // Two patches: |m| = a·(i + 1) along x only, with a = 1 and a = 3.
        for a in [1.0f32, 3.0] {
            let mut m = vec![0.0f32; 3 * n];
            for v in 0..n {
                m[v] = a * ((v % s) as f32 + 1.0);
            }
            stats.add(&m);
        }
        let [x, y, z] = stats.marginals();
        for i in 0..s {
            let base = i as f64 + 1.0;
            assert!((x.mean[i] - 2.0 * base).abs() < 1e-9 && (x.std[i] - base).abs() < 1e-9);
        }
        // Along y and z every position averages the same x-profile: mean 2·4.5, std 4.5.
        for marginal in [y, z] {
            assert!(marginal.mean.iter().all(|m| (m - 9.0).abs() < 1e-9));
            assert!(marginal.std.iter().all(|m| (m - 4.5).abs() < 1e-9));
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("patch_border.png");
        stats.write_plot(&path, 2).unwrap();
        let image = image::open(&path).unwrap();
        assert_eq!((image.width(), image.height()), (980, 260));
    }
}

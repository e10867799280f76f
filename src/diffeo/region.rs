//! The region the optimiser compares the images over: the voxels near tissue in either image.
//! Far from the body both images are air, which holds nothing to align; a voxel there only adds
//! the gradient of the air's noise, yet costs the optimiser as much as any other (on the demo
//! head a third of the grid). Such voxels are left out of the comparison and count as matched,
//! so the image terms keep their scale against the regulariser.
//!
//! Tissue is found on a grid `COARSE` times coarser than the images (box averages, where
//! noise in the air cannot pass for tissue), grown by the margin, which must exceed how far the
//! deformation moves anything: a voxel left out has air within that margin in both images, so a
//! sample displaced by less than the margin reads air too. The region per image row is one span
//! of x, from the first voxel near tissue to the last.

use std::ops::Range;

use crate::diffeo::pyramid::{downsample, level_shape};
use crate::volume::filter::dilate;

/// How much coarser than the images tissue is looked for (a box of 8 voxels averages the air's
/// noise down by √8).
pub const COARSE: usize = 2;

/// Density above which a coarse voxel holds tissue (kg/dm³; air ≈ 0.001, lung ≈ 0.15–0.3).
pub const TISSUE_DENSITY: f32 = 0.05;

/// Where either image holds tissue, grown by a margin, on the grid `COARSE` times coarser than
/// a full grid of `full_shape`.
#[derive(Clone, Debug)]
pub struct TissueMask {
    full_shape: [usize; 3],
    shape: [usize; 3],
    near: Vec<bool>,
}

impl TissueMask {
    /// From two density images on the same full grid with voxels of `spacing_mm`; the margin is
    /// rounded up to whole coarse voxels.
    pub fn around(fixed: &[f32], moving: &[f32], full_shape: [usize; 3], spacing_mm: [f64; 3], margin_mm: f64) -> Self {
        let shape = level_shape(full_shape, COARSE);
        let (fixed, moving) = (downsample(fixed, full_shape, COARSE), downsample(moving, full_shape, COARSE));
        let tissue: Vec<bool> =
            fixed.iter().zip(&moving).map(|(f, m)| *f > TISSUE_DENSITY || *m > TISSUE_DENSITY).collect();
        let reach: [usize; 3] =
            std::array::from_fn(|d| (margin_mm / (COARSE as f64 * spacing_mm[d])).ceil().max(0.0) as usize);
        let mut near = tissue;
        dilate(&mut near, shape, reach);
        TissueMask { full_shape, shape, near }
    }

    /// Every voxel of a full grid of `full_shape`, tissue or not.
    pub fn everywhere(full_shape: [usize; 3]) -> Self {
        let shape = level_shape(full_shape, COARSE);
        TissueMask { full_shape, shape, near: vec![true; shape.iter().product()] }
    }

    /// Keeps only the coarse voxels whose full voxels are all `covered` (one flag per voxel of
    /// the full grid), e.g. where the moving image has data after the rigid alignment: beyond its
    /// field of view the resampled image is air, and tissue facing it reads as motion. Where the
    /// covered voxels of each row form one interval (a line through the moving grid's box), the
    /// spans stay within it.
    pub fn within(mut self, covered: &[bool]) -> Self {
        assert_eq!(covered.len(), self.full_shape.iter().product::<usize>(), "coverage on the full grid");
        let flags: Vec<f32> = covered.iter().map(|&c| if c { 1.0 } else { 0.0 }).collect();
        let share = downsample(&flags, self.full_shape, COARSE);
        self.near.iter_mut().zip(&share).for_each(|(near, &s)| *near &= s > 0.999);
        self
    }

    /// The region on level `factor` of the full grid: a voxel belongs when the coarse voxel
    /// holding its centre is near tissue.
    pub fn at_level(&self, factor: usize) -> Region {
        let level = level_shape(self.full_shape, factor);
        let coarse = |i: usize, d: usize| ((i * factor + factor / 2) / COARSE).min(self.shape[d] - 1);
        let [nx, ny, nz] = level;
        let mut spans = Vec::with_capacity(ny * nz);
        for k in 0..nz {
            for j in 0..ny {
                let row = self.shape[0] * (coarse(j, 1) + self.shape[1] * coarse(k, 2));
                let near = |i: usize| self.near[row + coarse(i, 0)];
                let span = match (0..nx).find(|&i| near(i)) {
                    Some(first) => first..(0..nx).rev().find(|&i| near(i)).unwrap() + 1,
                    None => 0..0,
                };
                spans.push(span);
            }
        }
        Region { shape: level, spans }
    }
}

/// Per row (j, k) of a grid, the span of x the comparison covers.
#[derive(Clone, Debug, PartialEq)]
pub struct Region {
    shape: [usize; 3],
    spans: Vec<Range<usize>>,
}

impl Region {
    /// Every voxel of a grid of `shape`.
    pub fn everywhere(shape: [usize; 3]) -> Self {
        Region { shape, spans: vec![0..shape[0]; shape[1] * shape[2]] }
    }

    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }

    /// The x covered on row (j, k).
    #[inline]
    pub fn span(&self, j: usize, k: usize) -> Range<usize> {
        self.spans[j + self.shape[1] * k].clone()
    }

    /// Whether voxel (i, j, k) is covered.
    #[inline]
    pub fn contains(&self, [i, j, k]: [usize; 3]) -> bool {
        self.span(j, k).contains(&i)
    }

    /// Voxels left out.
    pub fn left_out(&self) -> usize {
        self.shape.iter().product::<usize>() - self.spans.iter().map(|s| s.len()).sum::<usize>()
    }

    /// The smallest box holding every covered voxel, per axis (empty ranges when none is).
    pub fn bounds(&self) -> [Range<usize>; 3] {
        let (mut lower, mut upper) = (self.shape, [0; 3]);
        for (row, span) in self.spans.iter().enumerate().filter(|(_, span)| !span.is_empty()) {
            let (j, k) = (row % self.shape[1], row / self.shape[1]);
            for (d, (low, high)) in [(span.start, span.end), (j, j + 1), (k, k + 1)].into_iter().enumerate() {
                (lower[d], upper[d]) = (lower[d].min(low), upper[d].max(high));
            }
        }
        if (0..3).any(|d| lower[d] >= upper[d]) {
            return [0..0, 0..0, 0..0];
        }
        std::array::from_fn(|d| lower[d]..upper[d])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cube of tissue in air: the region covers the cube grown by the margin (rounded up to
    /// coarse voxels), on every level, and nothing else.
    #[test]
    fn covers_tissue_grown_by_the_margin() {
        let shape = [40, 36, 32];
        let tissue = |[i, j, k]: [usize; 3]| (16..24).contains(&i) && (12..20).contains(&j) && (8..16).contains(&k);
        let image: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|n| if tissue([n % 40, n / 40 % 36, n / 1440]) { 1.0 } else { 0.002 })
            .collect();
        let air = vec![0.0f32; image.len()];
        // 2 mm voxels, 9 mm margin: 4 mm coarse voxels, grown by 3 of them (6 voxels).
        let mask = TissueMask::around(&image, &air, shape, [2.0; 3], 9.0);
        let expected = |[i, j, k]: [usize; 3]| (10..30).contains(&i) && (6..26).contains(&j) && (2..22).contains(&k);
        let region = mask.at_level(1);
        for k in 0..32 {
            for j in 0..36 {
                for i in 0..40 {
                    assert_eq!(region.contains([i, j, k]), expected([i, j, k]), "{:?}", [i, j, k]);
                }
            }
        }
        assert_eq!(region.left_out(), 40 * 36 * 32 - 20 * 20 * 20);
        assert_eq!(region.bounds(), [10..30, 6..26, 2..22]);
        assert_eq!(Region::everywhere([5, 4, 3]).bounds(), [0..5, 0..4, 0..3]);
        assert_eq!(TissueMask::around(&air, &air, shape, [2.0; 3], 9.0).at_level(1).bounds(), [0..0, 0..0, 0..0]);
        // Either image's tissue counts; level 2 halves the spans, level 4 takes the coarse voxel
        // at each voxel's centre.
        let swapped = TissueMask::around(&air, &image, shape, [2.0; 3], 9.0);
        assert_eq!(swapped.at_level(2).span(5, 3), 5..15);
        assert_eq!(swapped.at_level(2).span(2, 13), 0..0);
        assert_eq!(swapped.at_level(4).span(2, 2), 2..7);
        assert_eq!(Region::everywhere([5, 4, 3]).left_out(), 0);
    }
}

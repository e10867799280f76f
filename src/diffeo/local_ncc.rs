//! Local normalised cross-correlation (LNCC): the squared correlation of two images within a
//! cubic window around each voxel, cc(x) = cov(I, J)² / (var I · var J + ε), in [0, 1]. It asks
//! only that the images vary together nearby, whatever their local grey scale: a pseudo-CT's
//! bone a tenth too dense, a soft-tissue offset or a bias field leave it unchanged, and the few
//! HU between grey and white matter count as much as a bone edge. The windows are box sums over
//! the voxels within `radius` along each axis, cut at the grid's border (a box sum with zero
//! padding is its own adjoint, which the gradient uses).

use std::ops::Range;

use rayon::prelude::*;

/// The floor in cc's denominator: cc = cov² / (var I · var J + ε) with ε = this · n², n the
/// window's voxels (density units, kg/dm³, to the fourth). On a whole 5³ window ε = 1.6e-6, as
/// if each window's standard deviation were 0.035 (35 HU): where both images hold only noise (a
/// CT's is 10–20 HU) cc stays near 0 and the window pulls little, rather than correlating two
/// noises, and a window flat in either image has cc ≈ 0 instead of a ratio of two roundings.
/// Windows cut by the grid's border have a lower floor. (In the window sums, a = n cov and
/// b c = n² var I var J, so the denominator is b c + this · n⁴.)
pub const VARIANCE_PRODUCT_FLOOR: f32 = 1e-10;

/// Σ over the counted voxels x of (1 − cc(x)), and its gradient with respect to each voxel of
/// `warped` (I; `target` is J, held fixed), both images on a grid of `shape`. Only the box
/// `bounds` is read: it must hold every counted voxel's window (or reach the grid's border
/// where the window does); `counted(n)` says whether the window around grid voxel n counts.
/// The gradient is on the whole grid, zero outside the box.
///
/// Four passes over the box, each plane by plane: the window sums of I, J, I², J² and IJ in x
/// and y; their sums along z, turned at once into the cost and the three weights the gradient
/// needs; those weights' window sums in x and y; their sums along z, turned at once into the
/// gradient. Both images are taken relative to J's mean over the box (cc does not change), so
/// that the f32 sums of squares keep the faint contrast of soft tissue.
pub fn cost_and_gradient(
    warped: &[f32],
    target: &[f32],
    shape: [usize; 3],
    bounds: &[Range<usize>; 3],
    radius: usize,
    counted: impl Fn(usize) -> bool + Sync,
) -> (f64, Vec<f32>) {
    let voxels = shape.iter().product::<usize>();
    assert_eq!(warped.len(), voxels, "the warped image on the grid");
    assert_eq!(target.len(), voxels, "the target image on the grid");
    assert!((0..3).all(|d| bounds[d].end <= shape[d]), "the box {bounds:?} within the grid {shape:?}");
    let mut gradient = vec![0f32; voxels];
    let boxed = BoxGrid::new(shape, bounds.clone());
    if boxed.is_empty() {
        return (0.0, gradient);
    }
    let [bx, by, bz] = boxed.shape;
    let window = WindowSizes::new(boxed.shape, radius);
    let offset = (crate::parallel::ordered_sum(
        boxed.rows().into_par_iter().map(|(j, k)| target[boxed.row(j, k)].iter().map(|&v| v as f64).sum::<f64>()),
    ) / (bx * by * bz) as f64) as f32;
    // The window sums of I, J, I², J², IJ (I and J relative to the offset), channel after
    // channel within each plane.
    let sums = plane_window_sums::<5>(boxed.shape, radius, |j, k, rows| {
        let range = boxed.row(j, k);
        for (i, (&w, &t)) in warped[range.clone()].iter().zip(&target[range]).enumerate() {
            let (a, b) = (w - offset, t - offset);
            (rows[0][i], rows[1][i], rows[2][i], rows[3][i], rows[4][i]) = (a, b, a * a, b * b, a * b);
        }
    });
    // Per counted voxel x, with a, b, c the window's centred sums of IJ, I² and J²: the cost
    // 1 − cc(x), A = ∂cc/∂a, B = 2 ∂cc/∂b (∂a/∂I(y) = J(y) − μ_J(x), ∂b/∂I(y) = 2 (I(y) − μ_I(x)))
    // and C = A μ_J + B μ_I, so that ∂Σcc/∂I(y) = Σ_{x near y} A(x) J(y) + B(x) I(y) − C(x).
    let plane = bx * by;
    let mut weights = vec![0f32; 3 * plane * bz];
    let size_x: Vec<f32> = window.x.iter().map(|&n| n as f32).collect();
    let total = for_each_plane_along_z(&sums, radius, &mut weights, 3 * plane, |k, summed, weights| {
        let mut total = 0.0f64;
        let mut mask = vec![0f32; bx];
        let (weight_a, rest) = weights.split_at_mut(plane);
        let (weight_b, weight_c) = rest.split_at_mut(plane);
        for j in 0..by {
            let across = (window.y[j] * window.z[k]) as f32;
            let first = boxed.row(j, k).start;
            for (i, mask) in mask.iter_mut().enumerate() {
                *mask = if counted(first + i) { 1.0 } else { 0.0 };
            }
            let [sum_i, sum_j, sum_ii, sum_jj, sum_ij] = summed.each_ref().map(|sums| &sums[j * bx..][..bx]);
            let (mask, size_x) = (&mask[..bx], &size_x[..bx]);
            let (weight_a, weight_b, weight_c) =
                (&mut weight_a[j * bx..][..bx], &mut weight_b[j * bx..][..bx], &mut weight_c[j * bx..][..bx]);
            // Branch-free, so that the row vectorises; uncounted voxels get weight 0.
            let mut row_total = 0.0f32;
            for i in 0..bx {
                let n = size_x[i] * across;
                let inverse_n = 1.0 / n;
                let (si, sj) = (sum_i[i], sum_j[i]);
                let a = sum_ij[i] - si * sj * inverse_n;
                let b = (sum_ii[i] - si * si * inverse_n).max(0.0);
                let c = (sum_jj[i] - sj * sj * inverse_n).max(0.0);
                let inverse_denominator = 1.0 / (b * c + VARIANCE_PRODUCT_FLOOR * (n * n) * (n * n));
                let a_weight = 2.0 * a * inverse_denominator * mask[i];
                let b_weight = -a_weight * a * c * inverse_denominator;
                row_total += mask[i] - 0.5 * a * a_weight;
                weight_a[i] = a_weight;
                weight_b[i] = b_weight;
                weight_c[i] = (a_weight * sj + b_weight * si) * inverse_n;
            }
            total += row_total as f64;
        }
        total
    });
    drop(sums);
    let weight_sums = plane_window_sums::<3>(boxed.shape, radius, |j, k, rows| {
        for (c, row) in rows.iter_mut().enumerate() {
            row.copy_from_slice(&weights[(3 * k + c) * plane + j * bx..][..bx]);
        }
    });
    drop(weights);
    // The cost is 1 − cc: minus ∂Σcc/∂I.
    let [nx, ny, _] = shape;
    let planes = nx * ny * bounds[2].start..nx * ny * bounds[2].end;
    for_each_plane_along_z(&weight_sums, radius, &mut gradient[planes], nx * ny, |k, summed, gradient| {
        for j in 0..by {
            let range = boxed.row(j, k);
            let in_plane = range.start % (nx * ny);
            let [box_a, box_b, box_c] = summed.each_ref().map(|sums| &sums[j * bx..][..bx]);
            let (warped, target) = (&warped[range.clone()], &target[range]);
            for (i, g) in gradient[in_plane..in_plane + bx].iter_mut().enumerate() {
                let (a, b) = (warped[i] - offset, target[i] - offset);
                *g = -(b * box_a[i] + a * box_b[i] - box_c[i]);
            }
        }
        0.0
    });
    (total, gradient)
}

/// A box of a grid: its shape and where each of its rows lies in the grid's voxels.
struct BoxGrid {
    grid: [usize; 3],
    bounds: [Range<usize>; 3],
    shape: [usize; 3],
}

impl BoxGrid {
    fn new(grid: [usize; 3], bounds: [Range<usize>; 3]) -> Self {
        let shape = bounds.clone().map(|r| r.len());
        BoxGrid { grid, bounds, shape }
    }

    fn is_empty(&self) -> bool {
        self.shape.contains(&0)
    }

    /// The grid's voxels of the box's row (j, k).
    fn row(&self, j: usize, k: usize) -> Range<usize> {
        let start = self.bounds[0].start
            + self.grid[0] * (self.bounds[1].start + j + self.grid[1] * (self.bounds[2].start + k));
        start..start + self.shape[0]
    }

    /// Every row (j, k) of the box.
    fn rows(&self) -> Vec<(usize, usize)> {
        (0..self.shape[2]).flat_map(|k| (0..self.shape[1]).map(move |j| (j, k))).collect()
    }
}

/// C channels on a box, plane after plane, each plane holding the channels one after another.
struct Channels<const C: usize> {
    values: Vec<f32>,
    plane: usize,
}

impl<const C: usize> Channels<C> {
    fn plane(&self, k: usize, c: usize) -> &[f32] {
        &self.values[(C * k + c) * self.plane..][..self.plane]
    }
}

/// C channels' window sums within each plane of a box of `shape` (along x, then y): `fill(j, k,
/// rows)` writes row (j, k) of every channel.
fn plane_window_sums<const C: usize>(
    shape: [usize; 3],
    radius: usize,
    fill: impl Fn(usize, usize, &mut [Vec<f32>; C]) + Sync,
) -> Channels<C> {
    let [bx, by, bz] = shape;
    let plane = bx * by;
    let mut values = vec![0f32; C * plane * bz];
    values.par_chunks_mut(C * plane).enumerate().for_each_init(
        || (std::array::from_fn::<_, C, _>(|_| vec![0f32; bx]), vec![0f32; C * plane]),
        |(rows, along_x), (k, out)| {
            for j in 0..by {
                fill(j, k, rows);
                for (c, row) in rows.iter().enumerate() {
                    row_window_sums(row, &mut along_x[c * plane + j * bx..][..bx], radius);
                }
            }
            for (along_x, out) in along_x.chunks(plane).zip(out.chunks_mut(plane)) {
                window_sums(along_x, out, bx, radius);
            }
        },
    );
    Channels { values, plane }
}

/// Visits the planes of a box of C channels (`sums`, summed within each plane) in parallel
/// runs of consecutive planes: `visit(k, summed, out)` gets plane k of each channel summed along
/// z over the planes within `radius` (cut at the box's ends), and the `stride` values of `out`
/// that belong to plane k. Along a run the sums slide: each plane adds the one entering the
/// window and removes the one leaving it. Returns the sum of what `visit` returns.
fn for_each_plane_along_z<const C: usize>(
    sums: &Channels<C>,
    radius: usize,
    out: &mut [f32],
    stride: usize,
    visit: impl Fn(usize, &[Vec<f32>; C], &mut [f32]) -> f64 + Sync,
) -> f64 {
    let planes = sums.values.len() / (C * sums.plane);
    assert_eq!(out.len(), planes * stride, "one part of the output per plane");
    let run = planes.div_ceil(2 * rayon::current_num_threads().max(1)).max(1);
    let totals = out.par_chunks_mut(run * stride).enumerate().map(|(chunk, out)| {
        let mut summed: [Vec<f32>; C] = std::array::from_fn(|_| vec![0f32; sums.plane]);
        let mut total = 0.0;
        for (k, out) in (chunk * run..).zip(out.chunks_mut(stride)) {
            for (c, summed) in summed.iter_mut().enumerate() {
                if k == chunk * run {
                    summed.fill(0.0);
                    for source in k.saturating_sub(radius)..=(k + radius).min(planes - 1) {
                        summed.iter_mut().zip(sums.plane(source, c)).for_each(|(s, v)| *s += v);
                    }
                    continue;
                }
                match (k + radius < planes, k > radius) {
                    (true, true) => summed
                        .iter_mut()
                        .zip(sums.plane(k + radius, c).iter().zip(sums.plane(k - radius - 1, c)))
                        .for_each(|(s, (entering, leaving))| *s += entering - leaving),
                    (true, false) => summed.iter_mut().zip(sums.plane(k + radius, c)).for_each(|(s, v)| *s += v),
                    (false, true) => summed.iter_mut().zip(sums.plane(k - radius - 1, c)).for_each(|(s, v)| *s -= v),
                    (false, false) => {}
                }
            }
            total += visit(k, &summed, out);
        }
        total
    });
    crate::parallel::ordered_sum(totals)
}

/// The number of voxels along each axis in each voxel's window, cut at the border; a window
/// holds the product.
struct WindowSizes {
    x: Vec<usize>,
    y: Vec<usize>,
    z: Vec<usize>,
}

impl WindowSizes {
    fn new(shape: [usize; 3], radius: usize) -> Self {
        let along = |n: usize| -> Vec<usize> {
            (0..n).map(|i| (i + radius).min(n - 1) + 1 - i.saturating_sub(radius)).collect()
        };
        WindowSizes { x: along(shape[0]), y: along(shape[1]), z: along(shape[2]) }
    }
}

/// Each value of `out` the sum of `input`'s values within `radius` of it, cut at the ends: the
/// interior as 2 radius + 1 shifted slices added (which vectorises), the ends one by one.
fn row_window_sums(input: &[f32], out: &mut [f32], radius: usize) {
    let n = input.len();
    let direct = |i: usize| input[i.saturating_sub(radius)..=(i + radius).min(n - 1)].iter().sum::<f32>();
    if n <= 2 * radius + 1 {
        for (i, out) in out.iter_mut().enumerate() {
            *out = direct(i);
        }
        return;
    }
    let inner = n - 2 * radius;
    let interior = &mut out[radius..n - radius];
    interior.copy_from_slice(&input[..inner]);
    for shift in 1..=2 * radius {
        interior.iter_mut().zip(&input[shift..shift + inner]).for_each(|(o, v)| *o += v);
    }
    for i in (0..radius).chain(n - radius..n) {
        out[i] = direct(i);
    }
}

/// `out`'s rows of `width` each the sum of the rows of `input`
/// within `radius`, cut at the ends.
fn window_sums(input: &[f32], out: &mut [f32], width: usize, radius: usize) {
    let rows = input.len() / width;
    for (j, out) in out.chunks_mut(width).enumerate() {
        let (first, last) = (j.saturating_sub(radius), (j + radius).min(rows - 1));
        out.copy_from_slice(&input[first * width..(first + 1) * width]);
        for source in first + 1..=last {
            out.iter_mut().zip(&input[source * width..(source + 1) * width]).for_each(|(o, v)| *o += v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(shape: [usize; 3], seed: f32) -> Vec<f32> {
        let [nx, ny, _] = shape;
        (0..shape.iter().product::<usize>())
            .map(|n| {
                let (i, j, k) = ((n % nx) as f32, (n / nx % ny) as f32, (n / (nx * ny)) as f32);
                (0.7 * i + seed).sin() * (0.5 * j - seed).cos()
                    + 0.4 * (0.9 * k * seed).sin()
                    + 0.1 * ((n * 7919 % 17) as f32 / 17.0)
            })
            .collect()
    }

    /// Box sums against a brute-force sum, at the border too.
    #[test]
    fn box_sum_matches_brute_force() {
        let shape = [9, 7, 6];
        let values = pattern(shape, 0.3);
        for radius in [0, 1, 2, 4] {
            let summed = box_sum(&values, shape, radius);
            let sizes = WindowSizes::new(shape, radius);
            for k in 0..shape[2] {
                for j in 0..shape[1] {
                    for i in 0..shape[0] {
                        let (mut expected, mut count) = (0.0f64, 0);
                        for c in k.saturating_sub(radius)..=(k + radius).min(shape[2] - 1) {
                            for b in j.saturating_sub(radius)..=(j + radius).min(shape[1] - 1) {
                                for a in i.saturating_sub(radius)..=(i + radius).min(shape[0] - 1) {
                                    expected += values[a + shape[0] * (b + shape[1] * c)] as f64;
                                    count += 1;
                                }
                            }
                        }
                        let n = i + shape[0] * (j + shape[1] * k);
                        assert!((summed[n] as f64 - expected).abs() < 1e-4, "r {radius} at {i},{j},{k}");
                        assert_eq!(sizes.x[i] * sizes.y[j] * sizes.z[k], count);
                    }
                }
            }
        }
    }

    /// Σ of `values` over the voxels within `radius` along each axis (cut at the border), as
    /// the kernel sums its windows.
    fn box_sum(values: &[f32], shape: [usize; 3], radius: usize) -> Vec<f32> {
        let [nx, ny, nz] = shape;
        let sums = plane_window_sums::<1>(shape, radius, |j, k, rows| {
            rows[0].copy_from_slice(&values[nx * (j + ny * k)..][..nx]);
        });
        let mut out = vec![0f32; values.len()];
        for_each_plane_along_z(&sums, radius, &mut out, nx * ny, |_, summed, plane| {
            plane.copy_from_slice(&summed[0]);
            0.0
        });
        assert_eq!(out.len(), nx * ny * nz);
        out
    }

    fn whole(shape: [usize; 3]) -> [Range<usize>; 3] {
        shape.map(|n| 0..n)
    }

    /// cc is 1 wherever one image is an affine grey-value map of the other (cost 0; each
    /// voxel's cost is at least 0, so a sum near 0 is 0 everywhere), lower for unrelated images.
    #[test]
    fn blind_to_an_affine_grey_value_change() {
        let shape = [12, 10, 8];
        let voxels = shape.iter().product::<usize>() as f64;
        let target = pattern(shape, 0.3);
        let mapped: Vec<f32> = target.iter().map(|v| 1.7 * v - 0.4).collect();
        let (cost, _) = cost_and_gradient(&mapped, &target, shape, &whole(shape), 2, |_| true);
        assert!(cost.abs() / voxels < 1e-4, "mean cost {}", cost / voxels);
        let other = pattern(shape, 1.9);
        let (cost, _) = cost_and_gradient(&other, &target, shape, &whole(shape), 2, |_| true);
        assert!(cost / voxels > 0.3);
    }

    /// Within a box that holds the counted voxels' windows, the cost and gradient are those of
    /// the whole grid; outside it the gradient is 0, and the grid's border still cuts windows.
    #[test]
    fn a_box_around_the_counted_windows_changes_nothing() {
        let shape = [14, 11, 9];
        let (warped, target) = (pattern(shape, 0.3), pattern(shape, 0.8));
        let [nx, ny, _] = shape;
        // Counted: x in 0..6 (at the grid's border), y in 3..7, z in 2..5; radius 2.
        let counted = |n: usize| {
            let (i, j, k) = (n % nx, n / nx % ny, n / (nx * ny));
            i < 6 && (3..7).contains(&j) && (2..5).contains(&k) && !n.is_multiple_of(3)
        };
        let bounds = [0..8, 1..9, 0..7];
        let (whole_cost, whole_gradient) = cost_and_gradient(&warped, &target, shape, &whole(shape), 2, counted);
        let (box_cost, box_gradient) = cost_and_gradient(&warped, &target, shape, &bounds, 2, counted);
        assert!((whole_cost - box_cost).abs() < 1e-5 * whole_cost.abs().max(1.0), "{whole_cost} vs {box_cost}");
        for (n, (w, b)) in whole_gradient.iter().zip(&box_gradient).enumerate() {
            assert!((w - b).abs() < 1e-4 * w.abs().max(1.0), "voxel {n}: {w} vs {b}");
        }
        assert!(whole_gradient.iter().any(|&g| g != 0.0));
    }

    /// The gradient with respect to the warped image against central finite differences, with
    /// some windows not counted.
    #[test]
    fn gradient_matches_finite_differences() {
        let shape = [10, 9, 8];
        let (warped, target) = (pattern(shape, 0.3), pattern(shape, 0.8));
        let counted = |n: usize| !n.is_multiple_of(5);
        let total = |w: &[f32]| -> f64 { cost_and_gradient(w, &target, shape, &whole(shape), 2, counted).0 };
        let (_, gradient) = cost_and_gradient(&warped, &target, shape, &whole(shape), 2, counted);
        for n in [0, 37, 123, 400, 719] {
            let h = 1e-2f32;
            let mut plus = warped.clone();
            plus[n] += h;
            let mut minus = warped.clone();
            minus[n] -= h;
            let numeric = (total(&plus) - total(&minus)) / (2.0 * h as f64);
            assert!(
                (gradient[n] as f64 - numeric).abs() < 2e-2 * numeric.abs().max(1e-2),
                "voxel {n}: analytic {} vs finite differences {numeric}",
                gradient[n]
            );
        }
    }
}

//! Local normalised cross-correlation (LNCC): the squared correlation of two images within a
//! cubic window around each voxel, cc(x) = cov(I, J)² / (var I · var J + ε), in [0, 1]. It asks
//! only that the images vary together nearby, whatever their local grey scale: a pseudo-CT's
//! bone a tenth too dense, a soft-tissue offset or a bias field leave it unchanged, and the few
//! HU between grey and white matter count as much as a bone edge. The windows are box sums over
//! the voxels within `radius` along each axis, cut at the grid's border (a box sum with zero
//! padding is its own adjoint, which the gradient uses).

use rayon::prelude::*;

/// ε in cc's denominator, on the product of the two windows' variances (density units², i.e.
/// a standard deviation of about 0.003, 3 HU): a window flat in either image has cc ≈ 0 instead
/// of a ratio of two roundings.
pub const VARIANCE_PRODUCT_FLOOR: f64 = 1e-10;

/// Σ over counted voxels x of (1 − cc(x)) and its gradient with respect to each voxel of
/// `warped` (I; `target` is J, held fixed). `counted(n)` says whether voxel n's window counts.
pub fn cost_and_gradient(
    warped: &[f32],
    target: &[f32],
    shape: [usize; 3],
    radius: usize,
    counted: impl Fn(usize) -> bool + Sync,
) -> (Vec<f32>, Vec<f32>) {
    let voxels = shape.iter().product::<usize>();
    assert_eq!(warped.len(), voxels, "the warped image on the grid");
    assert_eq!(target.len(), voxels, "the target image on the grid");
    let [nx, ny, _] = shape;
    let window = WindowSizes::new(shape, radius);
    let sum_i = box_sum(warped.to_vec(), shape, radius);
    let sum_j = box_sum(target.to_vec(), shape, radius);
    let sum_ii = box_sum(warped.par_iter().map(|v| v * v).collect(), shape, radius);
    let sum_jj = box_sum(target.par_iter().map(|v| v * v).collect(), shape, radius);
    let sum_ij = box_sum(warped.par_iter().zip(target).map(|(i, j)| i * j).collect(), shape, radius);
    // Per voxel x: the cost 1 − cc(x), A = ∂cc/∂a and B = 2 ∂cc/∂b, with a, b, c the window's
    // centred sums of IJ, I² and J² (∂a/∂I(y) = J(y) − μ_J(x), ∂b/∂I(y) = 2 (I(y) − μ_I(x))),
    // and A μ_J, B μ_I; the buffers of the sums are reused for them.
    let mut cost = vec![0f32; voxels];
    let (mut a_weight, mut b_weight) = (sum_ij, sum_ii);
    let (mut a_mean_j, mut b_mean_i) = (sum_jj, vec![0f32; voxels]);
    cost.par_chunks_mut(nx)
        .zip(a_weight.par_chunks_mut(nx))
        .zip(b_weight.par_chunks_mut(nx))
        .zip(a_mean_j.par_chunks_mut(nx))
        .zip(b_mean_i.par_chunks_mut(nx))
        .enumerate()
        .for_each(|(row, ((((cost, a_row), b_row), a_mean_j), b_mean_i))| {
            let across = window.y[row % ny] * window.z[row / ny];
            for i in 0..nx {
                let x = row * nx + i;
                if !counted(x) {
                    (cost[i], a_row[i], b_row[i], a_mean_j[i], b_mean_i[i]) = (0.0, 0.0, 0.0, 0.0, 0.0);
                    continue;
                }
                let n = (window.x[i] * across) as f64;
                let (si, sj) = (sum_i[x] as f64, sum_j[x] as f64);
                let a = a_row[i] as f64 - si * sj / n;
                let b = (b_row[i] as f64 - si * si / n).max(0.0);
                let c = (a_mean_j[i] as f64 - sj * sj / n).max(0.0);
                let denominator = b * c + VARIANCE_PRODUCT_FLOOR * n.powi(4);
                let cc = a * a / denominator;
                let a_weight = 2.0 * a / denominator;
                let b_weight = -2.0 * a * a * c / (denominator * denominator);
                cost[i] = (1.0 - cc) as f32;
                (a_row[i], b_row[i]) = (a_weight as f32, b_weight as f32);
                a_mean_j[i] = (a_weight * sj / n) as f32;
                b_mean_i[i] = (b_weight * si / n) as f32;
            }
        });
    drop((sum_i, sum_j));
    // ∂Σcc/∂I(y) = Σ_{x near y} A(x)(J(y) − μ_J(x)) + B(x)(I(y) − μ_I(x)); the cost is minus that.
    let a_box = box_sum(a_weight, shape, radius);
    let b_box = box_sum(b_weight, shape, radius);
    let a_mean_j = box_sum(a_mean_j, shape, radius);
    let b_mean_i = box_sum(b_mean_i, shape, radius);
    let gradient = (0..voxels)
        .into_par_iter()
        .map(|y| -(target[y] * a_box[y] - a_mean_j[y] + warped[y] * b_box[y] - b_mean_i[y]))
        .collect();
    (cost, gradient)
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

/// Σ of `values` over the voxels within `radius` along each axis (cut at the border): along x,
/// then y, then z, each output row (or plane) the sum of the 2 radius + 1 input rows (planes)
/// around it, so that every pass adds whole contiguous rows and each output is independent.
pub fn box_sum(values: Vec<f32>, shape: [usize; 3], radius: usize) -> Vec<f32> {
    let [nx, ny, nz] = shape;
    assert_eq!(values.len(), nx * ny * nz, "values on the grid");
    if radius == 0 {
        return values;
    }
    let plane = nx * ny;
    let mut along_xy = vec![0f32; values.len()];
    along_xy.par_chunks_mut(plane).zip(values.par_chunks(plane)).for_each_init(
        || vec![0f32; plane],
        |along_x, (out, input)| {
            for (out, input) in along_x.chunks_mut(nx).zip(input.chunks(nx)) {
                row_window_sums(input, out, radius);
            }
            window_sums(along_x, out, nx, radius);
        },
    );
    let mut out = values;
    out.par_chunks_mut(plane).enumerate().for_each(|(k, out)| {
        out.fill(0.0);
        for source in k.saturating_sub(radius)..=(k + radius).min(nz - 1) {
            out.iter_mut().zip(&along_xy[source * plane..(source + 1) * plane]).for_each(|(o, v)| *o += v);
        }
    });
    out
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
            let summed = box_sum(values.clone(), shape, radius);
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

    /// cc is 1 wherever one image is an affine grey-value map of the other (cost 0), lower for
    /// unrelated images.
    #[test]
    fn blind_to_an_affine_grey_value_change() {
        let shape = [12, 10, 8];
        let target = pattern(shape, 0.3);
        let mapped: Vec<f32> = target.iter().map(|v| 1.7 * v - 0.4).collect();
        let (cost, _) = cost_and_gradient(&mapped, &target, shape, 2, |_| true);
        assert!(cost.iter().all(|&c| c.abs() < 1e-3), "{:?}", cost.iter().cloned().fold(0f32, f32::max));
        let other = pattern(shape, 1.9);
        let (cost, _) = cost_and_gradient(&other, &target, shape, 2, |_| true);
        assert!(cost.iter().sum::<f32>() / cost.len() as f32 > 0.3);
    }

    /// The gradient with respect to the warped image against central finite differences, with
    /// some windows not counted.
    #[test]
    fn gradient_matches_finite_differences() {
        let shape = [10, 9, 8];
        let (warped, target) = (pattern(shape, 0.3), pattern(shape, 0.8));
        let counted = |n: usize| !n.is_multiple_of(5);
        let total =
            |w: &[f32]| -> f64 { cost_and_gradient(w, &target, shape, 2, counted).0.iter().map(|&c| c as f64).sum() };
        let (_, gradient) = cost_and_gradient(&warped, &target, shape, 2, counted);
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

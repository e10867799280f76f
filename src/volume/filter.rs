//! Image filters on x-fastest voxel arrays.

use rayon::prelude::*;

/// Separable Gaussian blur with a kernel truncated at 3σ; borders replicate.
pub fn gaussian_blur(voxels: &mut [f32], shape: [usize; 3], sigma: f32) {
    gaussian_blur_per_axis(voxels, shape, [sigma; 3]);
}

/// Separable Gaussian blur with its own σ (voxels) along each axis, each kernel truncated at
/// 3σ; borders replicate. An axis with σ ≤ 0 is left as it is.
pub fn gaussian_blur_per_axis(voxels: &mut [f32], shape: [usize; 3], sigma: [f32; 3]) {
    let [nx, ny, nz] = shape;
    let plane = nx * ny;
    assert_eq!(voxels.len(), plane * nz, "voxels for the shape");
    let kernel = |sigma: f32| {
        let radius = (3.0 * sigma).ceil() as isize;
        let weights: Vec<f32> = (-radius..=radius).map(|x| (-(x * x) as f32 / (2.0 * sigma * sigma)).exp()).collect();
        let total: f32 = weights.iter().sum();
        (radius, weights.iter().map(|w| w / total).collect::<Vec<f32>>())
    };
    // The node `offset` taps away from `index` on an axis of `n`, the border replicated.
    let tap = |index: usize, offset: usize, n: usize, radius: isize| {
        (index as isize + offset as isize - radius).clamp(0, n as isize - 1) as usize
    };
    if sigma[0] > 0.0 {
        // Along x: each row from a copy padded with its border values.
        let (radius, weights) = kernel(sigma[0]);
        voxels.par_chunks_mut(nx).for_each_init(Vec::new, |padded, row| {
            padded.clear();
            padded.extend((0..nx + 2 * radius as usize).map(|i| row[tap(i, 0, nx, radius)]));
            for (i, out) in row.iter_mut().enumerate() {
                *out = weights.iter().zip(&padded[i..]).map(|(w, v)| w * v).sum();
            }
        });
    }
    // Along y and z: whole rows (planes) weighted and added, which vectorises.
    if sigma[1] > 0.0 {
        let (radius, weights) = kernel(sigma[1]);
        let source = voxels.to_vec();
        voxels.par_chunks_mut(plane).zip(source.par_chunks(plane)).for_each(|(out_plane, in_plane)| {
            for (j, out_row) in out_plane.chunks_mut(nx).enumerate() {
                out_row.fill(0.0);
                for (t, w) in weights.iter().enumerate() {
                    let q = tap(j, t, ny, radius);
                    out_row.iter_mut().zip(&in_plane[q * nx..(q + 1) * nx]).for_each(|(o, v)| *o += w * v);
                }
            }
        });
    }
    if sigma[2] > 0.0 {
        let (radius, weights) = kernel(sigma[2]);
        let source = voxels.to_vec();
        voxels.par_chunks_mut(plane).enumerate().for_each(|(k, out_plane)| {
            out_plane.fill(0.0);
            for (t, w) in weights.iter().enumerate() {
                let q = tap(k, t, nz, radius);
                out_plane.iter_mut().zip(&source[q * plane..(q + 1) * plane]).for_each(|(o, v)| *o += w * v);
            }
        });
    }
}

/// Grows a mask by a box: afterwards a voxel is set when any voxel within `reach[d]` voxels
/// along each axis d was. One axis at a time, each line by a running count of its set voxels,
/// so the cost does not grow with the reach.
pub fn dilate(mask: &mut [bool], shape: [usize; 3], reach: [usize; 3]) {
    assert_eq!(mask.len(), shape.iter().product::<usize>(), "mask for the shape");
    let [nx, ny, _] = shape;
    let strides = [1, nx, nx * ny];
    for d in 0..3 {
        if reach[d] == 0 {
            continue;
        }
        let (n, stride) = (shape[d], strides[d]);
        let source = mask.to_vec();
        mask.par_chunks_mut(nx * ny).enumerate().for_each(|(k, plane)| {
            for j in 0..ny {
                for i in 0..nx {
                    // Along axis d the voxel sits at c; its line starts at `line`.
                    let c = [i, j, k][d];
                    let line = i + nx * (j + ny * k) - c * stride;
                    let (low, high) = (c.saturating_sub(reach[d]), (c + reach[d]).min(n - 1));
                    plane[i + nx * j] = (low..=high).any(|q| source[line + q * stride]);
                }
            }
        });
    }
}

/// The voxels of `passable` that a path of face neighbours within `passable` links to the
/// grid's border (a flood fill from the border).
pub fn connected_to_border(passable: &[bool], shape: [usize; 3]) -> Vec<bool> {
    let [nx, ny, nz] = shape;
    assert_eq!(passable.len(), nx * ny * nz, "mask for the shape");
    let mut reached = vec![false; passable.len()];
    let mut stack: Vec<usize> = Vec::new();
    let on_border =
        |i: usize, j: usize, k: usize| i == 0 || j == 0 || k == 0 || i + 1 == nx || j + 1 == ny || k + 1 == nz;
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let n = i + nx * (j + ny * k);
                if passable[n] && on_border(i, j, k) && !reached[n] {
                    reached[n] = true;
                    stack.push(n);
                }
            }
        }
    }
    while let Some(n) = stack.pop() {
        let (i, j, k) = (n % nx, (n / nx) % ny, n / (nx * ny));
        let mut visit = |m: usize| {
            if passable[m] && !reached[m] {
                reached[m] = true;
                stack.push(m);
            }
        };
        if i > 0 {
            visit(n - 1)
        }
        if i + 1 < nx {
            visit(n + 1)
        }
        if j > 0 {
            visit(n - nx)
        }
        if j + 1 < ny {
            visit(n + nx)
        }
        if k > 0 {
            visit(n - nx * ny)
        }
        if k + 1 < nz {
            visit(n + nx * ny)
        }
    }
    reached
}

/// The largest set of `mask`'s voxels linked by face neighbours (all false for an empty mask).
pub fn largest_component(mask: &[bool], shape: [usize; 3]) -> Vec<bool> {
    let [nx, ny, nz] = shape;
    assert_eq!(mask.len(), nx * ny * nz, "mask for the shape");
    let mut label = vec![0u32; mask.len()];
    let (mut best, mut best_size, mut next) = (0u32, 0usize, 0u32);
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || label[start] != 0 {
            continue;
        }
        next += 1;
        label[start] = next;
        stack.push(start);
        let mut size = 0;
        while let Some(n) = stack.pop() {
            size += 1;
            let (i, j, k) = (n % nx, (n / nx) % ny, n / (nx * ny));
            let neighbours = [
                (i > 0).then(|| n - 1),
                (i + 1 < nx).then(|| n + 1),
                (j > 0).then(|| n - nx),
                (j + 1 < ny).then(|| n + nx),
                (k > 0).then(|| n - nx * ny),
                (k + 1 < nz).then(|| n + nx * ny),
            ];
            for m in neighbours.into_iter().flatten() {
                if mask[m] && label[m] == 0 {
                    label[m] = next;
                    stack.push(m);
                }
            }
        }
        if size > best_size {
            (best, best_size) = (next, size);
        }
    }
    label.iter().map(|&l| best_size > 0 && l == best).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Equal to the blur written voxel by voxel (each output the weighted sum of its replicated
    /// neighbours along one axis at a time), on an odd grid with an axis of one voxel and one
    /// shorter than the kernel; a constant stays constant.
    #[test]
    fn equals_the_direct_sum() {
        for (shape, sigma) in [([13, 7, 9], 1.3f32), ([5, 1, 11], 2.5), ([3, 4, 2], 0.6)] {
            let count = shape.iter().product::<usize>();
            let values: Vec<f32> = (0..count).map(|n| ((n * 7919) % 101) as f32 / 10.0 - 3.0).collect();
            let radius = (3.0 * sigma).ceil() as isize;
            let raw: Vec<f32> = (-radius..=radius).map(|x| (-(x * x) as f32 / (2.0 * sigma * sigma)).exp()).collect();
            let weights: Vec<f64> = raw.iter().map(|w| (*w / raw.iter().sum::<f32>()) as f64).collect();
            let mut expected: Vec<f64> = values.iter().map(|v| *v as f64).collect();
            for axis in 0..3 {
                let source = expected.clone();
                for k in 0..shape[2] {
                    for j in 0..shape[1] {
                        for i in 0..shape[0] {
                            let mut total = 0.0;
                            for (t, w) in weights.iter().enumerate() {
                                let mut at = [i as isize, j as isize, k as isize];
                                at[axis] = (at[axis] + t as isize - radius).clamp(0, shape[axis] as isize - 1);
                                total += w * source
                                    [at[0] as usize + shape[0] * (at[1] as usize + shape[1] * at[2] as usize)];
                            }
                            expected[i + shape[0] * (j + shape[1] * k)] = total;
                        }
                    }
                }
            }
            let mut blurred = values.clone();
            gaussian_blur(&mut blurred, shape, sigma);
            for (got, want) in blurred.iter().zip(&expected) {
                assert!((*got as f64 - want).abs() < 1e-5, "{shape:?} σ {sigma}: {got} vs {want}");
            }
            let mut constant = vec![2.5f32; count];
            gaussian_blur(&mut constant, shape, sigma);
            assert!(constant.iter().all(|v| (v - 2.5).abs() < 1e-5), "{shape:?}: a constant changed");
        }
    }

    /// Per-axis σ equals blurring one axis at a time with the isotropic blur of a 1-voxel-thick
    /// direction: x alone on a volume blurred only along x matches a row blurred by hand.
    #[test]
    fn per_axis_blur_leaves_other_axes_alone() {
        let shape = [9, 6, 5];
        let values: Vec<f32> = (0..270).map(|n| ((n * 31) % 17) as f32).collect();
        let mut along_x = values.clone();
        gaussian_blur_per_axis(&mut along_x, shape, [1.2, 0.0, 0.0]);
        for row in 0..30 {
            let mut expected = values[row * 9..(row + 1) * 9].to_vec();
            gaussian_blur(&mut expected, [9, 1, 1], 1.2);
            for (got, want) in along_x[row * 9..(row + 1) * 9].iter().zip(&expected) {
                assert!((got - want).abs() < 1e-5, "row {row}: {got} vs {want}");
            }
        }
        let mut all = values.clone();
        gaussian_blur_per_axis(&mut all, shape, [0.8; 3]);
        let mut isotropic = values;
        gaussian_blur(&mut isotropic, shape, 0.8);
        assert_eq!(all, isotropic);
    }

    /// Each voxel of the dilated mask is set exactly when a set voxel lies within the box.
    #[test]
    fn dilation_equals_the_box_search() {
        let shape = [11, 7, 6];
        let count = 11 * 7 * 6;
        let mask: Vec<bool> = (0..count).map(|n| (n * 7919) % 97 == 0).collect();
        let reach = [2, 1, 0];
        let mut grown = mask.clone();
        dilate(&mut grown, shape, reach);
        for k in 0..6i64 {
            for j in 0..7i64 {
                for i in 0..11i64 {
                    let mut expected = false;
                    for c in k - reach[2] as i64..=k + reach[2] as i64 {
                        for b in j - reach[1] as i64..=j + reach[1] as i64 {
                            for a in i - reach[0] as i64..=i + reach[0] as i64 {
                                if (0..11).contains(&a) && (0..7).contains(&b) && (0..6).contains(&c) {
                                    expected |= mask[(a + 11 * (b + 7 * c)) as usize];
                                }
                            }
                        }
                    }
                    assert_eq!(grown[(i + 11 * (j + 7 * k)) as usize], expected, "{i},{j},{k}");
                }
            }
        }
    }

    /// A hollow box: its inside is not linked to the border, the air around it is; a hole in
    /// one wall links the inside too.
    #[test]
    fn flood_fill_stops_at_walls() {
        let shape = [9, 9, 9];
        let wall = |i: usize, j: usize, k: usize| {
            let on = |v: usize| v == 2 || v == 6;
            (2..=6).contains(&i) && (2..=6).contains(&j) && (2..=6).contains(&k) && (on(i) || on(j) || on(k))
        };
        let mut passable: Vec<bool> = (0..729).map(|n| !wall(n % 9, (n / 9) % 9, n / 81)).collect();
        let reached = connected_to_border(&passable, shape);
        assert!(reached[0] && !reached[4 + 9 * (4 + 9 * 4)] && !reached[2 + 9 * (4 + 9 * 4)]);
        assert_eq!(reached.iter().filter(|&&r| r).count(), 729 - 125);
        passable[2 + 9 * (4 + 9 * 4)] = true;
        assert!(connected_to_border(&passable, shape)[4 + 9 * (4 + 9 * 4)]);
    }

    #[test]
    fn largest_component_keeps_the_biggest_piece() {
        let shape = [10, 4, 3];
        let mut mask = vec![false; 120];
        for n in [0, 1, 2, 10, 11] {
            mask[n] = true; // five voxels along x and y at k = 0
        }
        for n in [6, 7, 46, 47, 86, 87] {
            mask[n] = true; // six voxels through all three planes
        }
        let kept = largest_component(&mask, shape);
        assert_eq!(kept.iter().filter(|&&k| k).count(), 6);
        assert!(kept[86] && !kept[0]);
        assert!(largest_component(&[false; 120], shape).iter().all(|k| !k));
    }
}

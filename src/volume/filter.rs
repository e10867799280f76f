//! Image filters on x-fastest voxel arrays.

use rayon::prelude::*;

/// Separable Gaussian blur with a kernel truncated at 3σ; borders replicate.
pub fn gaussian_blur(voxels: &mut [f32], shape: [usize; 3], sigma: f32) {
    if sigma <= 0.0 {
        return;
    }
    let radius = (3.0 * sigma).ceil() as isize;
    let weights: Vec<f32> = (-radius..=radius).map(|x| (-(x * x) as f32 / (2.0 * sigma * sigma)).exp()).collect();
    let total: f32 = weights.iter().sum();
    let weights: Vec<f32> = weights.iter().map(|w| w / total).collect();
    let [nx, ny, nz] = shape;
    let plane = nx * ny;
    assert_eq!(voxels.len(), plane * nz, "voxels for the shape");
    // The node `offset` taps away from `index` on an axis of `n`, the border replicated.
    let tap = |index: usize, offset: usize, n: usize| {
        (index as isize + offset as isize - radius).clamp(0, n as isize - 1) as usize
    };
    // Along x: each row from a copy padded with its border values.
    voxels.par_chunks_mut(nx).for_each_init(Vec::new, |padded, row| {
        padded.clear();
        padded.extend((0..nx + 2 * radius as usize).map(|i| row[tap(i, 0, nx)]));
        for (i, out) in row.iter_mut().enumerate() {
            *out = weights.iter().zip(&padded[i..]).map(|(w, v)| w * v).sum();
        }
    });
    // Along y and z: whole rows (planes) weighted and added, which vectorises.
    let source = voxels.to_vec();
    voxels.par_chunks_mut(plane).zip(source.par_chunks(plane)).for_each(|(out_plane, in_plane)| {
        for (j, out_row) in out_plane.chunks_mut(nx).enumerate() {
            out_row.fill(0.0);
            for (t, w) in weights.iter().enumerate() {
                let q = tap(j, t, ny);
                out_row.iter_mut().zip(&in_plane[q * nx..(q + 1) * nx]).for_each(|(o, v)| *o += w * v);
            }
        }
    });
    let source = voxels.to_vec();
    voxels.par_chunks_mut(plane).enumerate().for_each(|(k, out_plane)| {
        out_plane.fill(0.0);
        for (t, w) in weights.iter().enumerate() {
            let q = tap(k, t, nz);
            out_plane.iter_mut().zip(&source[q * plane..(q + 1) * plane]).for_each(|(o, v)| *o += w * v);
        }
    });
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
}

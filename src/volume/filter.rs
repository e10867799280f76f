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
    let strides = [1, shape[0], shape[0] * shape[1]];
    for axis in 0..3 {
        let source = voxels.to_vec();
        let n_axis = shape[axis] as isize;
        voxels.par_iter_mut().enumerate().for_each(|(n, out)| {
            let position = ((n / strides[axis]) % shape[axis]) as isize;
            let base = n as isize - position * strides[axis] as isize;
            *out = weights
                .iter()
                .enumerate()
                .map(|(t, w)| {
                    let q = (position + t as isize - radius).clamp(0, n_axis - 1);
                    w * source[(base + q * strides[axis] as isize) as usize]
                })
                .sum();
        });
    }
}

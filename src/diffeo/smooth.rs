//! v = K⁻¹ ∗ m with K = L², L = −α∇² + γ·Id, applied in the frequency domain (SPEC §3).
//!
//! The FFT is cyclic, so each component is zero-padded by `pad` voxels on every side first,
//! then multiplied by the symbol
//! `K̂⁻¹(j) = [2α Σ_d (1 − cos(2π j_d / N_d)) / Δ_d² + γ]⁻²` on the padded grid, and cropped.
//! K⁻¹ is linear and self-adjoint, so its gradient is itself.

use std::sync::Arc;

use rayon::prelude::*;
use rustfft::num_complex::Complex32;
use rustfft::{Fft, FftPlanner};

use crate::diffeo::VectorField;

/// Parameters of the smoothing operator, defaults from SPEC §3.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SmoothParams {
    pub alpha: f64,
    pub gamma: f64,
    /// Zero padding on every side, voxels.
    pub pad: usize,
    /// Δ_d in the symbol: None for voxel units (the default), Some(spacing in mm) for physical.
    pub spacing_mm: Option<[f64; 3]>,
}

impl Default for SmoothParams {
    fn default() -> Self {
        SmoothParams { alpha: 20.0, gamma: 1.0, pad: 12, spacing_mm: None }
    }
}

/// The smallest power-of-two grid holding a field of `shape` with `pad` zeros on every side.
pub fn padded_power_of_two(shape: [usize; 3], pad: usize) -> [usize; 3] {
    shape.map(|n| (n + 2 * pad).next_power_of_two())
}

/// The symbol l^exponent of L = −α∇² + γ (l its symbol) on a periodic grid of `padded` voxels,
/// x fastest, over frequencies `0..columns` along x (all of them, or the rfft half).
pub fn symbol(params: &SmoothParams, padded: [usize; 3], exponent: i32, columns: usize) -> Vec<f32> {
    let spacing = params.spacing_mm.unwrap_or([1.0; 3]);
    let axis_terms: [Vec<f64>; 3] = std::array::from_fn(|d| {
        (0..padded[d])
            .map(|j| {
                2.0 * params.alpha * (1.0 - (2.0 * std::f64::consts::PI * j as f64 / padded[d] as f64).cos())
                    / (spacing[d] * spacing[d])
            })
            .collect()
    });
    let mut symbol = Vec::with_capacity(columns * padded[1] * padded[2]);
    for k in 0..padded[2] {
        for j in 0..padded[1] {
            for i in 0..columns {
                let l = axis_terms[0][i] + axis_terms[1][j] + axis_terms[2][k] + params.gamma;
                symbol.push(l.powi(exponent) as f32);
            }
        }
    }
    symbol
}

/// K⁻¹ (or K) for one grid shape, with its FFT plans and symbol computed once.
pub struct Smoother {
    shape: [usize; 3],
    padded: [usize; 3],
    pad: usize,
    symbol: Vec<f32>,
    forward: [Arc<dyn Fft<f32>>; 3],
    inverse: [Arc<dyn Fft<f32>>; 3],
}

impl Smoother {
    /// K⁻¹, the smoothing that takes momentum to velocity.
    pub fn new(shape: [usize; 3], params: &SmoothParams) -> Self {
        Self::with_exponent(shape, params, -2)
    }

    /// L⁻¹, the square root of K⁻¹ (same padding and grid): takes whitened coordinates to
    /// velocity in the optimiser.
    pub fn half(shape: [usize; 3], params: &SmoothParams) -> Self {
        Self::with_exponent(shape, params, -1)
    }

    /// K = L² itself, which takes velocity to momentum (same padding and grid).
    pub fn operator_k(shape: [usize; 3], params: &SmoothParams) -> Self {
        Self::with_exponent(shape, params, 2)
    }

    /// The operator whose symbol is l^exponent, l the symbol of L.
    pub(crate) fn with_exponent(shape: [usize; 3], params: &SmoothParams, exponent: i32) -> Self {
        Self::with_padded_shape(shape, params, exponent, shape.map(|n| n + 2 * params.pad))
    }

    /// The same operator on a periodic grid of `padded` voxels (at least the shape plus `pad` on
    /// every side; the field sits `pad` voxels in, zeros fill the rest): what the Burn version
    /// computes with its power-of-two FFTs (`padded_power_of_two`).
    pub fn with_padded_shape(shape: [usize; 3], params: &SmoothParams, exponent: i32, padded: [usize; 3]) -> Self {
        assert!((0..3).all(|d| padded[d] >= shape[d] + 2 * params.pad), "padding smaller than the field plus 2p");
        let symbol = symbol(params, padded, exponent, padded[0]);
        let mut planner = FftPlanner::<f32>::new();
        let forward = padded.map(|n| planner.plan_fft_forward(n));
        let inverse = padded.map(|n| planner.plan_fft_inverse(n));
        Smoother { shape, padded, pad: params.pad, symbol, forward, inverse }
    }

    /// K⁻¹ applied to one scalar component laid out on `shape`.
    pub fn apply_scalar(&self, input: &[f32]) -> Vec<f32> {
        let [nx, ny, nz] = self.shape;
        let [px, py, _] = self.padded;
        let p = self.pad;
        let mut buffer = vec![Complex32::new(0.0, 0.0); self.symbol.len()];
        for k in 0..nz {
            for j in 0..ny {
                let from = nx * (j + ny * k);
                let to = p + px * (j + p + py * (k + p));
                for i in 0..nx {
                    buffer[to + i].re = input[from + i];
                }
            }
        }
        fft3(&mut buffer, self.padded, &self.forward);
        let scale = 1.0 / self.symbol.len() as f32;
        buffer.par_iter_mut().zip(&self.symbol).for_each(|(value, s)| *value *= s * scale);
        fft3(&mut buffer, self.padded, &self.inverse);
        let mut output = vec![0.0f32; input.len()];
        for k in 0..nz {
            for j in 0..ny {
                let to = nx * (j + ny * k);
                let from = p + px * (j + p + py * (k + p));
                for i in 0..nx {
                    output[to + i] = buffer[from + i].re;
                }
            }
        }
        output
    }

    /// K⁻¹ applied to each component of a field.
    pub fn apply(&self, field: &VectorField) -> VectorField {
        assert_eq!(field.shape, self.shape, "smoother built for another grid");
        VectorField { shape: field.shape, components: field.components.each_ref().map(|c| self.apply_scalar(c)) }
    }
}

/// Raw pointer that may cross threads; used where threads write disjoint lines.
#[derive(Clone, Copy)]
struct SharedBuffer(*mut Complex32);
// SAFETY: every use below writes only to indices owned by one task.
unsafe impl Send for SharedBuffer {}
unsafe impl Sync for SharedBuffer {}

impl SharedBuffer {
    /// Through a method, so that closures capture the Sync wrapper, not the bare pointer.
    fn at(self, index: usize) -> *mut Complex32 {
        self.0.wrapping_add(index)
    }
}

/// In-place 3D FFT (unnormalised) of an x-fastest buffer of shape `dims`.
fn fft3(buffer: &mut [Complex32], dims: [usize; 3], plans: &[Arc<dyn Fft<f32>>; 3]) {
    let [nx, ny, nz] = dims;
    // x: contiguous rows.
    buffer.par_chunks_mut(nx * ny).for_each(|plane| {
        let mut scratch = vec![Complex32::new(0.0, 0.0); plans[0].get_inplace_scratch_len()];
        for row in plane.chunks_mut(nx) {
            plans[0].process_with_scratch(row, &mut scratch);
        }
    });
    // y: columns within each z-plane.
    buffer.par_chunks_mut(nx * ny).for_each(|plane| {
        let mut line = vec![Complex32::new(0.0, 0.0); ny];
        let mut scratch = vec![Complex32::new(0.0, 0.0); plans[1].get_inplace_scratch_len()];
        for i in 0..nx {
            for j in 0..ny {
                line[j] = plane[i + nx * j];
            }
            plans[1].process_with_scratch(&mut line, &mut scratch);
            for j in 0..ny {
                plane[i + nx * j] = line[j];
            }
        }
    });
    // z: lines across planes; each task owns the lines of one j.
    let shared = SharedBuffer(buffer.as_mut_ptr());
    (0..ny).into_par_iter().for_each(|j| {
        let mut line = vec![Complex32::new(0.0, 0.0); nz];
        let mut scratch = vec![Complex32::new(0.0, 0.0); plans[2].get_inplace_scratch_len()];
        for i in 0..nx {
            for k in 0..nz {
                // SAFETY: index i + nx*(j + ny*k) < nx*ny*nz = buffer.len(); only task j touches row j.
                line[k] = unsafe { *shared.at(i + nx * (j + ny * k)) };
            }
            plans[2].process_with_scratch(&mut line, &mut scratch);
            for k in 0..nz {
                // SAFETY: as above.
                unsafe { *shared.at(i + nx * (j + ny * k)) = line[k] };
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
            })
            .collect()
    }

    /// Direct cyclic convolution on the padded grid with the kernel's inverse DFT, computed by
    /// a plain O(N²) sum: an independent route to the same operator.
    #[test]
    fn equals_direct_convolution_with_the_kernel() {
        let shape = [5, 4, 3];
        let params = SmoothParams { alpha: 2.0, gamma: 1.0, pad: 2, spacing_mm: Some([1.0, 1.5, 2.0]) };
        let padded = shape.map(|n| n + 2 * params.pad);
        let count: usize = padded.iter().product();
        let spacing = params.spacing_mm.unwrap();
        let symbol = |f: [usize; 3]| -> f64 {
            let l: f64 = (0..3)
                .map(|d| {
                    2.0 * params.alpha * (1.0 - (2.0 * std::f64::consts::PI * f[d] as f64 / padded[d] as f64).cos())
                        / (spacing[d] * spacing[d])
                })
                .sum::<f64>()
                + params.gamma;
            1.0 / (l * l)
        };
        let index = |n: usize| [n % padded[0], (n / padded[0]) % padded[1], n / (padded[0] * padded[1])];
        // Real, even symbol: its inverse DFT is a real sum of cosines.
        let kernel: Vec<f64> = (0..count)
            .map(|x| {
                let xi = index(x);
                (0..count)
                    .map(|f| {
                        let fi = index(f);
                        let phase: f64 = (0..3)
                            .map(|d| 2.0 * std::f64::consts::PI * (fi[d] * xi[d]) as f64 / padded[d] as f64)
                            .sum();
                        symbol(fi) * phase.cos()
                    })
                    .sum::<f64>()
                    / count as f64
            })
            .collect();
        let input = pseudo_random(shape.iter().product(), 3);
        let smoothed = Smoother::new(shape, &params).apply_scalar(&input);
        for (n, value) in smoothed.iter().enumerate() {
            let x = [n % shape[0] + 2, (n / shape[0]) % shape[1] + 2, n / (shape[0] * shape[1]) + 2];
            let mut expected = 0.0;
            for (m, &source) in input.iter().enumerate() {
                let y = [m % shape[0] + 2, (m / shape[0]) % shape[1] + 2, m / (shape[0] * shape[1]) + 2];
                let offset: [usize; 3] = std::array::from_fn(|d| (x[d] + padded[d] - y[d]) % padded[d]);
                expected += kernel[offset[0] + padded[0] * (offset[1] + padded[1] * offset[2])] * source as f64;
            }
            assert!((*value as f64 - expected).abs() < 1e-5, "voxel {n}: {value} vs {expected}");
        }
    }

    #[test]
    fn k_undoes_k_inverse_away_from_the_padding() {
        let shape = [32, 30, 28];
        let params = SmoothParams { alpha: 2.0, gamma: 1.0, pad: 8, spacing_mm: None };
        // Vanishing towards the border, where cropping K's output would otherwise lose the
        // values K spreads into the padding.
        let bump = |p: [f64; 3]| {
            (0..3).map(|d| (std::f64::consts::PI * p[d] / (shape[d] - 1) as f64).sin().powi(4)).product::<f64>()
        };
        let smooth = VectorField::from_fn(shape, |p| {
            [bump(p) * ((0.2 * p[0]).sin() * (0.15 * p[1]).cos() + 0.1 * p[2]), 0.0, 0.0]
        });
        let there_and_back = Smoother::new(shape, &params).apply(&Smoother::operator_k(shape, &params).apply(&smooth));
        let centre = 16 + 32 * (15 + 30 * 14);
        let (a, b) = (there_and_back.components[0][centre], smooth.components[0][centre]);
        assert!((a - b).abs() < 1e-3 * b.abs().max(1.0), "{a} vs {b}");
    }

    #[test]
    fn is_self_adjoint() {
        let shape = [12, 10, 9];
        let smoother = Smoother::new(shape, &SmoothParams { pad: 3, ..SmoothParams::default() });
        let n = shape.iter().product();
        let (a, b) = (pseudo_random(n, 1), pseudo_random(n, 2));
        let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| *p as f64 * *q as f64).sum::<f64>();
        let (left, right) = (dot(&smoother.apply_scalar(&a), &b), dot(&a, &smoother.apply_scalar(&b)));
        assert!((left - right).abs() < 1e-5 * left.abs().max(1e-3), "{left} vs {right}");
    }

    #[test]
    fn a_constant_far_from_the_border_is_scaled_by_one_over_gamma_squared() {
        // Away from the padding, a constant momentum sees only the zero-frequency term 1/γ².
        let shape = [64, 64, 64];
        let params = SmoothParams { alpha: 0.5, gamma: 2.0, pad: 12, spacing_mm: None };
        let smoothed = Smoother::new(shape, &params).apply_scalar(&vec![1.0; 64 * 64 * 64]);
        let centre = 32 + 64 * (32 + 64 * 32);
        assert!((smoothed[centre] - 0.25).abs() < 1e-3, "{}", smoothed[centre]);
    }
}

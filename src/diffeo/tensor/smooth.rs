//! v = K⁻¹ ∗ m in Burn: zero-pad to a power-of-two grid (at least p voxels on every side),
//! real FFT along x, complex FFTs along y and z, multiply by the real symbol, and back. The
//! operator is linear and self-adjoint, and Burn's FFTs are differentiable, so autodiff carries
//! the gradient through it (the gradient of ⟨w, K⁻¹m⟩ is K⁻¹w, which the tests check).

use burn::signal::{cfft, irfft, rfft};
use burn::tensor::ops::PadMode;
use burn::tensor::{Device, Tensor, TensorData};

use crate::diffeo::smooth::{SmoothParams, padded_power_of_two, symbol};

/// K^(exponent/2) on one grid shape: exponent −2 for K⁻¹, −1 for L⁻¹, 2 for K.
pub struct TensorSmoother {
    shape: [usize; 3],
    padded: [usize; 3],
    pad: usize,
    /// The symbol over the rfft half along x: [1, Pz, Py, Px/2 + 1].
    symbol: Tensor<4>,
}

impl TensorSmoother {
    /// K⁻¹ for fields of `shape` ([X, Y, Z]).
    pub fn new(shape: [usize; 3], params: &SmoothParams, device: &Device) -> Self {
        Self::with_exponent(shape, params, -2, device)
    }

    pub fn with_exponent(shape: [usize; 3], params: &SmoothParams, exponent: i32, device: &Device) -> Self {
        let padded = padded_power_of_two(shape, params.pad);
        let columns = padded[0] / 2 + 1;
        let values = symbol(params, padded, exponent, columns);
        let symbol = Tensor::from_data(TensorData::new(values, [1, padded[2], padded[1], columns]), device);
        TensorSmoother { shape, padded, pad: params.pad, symbol }
    }

    /// The periodic grid the FFTs run on.
    pub fn padded_shape(&self) -> [usize; 3] {
        self.padded
    }

    /// The operator applied to each channel of a [C, Z, Y, X] tensor on this smoother's grid.
    pub fn apply(&self, field: Tensor<4>) -> Tensor<4> {
        let [_, nz, ny, nx] = field.dims();
        assert_eq!([nx, ny, nz], self.shape, "smoother built for another grid");
        let [px, py, pz] = self.padded;
        let p = self.pad;
        let padded = field.pad([(p, pz - nz - p), (p, py - ny - p), (p, px - nx - p)], PadMode::Constant(0.0));
        let (re, im) = rfft(padded, 3, None);
        let (re, im) = cfft(re, im, 2, None);
        let (re, im) = cfft(re, im, 1, None);
        let (re, im) = (re * self.symbol.clone(), im * self.symbol.clone());
        let (re, im) = inverse_cfft(re, im, 1);
        let (re, im) = inverse_cfft(re, im, 2);
        let smoothed = irfft(re, im, 3, Some(px));
        smoothed.narrow(1, p, nz).narrow(2, p, ny).narrow(3, p, nx)
    }
}

/// The inverse complex FFT along `dim` by conjugation: ifft(X) = conj(fft(conj X)) / N.
fn inverse_cfft(re: Tensor<4>, im: Tensor<4>, dim: usize) -> (Tensor<4>, Tensor<4>) {
    let n = re.dims()[dim] as f32;
    let (re, im) = cfft(re, im.neg(), dim, None);
    (re / n, im.neg() / n)
}

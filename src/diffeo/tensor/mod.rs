//! The diffeomorphic layers as differentiable Burn tensor code (SPEC §3), for training and
//! prediction on the CPU (flex) or a GPU (wgpu): `smooth` (K⁻¹ by power-of-two FFTs), `warp`
//! (trilinear sampling by gathers), `integrate` (scaling and squaring), and the `energy` built
//! from them. Gradients come from Burn's autodiff. The whole-volume kernels beside this module
//! compute the same things for large volumes; tests keep the two equal.
//!
//! Layout: a field is a tensor [3, Z, Y, X] whose channel 0 is the x component, an image
//! [1, Z, Y, X]; x varies fastest, exactly as in `VectorField` and `Volume`, so conversion is a copy.

pub mod energy;
pub mod integrate;
pub mod smooth;
pub mod warp;

use burn::tensor::{Device, Tensor, TensorData};

use crate::diffeo::VectorField;

/// A field as a [3, Z, Y, X] tensor.
pub fn field_to_tensor(field: &VectorField, device: &Device) -> Tensor<4> {
    let [nx, ny, nz] = field.shape;
    let values: Vec<f32> = field.components.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(values, [3, nz, ny, nx]), device)
}

/// A [3, Z, Y, X] tensor as a field.
pub fn tensor_to_field(tensor: Tensor<4>) -> VectorField {
    let [channels, nz, ny, nx] = tensor.dims();
    assert_eq!(channels, 3, "a field tensor has three channels");
    let values = tensor_values(tensor);
    let n = nx * ny * nz;
    VectorField { shape: [nx, ny, nz], components: std::array::from_fn(|d| values[d * n..(d + 1) * n].to_vec()) }
}

/// Scalar values on `shape` (x fastest) as a [1, Z, Y, X] tensor.
pub fn image_to_tensor(values: &[f32], shape: [usize; 3], device: &Device) -> Tensor<4> {
    Tensor::from_data(TensorData::new(values.to_vec(), [1, shape[2], shape[1], shape[0]]), device)
}

/// The values of a float tensor, in order.
pub fn tensor_values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor.into_data().convert::<f32>().try_into_vec::<f32>().expect("a float tensor converts to f32 values")
}

/// Each voxel's own index along x, y and z: a [3, Z, Y, X] tensor.
pub fn index_grid(shape: [usize; 3], device: &Device) -> Tensor<4> {
    let [nx, ny, nz] = shape;
    let n = nx * ny * nz;
    let mut values = vec![0.0f32; 3 * n];
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let v = i + nx * (j + ny * k);
                values[v] = i as f32;
                values[n + v] = j as f32;
                values[2 * n + v] = k as f32;
            }
        }
    }
    Tensor::from_data(TensorData::new(values, [3, nz, ny, nx]), device)
}

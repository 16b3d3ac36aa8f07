//! ReLU and ReLU6 whose backward pass is the backend's own.
//!
//! Under burn 0.22's autodiff a clamp is two comparisons and two masked fills forward and two
//! masked fills backward, and libtorch's CPU masked fill is slow: a fifth of an
//! EfficientNet-Lite0 training step. This operation is a backend extension with its own backward
//! pass: libtorch's `hardtanh_backward` on libtorch, masked fills elsewhere.

#![allow(deprecated)]

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, get_or_init_device_settings, Autodiff, Backend};
use burn::backend::{Dispatch, NdArray, Scalar, TensorMetadata};
use burn::prelude::*;

/// `min(max(x, 0), max)`: ReLU with `max = f64::INFINITY`, ReLU6 with `max = 6`.
pub fn clipped_relu(x: Tensor<4>, max: f64) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as ClippedRelu>::clipped_relu(
        x.into_dispatch(),
        max,
    ))
}

/// The clipped ReLU as a backend operation.
#[backend_extension(NdArray, LibTorch: cfg(feature = "tch"), Cube: cfg(feature = "cuda"), Autodiff)]
pub trait ClippedRelu: Backend {
    /// `min(max(x, 0), max)`.
    fn clipped_relu(x: FloatTensor<Self>, max: f64) -> FloatTensor<Self> {
        Self::float_clamp(x, Scalar::Float(0.0), Scalar::Float(max))
    }
}

/// The gradient of the clipped ReLU as a backend computes it.
pub trait ClippedReluGradient: Backend {
    /// `output_grad` where `0 < output < max`, zero elsewhere.
    fn clipped_relu_backward(
        output: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        max: f64,
    ) -> FloatTensor<Self> {
        masked_gradient::<Self>(output, output_grad, max)
    }
}

fn masked_gradient<B: Backend>(
    output: FloatTensor<B>,
    output_grad: FloatTensor<B>,
    max: f64,
) -> FloatTensor<B> {
    let bool_dtype = get_or_init_device_settings::<B>(&output.device()).bool_dtype;
    let below = B::float_lower_equal_elem(output.clone(), Scalar::Float(0.0), bool_dtype);
    let grad = B::float_mask_fill(output_grad, below, Scalar::Float(0.0));
    if max.is_finite() {
        let above = B::float_greater_equal_elem(output, Scalar::Float(max), bool_dtype);
        B::float_mask_fill(grad, above, Scalar::Float(0.0))
    } else {
        grad
    }
}

impl ClippedRelu for NdArray {}
impl ClippedReluGradient for NdArray {}

#[cfg(feature = "cuda")]
impl ClippedRelu for burn::backend::Cube {}
#[cfg(feature = "cuda")]
impl ClippedReluGradient for burn::backend::Cube {}

#[cfg(feature = "tch")]
impl ClippedRelu for burn::backend::LibTorch {}

#[cfg(feature = "tch")]
impl ClippedReluGradient for burn::backend::LibTorch {
    /// libtorch's `hardtanh_backward`; masked fills if that fails.
    fn clipped_relu_backward(
        output: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        max: f64,
    ) -> FloatTensor<Self> {
        match output
            .tensor
            .f_hardtanh_backward(&output_grad.tensor, 0.0, max)
        {
            Ok(grad) => burn::backend::libtorch::TchTensor::new(grad),
            Err(error) => {
                log::warn!("libtorch hardtanh_backward failed ({error}); using masked fills");
                masked_gradient::<Self>(output, output_grad, max)
            }
        }
    }
}

impl<B: ClippedRelu + ClippedReluGradient, C: CheckpointStrategy> ClippedRelu for Autodiff<B, C> {
    fn clipped_relu(x: FloatTensor<Self>, max: f64) -> FloatTensor<Self> {
        match ClippedReluBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let output = B::clipped_relu(x.into_primitive(), max);
                prep.finish((output.clone(), max), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::clipped_relu(x.into_primitive(), max)),
        }
    }
}

/// The backward step of [`ClippedRelu`] under autodiff.
#[derive(Debug)]
struct ClippedReluBackward;

impl<B: ClippedReluGradient> Backward<B, 1> for ClippedReluBackward {
    type State = (B::FloatTensorPrimitive, f64);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_node] = ops.parents;
        let output_grad = grads.consume::<B>(&ops.node);
        let (output, max) = ops.state;
        if let Some(node) = x_node {
            grads.register::<B>(node.id, B::clipped_relu_backward(output, output_grad, max));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ndarray_device;
    use crate::nn::test_tensors::{max_difference, random};
    use burn::tensor::activation::{relu, relu6};

    /// Values and gradients against burn's `relu` and `relu6`, on inputs either side of both
    /// bends.
    fn assert_matches_burn(device: &Device) {
        let device = device.clone().autodiff();
        let shape = [2, 3, 4, 5];
        let x = (random(shape, 1, &device) * 5.0).require_grad();
        let upstream = random(shape, 2, &device);
        let reference: [fn(Tensor<4>) -> Tensor<4>; 2] = [relu, relu6];
        for (max, reference) in [f64::INFINITY, 6.0].into_iter().zip(reference) {
            let ours = clipped_relu(x.clone(), max);
            let grads = (ours.clone() * upstream.clone()).sum().backward();
            let ours_grad = x.grad(&grads).unwrap();
            let theirs = reference(x.clone());
            let grads = (theirs.clone() * upstream.clone()).sum().backward();
            let theirs_grad = x.grad(&grads).unwrap();
            assert!(max_difference(ours, theirs) < 1e-6);
            assert!(max_difference(ours_grad.clone(), theirs_grad) < 1e-6);
            let zeros: i64 = ours_grad.clone().equal_elem(0.0).int().sum().into_scalar();
            assert!(zeros > 20 && zeros < 100, "{zeros} zero gradients of 120");
        }
    }

    #[test]
    fn matches_burn_relu_and_relu6_on_ndarray() {
        assert_matches_burn(&ndarray_device());
    }

    #[cfg(feature = "tch")]
    #[test]
    fn matches_burn_relu_and_relu6_on_libtorch() {
        assert_matches_burn(&Device::libtorch());
    }

    #[cfg(feature = "tch")]
    #[test]
    fn libtorch_computes_the_gradient_itself() {
        let output = tch::Tensor::from_slice(&[0.0f32, 3.0, 6.0]);
        let upstream = tch::Tensor::from_slice(&[1.0f32, 1.0, 1.0]);
        for max in [6.0, f64::INFINITY] {
            let grad = output.f_hardtanh_backward(&upstream, 0.0, max).unwrap();
            let expected = if max.is_finite() {
                [0.0, 1.0, 0.0]
            } else {
                [0.0, 1.0, 1.0]
            };
            assert_eq!(Vec::<f32>::try_from(&grad).unwrap(), expected);
        }
    }
}

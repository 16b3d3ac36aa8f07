//! Depthwise and pointwise convolutions whose gradients come from the backend's own kernels.
//!
//! burn 0.22 computes the weight gradient of a grouped convolution with a loop over the groups
//! (two slices, a convolution and a slice-assign per channel) that no backend overrides:
//! thousands of small operations per step in an EfficientNet's depthwise layers, the bound on a
//! GPU. For a 1x1 convolution it convolves the input with the upstream gradient, batch and
//! channels swapped, which libtorch runs through im2col and transposed copies. This operation is
//! a backend extension with its own backward pass: on libtorch the gradients of a 1x1, stride-1,
//! unpadded, ungrouped convolution are matrix products and those of any other convolution come
//! from libtorch's native convolution backward (through its autograd, on a re-run of the forward
//! convolution); other backends keep burn's generic gradients.

#![allow(deprecated)]

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Autodiff, Backend, NdArray};
use burn::prelude::*;
use burn::tensor::ops::ConvOptions;

/// A depthwise (`groups = channels`), bias-free convolution: `x` `[batch, channels, height,
/// width]`, `weight` `[channels, 1, kernel, kernel]`, `pads` `(top, left, bottom, right)`.
///
/// Values and gradients equal burn's `conv2d` with the same options.
pub fn depthwise_conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    stride: usize,
    pads: [usize; 4],
) -> Tensor<4> {
    let [top, left, bottom, right] = pads;
    let options = ConvOptions::new_with_padding(
        [stride, stride],
        [(top, bottom), (left, right)],
        [1, 1],
        weight.dims()[0],
    );
    Tensor::from_dispatch(<burn::backend::Dispatch as NativeConv>::native_conv2d(
        x.into_dispatch(),
        weight.into_dispatch(),
        options,
    ))
}

/// A 1x1, stride-1, unpadded, bias-free convolution: `x` `[batch, inputs, height, width]`,
/// `weight` `[outputs, inputs, 1, 1]`.
///
/// Values and gradients equal burn's `conv2d` with the same options.
pub fn pointwise_conv2d(x: Tensor<4>, weight: Tensor<4>) -> Tensor<4> {
    debug_assert_eq!(
        weight.dims()[2..],
        [1, 1],
        "a pointwise weight is [outputs, inputs, 1, 1]"
    );
    let options = ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
    Tensor::from_dispatch(<burn::backend::Dispatch as NativeConv>::native_conv2d(
        x.into_dispatch(),
        weight.into_dispatch(),
        options,
    ))
}

/// A bias-free convolution as a backend operation with its own backward pass.
#[backend_extension(NdArray, LibTorch: cfg(feature = "tch"), Cube: cfg(feature = "cuda"), Autodiff)]
pub trait NativeConv: Backend {
    /// The convolution's value (see [`depthwise_conv2d`], [`pointwise_conv2d`]).
    fn native_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d(x, weight, None, options)
    }
}

/// The gradients of a bias-free convolution as a backend computes them.
pub trait ConvGradients: Backend {
    /// `(input gradient, weight gradient)` for an upstream gradient `output_grad`, each computed
    /// only where `wanted`.
    fn conv2d_gradients(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
        wanted: [bool; 2],
    ) -> [Option<FloatTensor<Self>>; 2] {
        generic_gradients::<Self>(x, weight, output_grad, options, wanted)
    }
}

/// burn's own convolution gradients.
fn generic_gradients<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    output_grad: FloatTensor<B>,
    options: ConvOptions<2>,
    wanted: [bool; 2],
) -> [Option<FloatTensor<B>>; 2] {
    let x_grad = wanted[0].then(|| {
        B::conv2d_x_backward(
            x.clone(),
            weight.clone(),
            output_grad.clone(),
            options.clone(),
        )
    });
    let weight_grad = wanted[1].then(|| B::conv2d_weight_backward(x, weight, output_grad, options));
    [x_grad, weight_grad]
}

impl NativeConv for NdArray {}
impl ConvGradients for NdArray {}

#[cfg(feature = "cuda")]
impl NativeConv for burn::backend::Cube {}
#[cfg(feature = "cuda")]
impl ConvGradients for burn::backend::Cube {}

#[cfg(feature = "tch")]
impl NativeConv for burn::backend::LibTorch {}

#[cfg(feature = "tch")]
impl ConvGradients for burn::backend::LibTorch {
    /// Two matrix products for a 1x1, stride-1, unpadded, ungrouped convolution; otherwise
    /// libtorch's native convolution backward (oneDNN on a CPU, cuDNN on CUDA), reached through
    /// its autograd on a re-run of the forward convolution; burn's gradients if either fails.
    fn conv2d_gradients(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
        wanted: [bool; 2],
    ) -> [Option<FloatTensor<Self>>; 2] {
        match libtorch_gradients(
            &x.tensor,
            &weight.tensor,
            &output_grad.tensor,
            &options,
            wanted,
        ) {
            Ok(grads) => grads.map(|g| g.map(burn::backend::libtorch::TchTensor::new)),
            Err(error) => {
                log::warn!("libtorch convolution gradients failed ({error}); using burn's");
                generic_gradients::<Self>(x, weight, output_grad, options, wanted)
            }
        }
    }
}

#[cfg(feature = "tch")]
fn libtorch_gradients(
    x: &tch::Tensor,
    weight: &tch::Tensor,
    output_grad: &tch::Tensor,
    options: &ConvOptions<2>,
    wanted: [bool; 2],
) -> Result<[Option<tch::Tensor>; 2], tch::TchError> {
    let as_i64 = |v: [usize; 2]| v.map(|i| i as i64);
    if is_pointwise(&weight.size(), options) {
        return pointwise_gradients(x, weight, output_grad, wanted);
    }
    tch::with_grad(|| {
        let x_leaf = x.f_detach()?.f_set_requires_grad(wanted[0])?;
        let weight_leaf = weight.f_detach()?.f_set_requires_grad(wanted[1])?;
        let (input, padding) = if options.is_asymmetric() {
            let [(top, bottom), (left, right)] = options.padding.map(|(a, b)| (a as i64, b as i64));
            (
                x_leaf.f_constant_pad_nd([left, right, top, bottom])?,
                [0, 0],
            )
        } else {
            (x_leaf.shallow_clone(), as_i64(options.padding_begin()))
        };
        let y = input.f_conv2d(
            &weight_leaf,
            None::<tch::Tensor>,
            as_i64(options.stride),
            padding,
            as_i64(options.dilation),
            options.groups as i64,
        )?;
        let objective = y.f_mul(output_grad)?.f_sum(y.kind())?;
        let leaves: Vec<&tch::Tensor> = [&x_leaf, &weight_leaf]
            .into_iter()
            .zip(wanted)
            .filter_map(|(leaf, want)| want.then_some(leaf))
            .collect();
        let mut grads =
            tch::Tensor::f_run_backward(&[objective], &leaves, false, false)?.into_iter();
        Ok(wanted.map(|want| if want { grads.next() } else { None }))
    })
}

/// Whether a convolution with this weight shape and these options is a 1x1, stride-1, unpadded,
/// ungrouped one, whose gradients [`pointwise_gradients`] computes as matrix products.
#[cfg_attr(not(feature = "tch"), allow(dead_code))]
fn is_pointwise(weight_size: &[i64], options: &ConvOptions<2>) -> bool {
    weight_size.len() == 4
        && weight_size[2..] == [1, 1]
        && options.groups == 1
        && options.stride == [1, 1]
        && options.dilation == [1, 1]
        && options.padding == [(0, 0), (0, 0)]
}

/// The gradients of a 1x1, stride-1 convolution as matrix products: per image, the input
/// gradient is `weightᵀ · output_grad` and the weight gradient `output_grad · xᵀ`, summed over
/// the batch.
#[cfg(feature = "tch")]
fn pointwise_gradients(
    x: &tch::Tensor,
    weight: &tch::Tensor,
    output_grad: &tch::Tensor,
    wanted: [bool; 2],
) -> Result<[Option<tch::Tensor>; 2], tch::TchError> {
    let (batch, inputs, height, width) = x.size4()?;
    let positions = height * width;
    let (outputs, _, _, _) = weight.size4()?;
    let grad = output_grad.f_reshape([batch, outputs, positions])?;
    let x_grad = if wanted[0] {
        let matrix = weight.f_reshape([outputs, inputs])?;
        Some(
            matrix
                .f_transpose(0, 1)?
                .f_matmul(&grad)?
                .f_reshape([batch, inputs, height, width])?,
        )
    } else {
        None
    };
    let weight_grad = if wanted[1] {
        let x_matrix = x.f_reshape([batch, inputs, positions])?;
        Some(
            tch::Tensor::f_einsum("nop,nip->oi", &[&grad, &x_matrix], None::<&[i64]>)?
                .f_reshape([outputs, inputs, 1, 1])?,
        )
    } else {
        None
    };
    Ok([x_grad, weight_grad])
}

impl<B: NativeConv + ConvGradients, C: CheckpointStrategy> NativeConv for Autodiff<B, C> {
    fn native_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        match NativeConvBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let weight_state = prep.checkpoint(&weight);
                prep.finish(
                    (x_state, weight_state, options.clone()),
                    B::native_conv2d(x.into_primitive(), weight.into_primitive(), options),
                )
            }
            OpsKind::UnTracked(prep) => prep.finish(B::native_conv2d(
                x.into_primitive(),
                weight.into_primitive(),
                options,
            )),
        }
    }
}

/// The backward step of [`NativeConv`] under autodiff.
#[derive(Debug)]
struct NativeConvBackward;

impl<B: ConvGradients> Backward<B, 2> for NativeConvBackward {
    type State = (NodeId, NodeId, ConvOptions<2>);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [x_node, weight_node] = ops.parents;
        let output_grad = grads.consume::<B>(&ops.node);
        let (x_state, weight_state, options) = ops.state;
        let x = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(x_state);
        let weight = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(weight_state);
        let wanted = [x_node.is_some(), weight_node.is_some()];
        let [x_grad, weight_grad] = B::conv2d_gradients(x, weight, output_grad, options, wanted);
        if let (Some(node), Some(grad)) = (x_node, x_grad) {
            grads.register::<B>(node.id, grad);
        }
        if let (Some(node), Some(grad)) = (weight_node, weight_grad) {
            grads.register::<B>(node.id, grad);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ndarray_device;
    use crate::nn::test_tensors::{max_difference, random};
    use burn::tensor::module::conv2d;

    /// Value, input gradient and weight gradient against burn's grouped `conv2d`.
    fn assert_matches_grouped_conv(
        device: &Device,
        kernel: usize,
        stride: usize,
        pads: [usize; 4],
    ) {
        let device = device.clone().autodiff();
        let (channels, height, width) = (5, 11, 9);
        let x = random([2, channels, height, width], 1, &device).require_grad();
        let weight = random([channels, 1, kernel, kernel], 2, &device).require_grad();
        let [top, left, bottom, right] = pads;
        let output_shape = [
            2,
            channels,
            (height + top + bottom - kernel) / stride + 1,
            (width + left + right - kernel) / stride + 1,
        ];
        let upstream = random(output_shape, 3, &device);

        let ours = depthwise_conv2d(x.clone(), weight.clone(), stride, pads);
        let grads = (ours.clone() * upstream.clone()).sum().backward();
        let (ours_x, ours_w) = (x.grad(&grads).unwrap(), weight.grad(&grads).unwrap());

        let options = ConvOptions::new_with_padding(
            [stride, stride],
            [(top, bottom), (left, right)],
            [1, 1],
            channels,
        );
        let reference = conv2d(x.clone(), weight.clone(), None, options);
        let grads = (reference.clone() * upstream).sum().backward();
        let (ref_x, ref_w) = (x.grad(&grads).unwrap(), weight.grad(&grads).unwrap());

        assert_eq!(ours.dims(), output_shape);
        assert_eq!(reference.dims(), output_shape);
        assert!(max_difference(ours, reference) < 1e-5);
        assert!(max_difference(ours_x, ref_x) < 1e-4);
        assert!(max_difference(ours_w, ref_w) < 1e-4);
    }

    fn assert_matches_grouped_conv_everywhere(device: &Device) {
        assert_matches_grouped_conv(device, 3, 1, [1, 1, 1, 1]);
        assert_matches_grouped_conv(device, 5, 1, [2, 2, 2, 2]);
        assert_matches_grouped_conv(device, 3, 2, [0, 0, 1, 1]);
        assert_matches_grouped_conv(device, 5, 2, [1, 1, 2, 2]);
        assert_matches_grouped_conv(device, 3, 2, [0, 1, 2, 1]);
    }

    #[test]
    fn matches_grouped_conv_on_ndarray() {
        assert_matches_grouped_conv_everywhere(&ndarray_device());
    }

    #[cfg(feature = "tch")]
    #[test]
    fn matches_grouped_conv_on_libtorch() {
        assert_matches_grouped_conv_everywhere(&Device::libtorch());
    }

    /// Value, input gradient and weight gradient of the 1x1 convolution against burn's `conv2d`.
    fn assert_matches_pointwise_conv(device: &Device) {
        let device = device.clone().autodiff();
        let (inputs, outputs, height, width) = (6, 4, 5, 7);
        let x = random([3, inputs, height, width], 11, &device).require_grad();
        let weight = random([outputs, inputs, 1, 1], 12, &device).require_grad();
        let upstream = random([3, outputs, height, width], 13, &device);

        let ours = pointwise_conv2d(x.clone(), weight.clone());
        let grads = (ours.clone() * upstream.clone()).sum().backward();
        let (ours_x, ours_w) = (x.grad(&grads).unwrap(), weight.grad(&grads).unwrap());

        let options = ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
        let reference = conv2d(x.clone(), weight.clone(), None, options);
        let grads = (reference.clone() * upstream).sum().backward();
        let (ref_x, ref_w) = (x.grad(&grads).unwrap(), weight.grad(&grads).unwrap());

        assert_eq!(ours.dims(), [3, outputs, height, width]);
        assert_eq!(ours_w.dims(), [outputs, inputs, 1, 1]);
        assert!(max_difference(ours, reference) < 1e-5);
        assert!(max_difference(ours_x, ref_x) < 1e-4);
        assert!(max_difference(ours_w, ref_w) < 1e-4);
    }

    #[test]
    fn pointwise_matches_conv_on_ndarray() {
        assert_matches_pointwise_conv(&ndarray_device());
    }

    #[cfg(feature = "tch")]
    #[test]
    fn pointwise_matches_conv_on_libtorch() {
        assert_matches_pointwise_conv(&Device::libtorch());
    }

    #[test]
    fn only_a_1x1_stride_1_unpadded_ungrouped_convolution_is_pointwise() {
        let plain = ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
        assert!(is_pointwise(&[6, 3, 1, 1], &plain));
        assert!(!is_pointwise(&[6, 3, 3, 3], &plain));
        assert!(!is_pointwise(&[6, 3, 1], &plain));
        let near_misses = [
            ([6, 1, 1, 1], ConvOptions::new([1, 1], [0, 0], [1, 1], 3)),
            ([6, 3, 1, 1], ConvOptions::new([2, 2], [0, 0], [1, 1], 1)),
            ([6, 3, 1, 1], ConvOptions::new([1, 1], [1, 1], [1, 1], 1)),
            ([6, 3, 1, 1], ConvOptions::new([1, 1], [0, 0], [2, 2], 1)),
        ];
        for (weight, options) in &near_misses {
            assert!(!is_pointwise(weight, options), "{weight:?} {options:?}");
        }
        let asymmetric = ConvOptions::new_with_padding([1, 1], [(0, 1), (0, 0)], [1, 1], 1);
        assert!(!is_pointwise(&[6, 3, 1, 1], &asymmetric));
    }

    #[cfg(feature = "tch")]
    #[test]
    fn the_matrix_products_give_libtorch_autograd_gradients() {
        tch::manual_seed(0);
        let options = (tch::Kind::Float, tch::Device::Cpu);
        // A transposed view: the products must not assume a contiguous input.
        let x = tch::Tensor::randn([2, 3, 5, 4], options)
            .transpose(2, 3)
            .set_requires_grad(true);
        let weight = tch::Tensor::randn([6, 3, 1, 1], options).set_requires_grad(true);
        let upstream = tch::Tensor::randn([2, 6, 4, 5], options);
        let y = x.conv2d(&weight, None::<tch::Tensor>, [1, 1], [0, 0], [1, 1], 1);
        let objective = (y * &upstream).sum(tch::Kind::Float);
        let autograd = tch::Tensor::run_backward(&[objective], &[&x, &weight], false, false);
        let (x, weight) = (x.detach(), weight.detach());
        let [x_grad, weight_grad] =
            pointwise_gradients(&x, &weight, &upstream, [true, true]).unwrap();
        let (x_grad, weight_grad) = (x_grad.unwrap(), weight_grad.unwrap());
        assert_eq!(x_grad.size(), [2, 3, 4, 5]);
        assert_eq!(weight_grad.size(), [6, 3, 1, 1]);
        assert!(x_grad.allclose(&autograd[0], 1e-5, 1e-5, false));
        assert!(weight_grad.allclose(&autograd[1], 1e-5, 1e-5, false));

        let [no_x_grad, weight_only] =
            pointwise_gradients(&x, &weight, &upstream, [false, true]).unwrap();
        assert!(no_x_grad.is_none());
        assert!(weight_only
            .unwrap()
            .allclose(&autograd[1], 1e-5, 1e-5, false));
        let [x_only, frozen_weight] =
            pointwise_gradients(&x, &weight, &upstream, [true, false]).unwrap();
        assert!(frozen_weight.is_none());
        assert!(x_only.unwrap().allclose(&autograd[0], 1e-5, 1e-5, false));
    }

    #[cfg(feature = "tch")]
    #[test]
    fn libtorch_computes_the_gradients_itself() {
        let options = (tch::Kind::Float, tch::Device::Cpu);
        let x = tch::Tensor::randn([1, 3, 6, 6], options);
        let weight = tch::Tensor::randn([3, 1, 3, 3], options);
        let upstream = tch::Tensor::randn([1, 3, 3, 3], options);
        let conv = ConvOptions::new_with_padding([2, 2], [(0, 1), (0, 1)], [1, 1], 3);
        let [x_grad, weight_grad] =
            libtorch_gradients(&x, &weight, &upstream, &conv, [false, true]).unwrap();
        assert!(x_grad.is_none());
        assert_eq!(weight_grad.unwrap().size(), [3, 1, 3, 3]);
    }

    #[test]
    fn a_frozen_weight_gets_no_gradient_and_the_input_still_does() {
        let device = ndarray_device().autodiff();
        let x = random([1, 3, 6, 6], 4, &device).require_grad();
        let weight = random([3, 1, 3, 3], 5, &device);
        let y = depthwise_conv2d(x.clone(), weight.clone(), 1, [1; 4]);
        let grads = y.sum().backward();
        assert!(x.grad(&grads).is_some());
        assert!(weight.grad(&grads).is_none());
    }

    #[test]
    fn a_frozen_pointwise_weight_gets_no_gradient_and_the_input_still_does() {
        let device = ndarray_device().autodiff();
        let x = random([1, 3, 4, 4], 8, &device).require_grad();
        let weight = random([5, 3, 1, 1], 9, &device);
        let grads = pointwise_conv2d(x.clone(), weight.clone()).sum().backward();
        assert_eq!(x.grad(&grads).map(|g| g.dims()), Some([1, 3, 4, 4]));
        assert!(weight.grad(&grads).is_none());
    }

    #[test]
    fn without_autodiff_it_is_the_grouped_convolution() {
        let device = ndarray_device();
        let x = random([1, 4, 7, 7], 6, &device);
        let weight = random([4, 1, 3, 3], 7, &device);
        let options = ConvOptions::new_with_padding([2, 2], [(0, 1), (0, 1)], [1, 1], 4);
        let reference = conv2d(x.clone(), weight.clone(), None, options);
        assert!(max_difference(depthwise_conv2d(x, weight, 2, [0, 0, 1, 1]), reference) < 1e-6);
    }
}

//! Training-mode batch normalisation whose kernels are the backend's own.
//!
//! burn 0.22's generic batch normalisation, the one burn-tch runs, spends a dozen whole-tensor
//! passes forward and as many backward on transposed copies, means and broadcasts: about a
//! third of an EfficientNet-Lite0 training step on libtorch. This operation is a backend
//! extension with its own backward pass: libtorch runs its fused native batch norm forward, and
//! its native backward through autograd on a re-run of the forward; other backends keep burn's.

#![allow(deprecated)]

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::ops::BatchNormTrainBackward;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Autodiff, Backend, Dispatch, ExtensionType, NdArray};
use burn::nn::BatchNorm;
use burn::prelude::*;

/// `bn` applied to `x` `[batch, channels, height, width]`, as `BatchNorm::forward` does it: on
/// an autodiff device with the layer's training flag set, normalised by the batch's statistics,
/// which also move the running statistics by the layer's momentum; otherwise by the running
/// statistics.
pub fn batch_norm(bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    let device = x.device();
    if !(device.is_autodiff() && bn.training.is_enabled()) {
        return bn.forward(x);
    }
    let statistics = <Dispatch as BatchNormTraining>::batch_norm_training(
        x.into_dispatch(),
        bn.gamma.val().into_dispatch(),
        bn.beta.val().into_dispatch(),
        bn.epsilon,
    );
    let mean = Tensor::<1>::from_dispatch(statistics.mean).detach();
    let variance = Tensor::<1>::from_dispatch(statistics.variance).detach();
    let moved = |running: Tensor<1>, batch: Tensor<1>| {
        running
            .to_device(&device)
            .mul_scalar(1.0 - bn.momentum)
            .add(batch.mul_scalar(bn.momentum))
            .detach()
    };
    bn.running_mean
        .update(moved(bn.running_mean.value_sync(), mean));
    bn.running_var
        .update(moved(bn.running_var.value_sync(), variance));
    Tensor::from_dispatch(statistics.output)
}

/// A batch normalised by its own statistics, with those statistics.
#[derive(ExtensionType)]
pub struct BatchStatistics<B: Backend> {
    /// The normalised batch.
    pub output: FloatTensor<B>,
    /// The batch mean per channel, `[channels]`.
    pub mean: FloatTensor<B>,
    /// The biased batch variance per channel, `[channels]`.
    pub variance: FloatTensor<B>,
}

/// Training-mode batch normalisation as a backend operation.
#[backend_extension(NdArray, LibTorch: cfg(feature = "tch"), Cube: cfg(feature = "cuda"), Autodiff)]
pub trait BatchNormTraining: Backend {
    /// `x` normalised by its per-channel batch statistics, scaled by `gamma`, shifted by `beta`.
    fn batch_norm_training(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> BatchStatistics<Self> {
        generic_batch_norm::<Self>(x, gamma, beta, epsilon)
    }
}

fn generic_batch_norm<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    epsilon: f64,
) -> BatchStatistics<B> {
    let result = B::batch_norm_train(x, gamma, beta, epsilon);
    BatchStatistics {
        output: result.output,
        mean: result.mean,
        variance: result.variance,
    }
}

/// The gradients of training-mode batch normalisation as a backend computes them.
pub trait BatchNormGradients: Backend {
    /// Gradients in `x`, `gamma` and `beta` for an upstream gradient `output_grad`, given the
    /// batch statistics the forward pass returned.
    fn batch_norm_gradients(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        variance: FloatTensor<Self>,
        epsilon: f64,
        output_grad: FloatTensor<Self>,
    ) -> BatchNormTrainBackward<Self> {
        Self::batch_norm_train_backward(x, gamma, mean, variance, epsilon, output_grad)
    }
}

impl BatchNormTraining for NdArray {}
impl BatchNormGradients for NdArray {}

#[cfg(feature = "cuda")]
impl BatchNormTraining for burn::backend::Cube {}
#[cfg(feature = "cuda")]
impl BatchNormGradients for burn::backend::Cube {}

#[cfg(feature = "tch")]
mod libtorch {
    use super::*;
    use burn::backend::libtorch::TchTensor;
    use burn::backend::ops::ModuleOps;
    use burn::backend::LibTorch;

    impl BatchNormTraining for LibTorch {
        /// libtorch's native batch norm; burn's if that fails.
        fn batch_norm_training(
            x: TchTensor,
            gamma: TchTensor,
            beta: TchTensor,
            epsilon: f64,
        ) -> BatchStatistics<Self> {
            match native_forward(&x.tensor, &gamma.tensor, &beta.tensor, epsilon) {
                Ok([output, mean, variance]) => BatchStatistics {
                    output: TchTensor::new(output),
                    mean: TchTensor::new(mean),
                    variance: TchTensor::new(variance),
                },
                Err(error) => {
                    log::warn!("libtorch batch norm failed ({error}); using burn's");
                    generic_batch_norm::<Self>(x, gamma, beta, epsilon)
                }
            }
        }
    }

    impl BatchNormGradients for LibTorch {
        /// libtorch's native batch norm backward; burn's if that fails.
        fn batch_norm_gradients(
            x: TchTensor,
            gamma: TchTensor,
            mean: TchTensor,
            variance: TchTensor,
            epsilon: f64,
            output_grad: TchTensor,
        ) -> BatchNormTrainBackward<Self> {
            match native_backward(&x.tensor, &gamma.tensor, &output_grad.tensor, epsilon) {
                Ok([x_grad, gamma_grad, beta_grad]) => BatchNormTrainBackward {
                    x_grad: TchTensor::new(x_grad),
                    gamma_grad: TchTensor::new(gamma_grad),
                    beta_grad: TchTensor::new(beta_grad),
                },
                Err(error) => {
                    log::warn!("libtorch batch norm backward failed ({error}); using burn's");
                    Self::batch_norm_train_backward(x, gamma, mean, variance, epsilon, output_grad)
                }
            }
        }
    }

    /// `[output, mean, biased variance]`.
    pub(super) fn native_forward(
        x: &tch::Tensor,
        gamma: &tch::Tensor,
        beta: &tch::Tensor,
        epsilon: f64,
    ) -> Result<[tch::Tensor; 3], tch::TchError> {
        let (output, mean, inverse_std) =
            x.f_native_batch_norm(Some(gamma), Some(beta), None, None, true, 0.0, epsilon)?;
        let variance = inverse_std
            .f_square()?
            .f_reciprocal()?
            .f_sub_scalar(epsilon)?
            .f_clamp_min(0.0)?;
        Ok([output, mean, variance])
    }

    /// `[x gradient, gamma gradient, beta gradient]`.
    pub(super) fn native_backward(
        x: &tch::Tensor,
        gamma: &tch::Tensor,
        output_grad: &tch::Tensor,
        epsilon: f64,
    ) -> Result<[tch::Tensor; 3], tch::TchError> {
        tch::with_grad(|| {
            let x_leaf = x.f_detach()?.f_set_requires_grad(true)?;
            let gamma_leaf = gamma.f_detach()?.f_set_requires_grad(true)?;
            let normalised = x_leaf.f_batch_norm(
                Some(&gamma_leaf),
                None,
                None,
                None,
                true,
                0.0,
                epsilon,
                true,
            )?;
            let objective = normalised.f_mul(output_grad)?.f_sum(normalised.kind())?;
            let mut grads =
                tch::Tensor::f_run_backward(&[objective], &[&x_leaf, &gamma_leaf], false, false)?
                    .into_iter();
            let beta_grad = output_grad.f_sum_dim_intlist(
                [0i64, 2, 3].as_slice(),
                false,
                output_grad.kind(),
            )?;
            match (grads.next(), grads.next()) {
                (Some(x_grad), Some(gamma_grad)) => Ok([x_grad, gamma_grad, beta_grad]),
                _ => Err(tch::TchError::Torch(
                    "autograd returned fewer gradients than asked for".into(),
                )),
            }
        })
    }
}

impl<B: BatchNormTraining + BatchNormGradients, C: CheckpointStrategy> BatchNormTraining
    for Autodiff<B, C>
{
    fn batch_norm_training(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> BatchStatistics<Self> {
        match BatchNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let gamma_state = prep.checkpoint(&gamma);
                let statistics = B::batch_norm_training(
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                    epsilon,
                );
                let state = (
                    x_state,
                    gamma_state,
                    statistics.mean.clone(),
                    statistics.variance.clone(),
                    epsilon,
                );
                BatchStatistics {
                    output: prep.finish(state, statistics.output),
                    mean: FloatTensor::<Self>::new(statistics.mean),
                    variance: FloatTensor::<Self>::new(statistics.variance),
                }
            }
            OpsKind::UnTracked(prep) => {
                let statistics = B::batch_norm_training(
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                    epsilon,
                );
                BatchStatistics {
                    output: prep.finish(statistics.output),
                    mean: FloatTensor::<Self>::new(statistics.mean),
                    variance: FloatTensor::<Self>::new(statistics.variance),
                }
            }
        }
    }
}

/// The backward step of [`BatchNormTraining`] under autodiff.
#[derive(Debug)]
struct BatchNormBackward;

impl<B: BatchNormGradients> Backward<B, 3> for BatchNormBackward {
    type State = (
        NodeId,
        NodeId,
        B::FloatTensorPrimitive,
        B::FloatTensorPrimitive,
        f64,
    );

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [x_node, gamma_node, beta_node] = ops.parents;
        let output_grad = grads.consume::<B>(&ops.node);
        let (x_state, gamma_state, mean, variance, epsilon) = ops.state;
        let x = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(x_state);
        let gamma = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(gamma_state);
        let gradients = B::batch_norm_gradients(x, gamma, mean, variance, epsilon, output_grad);
        for (node, grad) in [
            (x_node, gradients.x_grad),
            (gamma_node, gradients.gamma_grad),
            (beta_node, gradients.beta_grad),
        ] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ndarray_device;
    use crate::nn::test_tensors::{max_difference, random};
    use burn::module::Param;
    use burn::nn::BatchNormConfig;

    fn layer(device: &Device) -> BatchNorm {
        let mut bn = BatchNormConfig::new(4).with_epsilon(1e-3).init(device);
        bn.gamma = Param::from_tensor(random([4], 11, device).add_scalar(1.5));
        bn.beta = Param::from_tensor(random([4], 12, device));
        bn
    }

    /// Output, gradients and running statistics against burn's `BatchNorm::forward`.
    fn assert_matches_burn(device: &Device) {
        let device = device.clone().autodiff();
        let x = (random([3, 4, 5, 6], 1, &device) * 2.0 + 0.5).require_grad();
        let upstream = random([3, 4, 5, 6], 2, &device);
        let (ours_bn, burn_bn) = (layer(&device), layer(&device));

        let ours = batch_norm(&ours_bn, x.clone());
        let grads = (ours.clone() * upstream.clone()).sum().backward();
        let ours_grads = (
            x.grad(&grads).unwrap(),
            ours_bn.gamma.grad(&grads).unwrap(),
            ours_bn.beta.grad(&grads).unwrap(),
        );
        let reference = burn_bn.forward(x.clone());
        let grads = (reference.clone() * upstream).sum().backward();
        let burn_grads = (
            x.grad(&grads).unwrap(),
            burn_bn.gamma.grad(&grads).unwrap(),
            burn_bn.beta.grad(&grads).unwrap(),
        );

        assert!(max_difference(ours, reference) < 1e-5);
        assert!(max_difference(ours_grads.0, burn_grads.0) < 1e-4);
        assert!(max_difference(ours_grads.1, burn_grads.1) < 1e-3);
        assert!(max_difference(ours_grads.2, burn_grads.2) < 1e-3);
        let running = |bn: &BatchNorm| (bn.running_mean.value_sync(), bn.running_var.value_sync());
        let (ours_mean, ours_var) = running(&ours_bn);
        let (burn_mean, burn_var) = running(&burn_bn);
        assert!(max_difference(ours_mean.clone(), burn_mean) < 1e-5);
        assert!(max_difference(ours_var.clone(), burn_var) < 1e-4);
        assert!(max_difference(ours_mean, Tensor::zeros([4], &device)) > 1e-3);
        assert!(max_difference(ours_var, Tensor::ones([4], &device)) > 1e-3);
    }

    #[test]
    fn matches_burn_batch_norm_on_ndarray() {
        assert_matches_burn(&ndarray_device());
    }

    #[cfg(feature = "tch")]
    #[test]
    fn matches_burn_batch_norm_on_libtorch() {
        assert_matches_burn(&Device::libtorch());
    }

    #[cfg(feature = "tch")]
    #[test]
    fn libtorch_computes_the_gradients_itself() {
        let options = (tch::Kind::Float, tch::Device::Cpu);
        let x = tch::Tensor::randn([2, 3, 4, 4], options);
        let gamma = tch::Tensor::ones([3], options);
        let upstream = tch::Tensor::randn([2, 3, 4, 4], options);
        let [x_grad, gamma_grad, beta_grad] =
            libtorch::native_backward(&x, &gamma, &upstream, 1e-5).unwrap();
        assert_eq!(x_grad.size(), [2, 3, 4, 4]);
        assert_eq!(gamma_grad.size(), [3]);
        assert_eq!(beta_grad.size(), [3]);
        let beta = tch::Tensor::zeros([3], options);
        let [output, mean, variance] = libtorch::native_forward(&x, &gamma, &beta, 1e-5).unwrap();
        assert_eq!(output.size(), [2, 3, 4, 4]);
        assert_eq!((mean.size(), variance.size()), (vec![3], vec![3]));
    }

    #[test]
    fn without_autodiff_it_uses_the_running_statistics() {
        let device = ndarray_device();
        let bn = layer(&device);
        let x = random([2, 4, 3, 3], 3, &device);
        let expected = x.clone() / (1.0f32 + 1e-3).sqrt() * bn.gamma.val().reshape([1, 4, 1, 1])
            + bn.beta.val().reshape([1, 4, 1, 1]);
        assert!(max_difference(batch_norm(&bn, x), expected) < 1e-5);
        assert!(max_difference(bn.running_mean.value(), Tensor::zeros([4], &device)) < 1e-9);
    }
}

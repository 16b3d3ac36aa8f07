//! An exponential moving average of a model's weights and BatchNorm statistics (Polyak
//! averaging as in timm's ModelEmaV2): `average = decay * average + (1 - decay) * model` after
//! every optimizer step. The average usually validates better than the last weights and is what a
//! run with `--ema` keeps as its best and exports.

use burn::module::{ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;

use crate::nn::Classifier;

/// Every float tensor of a module (parameters and running statistics), flattened, in visiting
/// order.
struct Collect {
    tensors: Vec<Tensor<1>>,
}

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        let n = value.shape().num_elements();
        self.tensors.push(value.reshape([n]));
    }
}

/// Blends each float tensor of the average with the model's tensor at the same position.
struct Blend {
    model: std::vec::IntoIter<Tensor<1>>,
    decay: f64,
    mismatch: bool,
}

impl ModuleMapper for Blend {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(current) = self.model.next() else {
            self.mismatch = true;
            return param;
        };
        let decay = self.decay;
        param.map(|average| {
            let shape = average.shape();
            if shape.num_elements() != current.shape().num_elements() {
                return average;
            }
            average.mul_scalar(decay) + current.reshape(shape).mul_scalar(1.0 - decay)
        })
    }
}

/// Moves `average` towards `model` (both eval-mode modules of one architecture) by `1 - decay`.
pub fn update_average(average: Classifier, model: &Classifier, decay: f64) -> Classifier {
    let mut collect = Collect {
        tensors: Vec::new(),
    };
    model.visit(&mut collect);
    let mut blend = Blend {
        model: collect.tensors.into_iter(),
        decay,
        mismatch: false,
    };
    let blended = average.map(&mut blend);
    debug_assert!(
        !blend.mismatch && blend.model.next().is_none(),
        "the average and the model differ in structure"
    );
    blended
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{Arch, ClassifierSpec};

    fn values(model: &Classifier) -> Vec<f32> {
        let mut collect = Collect {
            tensors: Vec::new(),
        };
        model.visit(&mut collect);
        collect
            .tensors
            .into_iter()
            .flat_map(|t| t.into_data().try_to_vec::<f32>().unwrap())
            .collect()
    }

    #[test]
    fn the_average_moves_towards_the_model_by_one_minus_decay() {
        let _rng = super::super::backend_rng_lock();
        let device = crate::backend::ndarray_device();
        let spec = ClassifierSpec::new(Arch::TinyCnn, 7);
        device.seed(1);
        let average = Classifier::init(&spec, &device);
        device.seed(2);
        let model = Classifier::init(&spec, &device);
        let (a, m) = (values(&average), values(&model));
        assert_ne!(a, m);
        let blended = values(&update_average(average, &model, 0.75));
        assert_eq!(blended.len(), a.len());
        for ((b, a), m) in blended.iter().zip(&a).zip(&m) {
            assert!((b - (0.75 * a + 0.25 * m)).abs() < 1e-6, "{b} {a} {m}");
        }
    }
}

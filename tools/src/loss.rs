//! The paper's losses: class-weighted cross-entropy and focal loss.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use serde::{Deserialize, Serialize};

/// Which loss a member trains with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum LossKind {
    /// `-sum_i w[y_i] sum_c q_ic log p_ic / sum_i w[y_i]` with the label-smoothed target
    /// `q_ic = (1 - eps) [c = y_i] + eps / K`; uniform weights and `eps = 0` give plain
    /// cross-entropy.
    WeightedCrossEntropy {
        weights: Vec<f32>,
        #[serde(default)]
        smoothing: f32,
    },
    /// `mean_i -alpha[y_i] (1 - p_i[y_i])^gamma log p_i[y_i]` (Lin et al. 2017).
    Focal { gamma: f32, alpha: Vec<f32> },
}

impl LossKind {
    /// The loss over a batch of logits `[N, K]` and labels.
    pub fn compute(&self, logits: Tensor<2>, labels: &[usize]) -> Tensor<1> {
        let device = logits.device();
        let [n, _] = logits.dims();
        let indices = Tensor::<2, Int>::from_data(
            TensorData::new(labels.iter().map(|&l| l as i64).collect(), [n, 1]),
            &device,
        );
        let log_probs = log_softmax(logits, 1);
        let log_p: Tensor<1> = log_probs.clone().gather(1, indices).flatten(0, 1);
        match self {
            LossKind::WeightedCrossEntropy { weights, smoothing } => {
                let w: Vec<f32> = labels.iter().map(|&l| weights[l]).collect();
                let total: f32 = w.iter().sum();
                let w = Tensor::<1>::from_data(TensorData::new(w, [n]), &device);
                let target_term = if *smoothing > 0.0 {
                    let mean_log_p: Tensor<1> = log_probs.mean_dim(1).flatten(0, 1);
                    log_p.mul_scalar(1.0 - smoothing) + mean_log_p.mul_scalar(*smoothing)
                } else {
                    log_p
                };
                (target_term * w).sum().neg().div_scalar(total)
            }
            LossKind::Focal { gamma, alpha } => {
                let a: Vec<f32> = labels.iter().map(|&l| alpha[l]).collect();
                let a = Tensor::<1>::from_data(TensorData::new(a, [n]), &device);
                let modulator = log_p
                    .clone()
                    .exp()
                    .neg()
                    .add_scalar(1.0)
                    .powf_scalar(*gamma);
                (modulator * log_p * a).mean().neg()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> (Tensor<2>, Vec<usize>) {
        let device = crate::backend::ndarray_device();
        let logits = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, 2.0, 3.0, 0.0, 0.0, 0.0], [2, 3]),
            &device,
        );
        (logits, vec![2, 0])
    }

    // log p_A = 3 - ln(e + e^2 + e^3) = -0.4076060, log p_B = -ln 3 = -1.0986123.
    #[test]
    fn weighted_cross_entropy_matches_hand_computation() {
        let (logits, labels) = batch();
        let loss = LossKind::WeightedCrossEntropy {
            weights: vec![1.0, 5.0, 2.0],
            smoothing: 0.0,
        };
        let value: f32 = loss.compute(logits, &labels).into_scalar();
        // (2 * 0.4076060 + 1 * 1.0986123) / (2 + 1)
        assert!((value - 0.637_941_4).abs() < 1e-6, "{value}");
    }

    #[test]
    fn uniform_weights_give_plain_cross_entropy() {
        let (logits, labels) = batch();
        let loss = LossKind::WeightedCrossEntropy {
            weights: vec![1.0; 3],
            smoothing: 0.0,
        };
        let value: f32 = loss.compute(logits, &labels).into_scalar();
        assert!(
            (value - (0.407_606 + 1.098_612_3) / 2.0).abs() < 1e-6,
            "{value}"
        );
    }

    // Row A: log p = [-2.4076060, -1.4076060, -0.4076060], mean -1.4076060;
    // row B: all -1.0986123.
    #[test]
    fn label_smoothing_mixes_in_the_mean_log_probability() {
        let (logits, labels) = batch();
        let loss = LossKind::WeightedCrossEntropy {
            weights: vec![1.0, 5.0, 2.0],
            smoothing: 0.1,
        };
        let value: f32 = loss.compute(logits, &labels).into_scalar();
        let a = 0.9 * 0.407_606 + 0.1 * 1.407_606;
        let b = 1.098_612_3;
        assert!((value - (2.0 * a + b) / 3.0).abs() < 1e-6, "{value}");
    }

    #[test]
    fn focal_loss_matches_hand_computation() {
        let (logits, labels) = batch();
        let loss = LossKind::Focal {
            gamma: 2.0,
            alpha: vec![0.5, 1.0, 0.25],
        };
        let value: f32 = loss.compute(logits, &labels).into_scalar();
        // A: 0.25 (1 - 0.6652410)^2 0.4076060 = 0.0114194; B: 0.5 (2/3)^2 1.0986123 = 0.2441361.
        assert!((value - 0.127_777_76).abs() < 1e-6, "{value}");
    }

    #[test]
    fn focal_loss_with_gamma_zero_is_alpha_weighted_mean_cross_entropy() {
        let (logits, labels) = batch();
        let loss = LossKind::Focal {
            gamma: 0.0,
            alpha: vec![1.0; 3],
        };
        let value: f32 = loss.compute(logits, &labels).into_scalar();
        assert!(
            (value - (0.407_606 + 1.098_612_3) / 2.0).abs() < 1e-6,
            "{value}"
        );
    }
}

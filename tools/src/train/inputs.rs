//! What a member trains on: its training images, the loss with its class weights, and the seed of
//! each step.

use super::{LossChoice, TrainConfig};
use crate::data::{class_counts, class_weights, Sample};
use crate::loss::LossKind;
use crate::rng::SeededRng;
use crate::split::shuffle;

/// The training indices, at most `config.limit_per_class` per class (a seeded draw).
pub(super) fn training_indices(
    config: &TrainConfig,
    samples: &[Sample],
    train: &[usize],
) -> Vec<usize> {
    let Some(limit) = config.limit_per_class else {
        return train.to_vec();
    };
    let mut rng = SeededRng::new(config.seed ^ 0x5eed);
    let mut shuffled = train.to_vec();
    shuffle(&mut shuffled, &mut rng);
    let mut taken = vec![0usize; config.spec.classes];
    let mut out: Vec<usize> = shuffled
        .into_iter()
        .filter(|&i| {
            let c = samples[i].class;
            taken[c] += 1;
            taken[c] <= limit
        })
        .collect();
    out.sort_unstable();
    out
}

/// The configured loss, weighted by the configured class weights or `N / (K n_c)` of `train`.
pub(super) fn loss_for(config: &TrainConfig, samples: &[Sample], train: &[usize]) -> LossKind {
    let weights = config.class_weights.clone().unwrap_or_else(|| {
        let subset: Vec<Sample> = train.iter().map(|&i| samples[i].clone()).collect();
        class_weights(&class_counts(&subset, config.spec.classes))
    });
    match config.loss {
        LossChoice::WeightedCe => LossKind::WeightedCrossEntropy {
            weights,
            smoothing: config.label_smoothing,
        },
        LossChoice::Focal => LossKind::Focal {
            gamma: config.focal_gamma,
            alpha: weights,
        },
    }
}

/// A seed for everything random at one step of one epoch.
pub(super) fn step_seed(seed: u64, epoch: usize, step: usize) -> u64 {
    SeededRng::new(seed ^ ((epoch as u64) << 40) ^ (step as u64)).next_u64()
}

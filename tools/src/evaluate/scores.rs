//! Every member's logits on one side of a split, run through the runtime's own tract path, and the
//! probabilities the runtime would compute from them.

use std::time::Instant;

use dermedge::decision::{adjusted, mean, softmax, weighted_mean};
use dermedge::manifest::{DecisionSettings, TestTimeAugmentation};
use dermedge::preprocess::{load_image_file, ImageLimits};
use dermedge::Ensemble;

use crate::data::Sample;

/// Every member's logits for every view of every image, with the labels and the ensemble's
/// latency.
#[derive(Debug, Clone)]
pub struct Scores {
    /// HAM10000 `image_id` of each image, in the order of `labels`.
    pub image_ids: Vec<String>,
    pub labels: Vec<usize>,
    /// Per member, `[image][view][class]` flattened; one view without test-time augmentation.
    /// Flat and reserved up front, so a long evaluation does not fragment the heap.
    pub member_logits: Vec<Vec<f32>>,
    pub classes: usize,
    pub member_names: Vec<String>,
    pub weights: Vec<f32>,
    /// The test-time augmentation the views came from.
    pub test_time_augmentation: TestTimeAugmentation,
    /// Milliseconds per image for the whole ensemble (preprocessing, members, combination).
    pub latency_ms: Vec<f64>,
}

impl Scores {
    /// Runs every image of `samples[indices]` through the ensemble in tract.
    pub fn collect(
        ensemble: &Ensemble,
        samples: &[Sample],
        indices: &[usize],
    ) -> anyhow::Result<Scores> {
        let limits = ImageLimits::default();
        let test_time_augmentation = ensemble.manifest.inference.test_time_augmentation;
        let classes = ensemble.manifest.classes.len();
        let per_member = indices.len() * test_time_augmentation.views().len() * classes;
        let mut scores = Scores {
            image_ids: Vec::with_capacity(indices.len()),
            labels: Vec::with_capacity(indices.len()),
            member_logits: vec![Vec::with_capacity(per_member); ensemble.members.len()],
            classes,
            member_names: ensemble.members.iter().map(|m| m.label()).collect(),
            weights: ensemble.weights().to_vec(),
            test_time_augmentation,
            latency_ms: Vec::with_capacity(indices.len()),
        };
        for &i in indices {
            let sample = &samples[i];
            let image = load_image_file(&sample.path, &limits)?.rgb;
            let started = Instant::now();
            let views = ensemble.views_for(&image);
            let prediction = ensemble.predict(&views)?;
            scores
                .latency_ms
                .push(started.elapsed().as_secs_f64() * 1e3);
            for (logits, member) in scores.member_logits.iter_mut().zip(&prediction.members) {
                logits.extend(member.raw.iter().flatten());
            }
            scores.labels.push(sample.class);
            scores.image_ids.push(sample.image_id.clone());
        }
        Ok(scores)
    }

    /// Member `m`'s logits for image `i`, one slice per view.
    pub fn logits(&self, m: usize, i: usize) -> std::slice::Chunks<'_, f32> {
        let per_image = self.test_time_augmentation.views().len() * self.classes;
        self.member_logits[m][i * per_image..(i + 1) * per_image].chunks(self.classes)
    }

    /// Probabilities of member `m` at `temperature`, averaged over the views as the runtime does.
    pub fn member_probabilities(&self, m: usize, temperature: f32) -> Vec<Vec<f32>> {
        (0..self.labels.len())
            .map(|i| {
                let per_view: Vec<Vec<f32>> =
                    self.logits(m, i).map(|l| softmax(l, temperature)).collect();
                let slices: Vec<&[f32]> = per_view.iter().map(Vec::as_slice).collect();
                mean(&slices)
            })
            .collect()
    }

    /// The ensemble's probabilities as the runtime reports them under `decision`: temperature,
    /// weighted mean of the members', logit adjustment.
    pub fn decided_probabilities(&self, decision: &DecisionSettings) -> Vec<Vec<f32>> {
        self.ensemble_probabilities(decision.temperature.unwrap_or(1.0))
            .into_iter()
            .map(|p| adjusted(p, decision))
            .collect()
    }

    /// The ensemble's probabilities at `temperature` (weighted mean of the members').
    pub fn ensemble_probabilities(&self, temperature: f32) -> Vec<Vec<f32>> {
        let members: Vec<Vec<Vec<f32>>> = (0..self.member_logits.len())
            .map(|m| self.member_probabilities(m, temperature))
            .collect();
        (0..self.labels.len())
            .map(|i| {
                let per: Vec<&[f32]> = members.iter().map(|m| m[i].as_slice()).collect();
                weighted_mean(&per, &self.weights)
            })
            .collect()
    }
}

//! `dermedge-tools calibrate`: the decision settings fitted on a validation side (temperature,
//! post-hoc logit adjustment, referral threshold, uncertainty threshold) and written into the
//! ensemble's manifest.

use anyhow::Context;
use dermedge::decision::{adjusted, normalised_entropy};
use dermedge::manifest::{DecisionSettings, TestTimeAugmentation};

use crate::classes::Classes;
use crate::evaluate::{malignant_score, nll, side_scores, Scores, SideRequest};
use crate::metrics::{argmax, Confusion};
use crate::sides::side_samples;

/// Options of `dermedge-tools calibrate`.
#[derive(Debug, Clone)]
pub struct CalibrateRequest {
    pub side: SideRequest,
    /// Share of malignant images the referral threshold must refer.
    pub sensitivity: f64,
    /// Whether to fit a post-hoc logit adjustment against the training side's class shares.
    pub logit_adjustment: bool,
}

/// What `calibrate` fitted and wrote.
#[derive(Debug, Clone)]
pub struct Calibration {
    pub fitted: Fitted,
    pub images: usize,
    pub side: String,
    pub test_time_augmentation: TestTimeAugmentation,
    pub sensitivity: f64,
    /// The ensemble's NLL on the side before and after temperature scaling.
    pub nll_before: f64,
    pub nll_after: f64,
    /// Top-1 and balanced accuracy on the side without and with the logit adjustment.
    pub unadjusted: [f64; 2],
    pub adjusted: [f64; 2],
}

impl Calibration {
    /// One line of figures.
    pub fn summary(&self) -> String {
        format!(
            "fitted on {} '{}' images (test-time augmentation: {}): temperature {:.2} (NLL {:.4} -> {:.4}), logit adjustment {:.2} (top-1 {:.1}% -> {:.1}%, balanced {:.1}% -> {:.1}%), referral threshold {:.4} (>= {:.0}% malignant sensitivity), uncertainty entropy {:.3}",
            self.images,
            self.side,
            self.test_time_augmentation.name(),
            self.fitted.temperature,
            self.nll_before,
            self.nll_after,
            self.fitted.logit_adjustment,
            self.unadjusted[0] * 100.0,
            self.adjusted[0] * 100.0,
            self.unadjusted[1] * 100.0,
            self.adjusted[1] * 100.0,
            self.fitted.referral_threshold,
            self.sensitivity * 100.0,
            self.fitted.uncertainty_entropy
        )
    }
}

/// Fits temperature, logit adjustment, referral and uncertainty thresholds on one side and writes
/// them (with the test-time augmentation they were fitted under) into the manifest.
pub fn calibrate(request: &CalibrateRequest) -> anyhow::Result<Calibration> {
    let (ensemble, classes, scores) = side_scores(&request.side)?;
    let prior = if request.logit_adjustment {
        Some(training_prior(&request.side, &classes)?)
    } else {
        None
    };
    let fitted = fit_decision(&scores, request.sensitivity, &classes, prior.as_deref());
    let mut manifest = ensemble.manifest.clone();
    manifest.decision.temperature = Some(fitted.temperature);
    manifest.decision.referral_threshold = Some(fitted.referral_threshold);
    manifest.decision.uncertainty_entropy = Some(fitted.uncertainty_entropy);
    let adjustment = (fitted.logit_adjustment > 0.0).then_some(fitted.logit_adjustment);
    manifest.decision.logit_adjustment = adjustment;
    manifest.decision.class_prior = adjustment.and(prior);
    manifest.inference.test_time_augmentation = scores.test_time_augmentation;
    let path = &request.side.manifest;
    std::fs::write(path, manifest.to_toml())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Calibration {
        fitted,
        images: scores.labels.len(),
        side: request.side.side.clone(),
        test_time_augmentation: scores.test_time_augmentation,
        sensitivity: request.sensitivity,
        nll_before: nll(&scores.ensemble_probabilities(1.0), &scores.labels),
        nll_after: nll(
            &scores.ensemble_probabilities(fitted.temperature),
            &scores.labels,
        ),
        unadjusted: top1_and_balanced(
            &scores.ensemble_probabilities(fitted.temperature),
            &scores.labels,
            classes.len(),
        ),
        adjusted: top1_and_balanced(
            &scores.decided_probabilities(&manifest.decision),
            &scores.labels,
            classes.len(),
        ),
    })
}

/// Each class's share of the training side of the request's split (its HAM10000 images, not the
/// extra training sets a member may have seen; the fitted exponent absorbs the difference).
fn training_prior(side: &SideRequest, classes: &Classes) -> anyhow::Result<Vec<f32>> {
    let (samples, indices) =
        side_samples(&side.data, side.split.as_deref(), "train", None, classes)?;
    let mut counts = vec![0usize; classes.len()];
    for &i in &indices {
        counts[samples[i].class] += 1;
    }
    let total: usize = counts.iter().sum();
    anyhow::ensure!(
        counts.iter().all(|&c| c > 0),
        "the training side of the split lacks a class ({counts:?} images per class), so no class prior can be fitted. Fix: pass --logit-adjustment off"
    );
    Ok(counts.iter().map(|&c| c as f32 / total as f32).collect())
}

/// Top-1 and balanced accuracy of `probabilities` against `labels`.
fn top1_and_balanced(probabilities: &[Vec<f32>], labels: &[usize], classes: usize) -> [f64; 2] {
    let mut confusion = Confusion::new(classes);
    for (p, &label) in probabilities.iter().zip(labels) {
        confusion.add(label, argmax(p));
    }
    [confusion.accuracy(), confusion.balanced_accuracy()]
}

/// The exponent in 0..=1 (steps of 0.05) of the post-hoc logit adjustment against `prior` that
/// maximises the mean of top-1 and balanced accuracy on `probabilities`; the smallest on ties.
pub fn fit_logit_adjustment(probabilities: &[Vec<f32>], labels: &[usize], prior: &[f32]) -> f32 {
    let mut best = (0.0, f64::NEG_INFINITY);
    for step in 0..=20 {
        let tau = step as f32 * 0.05;
        let settings = adjustment_settings(tau, prior);
        let adjusted: Vec<Vec<f32>> = probabilities
            .iter()
            .map(|p| adjusted(p.clone(), &settings))
            .collect();
        let [top1, balanced] = top1_and_balanced(&adjusted, labels, prior.len());
        let score = (top1 + balanced) / 2.0;
        if score > best.1 + 1e-12 {
            best = (tau, score);
        }
    }
    best.0
}

fn adjustment_settings(tau: f32, prior: &[f32]) -> DecisionSettings {
    DecisionSettings {
        logit_adjustment: Some(tau),
        class_prior: Some(prior.to_vec()),
        ..DecisionSettings::default()
    }
}

/// The temperature in [0.25, 5] minimising the ensemble's NLL (grid of 0.01 steps).
pub fn fit_temperature(scores: &Scores) -> f32 {
    (25..=500)
        .map(|t| t as f32 / 100.0)
        .map(|t| (t, nll(&scores.ensemble_probabilities(t), &scores.labels)))
        .fold(
            (1.0, f64::INFINITY),
            |best, (t, v)| if v < best.1 { (t, v) } else { best },
        )
        .0
}

/// The largest threshold on the malignant score that refers at least `sensitivity` of the
/// malignant images.
pub fn referral_threshold(
    probabilities: &[Vec<f32>],
    labels: &[usize],
    sensitivity: f64,
    classes: &Classes,
) -> f32 {
    let mut malignant: Vec<f32> = probabilities
        .iter()
        .zip(labels)
        .filter(|(_, &l)| classes.is_malignant(l))
        .map(|(p, _)| malignant_score(p, classes))
        .collect();
    if malignant.is_empty() {
        return 0.5;
    }
    malignant.sort_by(|a, b| b.total_cmp(a));
    let needed = ((sensitivity * malignant.len() as f64).ceil() as usize).clamp(1, malignant.len());
    malignant[needed - 1]
}

/// The decision settings fitted on a validation side.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fitted {
    pub temperature: f32,
    /// 0 when no adjustment is fitted or none helps.
    pub logit_adjustment: f32,
    pub referral_threshold: f32,
    pub uncertainty_entropy: f32,
}

/// Fits temperature (NLL), the logit adjustment against `prior` when given (see
/// [`fit_logit_adjustment`]), then on the adjusted output the referral threshold (>=
/// `sensitivity` of malignant images referred) and the uncertainty threshold (the normalised
/// entropy above which the top-1 accuracy on the validation side falls under 50%, at least the
/// 80th percentile).
pub fn fit_decision(
    scores: &Scores,
    sensitivity: f64,
    classes: &Classes,
    prior: Option<&[f32]>,
) -> Fitted {
    let temperature = fit_temperature(scores);
    let probabilities = scores.ensemble_probabilities(temperature);
    let (logit_adjustment, probabilities) = match prior {
        Some(prior) => {
            let tau = fit_logit_adjustment(&probabilities, &scores.labels, prior);
            let settings = adjustment_settings(tau, prior);
            let adjusted = probabilities
                .into_iter()
                .map(|p| adjusted(p, &settings))
                .collect();
            (tau, adjusted)
        }
        None => (0.0, probabilities),
    };
    let referral_threshold =
        referral_threshold(&probabilities, &scores.labels, sensitivity, classes);
    let mut by_entropy: Vec<(f32, bool)> = probabilities
        .iter()
        .zip(&scores.labels)
        .map(|(p, &l)| (normalised_entropy(p), argmax(p) == l))
        .collect();
    by_entropy.sort_by(|a, b| a.0.total_cmp(&b.0));
    let start = (by_entropy.len() * 4) / 5;
    let mut uncertainty_entropy = by_entropy.last().map_or(1.0, |e| e.0);
    for i in start..by_entropy.len() {
        let tail = &by_entropy[i..];
        let correct = tail.iter().filter(|e| e.1).count();
        if (correct as f64) < 0.5 * tail.len() as f64 {
            uncertainty_entropy = by_entropy[i].0;
            break;
        }
    }
    if by_entropy.len() > start {
        uncertainty_entropy = uncertainty_entropy.max(by_entropy[start].0);
    }
    Fitted {
        temperature,
        logit_adjustment,
        referral_threshold,
        uncertainty_entropy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classes::tests::shipped;
    use crate::evaluate::summarise;

    #[test]
    fn logit_adjustment_takes_the_smallest_exponent_that_finds_the_rare_class() {
        // The rare class (prior 0.1) scores 0.3 on its own images, the common one 0.95 on its
        // own: the rare images flip once (0.9 / 0.1)^tau > 0.7 / 0.3, from tau 0.386.
        let mut probabilities = vec![vec![0.05, 0.95]; 9];
        probabilities.push(vec![0.3, 0.7]);
        probabilities.push(vec![0.3, 0.7]);
        let labels = [vec![1; 9], vec![0; 2]].concat();
        assert_eq!(
            fit_logit_adjustment(&probabilities, &labels, &[0.1, 0.9]),
            0.4
        );
        let uniform = [0.5, 0.5];
        assert_eq!(fit_logit_adjustment(&probabilities, &labels, &uniform), 0.0);
    }

    #[test]
    fn referral_threshold_keeps_the_requested_sensitivity() {
        let classes = shipped();
        let p = |m: f32| {
            let mut v = vec![0.0; 7];
            v[4] = m;
            v[5] = 1.0 - m;
            v
        };
        let probabilities: Vec<Vec<f32>> = [0.9, 0.7, 0.4, 0.2, 0.1, 0.05]
            .iter()
            .map(|&m| p(m))
            .collect();
        let labels = [4, 4, 4, 4, 5, 5];
        assert_eq!(
            referral_threshold(&probabilities, &labels, 0.75, &classes),
            0.4
        );
        assert_eq!(
            referral_threshold(&probabilities, &labels, 0.95, &classes),
            0.2
        );
        let s = summarise("x", &probabilities, &labels, Some(0.2), &classes);
        assert_eq!(s.malignant_sensitivity, 1.0);
        assert_eq!(s.malignant_specificity, 1.0);
        assert_eq!(s.referred_per_class, [0, 0, 0, 0, 4, 0, 0]);
        let s = summarise("x", &probabilities, &labels, Some(0.1), &classes);
        assert_eq!(s.referred_per_class, [0, 0, 0, 0, 4, 1, 0]);
        assert_eq!(s.malignant_specificity, 0.5);
    }
}

//! `dermedge-tools calibrate`: the decision settings fitted on a validation side (temperature,
//! referral threshold, uncertainty threshold) and written into the ensemble's manifest.

use anyhow::Context;
use dermedge::decision::normalised_entropy;
use dermedge::manifest::TestTimeAugmentation;

use crate::classes::Classes;
use crate::evaluate::{malignant_score, nll, side_scores, Scores, SideRequest};
use crate::metrics::argmax;

/// Options of `dermedge-tools calibrate`.
#[derive(Debug, Clone)]
pub struct CalibrateRequest {
    pub side: SideRequest,
    /// Share of malignant images the referral threshold must refer.
    pub sensitivity: f64,
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
}

impl Calibration {
    /// One line of figures.
    pub fn summary(&self) -> String {
        format!(
            "fitted on {} '{}' images (test-time augmentation: {}): temperature {:.2} (NLL {:.4} -> {:.4}), referral threshold {:.4} (>= {:.0}% malignant sensitivity), uncertainty entropy {:.3}",
            self.images,
            self.side,
            self.test_time_augmentation.name(),
            self.fitted.temperature,
            self.nll_before,
            self.nll_after,
            self.fitted.referral_threshold,
            self.sensitivity * 100.0,
            self.fitted.uncertainty_entropy
        )
    }
}

/// Fits temperature, referral and uncertainty thresholds on one side and writes them (with the
/// test-time augmentation they were fitted under) into the manifest.
pub fn calibrate(request: &CalibrateRequest) -> anyhow::Result<Calibration> {
    let (ensemble, classes, scores) = side_scores(&request.side)?;
    let fitted = fit_decision(&scores, request.sensitivity, &classes);
    let mut manifest = ensemble.manifest.clone();
    manifest.decision.temperature = Some(fitted.temperature);
    manifest.decision.referral_threshold = Some(fitted.referral_threshold);
    manifest.decision.uncertainty_entropy = Some(fitted.uncertainty_entropy);
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
    })
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
    pub referral_threshold: f32,
    pub uncertainty_entropy: f32,
}

/// Fits temperature (NLL), the referral threshold (>= `sensitivity` of malignant images referred)
/// and the uncertainty threshold (the normalised entropy above which the top-1 accuracy on the
/// validation side falls under 50%, at least the 80th percentile).
pub fn fit_decision(scores: &Scores, sensitivity: f64, classes: &Classes) -> Fitted {
    let temperature = fit_temperature(scores);
    let probabilities = scores.ensemble_probabilities(temperature);
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

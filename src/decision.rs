//! The arithmetic that turns member outputs into what a clinician sees: softmax, the weighted
//! ensemble mean, top-k, and the referral and uncertainty flags.

use serde::{Deserialize, Serialize};

use crate::manifest::{DecisionSettings, Manifest};

/// Numerically stable softmax of `logits / temperature`.
pub fn softmax(logits: &[f32], temperature: f32) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits
        .iter()
        .map(|l| ((l - max) / temperature).exp())
        .collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

/// Weighted mean of per-member distributions; `weights` sum to one.
pub fn weighted_mean(members: &[&[f32]], weights: &[f32]) -> Vec<f32> {
    let classes = members.first().map_or(0, |m| m.len());
    let mut out = vec![0f32; classes];
    for (probabilities, weight) in members.iter().zip(weights) {
        for (acc, p) in out.iter_mut().zip(probabilities.iter()) {
            *acc += weight * p;
        }
    }
    out
}

/// Unweighted mean of distributions, such as one member's outputs over the views of an input.
pub fn mean(distributions: &[&[f32]]) -> Vec<f32> {
    let weight = 1.0 / distributions.len().max(1) as f32;
    weighted_mean(distributions, &vec![weight; distributions.len()])
}

/// The ensemble's probabilities after the manifest's post-hoc logit adjustment: each divided by
/// its class's prior to the power `logit_adjustment`, renormalised. Unchanged when the manifest
/// sets none.
pub fn adjusted(probabilities: Vec<f32>, settings: &DecisionSettings) -> Vec<f32> {
    let (Some(tau), Some(prior)) = (settings.logit_adjustment, &settings.class_prior) else {
        return probabilities;
    };
    if tau == 0.0 || prior.len() != probabilities.len() {
        return probabilities;
    }
    let scaled: Vec<f32> = probabilities
        .iter()
        .zip(prior)
        .map(|(p, q)| p / q.powf(tau))
        .collect();
    let total: f32 = scaled.iter().sum();
    if !(total.is_finite() && total > 0.0) {
        return probabilities;
    }
    scaled.into_iter().map(|p| p / total).collect()
}

/// Indices and values of the `k` largest entries, largest first; ties keep class order.
pub fn top_k(probabilities: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut ranked: Vec<(usize, f32)> = probabilities.iter().copied().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.truncate(k);
    ranked
}

/// Shannon entropy divided by `ln(classes)`: 0 for a certain output, 1 for a uniform one.
pub fn normalised_entropy(probabilities: &[f32]) -> f32 {
    if probabilities.len() < 2 {
        return 0.0;
    }
    let h: f32 = probabilities
        .iter()
        .filter(|p| **p > 0.0)
        .map(|p| -p * p.ln())
        .sum();
    h / (probabilities.len() as f32).ln()
}

/// Whether the members' top-1 classes differ.
pub fn members_disagree(members: &[&[f32]]) -> bool {
    let mut tops = members.iter().map(|m| top_k(m, 1).first().map(|t| t.0));
    match tops.next() {
        Some(first) => tops.any(|t| t != first),
        None => false,
    }
}

/// The flags attached to one ensemble result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Summed probability of the classes the manifest marks malignant.
    pub malignant_probability: f32,
    /// Normalised entropy of the ensemble output (0 certain, 1 uniform).
    pub entropy: f32,
    /// Whether the members' top-1 classes differ.
    pub members_disagree: bool,
    /// `Some(true)` when the malignant probability reaches the manifest's referral threshold;
    /// `None` when the manifest sets no threshold.
    pub refer: Option<bool>,
    /// `Some(true)` when the entropy reaches the manifest's threshold or the members disagree;
    /// `None` when the manifest sets no threshold.
    pub uncertain: Option<bool>,
}

impl Decision {
    /// Computes the flags for an ensemble output and its members' outputs.
    pub fn new(probabilities: &[f32], members: &[&[f32]], manifest: &Manifest) -> Decision {
        let malignant_probability = manifest
            .classes
            .iter()
            .zip(probabilities)
            .filter(|(class, _)| class.malignant)
            .map(|(_, p)| p)
            .sum();
        let entropy = normalised_entropy(probabilities);
        let disagree = members_disagree(members);
        let settings = &manifest.decision;
        Decision {
            malignant_probability,
            entropy,
            members_disagree: disagree,
            refer: settings
                .referral_threshold
                .map(|t| malignant_probability >= t),
            uncertain: settings
                .uncertainty_entropy
                .map(|t| entropy >= t || disagree),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{
        ham10000_classes, ChannelOrder, DecisionSettings, EnsembleStatus, InputSpec, ResizePolicy,
    };

    fn close(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5)
    }

    #[test]
    fn softmax_matches_hand_values() {
        // exp(0), exp(ln 3) -> 1/4, 3/4.
        assert!(close(&softmax(&[0.0, 3f32.ln()], 1.0), &[0.25, 0.75]));
        // Temperature 2 halves the logits: exp(0), exp(ln 9 / 2) = 3.
        assert!(close(&softmax(&[0.0, 9f32.ln()], 2.0), &[0.25, 0.75]));
        // Large logits stay finite.
        assert!(close(&softmax(&[1000.0, 1000.0], 1.0), &[0.5, 0.5]));
    }

    #[test]
    fn logit_adjustment_divides_by_the_prior_to_the_power_tau() {
        let settings = DecisionSettings {
            logit_adjustment: Some(0.5),
            class_prior: Some(vec![0.64, 0.16, 0.04, 0.16]),
            ..DecisionSettings::default()
        };
        // Divided by sqrt(prior): 0.4 / 0.8, 0.3 / 0.4, 0.2 / 0.2, 0.1 / 0.4 = 0.5, 0.75, 1, 0.25.
        let result = adjusted(vec![0.4, 0.3, 0.2, 0.1], &settings);
        assert!(close(&result, &[0.2, 0.3, 0.4, 0.1]), "{result:?}");
        let unchanged = adjusted(vec![0.4, 0.3, 0.2, 0.1], &DecisionSettings::default());
        assert_eq!(unchanged, vec![0.4, 0.3, 0.2, 0.1]);
    }

    #[test]
    fn weighted_mean_and_top_k_match_hand_values() {
        let a = [0.5, 0.3, 0.2];
        let b = [0.1, 0.1, 0.8];
        let mean = weighted_mean(&[&a, &b], &[0.75, 0.25]);
        assert!(close(&mean, &[0.4, 0.25, 0.35]), "{mean:?}");
        assert_eq!(
            top_k(&mean, 3).iter().map(|t| t.0).collect::<Vec<_>>(),
            vec![0, 2, 1]
        );
        assert_eq!(
            top_k(&[0.5, 0.5, 0.0], 2)
                .iter()
                .map(|t| t.0)
                .collect::<Vec<_>>(),
            vec![0, 1]
        );
        assert!(members_disagree(&[&a, &b]));
        assert!(!members_disagree(&[&a, &a]));
    }

    #[test]
    fn entropy_is_normalised() {
        assert!((normalised_entropy(&[1.0, 0.0, 0.0]) - 0.0).abs() < 1e-6);
        assert!((normalised_entropy(&[0.25; 4]) - 1.0).abs() < 1e-6);
        // H(0.5, 0.5, 0, 0) = ln 2; / ln 4 = 0.5.
        assert!((normalised_entropy(&[0.5, 0.5, 0.0, 0.0]) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn flags_follow_the_manifest_thresholds() {
        let mut manifest = Manifest {
            name: "t".into(),
            version: "1".into(),
            status: EnsembleStatus::UntrainedFixture,
            description: String::new(),
            input: InputSpec {
                width: 4,
                height: 4,
                resize: ResizePolicy::Stretch,
                mean: [0.0; 3],
                std: [1.0; 3],
                channel_order: ChannelOrder::Rgb,
                colour_constancy: crate::manifest::ColourConstancy::None,
            },
            classes: ham10000_classes(),
            members: vec![],
            inference: Default::default(),
            decision: DecisionSettings::default(),
        };
        // akiec, bcc, bkl, df, mel, nv, vasc: malignant = 0.1 + 0.05 + 0.15 = 0.3.
        let p = [0.1, 0.05, 0.1, 0.0, 0.15, 0.6, 0.0];
        let d = Decision::new(&p, &[&p], &manifest);
        assert!((d.malignant_probability - 0.3).abs() < 1e-6);
        assert_eq!((d.refer, d.uncertain), (None, None));
        manifest.decision.referral_threshold = Some(0.3);
        manifest.decision.uncertainty_entropy = Some(0.99);
        let d = Decision::new(&p, &[&p], &manifest);
        assert_eq!((d.refer, d.uncertain), (Some(true), Some(false)));
        manifest.decision.referral_threshold = Some(0.31);
        let other = [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0];
        let d = Decision::new(&p, &[&p, &other], &manifest);
        assert_eq!((d.refer, d.uncertain), (Some(false), Some(true)));
    }
}

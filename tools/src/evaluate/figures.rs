//! The figures of one model on one side: accuracy, melanoma and malignant rates, ROC, calibration,
//! likelihood, and how the uncertainty flag divides the images.

use dermedge::decision::{members_disagree, normalised_entropy};
use dermedge::manifest::DecisionSettings;

use super::Scores;
use crate::classes::Classes;
use crate::metrics::{argmax, in_top_k, Confusion};

/// Mean negative log-likelihood of the labels.
pub fn nll(probabilities: &[Vec<f32>], labels: &[usize]) -> f64 {
    probabilities
        .iter()
        .zip(labels)
        .map(|(p, &l)| -(p[l].max(1e-12) as f64).ln())
        .sum::<f64>()
        / labels.len().max(1) as f64
}

/// Summed probability of the classes marked malignant.
pub fn malignant_score(p: &[f32], classes: &Classes) -> f32 {
    p.iter()
        .enumerate()
        .filter(|(c, _)| classes.is_malignant(*c))
        .map(|(_, v)| v)
        .sum()
}

/// Area under the ROC curve (Mann-Whitney, ties counted half).
pub fn roc_auc(scores: &[f32], positive: &[bool]) -> f64 {
    let pos: Vec<f32> = scores
        .iter()
        .zip(positive)
        .filter(|(_, p)| **p)
        .map(|(s, _)| *s)
        .collect();
    let neg: Vec<f32> = scores
        .iter()
        .zip(positive)
        .filter(|(_, p)| !**p)
        .map(|(s, _)| *s)
        .collect();
    if pos.is_empty() || neg.is_empty() {
        return f64::NAN;
    }
    let mut sorted_neg = neg.clone();
    sorted_neg.sort_by(f32::total_cmp);
    let mut wins = 0.0;
    for &p in &pos {
        let below = sorted_neg.partition_point(|&n| n < p);
        let ties = sorted_neg[below..].partition_point(|&n| n <= p);
        wins += below as f64 + 0.5 * ties as f64;
    }
    wins / (pos.len() as f64 * neg.len() as f64)
}

/// ROC curve points `(false positive rate, true positive rate)` from the highest threshold down.
pub fn roc_curve(scores: &[f32], positive: &[bool]) -> Vec<(f64, f64)> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let p = positive.iter().filter(|x| **x).count().max(1) as f64;
    let n = positive.iter().filter(|x| !**x).count().max(1) as f64;
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut out = vec![(0.0, 0.0)];
    for i in order {
        if positive[i] {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        out.push((fp / n, tp / p));
    }
    out
}

/// One reliability bin: mean confidence, accuracy, count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bin {
    pub confidence: f64,
    pub accuracy: f64,
    pub count: usize,
}

/// Expected calibration error of the top-1 confidence over `bins` equal-width bins.
pub fn calibration(probabilities: &[Vec<f32>], labels: &[usize], bins: usize) -> (f64, Vec<Bin>) {
    let mut sums = vec![(0.0f64, 0usize, 0usize); bins];
    for (p, &l) in probabilities.iter().zip(labels) {
        let top = argmax(p);
        let c = p[top] as f64;
        let b = ((c * bins as f64) as usize).min(bins - 1);
        sums[b].0 += c;
        sums[b].1 += usize::from(top == l);
        sums[b].2 += 1;
    }
    let n = labels.len().max(1) as f64;
    let mut ece = 0.0;
    let out = sums
        .iter()
        .map(|&(conf, correct, count)| {
            let bin = if count == 0 {
                Bin {
                    confidence: 0.0,
                    accuracy: 0.0,
                    count,
                }
            } else {
                Bin {
                    confidence: conf / count as f64,
                    accuracy: correct as f64 / count as f64,
                    count,
                }
            };
            ece += count as f64 / n * (bin.confidence - bin.accuracy).abs();
            bin
        })
        .collect();
    (ece, out)
}

/// Every figure of one model (a member or the ensemble) on one side.
#[derive(Debug, Clone)]
pub struct Summary {
    pub name: String,
    pub images: usize,
    pub top: [f64; 3],
    pub balanced_accuracy: f64,
    pub confusion: Confusion,
    pub melanoma_sensitivity: f64,
    pub melanoma_specificity: f64,
    pub melanoma_auc: f64,
    /// Malignant vs benign by the referral rule (score >= threshold), or by the top-1 class
    /// without a threshold.
    pub malignant_sensitivity: f64,
    pub malignant_specificity: f64,
    /// Images of each true class that the same rule refers, in class order.
    pub referred_per_class: Vec<usize>,
    pub ece: f64,
    pub bins: Vec<Bin>,
    pub nll: f64,
}

pub(super) fn rate(hit: usize, total: usize) -> f64 {
    if total == 0 {
        f64::NAN
    } else {
        hit as f64 / total as f64
    }
}

/// The summary of `probabilities` against `labels`; without a melanoma class the melanoma
/// figures are undefined (NaN).
pub fn summarise(
    name: &str,
    probabilities: &[Vec<f32>],
    labels: &[usize],
    referral: Option<f32>,
    classes: &Classes,
) -> Summary {
    let melanoma = classes.melanoma();
    let mut confusion = Confusion::new(classes.len());
    let mut top = [0usize; 3];
    let (mut mel_tp, mut mel_fn, mut mel_tn, mut mel_fp) = (0, 0, 0, 0);
    let mut referred_per_class = vec![0; classes.len()];
    for (p, &l) in probabilities.iter().zip(labels) {
        let predicted = argmax(p);
        confusion.add(l, predicted);
        for (k, hits) in top.iter_mut().enumerate() {
            *hits += usize::from(in_top_k(p, l, k + 1));
        }
        match (Some(l) == melanoma, Some(predicted) == melanoma) {
            (true, true) => mel_tp += 1,
            (true, false) => mel_fn += 1,
            (false, false) => mel_tn += 1,
            (false, true) => mel_fp += 1,
        }
        let refer = match referral {
            Some(t) => malignant_score(p, classes) >= t,
            None => classes.is_malignant(predicted),
        };
        referred_per_class[l] += usize::from(refer);
    }
    let (mut malignant, mut malignant_referred, mut benign, mut benign_kept) = (0, 0, 0, 0);
    for (c, &referred) in referred_per_class.iter().enumerate() {
        let images: usize = confusion.counts[c].iter().sum();
        if classes.is_malignant(c) {
            malignant += images;
            malignant_referred += referred;
        } else {
            benign += images;
            benign_kept += images - referred;
        }
    }
    let n = labels.len();
    let mel_scores: Vec<f32> = probabilities
        .iter()
        .map(|p| melanoma.map_or(0.0, |m| p[m]))
        .collect();
    let is_mel: Vec<bool> = labels.iter().map(|&l| Some(l) == melanoma).collect();
    let (ece, bins) = calibration(probabilities, labels, 15);
    Summary {
        name: name.into(),
        images: n,
        top: top.map(|h| rate(h, n)),
        balanced_accuracy: confusion.balanced_accuracy(),
        confusion,
        melanoma_sensitivity: rate(mel_tp, mel_tp + mel_fn),
        melanoma_specificity: rate(mel_tn, mel_tn + mel_fp),
        melanoma_auc: roc_auc(&mel_scores, &is_mel),
        malignant_sensitivity: rate(malignant_referred, malignant),
        malignant_specificity: rate(benign_kept, benign),
        referred_per_class,
        ece,
        bins,
        nll: nll(probabilities, labels),
    }
}

/// How the uncertainty flag divides a side: images flagged and not, and the correct top-1 among each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UncertaintySplit {
    pub flagged: usize,
    pub flagged_correct: usize,
    pub clear: usize,
    pub clear_correct: usize,
}

impl UncertaintySplit {
    /// Applies the runtime's rule (entropy at or over `threshold`, or members' top-1 differ).
    pub fn measure(
        scores: &Scores,
        decision: &DecisionSettings,
        threshold: f32,
    ) -> UncertaintySplit {
        let temperature = decision.temperature.unwrap_or(1.0);
        let members: Vec<Vec<Vec<f32>>> = (0..scores.member_logits.len())
            .map(|m| scores.member_probabilities(m, temperature))
            .collect();
        let ensemble = scores.decided_probabilities(decision);
        let mut split = UncertaintySplit::default();
        for (i, (p, &label)) in ensemble.iter().zip(&scores.labels).enumerate() {
            let per: Vec<&[f32]> = members.iter().map(|m| m[i].as_slice()).collect();
            let flagged = normalised_entropy(p) >= threshold || members_disagree(&per);
            let correct = usize::from(argmax(p) == label);
            if flagged {
                split.flagged += 1;
                split.flagged_correct += correct;
            } else {
                split.clear += 1;
                split.clear_correct += correct;
            }
        }
        split
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dermedge::manifest::TestTimeAugmentation;

    #[test]
    fn auc_counts_ties_half() {
        assert_eq!(
            roc_auc(&[0.9, 0.1, 0.8, 0.2], &[true, false, true, false]),
            1.0
        );
        assert_eq!(roc_auc(&[0.5, 0.5], &[true, false]), 0.5);
        assert!((roc_auc(&[0.3, 0.6, 0.4, 0.2], &[true, false, false, true]) - 0.0).abs() < 1e-12);
    }

    #[test]
    fn calibration_error_of_a_perfectly_calibrated_bin_is_zero() {
        let probabilities = vec![vec![0.75, 0.25]; 4];
        let (ece, _) = calibration(&probabilities, &[0, 0, 0, 1], 10);
        assert!(ece.abs() < 1e-9, "{ece}");
        let (ece, _) = calibration(&probabilities, &[1, 1, 1, 1], 10);
        assert!((ece - 0.75).abs() < 1e-9, "{ece}");
    }

    #[test]
    fn uncertainty_split_counts_disagreement_and_entropy() {
        let scores = Scores {
            image_ids: vec!["a".into(), "b".into(), "c".into()],
            labels: vec![0, 1, 2],
            member_logits: vec![
                vec![5.0, 0.0, 0.0, 0.0, 5.0, 0.0, 0.0, 0.01, 0.0],
                vec![5.0, 0.0, 0.0, 4.0, 0.0, 0.0, 0.0, 0.01, 0.0],
            ],
            classes: 3,
            member_names: vec!["a".into(), "b".into()],
            weights: vec![0.5, 0.5],
            test_time_augmentation: TestTimeAugmentation::None,
            latency_ms: vec![],
        };
        let split = UncertaintySplit::measure(&scores, &DecisionSettings::default(), 0.9);
        assert_eq!(
            split,
            UncertaintySplit {
                flagged: 2,
                flagged_correct: 1,
                clear: 1,
                clear_correct: 1,
            }
        );
        assert_eq!(
            UncertaintySplit::measure(&scores, &DecisionSettings::default(), 1.0).flagged,
            1
        );
    }
}

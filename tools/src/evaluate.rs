//! Evaluation of an exported ensemble through the runtime's own code path (tract), and the
//! decision settings fitted on a validation side: temperature, referral threshold, uncertainty.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use dermedge::decision::{mean, members_disagree, normalised_entropy, softmax, weighted_mean};
use dermedge::manifest::{DecisionSettings, TestTimeAugmentation};
use dermedge::preprocess::{load_image_file, ImageLimits};
use dermedge::Ensemble;

use crate::data::{Sample, CLASSES};
use crate::metrics::{argmax, in_top_k, Confusion};

/// Class indices counted as malignant (akiec, bcc, mel).
pub const MALIGNANT: [usize; 3] = [0, 1, 4];
/// Index of melanoma.
pub const MELANOMA: usize = 4;

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

/// Mean negative log-likelihood of the labels.
pub fn nll(probabilities: &[Vec<f32>], labels: &[usize]) -> f64 {
    probabilities
        .iter()
        .zip(labels)
        .map(|(p, &l)| -(p[l].max(1e-12) as f64).ln())
        .sum::<f64>()
        / labels.len().max(1) as f64
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

/// Summed probability of the malignant classes.
pub fn malignant_score(p: &[f32]) -> f32 {
    MALIGNANT.iter().map(|&c| p[c]).sum()
}

/// The largest threshold on the malignant score that refers at least `sensitivity` of the
/// malignant images.
pub fn referral_threshold(probabilities: &[Vec<f32>], labels: &[usize], sensitivity: f64) -> f32 {
    let mut malignant: Vec<f32> = probabilities
        .iter()
        .zip(labels)
        .filter(|(_, l)| MALIGNANT.contains(l))
        .map(|(p, _)| malignant_score(p))
        .collect();
    if malignant.is_empty() {
        return 0.5;
    }
    malignant.sort_by(|a, b| b.total_cmp(a));
    let needed = ((sensitivity * malignant.len() as f64).ceil() as usize).clamp(1, malignant.len());
    malignant[needed - 1]
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
    /// Images of each true class that the same rule refers (class order of `CLASSES`).
    pub referred_per_class: Vec<usize>,
    pub ece: f64,
    pub bins: Vec<Bin>,
    pub nll: f64,
}

fn rate(hit: usize, total: usize) -> f64 {
    if total == 0 {
        f64::NAN
    } else {
        hit as f64 / total as f64
    }
}

/// The summary of `probabilities` against `labels`.
pub fn summarise(
    name: &str,
    probabilities: &[Vec<f32>],
    labels: &[usize],
    referral: Option<f32>,
) -> Summary {
    let mut confusion = Confusion::new(CLASSES.len());
    let mut top = [0usize; 3];
    let (mut mel_tp, mut mel_fn, mut mel_tn, mut mel_fp) = (0, 0, 0, 0);
    let mut referred_per_class = vec![0; CLASSES.len()];
    for (p, &l) in probabilities.iter().zip(labels) {
        let predicted = argmax(p);
        confusion.add(l, predicted);
        for (k, hits) in top.iter_mut().enumerate() {
            *hits += usize::from(in_top_k(p, l, k + 1));
        }
        match (l == MELANOMA, predicted == MELANOMA) {
            (true, true) => mel_tp += 1,
            (true, false) => mel_fn += 1,
            (false, false) => mel_tn += 1,
            (false, true) => mel_fp += 1,
        }
        let refer = match referral {
            Some(t) => malignant_score(p) >= t,
            None => MALIGNANT.contains(&predicted),
        };
        referred_per_class[l] += usize::from(refer);
    }
    let (mut malignant, mut malignant_referred, mut benign, mut benign_kept) = (0, 0, 0, 0);
    for (c, &referred) in referred_per_class.iter().enumerate() {
        let images: usize = confusion.counts[c].iter().sum();
        if MALIGNANT.contains(&c) {
            malignant += images;
            malignant_referred += referred;
        } else {
            benign += images;
            benign_kept += images - referred;
        }
    }
    let n = labels.len();
    let mel_scores: Vec<f32> = probabilities.iter().map(|p| p[MELANOMA]).collect();
    let is_mel: Vec<bool> = labels.iter().map(|&l| l == MELANOMA).collect();
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
pub fn fit_decision(scores: &Scores, sensitivity: f64) -> Fitted {
    let temperature = fit_temperature(scores);
    let probabilities = scores.ensemble_probabilities(temperature);
    let referral_threshold = referral_threshold(&probabilities, &scores.labels, sensitivity);
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

fn pct(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else {
        format!("{:.1}%", 100.0 * v)
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
    pub fn measure(scores: &Scores, temperature: f32, threshold: f32) -> UncertaintySplit {
        let members: Vec<Vec<Vec<f32>>> = (0..scores.member_logits.len())
            .map(|m| scores.member_probabilities(m, temperature))
            .collect();
        let ensemble = scores.ensemble_probabilities(temperature);
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

/// The Markdown report of an evaluation.
pub fn markdown_report(
    title: &str,
    summaries: &[Summary],
    scores: &Scores,
    decision: &DecisionSettings,
    plots: &[PathBuf],
) -> String {
    let referral = decision.referral_threshold;
    let mut md = String::new();
    let _ = writeln!(md, "# {title}\n");
    let _ = writeln!(
        md,
        "Decision support only: these figures describe a model that assists a clinician; it does not diagnose.\n"
    );
    let _ = writeln!(
        md,
        "Images: {}. Test-time augmentation: {} ({} view(s) per member). Referral threshold on the malignant score: {}.\n",
        scores.labels.len(),
        scores.test_time_augmentation.name(),
        scores.test_time_augmentation.views().len(),
        referral.map_or("none (top-1 class)".into(), |t| format!("{t:.4}"))
    );
    if let Some(threshold) = decision.uncertainty_entropy {
        let split =
            UncertaintySplit::measure(scores, decision.temperature.unwrap_or(1.0), threshold);
        let _ = writeln!(
            md,
            "Uncertainty flag (normalised entropy >= {threshold:.3} or members disagree): raised on {} of {} images ({}); ensemble top-1 accuracy {} on the flagged images, {} on the others.\n",
            split.flagged,
            split.flagged + split.clear,
            pct(rate(split.flagged, split.flagged + split.clear)),
            pct(rate(split.flagged_correct, split.flagged)),
            pct(rate(split.clear_correct, split.clear)),
        );
    }
    let _ = writeln!(md, "| model | top-1 | top-2 | top-3 | balanced acc. | mel sens. | mel spec. | mel AUC | malignant sens. | malignant spec. | ECE | NLL |");
    let _ = writeln!(
        md,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for s in summaries {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {:.3} | {} | {} | {:.3} | {:.3} |",
            s.name,
            pct(s.top[0]),
            pct(s.top[1]),
            pct(s.top[2]),
            pct(s.balanced_accuracy),
            pct(s.melanoma_sensitivity),
            pct(s.melanoma_specificity),
            s.melanoma_auc,
            pct(s.malignant_sensitivity),
            pct(s.malignant_specificity),
            s.ece,
            s.nll
        );
    }
    if let Some(ensemble) = summaries.last() {
        let _ = writeln!(md, "\n## Per class ({})\n", ensemble.name);
        let _ = writeln!(
            md,
            "| class | images | precision | recall | F1 | referred ({}) |",
            referral.map_or("malignant top-1".into(), |t| format!(
                "malignant score >= {t:.3}"
            ))
        );
        let _ = writeln!(md, "| --- | --- | --- | --- | --- | --- |");
        let precisions = ensemble.confusion.precisions();
        let recalls = ensemble.confusion.recalls();
        for (c, code) in CLASSES.iter().enumerate() {
            let n: usize = ensemble.confusion.counts[c].iter().sum();
            let p = precisions[c].unwrap_or(f64::NAN);
            let r = recalls[c].unwrap_or(f64::NAN);
            let f1 = if p + r > 0.0 {
                2.0 * p * r / (p + r)
            } else {
                f64::NAN
            };
            let referred = ensemble.referred_per_class[c];
            let _ = writeln!(
                md,
                "| {code} | {n} | {} | {} | {} | {referred} ({}) |",
                pct(p),
                pct(r),
                pct(f1),
                pct(rate(referred, n))
            );
        }
        let _ = writeln!(
            md,
            "\n## Confusion matrix ({}; rows true, columns predicted)\n",
            ensemble.name
        );
        let _ = writeln!(md, "| true \\ predicted | {} |", CLASSES.join(" | "));
        let _ = writeln!(md, "| --- |{}", " --- |".repeat(CLASSES.len()));
        for (c, code) in CLASSES.iter().enumerate() {
            let row: Vec<String> = ensemble.confusion.counts[c]
                .iter()
                .map(|v| v.to_string())
                .collect();
            let _ = writeln!(md, "| {code} | {} |", row.join(" | "));
        }
    }
    let mut lat = scores.latency_ms.clone();
    lat.sort_by(f64::total_cmp);
    if !lat.is_empty() {
        let _ = writeln!(
            md,
            "\n## Latency\n\nWhole ensemble per image (preprocessing, members, combination) in tract on this machine: median {:.1} ms, 90th percentile {:.1} ms over {} images.",
            lat[lat.len() / 2],
            lat[(lat.len() * 9) / 10],
            lat.len()
        );
    }
    if !plots.is_empty() {
        let _ = writeln!(md, "\n## Plots\n");
        for p in plots {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("plot.png");
            let _ = writeln!(md, "![{name}]({name})");
        }
    }
    md
}

/// Writes the reliability diagram and melanoma ROC curve of `summary` as PNG files in `dir`.
pub fn write_plots(
    dir: &Path,
    summary: &Summary,
    probabilities: &[Vec<f32>],
    labels: &[usize],
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let reliability = dir.join("reliability.png");
    crate::plot::write_reliability_plot(&reliability, &summary.bins)?;
    let roc = dir.join("melanoma-roc.png");
    let mel: Vec<f32> = probabilities.iter().map(|p| p[MELANOMA]).collect();
    let positive: Vec<bool> = labels.iter().map(|&l| l == MELANOMA).collect();
    crate::plot::write_curve_plot(&roc, &roc_curve(&mel, &positive))?;
    Ok(vec![reliability, roc])
}

/// Writes `predictions.csv`: one row per image with its id, true class, the ensemble's
/// probabilities and its malignant score, so every figure of a report can be recomputed.
pub fn write_predictions(
    path: &Path,
    scores: &Scores,
    probabilities: &[Vec<f32>],
) -> anyhow::Result<()> {
    let mut csv = String::from("image_id,label");
    for code in CLASSES {
        let _ = write!(csv, ",p_{code}");
    }
    csv.push_str(",malignant\n");
    for ((id, &label), p) in scores
        .image_ids
        .iter()
        .zip(&scores.labels)
        .zip(probabilities)
    {
        let _ = write!(csv, "{id},{}", CLASSES[label]);
        for v in p {
            let _ = write!(csv, ",{v:.6}");
        }
        let _ = writeln!(csv, ",{:.6}", malignant_score(p));
    }
    std::fs::write(path, csv).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn referral_threshold_keeps_the_requested_sensitivity() {
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
        assert_eq!(referral_threshold(&probabilities, &labels, 0.75), 0.4);
        assert_eq!(referral_threshold(&probabilities, &labels, 0.95), 0.2);
        let s = summarise("x", &probabilities, &labels, Some(0.2));
        assert_eq!(s.malignant_sensitivity, 1.0);
        assert_eq!(s.malignant_specificity, 1.0);
        assert_eq!(s.referred_per_class, [0, 0, 0, 0, 4, 0, 0]);
        let s = summarise("x", &probabilities, &labels, Some(0.1));
        assert_eq!(s.referred_per_class, [0, 0, 0, 0, 4, 1, 0]);
        assert_eq!(s.malignant_specificity, 0.5);
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
    fn predictions_csv_has_one_row_per_image_with_its_probabilities() {
        let scores = Scores {
            image_ids: vec!["ISIC_1".into(), "ISIC_2".into()],
            labels: vec![4, 5],
            member_logits: vec![],
            classes: 7,
            member_names: vec![],
            weights: vec![],
            test_time_augmentation: TestTimeAugmentation::None,
            latency_ms: vec![],
        };
        let probabilities = vec![
            vec![0.1, 0.2, 0.0, 0.0, 0.3, 0.4, 0.0],
            vec![0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("predictions.csv");
        write_predictions(&path, &scores, &probabilities).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "image_id,label,p_akiec,p_bcc,p_bkl,p_df,p_mel,p_nv,p_vasc,malignant",
                "ISIC_1,mel,0.100000,0.200000,0.000000,0.000000,0.300000,0.400000,0.000000,0.600000",
                "ISIC_2,nv,0.000000,0.000000,0.000000,0.000000,0.000000,1.000000,0.000000,0.000000",
            ]
        );
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
        let split = UncertaintySplit::measure(&scores, 1.0, 0.9);
        assert_eq!(
            split,
            UncertaintySplit {
                flagged: 2,
                flagged_correct: 1,
                clear: 1,
                clear_correct: 1,
            }
        );
        assert_eq!(UncertaintySplit::measure(&scores, 1.0, 1.0).flagged, 1);
    }
}

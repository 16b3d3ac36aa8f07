//! What `evaluate` writes: the Markdown report, its plots, and `predictions.csv`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use dermedge::manifest::DecisionSettings;

use super::figures::{malignant_score, rate, roc_curve, Summary, UncertaintySplit};
use super::Scores;
use crate::classes::Classes;

fn pct(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else {
        format!("{:.1}%", 100.0 * v)
    }
}

/// The Markdown report of an evaluation.
pub fn markdown_report(
    title: &str,
    summaries: &[Summary],
    scores: &Scores,
    decision: &DecisionSettings,
    plots: &[PathBuf],
    classes: &Classes,
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
    if let Some(tau) = decision.logit_adjustment {
        let _ = writeln!(
            md,
            "Logit adjustment: the ensemble's probabilities divided by the training side's class shares to the power {tau:.2} (fitted on the validation side), as the runtime reports them; the members' rows are unadjusted.\n"
        );
    }
    if let Some(threshold) = decision.uncertainty_entropy {
        let split = UncertaintySplit::measure(scores, decision, threshold);
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
        for (c, code) in classes.codes().enumerate() {
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
        let codes: Vec<&str> = classes.codes().collect();
        let _ = writeln!(md, "| true \\ predicted | {} |", codes.join(" | "));
        let _ = writeln!(md, "| --- |{}", " --- |".repeat(codes.len()));
        for (c, code) in codes.iter().enumerate() {
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

/// Writes the reliability diagram and (where the classes hold melanoma) the melanoma ROC curve of
/// `summary` as PNG files in `dir`.
pub fn write_plots(
    dir: &Path,
    summary: &Summary,
    probabilities: &[Vec<f32>],
    labels: &[usize],
    classes: &Classes,
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let reliability = dir.join("reliability.png");
    crate::plot::write_reliability_plot(&reliability, &summary.bins)?;
    let Some(melanoma) = classes.melanoma() else {
        return Ok(vec![reliability]);
    };
    let roc = dir.join("melanoma-roc.png");
    let mel: Vec<f32> = probabilities.iter().map(|p| p[melanoma]).collect();
    let positive: Vec<bool> = labels.iter().map(|&l| l == melanoma).collect();
    crate::plot::write_curve_plot(&roc, &roc_curve(&mel, &positive))?;
    Ok(vec![reliability, roc])
}

/// Writes `predictions.csv`: one row per image with its id, true class, the ensemble's
/// probabilities and its malignant score, so every figure of a report can be recomputed.
pub fn write_predictions(
    path: &Path,
    scores: &Scores,
    probabilities: &[Vec<f32>],
    classes: &Classes,
) -> anyhow::Result<()> {
    let mut csv = String::from("image_id,label");
    for code in classes.codes() {
        let _ = write!(csv, ",p_{code}");
    }
    csv.push_str(",malignant\n");
    for ((id, &label), p) in scores
        .image_ids
        .iter()
        .zip(&scores.labels)
        .zip(probabilities)
    {
        let _ = write!(csv, "{id},{}", classes.code(label));
        for v in p {
            let _ = write!(csv, ",{v:.6}");
        }
        let _ = writeln!(csv, ",{:.6}", malignant_score(p, classes));
    }
    std::fs::write(path, csv).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classes::tests::shipped;
    use dermedge::manifest::TestTimeAugmentation;

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
        let classes = shipped();
        write_predictions(&path, &scores, &probabilities, &classes).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let columns: Vec<String> = classes.codes().map(|c| format!("p_{c}")).collect();
        assert_eq!(
            lines,
            [
                format!("image_id,label,{},malignant", columns.join(",")),
                format!("ISIC_1,{},0.100000,0.200000,0.000000,0.000000,0.300000,0.400000,0.000000,0.600000", classes.code(4)),
                format!("ISIC_2,{},0.000000,0.000000,0.000000,0.000000,0.000000,1.000000,0.000000,0.000000", classes.code(5)),
            ]
        );
    }
}

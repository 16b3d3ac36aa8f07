//! `dermedge-tools evaluate`: an exported ensemble on one side of a split, through the runtime's own
//! code path (tract), written up as a report with plots and per-image predictions.

mod figures;
mod report;
mod scores;

pub use figures::{
    calibration, malignant_score, nll, roc_auc, roc_curve, summarise, Bin, Summary,
    UncertaintySplit,
};
pub use report::{markdown_report, write_plots, write_predictions};
pub use scores::Scores;

use std::path::PathBuf;

use anyhow::Context;
use dermedge::manifest::TestTimeAugmentation;
use dermedge::Ensemble;

use crate::classes::Classes;
use crate::sides::side_samples;

/// Which ensemble runs on which images: what `evaluate` and `calibrate` share.
#[derive(Debug, Clone)]
pub struct SideRequest {
    pub manifest: PathBuf,
    pub data: PathBuf,
    pub split: Option<PathBuf>,
    pub side: String,
    /// At most this many images of the side (quick checks).
    pub limit: Option<usize>,
    /// Overrides the manifest's test-time augmentation.
    pub tta: Option<TestTimeAugmentation>,
}

/// Options of `dermedge-tools evaluate`.
#[derive(Debug, Clone)]
pub struct EvaluateRequest {
    pub side: SideRequest,
    /// Report folder.
    pub out: PathBuf,
}

/// What `evaluate` wrote.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// `report.md` in the report folder.
    pub report: PathBuf,
    /// The report's text.
    pub markdown: String,
}

/// Loads the request's ensemble and runs it over its side of the split; the classes are the
/// ensemble's.
pub fn side_scores(request: &SideRequest) -> anyhow::Result<(Ensemble, Classes, Scores)> {
    let mut ensemble = Ensemble::load(&request.manifest)?;
    if let Some(tta) = request.tta {
        ensemble.manifest.inference.test_time_augmentation = tta;
    }
    let classes = Classes::new(ensemble.manifest.classes.clone())?;
    let (samples, indices) = side_samples(
        &request.data,
        request.split.as_deref(),
        &request.side,
        request.limit,
        &classes,
    )?;
    let scores = Scores::collect(&ensemble, &samples, &indices)?;
    Ok((ensemble, classes, scores))
}

/// Evaluates the ensemble on one side of the split through tract; writes `report.md`, the plots
/// and `predictions.csv` into the report folder.
pub fn evaluate(request: &EvaluateRequest) -> anyhow::Result<Evaluation> {
    let (ensemble, classes, scores) = side_scores(&request.side)?;
    let decision = &ensemble.manifest.decision;
    let temperature = decision.temperature.unwrap_or(1.0);
    let referral = decision.referral_threshold;
    let mut summaries: Vec<Summary> = (0..scores.member_logits.len())
        .map(|m| {
            summarise(
                &scores.member_names[m],
                &scores.member_probabilities(m, temperature),
                &scores.labels,
                referral,
                &classes,
            )
        })
        .collect();
    let probabilities = scores.decided_probabilities(decision);
    let ensemble_summary = summarise(
        "ensemble",
        &probabilities,
        &scores.labels,
        referral,
        &classes,
    );
    let plots = write_plots(
        &request.out,
        &ensemble_summary,
        &probabilities,
        &scores.labels,
        &classes,
    )?;
    summaries.push(ensemble_summary);
    write_predictions(
        &request.out.join("predictions.csv"),
        &scores,
        &probabilities,
        &classes,
    )?;
    let title = format!(
        "{} {}: {} side ({} images)",
        ensemble.manifest.name,
        ensemble.manifest.version,
        request.side.side,
        scores.labels.len()
    );
    let markdown = markdown_report(&title, &summaries, &scores, decision, &plots, &classes);
    let report = request.out.join("report.md");
    std::fs::write(&report, &markdown)
        .with_context(|| format!("cannot write {}", report.display()))?;
    Ok(Evaluation { report, markdown })
}

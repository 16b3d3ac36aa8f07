//! `dermedge-tools compare`: an int8 ensemble against its f32 reference through tract, on the
//! same images: top-1 agreement and accuracy.

use std::path::PathBuf;

use anyhow::bail;
use dermedge::manifest::DecisionSettings;
use dermedge::Ensemble;

use crate::classes::Classes;
use crate::evaluate::Scores;
use crate::metrics::{argmax, Confusion};
use crate::sides::side_samples;

/// Accuracy of the f32 and int8 ensembles on the same images.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub images: usize,
    pub top1_agreement: f64,
    pub f32_accuracy: f64,
    pub int8_accuracy: f64,
    pub f32_balanced: f64,
    pub int8_balanced: f64,
}

impl Comparison {
    /// Compares two evaluations of the same images.
    pub fn of(
        f32_scores: &Scores,
        int8_scores: &Scores,
        decision: &DecisionSettings,
    ) -> Comparison {
        let reference = f32_scores.decided_probabilities(decision);
        let quantized = int8_scores.decided_probabilities(decision);
        let classes = f32_scores.classes;
        let (mut f32_confusion, mut int8_confusion) =
            (Confusion::new(classes), Confusion::new(classes));
        let mut agree = 0usize;
        for ((r, q), &label) in reference.iter().zip(&quantized).zip(&f32_scores.labels) {
            let (a, b) = (argmax(r), argmax(q));
            agree += usize::from(a == b);
            f32_confusion.add(label, a);
            int8_confusion.add(label, b);
        }
        let images = f32_scores.labels.len();
        Comparison {
            images,
            top1_agreement: agree as f64 / images.max(1) as f64,
            f32_accuracy: f32_confusion.accuracy(),
            int8_accuracy: int8_confusion.accuracy(),
            f32_balanced: f32_confusion.balanced_accuracy(),
            int8_balanced: int8_confusion.balanced_accuracy(),
        }
    }

    /// One line of figures.
    pub fn summary(&self) -> String {
        format!(
            "{} images: top-1 agreement int8 vs f32 {:.2}%; top-1 f32 {:.2}% int8 {:.2}%; balanced accuracy f32 {:.2}% int8 {:.2}%",
            self.images,
            100.0 * self.top1_agreement,
            100.0 * self.f32_accuracy,
            100.0 * self.int8_accuracy,
            100.0 * self.f32_balanced,
            100.0 * self.int8_balanced
        )
    }
}

/// Options of `dermedge-tools compare`.
#[derive(Debug, Clone)]
pub struct CompareRequest {
    /// The reference ensemble (f32).
    pub reference: PathBuf,
    /// The ensemble compared with it (int8).
    pub candidate: PathBuf,
    pub data: PathBuf,
    pub split: Option<PathBuf>,
    pub side: String,
    pub limit: Option<usize>,
}

/// Runs both ensembles through tract on one side of the split and compares their top-1
/// decisions and accuracy, under the reference's decision settings.
pub fn compare(request: &CompareRequest) -> anyhow::Result<Comparison> {
    let reference = Ensemble::load(&request.reference)?;
    let candidate = Ensemble::load(&request.candidate)?;
    if candidate.manifest.classes != reference.manifest.classes {
        bail!(
            "{} and {} list different classes (or another order); their decisions cannot be compared. Fix: compare an int8 ensemble with the f32 one it was made from",
            request.candidate.display(),
            request.reference.display()
        );
    }
    let classes = Classes::new(reference.manifest.classes.clone())?;
    let (samples, indices) = side_samples(
        &request.data,
        request.split.as_deref(),
        &request.side,
        request.limit,
        &classes,
    )?;
    let reference_scores = Scores::collect(&reference, &samples, &indices)?;
    let candidate_scores = Scores::collect(&candidate, &samples, &indices)?;
    Ok(Comparison::of(
        &reference_scores,
        &candidate_scores,
        &reference.manifest.decision,
    ))
}

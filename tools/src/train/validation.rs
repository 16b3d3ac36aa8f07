//! Per-epoch validation figures of a member, and the smoothed curve early stopping watches.

use burn::prelude::*;
use dermedge::manifest::InputSpec;

use super::fit::TrainingSet;
use crate::batch::{make_batch, Batch};
use crate::loss::LossKind;
use crate::metrics::Confusion;
use crate::nn::Classifier;
use crate::plot::{EpochRow, ValidationFigures};

/// Epochs the smoothed validation curve averages over.
pub const SMOOTHING_EPOCHS: usize = 3;

pub(super) fn tensor_batch(batch: &Batch, device: &Device) -> Tensor<4> {
    Tensor::from_data(
        TensorData::new(
            batch.images.clone(),
            [batch.len(), 3, batch.height, batch.width],
        ),
        device,
    )
}

pub(super) fn logits_values(logits: Tensor<2>) -> Vec<f32> {
    logits
        .into_data_as::<f32>()
        .as_slice::<f32>()
        .map(<[f32]>::to_vec)
        .unwrap_or_default()
}

/// Validation loss and figures of an eval-mode model on the set's validation images.
pub(super) fn validate(
    model: &Classifier,
    set: &TrainingSet,
    spec: &InputSpec,
    batch: usize,
    device: &Device,
    loss: &LossKind,
) -> anyhow::Result<ValidationFigures> {
    let (samples, indices, classes) = (set.samples, set.val, set.classes.len());
    let mut confusion = Confusion::new(classes);
    let mut loss_sum = 0.0;
    for chunk in indices.chunks(batch.max(1)) {
        let b = make_batch(samples, chunk, spec, None)?;
        let logits = model.forward(tensor_batch(&b, device));
        let l: f32 = loss.compute(logits.clone(), &b.labels).into_scalar();
        loss_sum += l as f64 * b.len() as f64;
        let values = logits_values(logits);
        for (row, &label) in values.chunks(classes).zip(&b.labels) {
            confusion.add(label, crate::metrics::argmax(row));
        }
    }
    let melanoma = set.classes.melanoma().unwrap_or(0);
    Ok(ValidationFigures {
        loss: loss_sum / indices.len().max(1) as f64,
        accuracy: confusion.accuracy(),
        balanced_accuracy: confusion.balanced_accuracy(),
        melanoma_sensitivity: confusion.recalls()[melanoma].unwrap_or(0.0),
    })
}

/// Mean of the selected validation balanced accuracy over the last [`SMOOTHING_EPOCHS`] rows
/// (fewer at the start), so that one noisy epoch neither stops a run nor resets its patience.
pub fn smoothed_balanced_accuracy(rows: &[EpochRow]) -> f64 {
    let recent = &rows[rows.len().saturating_sub(SMOOTHING_EPOCHS)..];
    if recent.is_empty() {
        return 0.0;
    }
    recent
        .iter()
        .map(EpochRow::selected_balanced_accuracy)
        .sum::<f64>()
        / recent.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(epoch: usize, balanced: f64) -> EpochRow {
        EpochRow {
            epoch,
            phase: "fine-tune".into(),
            lr: 1e-4,
            train_loss: 1.0,
            train_accuracy: 0.5,
            val_loss: 1.0,
            val_accuracy: 0.5,
            val_balanced_accuracy: balanced,
            val_melanoma_sensitivity: 0.3,
            average: None,
            seconds: 1.0,
        }
    }

    #[test]
    fn the_smoothed_curve_averages_the_last_three_epochs() {
        assert_eq!(smoothed_balanced_accuracy(&[]), 0.0);
        let rows: Vec<EpochRow> = [0.4, 0.5, 0.6, 0.3]
            .iter()
            .enumerate()
            .map(|(i, &b)| row(i + 1, b))
            .collect();
        assert!((smoothed_balanced_accuracy(&rows[..1]) - 0.4).abs() < 1e-12);
        assert!((smoothed_balanced_accuracy(&rows[..3]) - 0.5).abs() < 1e-12);
        // One bad epoch after a rising curve lowers the smoothed value only a little.
        assert!((smoothed_balanced_accuracy(&rows) - (0.5 + 0.6 + 0.3) / 3.0).abs() < 1e-12);
    }

    #[test]
    fn the_average_figures_are_the_selected_ones_when_present() {
        let mut r = row(1, 0.4);
        assert_eq!(r.selected_balanced_accuracy(), 0.4);
        r.average = Some(ValidationFigures {
            loss: 0.9,
            accuracy: 0.6,
            balanced_accuracy: 0.55,
            melanoma_sensitivity: 0.4,
        });
        assert_eq!(r.selected_balanced_accuracy(), 0.55);
    }
}

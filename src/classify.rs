//! Classifying image files: one outcome per listed input.

use std::path::Path;
use std::time::Instant;

use crate::ensemble::Ensemble;
use crate::preprocess::{load_image_file, ImageLimits};
use crate::record::{Classified, Failed, Outcome};

/// The listing that [`classify_item`] works through, re-exported beside it.
pub use crate::inputs::{expand_inputs, InputItem};

/// Classifies one listed item; any failure becomes a `Failed` outcome naming the input.
pub fn classify_item(ensemble: &Ensemble, item: &InputItem, limits: &ImageLimits) -> Outcome {
    match item {
        InputItem::Unreadable { input, error } => Outcome::Failed(Failed {
            input: input.display().to_string(),
            error: error.clone(),
        }),
        InputItem::Image(path) => classify_file(ensemble, path, limits),
    }
}

/// Reads, decodes and classifies one image file.
pub fn classify_file(ensemble: &Ensemble, path: &Path, limits: &ImageLimits) -> Outcome {
    let started = Instant::now();
    let input = path.display().to_string();
    let failed = |error: String| {
        Outcome::Failed(Failed {
            input: input.clone(),
            error,
        })
    };
    let image = match load_image_file(path, limits) {
        Ok(image) => image,
        Err(e) => return failed(e.to_string()),
    };
    match ensemble.classify(&image.rgb) {
        Ok(prediction) => Outcome::Classified(Box::new(Classified::new(
            input.clone(),
            image.sha256,
            ensemble,
            &prediction,
            started.elapsed().as_secs_f64() * 1e3,
        ))),
        Err(e) => failed(e.to_string()),
    }
}

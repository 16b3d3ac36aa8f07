//! Training and evaluation batches: images decoded and preprocessed by the runtime library's own
//! functions (`dermedge::preprocess`), so training and the device prepare pixels identically.

use anyhow::Context;
use dermedge::manifest::InputSpec;
use dermedge::preprocess::{load_image_file, to_input_tensor, ImageLimits};

use crate::augment::{augment, AugmentConfig};
use crate::data::Sample;
use crate::rng::SeededRng;

/// A batch in NCHW `f32` with its labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `[len, 3, height, width]`, row-major.
    pub images: Vec<f32>,
    pub labels: Vec<usize>,
    pub height: usize,
    pub width: usize,
}

impl Batch {
    /// Images in the batch.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the batch holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Decodes, optionally augments, and preprocesses `samples[indices]` into one batch.
pub fn make_batch(
    samples: &[Sample],
    indices: &[usize],
    spec: &InputSpec,
    augmentation: Option<(&AugmentConfig, &mut SeededRng)>,
) -> anyhow::Result<Batch> {
    let limits = ImageLimits::default();
    let mut images =
        Vec::with_capacity(indices.len() * 3 * spec.width as usize * spec.height as usize);
    let mut labels = Vec::with_capacity(indices.len());
    let mut augmentation = augmentation;
    for &i in indices {
        let sample = samples.get(i).with_context(|| {
            format!(
                "sample index {i} is out of range ({} samples)",
                samples.len()
            )
        })?;
        let image = load_image_file(&sample.path, &limits)?.rgb;
        let image = match augmentation.as_mut() {
            Some((config, rng)) => augment(&image, config, rng),
            None => image,
        };
        images.extend(to_input_tensor(&image, spec));
        labels.push(sample.class);
    }
    Ok(Batch {
        images,
        labels,
        height: spec.height as usize,
        width: spec.width as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dermedge::manifest::{ChannelOrder, ResizePolicy};
    use std::path::Path;

    fn spec() -> InputSpec {
        InputSpec {
            width: 40,
            height: 30,
            resize: ResizePolicy::Stretch,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            channel_order: ChannelOrder::Rgb,
            colour_constancy: dermedge::manifest::ColourConstancy::None,
        }
    }

    fn samples() -> Vec<Sample> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/samples");
        ["ISIC_0025964.jpg", "ISIC_0024698.jpg"]
            .iter()
            .enumerate()
            .map(|(i, f)| Sample {
                image_id: f.to_string(),
                lesion_id: format!("L{i}"),
                class: [4, 5][i],
                path: root.join(f),
            })
            .collect()
    }

    #[test]
    fn batches_match_the_runtime_preprocessing_exactly() {
        let samples = samples();
        let batch = make_batch(&samples, &[1, 0], &spec(), None).unwrap();
        assert_eq!((batch.len(), batch.labels.clone()), (2, vec![5, 4]));
        let plane = 3 * 40 * 30;
        assert_eq!(batch.images.len(), 2 * plane);
        for (k, i) in [1, 0].iter().enumerate() {
            let rgb = load_image_file(&samples[*i].path, &ImageLimits::default())
                .unwrap()
                .rgb;
            assert_eq!(
                &batch.images[k * plane..(k + 1) * plane],
                to_input_tensor(&rgb, &spec()).as_slice()
            );
        }
    }

    #[test]
    fn augmented_batches_are_seeded_and_bad_indices_are_errors() {
        let samples = samples();
        let config = AugmentConfig::default();
        let a = make_batch(
            &samples,
            &[0, 1],
            &spec(),
            Some((&config, &mut SeededRng::new(3))),
        )
        .unwrap();
        let b = make_batch(
            &samples,
            &[0, 1],
            &spec(),
            Some((&config, &mut SeededRng::new(3))),
        )
        .unwrap();
        let plain = make_batch(&samples, &[0, 1], &spec(), None).unwrap();
        assert_eq!(a, b);
        assert_ne!(a.images, plain.images);
        let err = make_batch(&samples, &[5], &spec(), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("out of range"), "{err}");
    }
}

//! The CPU pipeline of the tools on the shared HAM10000 copy: split -> train a tiny CNN a few
//! epochs (burn-ndarray) -> export -> evaluate through tract -> classify with the runtime library
//! -> int8 quantization -> classify with the int8 members.

use std::path::Path;
use std::time::Instant;

use dermedge::decision::top_k;
use dermedge::ensemble::Prediction;
use dermedge::manifest::{ColourConstancy, TestTimeAugmentation};
use dermedge::preprocess::{load_image_file, ImageLimits};
use dermedge::Ensemble;
use dermedge_tools::backend::BackendKind;
use dermedge_tools::calibrate::{calibrate, CalibrateRequest};
use dermedge_tools::evaluate::{evaluate, EvaluateRequest, SideRequest};
use dermedge_tools::export::{export, ExportRequest};
use dermedge_tools::metrics::majority_baseline_balanced_accuracy;
use dermedge_tools::nn::{Arch, ClassifierSpec, Normalisation};
use dermedge_tools::quantize::{quantize, quantize_summary, QuantizeRequest, RangeMethod};
use dermedge_tools::train::{train, LossChoice, RunOptions, TrainConfig, TrainRequest, TrainState};

use crate::util::*;

/// The runtime library's result for each sample image, as `dermedge classify` computes it.
fn classify_samples(manifest: &Path) -> (Ensemble, Vec<Prediction>) {
    let ensemble = Ensemble::load(manifest).unwrap();
    let predictions = sample_images()
        .iter()
        .map(|path| {
            let image = load_image_file(path, &ImageLimits::default()).unwrap();
            ensemble.classify(&image.rgb).unwrap()
        })
        .collect();
    (ensemble, predictions)
}

fn quick_config() -> TrainConfig {
    TrainConfig {
        spec: ClassifierSpec::new(Arch::TinyCnn, shipped_classes().len()),
        pretrained: None,
        input_width: 64,
        input_height: 48,
        frozen_epochs: 0,
        epochs: 5,
        batch: 32,
        lr_head: 3e-3,
        lr: 3e-3,
        min_lr: 1e-4,
        weight_decay: 1e-4,
        loss: LossChoice::WeightedCe,
        focal_gamma: 2.0,
        class_weights: None,
        augment: true,
        seed: 3,
        patience: 5,
        limit_per_class: Some(150),
        input_normalisation: Some(Normalisation::IMAGENET),
        label_smoothing: 0.1,
        ema_decay: Some(0.9),
        extra_training_data: Vec::new(),
        colour_constancy: ColourConstancy::ShadesOfGray,
    }
}

#[test]
fn split_train_export_classify_beats_the_majority_baseline() {
    let Some(data) = shared_ham10000() else {
        return;
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let classes = shipped_classes();
    let runs = train(&TrainRequest {
        data: data.clone(),
        split: None,
        out: run.clone(),
        archs: vec![Arch::TinyCnn],
        seeds: vec![3],
        weights: vec![],
        backend: BackendKind::Ndarray,
        options: RunOptions::default(),
        classes: classes.clone(),
        template: quick_config(),
    })
    .unwrap();
    let members: Vec<_> = runs.into_iter().map(|r| r.dir).collect();
    assert_eq!(members.len(), 1);
    for file in [
        "config.json",
        "state.json",
        "best.bpk",
        "log.csv",
        "curves.png",
        "checkpoints/e005-s00000/model.bpk",
        "checkpoints/e005-s00000/optimizer.bpk",
        "checkpoints/e005-s00000/average.bpk",
    ] {
        assert!(members[0].join(file).is_file(), "{file} missing");
    }
    let log = std::fs::read_to_string(members[0].join("log.csv")).unwrap();
    assert_eq!(log.lines().count(), 1 + 5, "{log}");
    let state: TrainState =
        serde_json::from_str(&std::fs::read_to_string(members[0].join("state.json")).unwrap())
            .unwrap();
    let split = std::fs::read_to_string(run.join("split.csv")).unwrap();
    let val_labels: Vec<usize> = split
        .lines()
        .skip(1)
        .filter(|l| l.ends_with(",val"))
        .map(|l| {
            let dx = l.split(',').nth(2).unwrap();
            classes.index_of(dx).unwrap()
        })
        .collect();
    let baseline = majority_baseline_balanced_accuracy(&val_labels, classes.len());
    eprintln!(
        "tiny CNN: best validation balanced accuracy {:.3} (epoch {:?}); majority baseline {baseline:.3}",
        state.best_balanced_accuracy, state.best_epoch
    );
    assert!(state.best_balanced_accuracy > baseline + 0.05);

    let models = dir.path().join("models");
    let manifest = export(&ExportRequest {
        run: run.clone(),
        out: models.clone(),
        name: "pipeline".into(),
        version: "0.0.1".into(),
        check_images: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/samples")),
        tolerance: 1e-4,
        classes: classes.clone(),
    })
    .unwrap()
    .manifest;

    assert_eq!(
        dermedge::Manifest::load(&manifest)
            .unwrap()
            .input
            .colour_constancy,
        ColourConstancy::ShadesOfGray,
        "the member's colour constancy is declared in the manifest"
    );

    let report_dir = dir.path().join("report");
    let evaluation = evaluate(&EvaluateRequest {
        side: SideRequest {
            manifest: manifest.clone(),
            data: data.clone(),
            split: Some(run.join("split.csv")),
            side: "val".into(),
            limit: None,
            tta: None,
        },
        out: report_dir.clone(),
    })
    .unwrap();
    let text = std::fs::read_to_string(evaluation.report).unwrap();
    assert_eq!(text, evaluation.markdown);
    let ensemble_row = text
        .lines()
        .find(|l| l.starts_with("| ensemble |"))
        .unwrap();
    let balanced: f64 = ensemble_row
        .split('|')
        .nth(5)
        .unwrap()
        .trim()
        .trim_end_matches('%')
        .parse()
        .unwrap();
    eprintln!("exported member through tract: validation balanced accuracy {balanced:.1}%");
    assert!(
        (balanced / 100.0 - state.best_balanced_accuracy).abs() < 0.01,
        "tract {balanced}% vs burn {}",
        state.best_balanced_accuracy
    );
    assert!(report_dir.join("reliability.png").is_file());

    let fitted = calibrate(&CalibrateRequest {
        side: SideRequest {
            manifest: manifest.clone(),
            data: data.clone(),
            split: Some(run.join("split.csv")),
            side: "val".into(),
            limit: Some(100),
            tta: Some(TestTimeAugmentation::Flips),
        },
        sensitivity: 0.95,
        logit_adjustment: true,
    })
    .unwrap()
    .fitted;
    let calibrated = dermedge::Manifest::load(&manifest).unwrap();
    assert_eq!(calibrated.decision.temperature, Some(fitted.temperature));
    let adjustment = (fitted.logit_adjustment > 0.0).then_some(fitted.logit_adjustment);
    assert_eq!(calibrated.decision.logit_adjustment, adjustment);
    assert_eq!(
        calibrated.decision.class_prior.map(|prior| prior.len()),
        adjustment.map(|_| 7)
    );
    assert_eq!(
        calibrated.inference.test_time_augmentation,
        TestTimeAugmentation::Flips
    );

    let (ensemble, predictions) = classify_samples(&manifest);
    assert_eq!(predictions.len(), 7);
    assert_eq!(ensemble.manifest.id(), "pipeline@0.0.1");
    for prediction in &predictions {
        assert_eq!(top_k(&prediction.probabilities, 3).len(), 3);
        assert_eq!(prediction.members[0].raw.len(), 4, "views per member");
        assert!(prediction.decision.refer.is_some());
    }

    let int8_dir = dir.path().join("int8");
    let (quantized, comparison) = quantize(&QuantizeRequest {
        manifest: manifest.clone(),
        data: data.clone(),
        split: Some(run.join("split.csv")),
        out: int8_dir.clone(),
        calibration_images: 50,
        seed: 1,
        range_method: RangeMethod::Mse,
        float_layers: 0,
        equalize: 1.0,
        equalize_pointwise: 1.0,
        pointwise_weight_bits: 8,
        compare_limit: Some(200),
    })
    .unwrap();
    eprintln!("{}", quantize_summary(&quantized, &comparison));
    assert_eq!(comparison.images, 200);
    assert!(comparison.top1_agreement > 0.8, "{comparison:?}");
    let int8_manifest = int8_dir.join("ensemble.toml");
    let (ensemble, predictions) = classify_samples(&int8_manifest);
    assert_eq!(predictions.len(), 7);
    assert_eq!(ensemble.manifest.id(), "pipeline@0.0.1+int8");
    assert_eq!(ensemble.manifest.members[0].precision, "int8");
    let refused_with = |manifest: &Path,
                        out: &Path,
                        (equalize, equalize_pointwise): (f32, f32),
                        pointwise_weight_bits: u8| {
        let error = quantize(&QuantizeRequest {
            manifest: manifest.to_path_buf(),
            data: data.clone(),
            split: None,
            out: out.to_path_buf(),
            calibration_images: 5,
            seed: 1,
            range_method: RangeMethod::Mse,
            float_layers: 0,
            equalize,
            equalize_pointwise,
            pointwise_weight_bits,
            compare_limit: Some(5),
        })
        .unwrap_err();
        format!("{error:#}")
    };
    let refused = |manifest: &Path, out: &Path| refused_with(manifest, out, (1.0, 0.0), 8);
    let too_strong = refused_with(&manifest, &dir.path().join("int8-strong"), (1.5, 0.0), 8);
    assert!(too_strong.contains("--equalize 1"), "{too_strong}");
    let negative = refused_with(&manifest, &dir.path().join("int8-negative"), (0.0, -0.5), 8);
    assert!(negative.contains("--equalize-pointwise"), "{negative}");
    let six_bits = refused_with(&manifest, &dir.path().join("int8-six"), (1.0, 0.0), 6);
    assert!(six_bits.contains("--pointwise-weight-bits"), "{six_bits}");
    let again = refused(&int8_manifest, &dir.path().join("int8-again"));
    assert!(again.contains("non-f32"), "{again}");
    let in_place = refused(&manifest, &models);
    assert!(in_place.contains("its own folder"), "{in_place}");
    assert!(dermedge::Manifest::load(&manifest).is_ok());
    eprintln!("pipeline took {:.0} s", started.elapsed().as_secs_f64());
}

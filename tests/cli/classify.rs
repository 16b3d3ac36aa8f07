use std::path::Path;

use crate::util::*;

fn check_classified(record: &serde_json::Value, input: &Path) {
    assert_eq!(record["input"], input.display().to_string());
    assert_eq!(record["sha256"], sha256_of(input));
    assert_eq!(record["ensemble"], "fixture-tiny-cnn@0.0.0");
    let top = record["top"].as_array().unwrap();
    assert_eq!(top.len(), 3);
    let probs: Vec<f64> = top
        .iter()
        .map(|t| t["probability"].as_f64().unwrap())
        .collect();
    assert!(
        probs.windows(2).all(|w| w[0] >= w[1]),
        "top-3 not sorted: {probs:?}"
    );
    assert!(probs.iter().sum::<f64>() <= 1.0 + 1e-5);
    let members = record["members"].as_array().unwrap();
    assert_eq!(members.len(), 2);
    for member in members {
        let p: Vec<f64> = member["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["probability"].as_f64().unwrap())
            .collect();
        assert_eq!(p.len(), 7);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-4);
    }
    // The ensemble is the weighted (here equal) mean of its members, class by class.
    for entry in top {
        let class = entry["class"].as_str().unwrap();
        let mean: f64 = members
            .iter()
            .map(|m| {
                let w = m["weight"].as_f64().unwrap();
                let p = m["probabilities"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|c| c["class"] == class)
                    .unwrap()["probability"]
                    .as_f64()
                    .unwrap();
                w * p
            })
            .sum();
        assert!((mean - entry["probability"].as_f64().unwrap()).abs() < 1e-5);
    }
    assert!(record["ms"].as_f64().unwrap() > 0.0);
    assert!(record["notice"]
        .as_str()
        .unwrap()
        .contains("not a diagnosis"));
    assert!(record["notice"]
        .as_str()
        .unwrap()
        .contains("UNTRAINED FIXTURE"));
}

#[test]
fn classifies_real_ham10000_images_as_json_and_journals_them() {
    let Some(images) = ham10000_images(4) else {
        return;
    };
    let fx = Fixture::new();
    let journal = fx.path("journal.jsonl");
    let mut args = vec!["classify", "--json", "--journal", journal.to_str().unwrap()];
    args.extend(images.iter().map(|p| p.to_str().unwrap()));
    let out = fx.run(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let records = json_lines(&stdout(&out));
    assert_eq!(records.len(), images.len());
    for (record, image) in records.iter().zip(&images) {
        check_classified(record, image);
    }
    let journaled = json_lines(&std::fs::read_to_string(&journal).unwrap());
    assert_eq!(journaled.len(), images.len());
    for (entry, record) in journaled.iter().zip(&records) {
        assert_eq!(entry["source"], "file");
        assert!(entry["time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(entry["sha256"], record["sha256"]);
        assert_eq!(entry["top"], record["top"]);
    }
}

#[test]
fn classifies_a_folder_as_a_table_with_the_notice() {
    let fx = Fixture::new();
    let samples = sample_images();
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/samples");
    let out = fx.run(&["classify", "--no-journal", folder.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    for sample in &samples {
        assert!(text.contains(&sample.display().to_string()), "{text}");
        assert!(text.contains(&sha256_of(sample)));
    }
    assert!(
        text.contains(&format!("{} classified, 0 failed", samples.len())),
        "{text}"
    );
    assert!(text.contains("not a diagnosis"));
    assert!(text.contains("UNTRAINED FIXTURE"));
    assert!(text.contains("  1. ") && text.contains("  3. "));
}

#[test]
fn results_are_deterministic_across_runs_and_thread_counts() {
    let fx = Fixture::new();
    let sample = sample_images()[0].clone();
    let run = |threads: &str| {
        let out = fx.run(&[
            "--threads",
            threads,
            "classify",
            "--json",
            "--no-journal",
            sample.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        json_lines(&stdout(&out)).remove(0)
    };
    let one = run("1");
    let again = run("1");
    let two = run("2");
    assert_eq!(one["top"], again["top"]);
    for (a, b) in one["top"]
        .as_array()
        .unwrap()
        .iter()
        .zip(two["top"].as_array().unwrap())
    {
        assert_eq!(a["class"], b["class"]);
        assert!(
            (a["probability"].as_f64().unwrap() - b["probability"].as_f64().unwrap()).abs() < 1e-5
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    let fx = Fixture::new();
    assert_eq!(fx.run(&["classify"]).status.code(), Some(2));
    assert_eq!(
        fx.run(&["--threads", "0", "inspect"]).status.code(),
        Some(2)
    );
    assert_eq!(fx.run(&["frobnicate"]).status.code(), Some(2));
}

fn classify_samples(manifest: &Path) -> Vec<serde_json::Value> {
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/samples");
    let out = dermedge(
        manifest,
        &[
            "classify",
            "--json",
            "--no-journal",
            samples.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let records = json_lines(&stdout(&out));
    assert_eq!(records.len(), sample_images().len());
    let shipped = dermedge::Manifest::load(manifest).unwrap();
    for record in &records {
        assert_eq!(record["ensemble"], shipped.id());
        assert_eq!(record["top"].as_array().unwrap().len(), 3);
    }
    records
}

#[test]
fn the_shipped_default_ensemble_classifies_the_shipped_samples() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    classify_samples(&root.join("models/ensemble.toml"));
}

#[test]
fn the_shipped_int8_default_agrees_with_its_f32_source_on_the_samples() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let f32_records = classify_samples(&root.join("models/f32/ensemble.toml"));
    let int8_records = classify_samples(&root.join("models/ensemble.toml"));
    for (a, b) in f32_records.iter().zip(&int8_records) {
        assert_eq!(a["input"], b["input"]);
        assert_eq!(b["members"][0]["precision"], "int8");
        assert!(a["top"][0]["class"].is_string());
        assert_eq!(a["top"][0]["class"], b["top"][0]["class"], "{a} {b}");
        let gap = (a["top"][0]["probability"].as_f64().unwrap()
            - b["top"][0]["probability"].as_f64().unwrap())
        .abs();
        assert!(gap < 0.1, "{gap}");
    }
}

#[test]
fn horizontal_flip_augmentation_makes_mirror_images_agree() {
    let fx = Fixture::new();
    let image = image::RgbImage::from_fn(64, 48, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 5) as u8, ((x * y) % 251) as u8])
    });
    let original = fx.path("original.png");
    let mirrored = fx.path("mirrored.png");
    image.save(&original).unwrap();
    image::imageops::flip_horizontal(&image)
        .save(&mirrored)
        .unwrap();
    let classify = || {
        let out = fx.run(&[
            "classify",
            "--json",
            "--no-journal",
            original.to_str().unwrap(),
            mirrored.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let records = json_lines(&stdout(&out));
        let member_probabilities = |record: &serde_json::Value| -> Vec<f64> {
            record["members"][0]["probabilities"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["probability"].as_f64().unwrap())
                .collect()
        };
        let views = records[0]["members"][0]["views"].as_u64().unwrap();
        let largest_gap = member_probabilities(&records[0])
            .iter()
            .zip(member_probabilities(&records[1]))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        (views, largest_gap)
    };
    let (views, gap) = classify();
    assert_eq!(views, 1);
    assert!(
        gap > 1e-4,
        "the fixture member is not mirror-symmetric: {gap}"
    );
    let text = std::fs::read_to_string(&fx.manifest).unwrap();
    assert!(!text.contains("[inference]"), "{text}");
    std::fs::write(
        &fx.manifest,
        format!("{text}\n[inference]\ntest_time_augmentation = \"horizontal-flip\"\n"),
    )
    .unwrap();
    let (views, gap) = classify();
    assert_eq!(views, 2);
    assert!(
        gap < 1e-5,
        "mirror images differ by {gap} under flip averaging"
    );
}

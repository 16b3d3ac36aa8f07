//! The paper's recipe (README: ResNet50 ensemble from torchvision's ImageNet weights, class-weighted
//! loss, frozen warm-up then fine-tuning) run end to end through the `dermedge-tools` binary on the
//! CPU for a few steps: ResNet50 at 1/8 width with the committed small torchvision-layout weights,
//! two seeds, a few images per class, then export and evaluation through tract.

use std::process::Command;

use crate::util::{data_dir, shared_ham10000, shipped_classes, shipped_manifest};

fn tools(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dermedge-tools"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn resnet50_recipe_runs_end_to_end_on_cpu_with_small_weights() {
    let Some(data) = shared_ham10000() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let models = dir.path().join("models");
    let weights = format!("resnet50={}", data_dir().join("resnet_small.pth").display());
    let data = data.to_str().unwrap().to_string();
    let classes = shipped_manifest();
    let classes = classes.to_str().unwrap();
    let out = tools(&[
        "train",
        "--classes",
        classes,
        "--backend",
        "ndarray",
        "--data",
        &data,
        "--out",
        run.to_str().unwrap(),
        "--arch",
        "resnet50",
        "--model-width",
        "0.125",
        "--weights",
        &weights,
        "--seeds",
        "1,2",
        "--width",
        "64",
        "--height",
        "48",
        "--epochs",
        "2",
        "--frozen-epochs",
        "1",
        "--batch",
        "8",
        "--loss",
        "focal",
        "--limit-per-class",
        "3",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.matches("best validation balanced accuracy").count(),
        2,
        "{stdout}"
    );
    let log = std::fs::read_to_string(run.join("resnet50-s1/log.csv")).unwrap();
    assert!(
        log.contains("\n1,frozen,") && log.contains("\n2,fine-tune,"),
        "{log}"
    );

    let out = tools(&[
        "export",
        "--classes",
        classes,
        "--run",
        run.to_str().unwrap(),
        "--out",
        models.to_str().unwrap(),
        "--check-images",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../models/samples"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest = std::fs::read_to_string(models.join("ensemble.toml")).unwrap();
    assert_eq!(
        manifest.matches("backbone = \"resnet50\"").count(),
        2,
        "{manifest}"
    );
    assert!(manifest.contains("status = \"trained\""));

    let out = tools(&[
        "evaluate",
        "--manifest",
        models.join("ensemble.toml").to_str().unwrap(),
        "--data",
        &data,
        "--split",
        run.join("split.csv").to_str().unwrap(),
        "--limit",
        "20",
        "--out",
        dir.path().join("report").to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = std::fs::read_to_string(dir.path().join("report/report.md")).unwrap();
    assert!(report.contains("resnet50 (resnet50-s1.onnx)"), "{report}");
    assert!(report.contains("| ensemble |"), "{report}");
    let predictions = std::fs::read_to_string(dir.path().join("report/predictions.csv")).unwrap();
    let rows: Vec<&str> = predictions.lines().collect();
    assert_eq!(rows.len(), 21, "{predictions}");
    let first = format!("image_id,label,p_{},", shipped_classes().code(0));
    assert!(rows[0].starts_with(&first), "{predictions}");
    assert!(rows[1].starts_with("ISIC_"), "{predictions}");
}

#[test]
fn an_interrupted_run_resumes_where_it_stopped() {
    let Some(data) = shared_ham10000() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let data = data.to_str().unwrap().to_string();
    let classes = shipped_manifest();
    let args = |extra: &[&str]| {
        let mut a = vec![
            "train",
            "--classes",
            classes.to_str().unwrap(),
            "--data",
            &data,
            "--out",
            run.to_str().unwrap(),
            "--arch",
            "tiny-cnn",
            "--width",
            "64",
            "--height",
            "48",
            "--epochs",
            "3",
            "--batch",
            "16",
            "--limit-per-class",
            "4",
        ];
        a.extend_from_slice(extra);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run_tools = |a: Vec<String>| {
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        tools(&refs)
    };
    let out = run_tools(args(&[]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let member = run.join("tiny-cnn-s1");
    let full_log = std::fs::read_to_string(member.join("log.csv")).unwrap();
    assert_eq!(full_log.lines().count(), 4, "{full_log}");

    // As if the process had died after epoch 2: the state and log say two epochs.
    let state_path = member.join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    state["next_epoch"] = 2.into();
    state["rows"].as_array_mut().unwrap().truncate(2);
    std::fs::write(&state_path, state.to_string()).unwrap();
    let two: Vec<&str> = full_log.lines().take(3).collect();
    std::fs::write(member.join("log.csv"), two.join("\n") + "\n").unwrap();

    let out = run_tools(args(&["--resume"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("resuming"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::read_to_string(member.join("log.csv")).unwrap();
    let epochs: Vec<&str> = log
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(epochs, ["1", "2", "3"], "{log}");

    let out = run_tools(args(&["--resume", "--lr", "0.1"]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("trained with other settings"));
}

use crate::util::*;

#[test]
fn inspect_lists_members_with_verified_checksums() {
    let fx = Fixture::new();
    let out = fx.run(&["inspect"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    for needle in [
        "fixture-tiny-cnn@0.0.0",
        "1x3x48x64",
        "tiny-cnn-0.onnx",
        "tiny-cnn-1.onnx",
        "verified",
        "mel",
        "malignant",
    ] {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }
    assert!(text.contains("not a diagnosis"));

    let out = fx.run(&["inspect", "--json"]);
    let value = &json_lines(&stdout(&out))[0];
    assert_eq!(value["classes"].as_array().unwrap().len(), 7);
    assert_eq!(value["members"].as_array().unwrap().len(), 2);
    assert_eq!(value["members"][0]["checksum_verified"], true);
    assert_eq!(value["input"]["width"], 64);
}

#[test]
fn bench_reports_every_member_and_the_ensemble() {
    let fx = Fixture::new();
    let sample = sample_images()[0].clone();
    let out = fx.run(&[
        "bench",
        "--json",
        "--runs",
        "3",
        "--warmup",
        "1",
        "--image",
        sample.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = &json_lines(&stdout(&out))[0];
    let members = report["members"].as_array().unwrap();
    assert_eq!(members.len(), 2);
    for m in members {
        assert_eq!(m["dermedge"]["runs"], 3);
        assert!(m["load_ms"].as_f64().unwrap() > 0.0);
        assert!(m["tract_alone"]["median_ms"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(report["per_image"]["runs"], 3);
    assert_eq!(report["capture_to_log"]["runs"], 3);
    assert!(report["capture_frame"]
        .as_str()
        .unwrap()
        .starts_with("640x480 MJPEG"));
    assert_eq!(report["decode"]["runs"], 3);
    assert!(report["peak_rss_bytes"].as_u64().unwrap() > 0);

    let out = fx.run(&["bench", "--runs", "2"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("peak RSS"));
}

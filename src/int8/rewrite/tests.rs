//! The rewrite on the shipped member, against the QDQ graph tract runs.

use std::path::{Path, PathBuf};

use tract_linalg::multithread::{multithread_tract_scope, Executor};

use super::*;
use crate::classify::{expand_inputs, InputItem};
use crate::ensemble::{typed_model_for_input, Ensemble};
use crate::int8::ops::depthwise::DepthwiseConvI8;
use crate::preprocess::{load_image_file, ImageLimits};

const MANIFEST: &str = "models/ensemble.toml";

/// The two backbones of the shipped ensemble.
const BACKBONES: [&str; 2] = ["mobilenet-v2", "efficientnet-lite0"];

/// The shipped ensemble, the index of its first member of `backbone`, and that member's graph.
fn shipped(backbone: &str) -> (Ensemble, usize, TypedModel) {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join(MANIFEST);
    let ensemble = Ensemble::load(&manifest).unwrap();
    let at = ensemble
        .members
        .iter()
        .position(|m| m.spec.backbone == backbone)
        .unwrap_or_else(|| panic!("no {backbone} member in {MANIFEST}"));
    let member = &ensemble.members[at];
    let bytes = std::fs::read(&member.path).unwrap();
    let typed =
        typed_model_for_input(&bytes, &member.path, ensemble.input_spec(at), &manifest).unwrap();
    (ensemble, at, typed)
}

fn samples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/samples");
    expand_inputs(&[dir])
        .into_iter()
        .filter_map(|item| match item {
            InputItem::Image(path) => Some(path),
            InputItem::Unreadable { .. } => None,
        })
        .collect()
}

fn to_i8(u8_tensor: &Tensor) -> Tensor {
    let values: Vec<i8> = u8_tensor
        .try_as_plain_ram()
        .unwrap()
        .as_slice::<u8>()
        .unwrap()
        .iter()
        .map(|v| (i32::from(*v) - 128) as i8)
        .collect();
    Tensor::from_shape(u8_tensor.shape(), &values).unwrap()
}

/// Every fused op, fed the QDQ graph's own quantized tensors from real images, writes the
/// QDQ graph's quantized output: the same integers, or one step apart where float
/// summation order lands a value on the other side of a rounding boundary; for each backbone.
#[test]
fn every_int8_op_matches_the_qdq_graph_on_real_images() {
    for (backbone, kinds) in BACKBONES.into_iter().zip([5, 6]) {
        every_int8_op_matches_the_qdq_graph(backbone, kinds);
    }
}

/// The check above on the first shipped member of `backbone`, whose graph holds `expected_kinds`
/// kinds of int8 op.
fn every_int8_op_matches_the_qdq_graph(backbone: &str, expected_kinds: usize) {
    let (ensemble, at, model) = shipped(backbone);
    let fused: Vec<(usize, Fused)> = model
        .nodes()
        .iter()
        .filter(|n| quantize_u8(n).is_some())
        .map(|n| (n.id, fuse(&model, n, KernelSet::best()).unwrap().0))
        .collect();
    let mut outlets: Vec<OutletId> = fused.iter().map(|(q, _)| OutletId::new(*q, 0)).collect();
    outlets.extend(fused.iter().flat_map(|(_, f)| f.sources.iter().copied()));
    outlets.sort();
    outlets.dedup();
    let mut probe = model.clone();
    probe.select_output_outlets(&outlets).unwrap();
    let plan = probe.into_runnable().unwrap();
    let (mut values, mut off_by_one) = (0usize, 0usize);
    let mut kinds = HashSet::new();
    for path in samples().iter().take(2) {
        let image = load_image_file(path, &ImageLimits::default()).unwrap();
        let results = plan.run(tvec!(ensemble.input_for(at, &image.rgb))).unwrap();
        let value_of = |outlet: &OutletId| {
            let at = outlets.iter().position(|o| o == outlet).unwrap();
            results[at].clone().into_tensor()
        };
        for (q, fused) in &fused {
            kinds.insert(fused.op.name());
            let inputs: TVec<TValue> = fused
                .sources
                .iter()
                .map(|s| {
                    let value = value_of(s);
                    if value.datum_type() == DatumType::U8 {
                        to_i8(&value).into_tvalue()
                    } else {
                        value.into_tvalue()
                    }
                })
                .collect();
            let ours = fused
                .op
                .eval(&EvalContext::out_of_plan(), inputs)
                .unwrap()
                .remove(0);
            let expected = to_i8(&value_of(&OutletId::new(*q, 0)));
            let ours = ours.try_as_plain_ram().unwrap();
            let expected = expected.try_as_plain_ram().unwrap();
            for (a, b) in ours
                .as_slice::<i8>()
                .unwrap()
                .iter()
                .zip(expected.as_slice::<i8>().unwrap())
            {
                let gap = (i32::from(*a) - i32::from(*b)).abs();
                assert!(gap <= 1, "{}: {a} against {b}", fused.op.name());
                off_by_one += usize::from(gap == 1);
                values += 1;
            }
        }
    }
    assert_eq!(kinds.len(), expected_kinds, "{backbone}: {kinds:?}");
    let share = off_by_one as f64 / values as f64;
    assert!(
        share < 1e-4,
        "{backbone}: {off_by_one} of {values} values one step apart"
    );
}

/// Moving tensors to channels-last changes where values sit, not what they are: the
/// member gives the same logits, bit for bit, with every int8 tensor channels-first, and
/// with its ops splitting their work over threads; for each backbone.
#[test]
fn channels_last_tensors_leave_the_logits_unchanged() {
    for backbone in BACKBONES {
        channels_last_tensors_leave_the_logits_of(backbone);
    }
}

fn channels_last_tensors_leave_the_logits_of(backbone: &str) {
    let (ensemble, at, model) = shipped(backbone);
    let plan = |scope: Scope| {
        let (rewritten, _) = rewrite_layers(&model, scope, KernelSet::best())
            .unwrap()
            .unwrap();
        let layouts: Vec<String> = rewritten
            .nodes()
            .iter()
            .filter_map(|n| n.op_as::<DepthwiseConvI8>())
            .map(|d| format!("{:?}", d.layout))
            .collect();
        let plan = rewritten.into_optimized().unwrap().into_runnable().unwrap();
        (plan, layouts)
    };
    let (moved, moved_layouts) = plan(Scope::Int8);
    let (planar, planar_layouts) = plan(Scope::Int8ChannelsFirst);
    assert!(
        moved_layouts.iter().any(|l| l == "ChannelsLast"),
        "{moved_layouts:?}"
    );
    assert!(planar_layouts.iter().all(|l| l == "ChannelsFirst"));
    for path in samples() {
        let image = load_image_file(&path, &ImageLimits::default()).unwrap();
        let input = ensemble.input_for(at, &image.rgb);
        let moved_threaded = multithread_tract_scope(Executor::multithread(3), || {
            moved.run(tvec!(input.clone())).unwrap().remove(0)
        });
        let moved = moved.run(tvec!(input.clone())).unwrap().remove(0);
        let planar = planar.run(tvec!(input)).unwrap().remove(0);
        assert_eq!(moved, planar, "{}", path.display());
        assert_eq!(moved, moved_threaded, "{} on 3 threads", path.display());
    }
}

/// The shipped int8 members run their quantized layers on the int8 ops, and give the QDQ
/// graph's probabilities on every sample image (the same top-1, or the same two on top
/// where the reference's are within 0.03 of each other). The reference runs the same stem ops: a
/// float stem computed in another order moves some values across a rounding step of the
/// first quantization, and the int8 layers are checked here, not the stem.
#[test]
fn the_rewritten_members_track_the_qdq_graph() {
    // Pointwise, 3x3 depthwise, general depthwise, add and mean-pool layers, stem layers (the
    // Lite0's first convolution, padded after its input only, among them), and clips left to
    // tract.
    the_rewritten_member_tracks_the_qdq_graph("mobilenet-v2", (33, 16, 0, 10, 1, 4), 0);
    the_rewritten_member_tracks_the_qdq_graph("efficientnet-lite0", (31, 4, 11, 9, 1, 4), 0);
}

fn the_rewritten_member_tracks_the_qdq_graph(
    backbone: &str,
    layers: (usize, usize, usize, usize, usize, usize),
    float_clips: usize,
) {
    let (ensemble, at, model) = shipped(backbone);
    let (_, summary) = crate::int8::rewrite(&model).unwrap().unwrap();
    let count = |name: &str| summary.ops.get(name).copied().unwrap_or(0);
    assert_eq!(
        (
            count("PointwiseConvI8"),
            count("DepthwiseConvI8"),
            count("GeneralDepthwiseI8"),
            count("AddI8"),
            count("MeanPoolI8"),
            summary.stem
        ),
        layers,
        "{backbone}"
    );
    let (same_stem, stem_only) = rewrite_layers(&model, Scope::StemOnly, KernelSet::best())
        .unwrap()
        .unwrap();
    assert_eq!((stem_only.fused(), stem_only.stem), (0, layers.5));
    let plain = same_stem.into_optimized().unwrap().into_runnable().unwrap();
    let member = &ensemble.members[at];
    let int8_nodes = member
        .plan()
        .model()
        .nodes()
        .iter()
        .filter(|n| n.op.name().ends_with("I8"))
        .count();
    assert!(
        int8_nodes >= summary.fused(),
        "{int8_nodes} int8 nodes in the plan"
    );
    let clips = member
        .plan()
        .model()
        .nodes()
        .iter()
        .filter(|n| n.op.name().contains("Max") || n.op.name().contains("Min"))
        .count();
    assert_eq!(
        clips, float_clips,
        "{backbone}: the stem's clips run inside its convolutions"
    );
    let ops_named = |name: &str| {
        member
            .plan()
            .model()
            .nodes()
            .iter()
            .filter(|n| n.op.name() == name)
            .count()
    };
    assert_eq!(
        (ops_named("ExactPointwiseI8"), ops_named("QuantizeI8")),
        (1, 0),
        "the stem's last pointwise layer quantizes its own output"
    );
    let softmax = |logits: &[f32]| {
        let top = logits.iter().fold(f32::MIN, |m, v| m.max(*v));
        let exp: Vec<f32> = logits.iter().map(|v| (v - top).exp()).collect();
        let sum: f32 = exp.iter().sum();
        exp.iter().map(|e| e / sum).collect::<Vec<f32>>()
    };
    for path in samples() {
        let image = load_image_file(&path, &ImageLimits::default()).unwrap();
        let input = ensemble.input_for(at, &image.rgb);
        let ours = softmax(&member.run_raw(&input).unwrap());
        let reference = plain.run(tvec!(input)).unwrap().remove(0);
        let reference = softmax(
            reference
                .try_as_plain_ram()
                .unwrap()
                .as_slice::<f32>()
                .unwrap(),
        );
        let ranked = |p: &[f32]| {
            let mut order: Vec<usize> = (0..p.len()).collect();
            order.sort_by(|a, b| p[*b].total_cmp(&p[*a]));
            order
        };
        let (ours_ranked, reference_ranked) = (ranked(&ours), ranked(&reference));
        let margin = reference[reference_ranked[0]] - reference[reference_ranked[1]];
        if margin >= 0.03 {
            assert_eq!(ours_ranked[0], reference_ranked[0], "{}", path.display());
        } else {
            let mut top_two = [ours_ranked[0], ours_ranked[1]];
            let mut reference_two = [reference_ranked[0], reference_ranked[1]];
            top_two.sort();
            reference_two.sort();
            assert_eq!(top_two, reference_two, "{} (a near tie)", path.display());
        }
        for (a, b) in ours.iter().zip(&reference) {
            assert!((a - b).abs() < 0.03, "{}: {a} against {b}", path.display());
        }
    }
}

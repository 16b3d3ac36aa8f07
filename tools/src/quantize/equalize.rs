//! Equalization of the channels of int8 inputs before quantization.
//!
//! A quantized layer's input is one uint8 tensor with one scale for all its channels, and in
//! MobileNet-like stems most channels use a small part of that range: in the shipped members
//! the first depthwise layer's input spans [0, 4.0] while half of its channels stay under 0.14,
//! which leaves those channels about nine steps. When the tensor comes from a convolution, alone or
//! through a ReLU or a clip at 0, and one convolution alone reads it, each channel `c` can be
//! scaled by a gain `g_c > 0` (the producer's weights and bias of channel `c` times `g_c`, the
//! reader's weights of input channel `c` divided by it) without changing what the model computes
//! below the clip, and every channel reaches the range of the widest one. This is the cross-layer
//! equalization of Nagel et al. 2019 ("Data-Free Quantization Through Weight Equalization and
//! Bias Correction"), with gains from calibrated activation peaks instead of weight ranges.
//!
//! A depthwise reader has one int8 weight scale per channel, so its weights lose nothing. A
//! pointwise (1x1) reader has one scale per output channel, which spans all input channels: the
//! gains trade the input's rounding for the weights', so they are a separate choice, made only
//! for a linear bottleneck (a convolution's output read directly, signed and unclipped).
//!
//! Above a clip (ReLU6) the scaled channel is clipped at `6 / g_c` of its old units, never below
//! its calibrated peak: the gains scale every channel up to the widest peak, which a ReLU6 output
//! never passes, and the uint8 range clips at that peak anyway.

use std::collections::{HashMap, HashSet};

use anyhow::{bail, Context};
use tract_onnx::pb::{GraphProto, ModelProto, NodeProto, TensorProto};

use super::qdq::float_data;

/// Largest gain given to one channel: a channel whose calibration peak is under 1/1000 of the
/// widest is treated as silent rather than stretched onto noise.
const MAX_GAIN: f32 = 1000.0;

/// The convolution that alone reads an equalizable tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// A depthwise convolution: one filter per channel.
    Depthwise,
    /// A 1x1 convolution of one group (one weight column per input channel) reading a
    /// convolution's output directly: a linear bottleneck.
    Pointwise,
}

/// A tensor that one convolution writes (directly, or for a depthwise reader through a ReLU or
/// a clip at 0) and one depthwise or pointwise convolution alone reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EqualizableInput {
    /// The tensor the reader reads.
    pub tensor: String,
    /// Its channels.
    pub channels: usize,
    /// What reads it.
    pub reader: Reader,
    /// The producing convolution's weight and optional bias initializers.
    producer_weights: (String, Option<String>),
    /// The reading convolution's weight initializer.
    consumer_weight: String,
}

fn attribute_int(node: &NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

/// The inputs of `graph` read by a `reader` that can be equalized, in graph order; readers in
/// `float_layers` (named by their output) are left out, since their input stays f32.
pub fn equalizable_inputs(
    graph: &GraphProto,
    float_layers: &HashSet<String>,
    reader: Reader,
) -> Vec<EqualizableInput> {
    let initializers: HashMap<&str, &TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let mut readers: HashMap<&str, usize> = HashMap::new();
    for input in graph.node.iter().flat_map(|n| &n.input) {
        *readers.entry(input.as_str()).or_default() += 1;
    }
    for output in &graph.output {
        *readers.entry(output.name.as_str()).or_default() += 1;
    }
    let producers: HashMap<&str, &NodeProto> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n)))
        .collect();
    let read_once = |name: &str| readers.get(name) == Some(&1);
    let dims = |name: &str| initializers.get(name).map(|t| t.dims.as_slice());
    let scalar = |node: &NodeProto, slot: usize| {
        node.input
            .get(slot)
            .and_then(|name| initializers.get(name.as_str()))
            .and_then(|t| float_data(t).ok())
            .filter(|v| v.len() == 1)
            .map(|v| v[0])
    };
    let mut found = Vec::new();
    for consumer in &graph.node {
        if consumer.op_type != "Conv" || consumer.output.iter().any(|o| float_layers.contains(o)) {
            continue;
        }
        let (Some(tensor), Some(weight)) = (consumer.input.first(), consumer.input.get(1)) else {
            continue;
        };
        let groups = attribute_int(consumer, "group").unwrap_or(1);
        let channels = match (reader, dims(weight)) {
            (Reader::Depthwise, Some(&[channels, 1, _, _])) if groups > 1 && groups == channels => {
                channels
            }
            (Reader::Pointwise, Some(&[_, channels, 1, 1])) if groups == 1 => channels,
            _ => continue,
        };
        if !read_once(tensor) || !read_once(weight) {
            continue;
        }
        let Some(mut producer) = producers.get(tensor.as_str()).copied() else {
            continue;
        };
        let passes_scaling = match producer.op_type.as_str() {
            "Relu" => true,
            "Clip" => scalar(producer, 1) == Some(0.0),
            _ => false,
        };
        if passes_scaling {
            if reader == Reader::Pointwise {
                continue;
            }
            let Some(source) = producer.input.first() else {
                continue;
            };
            match producers.get(source.as_str()) {
                Some(conv) if read_once(source) => producer = conv,
                _ => continue,
            }
        }
        if producer.op_type != "Conv" {
            continue;
        }
        let Some(producer_weight) = producer.input.get(1) else {
            continue;
        };
        let producer_bias = producer.input.get(2).filter(|b| !b.is_empty());
        let channels_match = dims(producer_weight).and_then(|d| d.first()) == Some(&channels)
            && producer_bias.is_none_or(|b| dims(b) == Some(&[channels][..]));
        if !channels_match
            || !read_once(producer_weight)
            || producer_bias.is_some_and(|b| !read_once(b))
        {
            continue;
        }
        found.push(EqualizableInput {
            tensor: tensor.clone(),
            channels: channels as usize,
            reader,
            producer_weights: (producer_weight.clone(), producer_bias.cloned()),
            consumer_weight: weight.clone(),
        });
    }
    found
}

/// The gain of each channel: `(widest peak / peak)^strength`, at most [`MAX_GAIN`]; 1 for a
/// channel that never left zero.
pub fn channel_gains(peaks: &[f32], strength: f32) -> Vec<f32> {
    let widest = peaks.iter().copied().fold(0.0f32, f32::max);
    peaks
        .iter()
        .map(|&peak| {
            if peak > 0.0 && widest > 0.0 {
                (widest / peak).min(MAX_GAIN).powf(strength)
            } else {
                1.0
            }
        })
        .collect()
}

/// The axis of a weight tensor a channel scales: the outermost (output channels of a producer,
/// filters of a depthwise reader) or the second (input channels of a pointwise reader).
#[derive(Debug, Clone, Copy)]
enum Axis {
    Outer,
    Second,
}

/// Multiplies each channel (on `axis`) of the f32 initializer `name` by `factor(c)`.
fn scale_channels(
    graph: &mut GraphProto,
    name: &str,
    axis: Axis,
    channels: usize,
    factor: impl Fn(usize) -> f32,
) -> anyhow::Result<()> {
    let tensor = graph
        .initializer
        .iter_mut()
        .find(|t| t.name == name)
        .with_context(|| format!("initializer {name} not found"))?;
    let mut values = float_data(tensor)?;
    if values.is_empty() || !values.len().is_multiple_of(channels) {
        bail!(
            "initializer {name} holds {} values, not a multiple of {channels} channels",
            values.len()
        );
    }
    let run = match axis {
        Axis::Outer => values.len() / channels,
        Axis::Second => tensor.dims.iter().skip(2).product::<i64>().max(1) as usize,
    };
    for (i, v) in values.iter_mut().enumerate() {
        *v *= factor((i / run) % channels);
    }
    tensor.float_data.clear();
    tensor.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    Ok(())
}

/// `model` with each of `inputs` equalized by `gains` (one list per input, one gain per
/// channel): the producer's channel times the gain, the reader's weights of that channel
/// divided by it.
pub fn equalize(
    model: &ModelProto,
    inputs: &[EqualizableInput],
    gains: &[Vec<f32>],
) -> anyhow::Result<ModelProto> {
    let mut equalized = model.clone();
    let graph = equalized.graph.as_mut().context("the model has no graph")?;
    for (input, gains) in inputs.iter().zip(gains) {
        if gains.len() != input.channels || gains.iter().any(|g| !(g.is_finite() && *g > 0.0)) {
            bail!(
                "gains for {} must be {} finite positive values, got {gains:?}",
                input.tensor,
                input.channels
            );
        }
        let (weight, bias) = &input.producer_weights;
        scale_channels(graph, weight, Axis::Outer, input.channels, |c| gains[c])?;
        if let Some(bias) = bias {
            scale_channels(graph, bias, Axis::Outer, input.channels, |c| gains[c])?;
        }
        let axis = match input.reader {
            Reader::Depthwise => Axis::Outer,
            Reader::Pointwise => Axis::Second,
        };
        scale_channels(graph, &input.consumer_weight, axis, input.channels, |c| {
            1.0 / gains[c]
        })?;
    }
    Ok(equalized)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::{ConvParams, GraphBuilder};

    fn conv(
        out: usize,
        per_group: usize,
        kernel: usize,
        groups: usize,
        weight: Vec<f32>,
    ) -> ConvParams {
        ConvParams {
            out_channels: out,
            in_channels_per_group: per_group,
            kernel,
            stride: 1,
            groups,
            pads: [kernel / 2; 4],
            weight,
            bias: (0..out).map(|c| 0.01 * c as f32).collect(),
        }
    }

    /// image (2 channels) -> 1x1 conv to 3 channels -> ReLU6 -> 3x3 depthwise -> 1x1 conv to 2.
    fn stem() -> (ModelProto, String, String) {
        let mut g = GraphBuilder::new();
        let expand = g.conv(
            "image",
            &conv(3, 2, 1, 1, vec![1.0, -0.5, 0.02, 0.01, 0.3, 0.2]),
        );
        let clipped = g.relu6(&expand);
        let depthwise_weight: Vec<f32> = (0..27).map(|i| (i as f32 * 0.37).sin()).collect();
        let depthwise = g.conv(&clipped, &conv(3, 1, 3, 3, depthwise_weight));
        let project = g.conv(
            &depthwise,
            &conv(2, 3, 1, 1, vec![0.5, 0.25, -1.0, 0.1, 0.2, 0.3]),
        );
        let model = g.finish(("image", &[1, 2, 4, 5]), (&project, &[1, 2, 4, 5]), "test");
        (model, clipped, depthwise)
    }

    fn run(model: &ModelProto, input: &[f32], shape: [usize; 4]) -> Vec<f32> {
        use tract_onnx::prelude::*;
        let bytes = crate::onnx::encode(model);
        let plan = tract_onnx::onnx()
            .model_for_read(&mut std::io::Cursor::new(bytes))
            .unwrap()
            .with_input_fact(0, f32::fact(shape).into())
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        let input = Tensor::from_shape(&shape, input).unwrap();
        let out = plan.run(tvec!(input.into())).unwrap();
        out[0]
            .to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .copied()
            .collect()
    }

    /// `model` with `tensor` as its only output.
    fn exposing(model: &ModelProto, tensor: &str) -> ModelProto {
        let mut probe = model.clone();
        let graph = probe.graph.as_mut().unwrap();
        graph.output[0].name = tensor.to_string();
        graph.output[0].r#type = None;
        graph.node.retain(|n| n.op_type != "Identity");
        probe
    }

    /// Asserts that `equalized` computes what `model` does, and that it writes `tensor` times
    /// the gain of each channel (20 positions per channel) for `input`.
    fn assert_equalized(
        model: &ModelProto,
        equalized: &ModelProto,
        tensor: &str,
        gains: &[f32],
        input: &[f32],
    ) {
        let before = run(model, input, [1, 2, 4, 5]);
        let after = run(equalized, input, [1, 2, 4, 5]);
        for (b, a) in before.iter().zip(&after) {
            assert!(
                (b - a).abs() <= 1e-5 * b.abs().max(1.0),
                "{before:?} {after:?}"
            );
        }
        let widened = run(&exposing(equalized, tensor), input, [1, 2, 4, 5]);
        let plain = run(&exposing(model, tensor), input, [1, 2, 4, 5]);
        for (i, (w, p)) in widened.iter().zip(&plain).enumerate() {
            let gain = gains[i / 20];
            assert!(
                (w - p * gain).abs() <= 1e-5 * w.abs().max(1.0),
                "{i}: {w} {p}"
            );
        }
    }

    #[test]
    fn a_depthwise_input_behind_a_clip_is_found_with_its_layers() {
        let (model, clipped, depthwise) = stem();
        let graph = model.graph.as_ref().unwrap();
        let found = equalizable_inputs(graph, &HashSet::new(), Reader::Depthwise);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].tensor, clipped);
        assert_eq!(found[0].channels, 3);
        assert!(
            equalizable_inputs(graph, &HashSet::from([depthwise]), Reader::Depthwise).is_empty()
        );
    }

    #[test]
    fn a_tensor_read_twice_or_a_grouped_layer_is_left_alone() {
        let mut g = GraphBuilder::new();
        let first = g.conv("image", &conv(2, 2, 1, 1, vec![1.0, 0.0, 0.0, 1.0]));
        let relu = g.relu(&first);
        let depthwise = g.conv(&relu, &conv(2, 1, 3, 2, vec![0.1; 18]));
        let sum = g.add(&relu, &depthwise);
        let model = g.finish(("image", &[1, 2, 3, 3]), (&sum, &[1, 2, 3, 3]), "test");
        assert!(equalizable_inputs(
            model.graph.as_ref().unwrap(),
            &HashSet::new(),
            Reader::Depthwise
        )
        .is_empty());

        let mut g = GraphBuilder::new();
        let first = g.conv("image", &conv(4, 2, 1, 1, vec![0.5; 8]));
        let grouped = g.conv(&first, &conv(4, 2, 3, 2, vec![0.1; 72]));
        let model = g.finish(("image", &[1, 2, 3, 3]), (&grouped, &[1, 4, 3, 3]), "test");
        assert!(equalizable_inputs(
            model.graph.as_ref().unwrap(),
            &HashSet::new(),
            Reader::Depthwise
        )
        .is_empty());
    }

    /// image (2 channels) -> 3x3 conv to 3 channels (linear) -> 1x1 conv to 2: a bottleneck.
    fn bottleneck() -> (ModelProto, String, String) {
        let mut g = GraphBuilder::new();
        let weight: Vec<f32> = (0..54).map(|i| (i as f32 * 0.53).cos()).collect();
        let project = g.conv("image", &conv(3, 2, 3, 1, weight));
        let expand = g.conv(
            &project,
            &conv(2, 3, 1, 1, vec![0.5, -0.25, 1.0, 0.1, 0.2, -0.3]),
        );
        let model = g.finish(("image", &[1, 2, 4, 5]), (&expand, &[1, 2, 4, 5]), "test");
        (model, project, expand)
    }

    #[test]
    fn a_bottleneck_is_a_pointwise_input_and_equalizing_it_keeps_the_outputs() {
        let (model, project, _) = bottleneck();
        let graph = model.graph.as_ref().unwrap();
        assert!(equalizable_inputs(graph, &HashSet::new(), Reader::Depthwise).is_empty());
        let found = equalizable_inputs(graph, &HashSet::new(), Reader::Pointwise);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            (found[0].tensor.as_str(), found[0].channels),
            (project.as_str(), 3)
        );
        assert_eq!(found[0].reader, Reader::Pointwise);

        let gains = vec![vec![1.0, 20.0, 0.25]];
        let equalized = equalize(&model, &found, &gains).unwrap();
        let input: Vec<f32> = (0..40).map(|i| (i as f32 * 0.7).sin()).collect();
        assert_equalized(&model, &equalized, &project, &gains[0], &input);
    }

    #[test]
    fn a_pointwise_input_kept_in_f32_read_twice_or_behind_a_clip_is_left_alone() {
        let (model, _, reader) = bottleneck();
        let graph = model.graph.as_ref().unwrap();
        assert!(equalizable_inputs(graph, &HashSet::from([reader]), Reader::Pointwise).is_empty());

        let mut g = GraphBuilder::new();
        let project = g.conv("image", &conv(2, 2, 1, 1, vec![1.0, 0.5, -0.5, 1.0]));
        let expand = g.conv(&project, &conv(2, 2, 1, 1, vec![0.3; 4]));
        let sum = g.add(&project, &expand);
        let model = g.finish(("image", &[1, 2, 3, 3]), (&sum, &[1, 2, 3, 3]), "test");
        let graph = model.graph.as_ref().unwrap();
        assert!(equalizable_inputs(graph, &HashSet::new(), Reader::Pointwise).is_empty());

        let mut g = GraphBuilder::new();
        let first = g.conv("image", &conv(2, 2, 1, 1, vec![1.0, 0.5, -0.5, 1.0]));
        let clipped = g.relu6(&first);
        let second = g.conv(&clipped, &conv(2, 2, 1, 1, vec![0.3; 4]));
        let model = g.finish(("image", &[1, 2, 3, 3]), (&second, &[1, 2, 3, 3]), "test");
        let graph = model.graph.as_ref().unwrap();
        assert!(equalizable_inputs(graph, &HashSet::new(), Reader::Pointwise).is_empty());
    }

    #[test]
    fn gains_bring_every_channel_to_the_widest_peak_within_the_cap() {
        let gains = channel_gains(&[4.0, 0.5, 0.0, 1e-6], 1.0);
        assert_eq!(gains[..3], [1.0, 8.0, 1.0]);
        assert_eq!(gains[3], MAX_GAIN);
        let half = channel_gains(&[4.0, 1.0], 0.5);
        assert!((half[1] - 2.0).abs() < 1e-6, "{half:?}");
        assert_eq!(channel_gains(&[0.0, 0.0], 1.0), [1.0, 1.0]);
    }

    #[test]
    fn equalizing_keeps_the_outputs_below_the_clip_and_widens_small_channels() {
        let (model, clipped, _) = stem();
        let graph = model.graph.as_ref().unwrap();
        let found = equalizable_inputs(graph, &HashSet::new(), Reader::Depthwise);
        let gains = vec![vec![1.0, 20.0, 3.0]];
        let equalized = equalize(&model, &found, &gains).unwrap();
        let input: Vec<f32> = (0..40).map(|i| (i as f32 * 0.7).cos()).collect();
        assert_equalized(&model, &equalized, &clipped, &gains[0], &input);
    }

    #[test]
    fn gains_of_the_wrong_length_or_sign_are_refused_with_the_tensor() {
        let (model, clipped, _) = stem();
        let found = equalizable_inputs(
            model.graph.as_ref().unwrap(),
            &HashSet::new(),
            Reader::Depthwise,
        );
        for gains in [
            vec![1.0, 2.0],
            vec![1.0, 0.0, 2.0],
            vec![1.0, f32::NAN, 1.0],
        ] {
            let error = format!("{:#}", equalize(&model, &found, &[gains]).unwrap_err());
            assert!(error.contains(&clipped), "{error}");
        }
    }
}

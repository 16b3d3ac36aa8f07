//! The QDQ rewrite: per-channel symmetric int8 weights, uint8 activations with calibrated
//! ranges, as QuantizeLinear / DequantizeLinear pairs around every Conv, Gemm, Add and pooling
//! input. BatchNorm is already folded into the convolutions by the exporter.

use std::collections::{HashMap, HashSet};

use super::calibration::Ranges;
use super::grid::{quantize_per_channel, ActivationQuant, WEIGHT_BOUND_8_BITS};

use anyhow::{bail, Context};
use prost::Message;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto};

use crate::onnx::int_attr;

/// Largest |int32 bias| written: headroom below `i32::MAX` for the accumulator.
const BIAS_LIMIT: f32 = (1 << 30) as f32;

/// Operators whose data inputs are quantized.
const QUANTIZED_CONSUMERS: [&str; 5] = ["Conv", "Gemm", "Add", "GlobalAveragePool", "MaxPool"];

/// The activation tensors that get a QuantizeLinear / DequantizeLinear pair, in graph order: the
/// data inputs of Conv, Gemm, Add and pooling nodes, except tensors read only by `float_layers`
/// (layers named by their output, kept in f32).
pub fn quantized_activations(graph: &GraphProto, float_layers: &HashSet<String>) -> Vec<String> {
    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let mut wanted: HashSet<&str> = HashSet::new();
    for node in &graph.node {
        let op = node.op_type.as_str();
        let is_float = node
            .output
            .first()
            .is_some_and(|o| float_layers.contains(o));
        if QUANTIZED_CONSUMERS.contains(&op) && !is_float {
            let data_inputs = if op == "Add" { 2 } else { 1 };
            for input in node.input.iter().take(data_inputs) {
                if !initializers.contains(input.as_str()) {
                    wanted.insert(input);
                }
            }
        }
    }
    let produced = graph.input.iter().map(|i| i.name.as_str()).chain(
        graph
            .node
            .iter()
            .flat_map(|n| n.output.iter().map(String::as_str)),
    );
    let mut ordered = Vec::new();
    for name in produced {
        if wanted.remove(name) {
            ordered.push(name.to_string());
        }
    }
    ordered
}

/// The Conv and Gemm layers, named by their output, in graph order.
pub fn weight_layers(graph: &GraphProto) -> Vec<String> {
    graph
        .node
        .iter()
        .filter(|n| matches!(n.op_type.as_str(), "Conv" | "Gemm"))
        .filter_map(|n| n.output.first().cloned())
        .collect()
}

/// Decodes an ONNX file.
pub fn decode_model(bytes: &[u8]) -> anyhow::Result<ModelProto> {
    ModelProto::decode(bytes).context("not an ONNX model (protobuf decoding failed)")
}

pub(crate) fn float_data(tensor: &TensorProto) -> anyhow::Result<Vec<f32>> {
    if tensor.data_type != DataType::Float as i32 {
        bail!("initializer {} is not f32", tensor.name);
    }
    let values: Vec<f32> = if !tensor.raw_data.is_empty() {
        tensor
            .raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    } else {
        tensor.float_data.clone()
    };
    let expected: i64 = tensor.dims.iter().product();
    if values.len() as i64 != expected {
        bail!(
            "initializer {} holds {} values for dims {:?} (weights in external files are not supported)",
            tensor.name,
            values.len(),
            tensor.dims
        );
    }
    if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
        bail!(
            "initializer {} holds {bad}: the f32 model is broken",
            tensor.name
        );
    }
    Ok(values)
}

fn raw_tensor(name: String, dims: &[i64], data_type: DataType, raw_data: Vec<u8>) -> TensorProto {
    TensorProto {
        name,
        dims: dims.to_vec(),
        data_type: data_type as i32,
        raw_data,
        ..Default::default()
    }
}

fn f32_tensor(name: String, dims: &[i64], values: &[f32]) -> TensorProto {
    let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    raw_tensor(name, dims, DataType::Float, raw)
}

fn node(
    op: &str,
    name: String,
    inputs: Vec<String>,
    output: String,
    attrs: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        name,
        op_type: op.into(),
        input: inputs,
        output: vec![output],
        attribute: attrs,
        ..Default::default()
    }
}

/// Writes the QDQ graph: builds up the new node list and initializers.
struct QdqWriter {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    /// The largest weight magnitude of pointwise (1x1) convolutions and Gemm layers.
    pointwise_bound: i8,
}

impl QdqWriter {
    /// Appends `tensor -> QuantizeLinear -> DequantizeLinear`; returns the dequantized name.
    fn activation_pair(&mut self, tensor: &str, quant: ActivationQuant) -> String {
        let scale = format!("{tensor}_scale");
        let zero_point = format!("{tensor}_zero_point");
        let quantized = format!("{tensor}_quantized");
        let dequantized = format!("{tensor}_dequantized");
        self.initializers
            .push(f32_tensor(scale.clone(), &[], &[quant.scale]));
        self.initializers.push(raw_tensor(
            zero_point.clone(),
            &[],
            DataType::Uint8,
            vec![quant.zero_point],
        ));
        self.nodes.push(node(
            "QuantizeLinear",
            format!("{tensor}_quantize"),
            vec![tensor.into(), scale.clone(), zero_point.clone()],
            quantized.clone(),
            vec![],
        ));
        self.nodes.push(node(
            "DequantizeLinear",
            format!("{tensor}_dequantize"),
            vec![quantized, scale, zero_point],
            dequantized.clone(),
            vec![],
        ));
        dequantized
    }

    /// Adds `{name}_quantized` (int8 weights or int32 bias, `raw` little-endian) with one scale
    /// per channel along `axis` and a DequantizeLinear; returns the dequantized name.
    fn constant_dequantized(
        &mut self,
        name: &str,
        dims: &[i64],
        data_type: DataType,
        raw: Vec<u8>,
        scales: &[f32],
        axis: i64,
    ) -> String {
        let quantized = format!("{name}_quantized");
        let scale = format!("{name}_scale");
        let zero_point = format!("{name}_zero_point");
        let dequantized = format!("{name}_dequantized");
        let zero_bytes = if data_type == DataType::Int32 { 4 } else { 1 };
        let channels = scales.len() as i64;
        self.initializers
            .push(raw_tensor(quantized.clone(), dims, data_type, raw));
        self.initializers
            .push(f32_tensor(scale.clone(), &[channels], scales));
        self.initializers.push(raw_tensor(
            zero_point.clone(),
            &[channels],
            data_type,
            vec![0; scales.len() * zero_bytes],
        ));
        self.nodes.push(node(
            "DequantizeLinear",
            format!("{name}_dequantize"),
            vec![quantized, scale, zero_point],
            dequantized.clone(),
            vec![int_attr("axis", axis)],
        ));
        dequantized
    }

    /// Quantizes a Conv or Gemm node's weight, and its bias to int32 when its input is quantized
    /// (`input_scale`); returns the new input names. A channel whose bias would not fit in int32
    /// at the weight's own scale gets a coarser weight scale.
    fn weights(
        &mut self,
        node: &NodeProto,
        initializers: &HashMap<&str, &TensorProto>,
        input_scale: Option<f32>,
    ) -> anyhow::Result<Vec<String>> {
        let describe = || format!("{} {}", node.op_type, node.name);
        let weight_name = node
            .input
            .get(1)
            .with_context(|| format!("{} has no weight input", describe()))?;
        let weight = initializers
            .get(weight_name.as_str())
            .with_context(|| format!("{}: weight is not an initializer", describe()))?;
        let values = float_data(weight)?;
        let dims = weight.dims.clone();
        let pointwise = matches!(
            (node.op_type.as_str(), dims.as_slice()),
            ("Conv", [_, _, 1, 1]) | ("Gemm", _)
        );
        let bound = if pointwise {
            self.pointwise_bound
        } else {
            WEIGHT_BOUND_8_BITS
        };
        let (channels, axis) = match (node.op_type.as_str(), dims.as_slice()) {
            ("Conv", [out, _, _, _]) => (*out as usize, 0),
            ("Gemm", [_, out]) => {
                let trans_b = node
                    .attribute
                    .iter()
                    .any(|a| a.name == "transB" && a.i != 0);
                if trans_b {
                    bail!(
                        "{}: only [inputs, outputs] weights (transB = 0) are quantized",
                        describe()
                    );
                }
                (*out as usize, 1)
            }
            _ => bail!("{}: weight dims {dims:?} are not supported", describe()),
        };
        if channels == 0 {
            bail!("{}: weight has no output channel", describe());
        }
        let bias = match (node.input.get(2), input_scale) {
            (Some(bias_name), Some(input_scale)) => {
                let bias = initializers
                    .get(bias_name.as_str())
                    .with_context(|| format!("{}: bias is not an initializer", describe()))?;
                let bias_values = float_data(bias)?;
                if bias_values.len() != channels {
                    bail!(
                        "{}: {} bias values for {channels} channels",
                        describe(),
                        bias_values.len()
                    );
                }
                Some((bias_name, bias, bias_values, input_scale))
            }
            _ => None,
        };
        let min_scales: Vec<f32> = match &bias {
            Some((_, _, values, input_scale)) => values
                .iter()
                .map(|b| b.abs() / (input_scale * BIAS_LIMIT))
                .collect(),
            None => Vec::new(),
        };
        let quantized = if axis == 0 {
            let per_channel = values.len() / channels;
            quantize_per_channel(&values, channels, |i| i / per_channel, &min_scales, bound)
        } else {
            quantize_per_channel(&values, channels, |i| i % channels, &min_scales, bound)
        };
        let int8 = quantized.values.iter().map(|v| *v as u8).collect();
        let mut inputs = vec![self.constant_dequantized(
            weight_name,
            &dims,
            DataType::Int8,
            int8,
            &quantized.scales,
            axis,
        )];
        if let Some((bias_name, bias, bias_values, input_scale)) = bias {
            let scales: Vec<f32> = quantized.scales.iter().map(|s| s * input_scale).collect();
            let int32: Vec<u8> = bias_values
                .iter()
                .zip(&scales)
                .flat_map(|(b, s)| ((b / s).round() as i32).to_le_bytes())
                .collect();
            inputs.push(self.constant_dequantized(
                bias_name,
                &bias.dims,
                DataType::Int32,
                int32,
                &scales,
                0,
            ));
        }
        Ok(inputs)
    }
}

/// Rewrites an f32 model into QDQ form: int8 per-channel weights and int32 biases for Conv and
/// Gemm, and uint8 activations with the calibrated `ranges`; `float_layers` (Conv or Gemm layers
/// named by their output) and the tensors only they read stay f32. The weights of pointwise
/// (1x1) convolutions and Gemm layers lie in `[-pointwise_bound, pointwise_bound]` (1 to 127),
/// the others in [-127, 127].
pub fn quantize_model(
    model: &ModelProto,
    ranges: &Ranges,
    float_layers: &HashSet<String>,
    pointwise_bound: i8,
) -> anyhow::Result<ModelProto> {
    if !(1..=WEIGHT_BOUND_8_BITS).contains(&pointwise_bound) {
        bail!("pointwise weight bound {pointwise_bound} is outside 1..=127");
    }
    let graph = model.graph.as_ref().context("the model has no graph")?;
    let activations = quantized_activations(graph, float_layers);
    let mut quants = HashMap::new();
    for tensor in &activations {
        let (lo, hi) = ranges
            .get(tensor)
            .with_context(|| format!("no calibrated range for tensor {tensor}"))?;
        quants.insert(tensor.clone(), ActivationQuant::from_range(lo, hi));
    }
    let initializers: HashMap<&str, &TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let mut writer = QdqWriter {
        nodes: Vec::new(),
        initializers: Vec::new(),
        pointwise_bound,
    };
    let mut renamed: HashMap<String, String> = HashMap::new();
    let mut replaced_weights: HashSet<String> = HashSet::new();
    for input in &graph.input {
        if let Some(q) = quants.get(&input.name) {
            renamed.insert(input.name.clone(), writer.activation_pair(&input.name, *q));
        }
    }
    for original in &graph.node {
        let mut node = original.clone();
        let is_float = original
            .output
            .first()
            .is_some_and(|o| float_layers.contains(o));
        let f32_inputs = usize::from(is_float);
        for input in node.input.iter_mut().skip(f32_inputs) {
            if let Some(new) = renamed.get(input) {
                *input = new.clone();
            }
        }
        if matches!(node.op_type.as_str(), "Conv" | "Gemm") && !is_float {
            let input_scale = original
                .input
                .first()
                .and_then(|i| quants.get(i))
                .map(|q| q.scale);
            let new_inputs = writer.weights(original, &initializers, input_scale)?;
            for (slot, name) in node.input.iter_mut().skip(1).zip(new_inputs) {
                if *slot != name {
                    replaced_weights.insert(slot.clone());
                    *slot = name;
                }
            }
        }
        writer.nodes.push(node);
        for output in &original.output {
            if let Some(q) = quants.get(output) {
                renamed.insert(output.clone(), writer.activation_pair(output, *q));
            }
        }
    }
    for output in &graph.output {
        if renamed.contains_key(&output.name) {
            bail!("graph output {} would be quantized", output.name);
        }
    }
    let mut new_graph = graph.clone();
    new_graph.node = writer.nodes;
    new_graph.initializer = graph
        .initializer
        .iter()
        .filter(|t| !replaced_weights.contains(&t.name))
        .cloned()
        .chain(writer.initializers)
        .collect();
    new_graph.value_info.clear();
    let mut quantized = model.clone();
    quantized.graph = Some(new_graph);
    quantized.doc_string = format!("{} (int8 QDQ by dermedge-tools quantize)", model.doc_string);
    Ok(quantized)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1x1 convolution from 3 to 2 channels.
    fn pointwise(weight: Vec<f32>, bias: Vec<f32>) -> crate::onnx::ConvParams {
        crate::onnx::ConvParams {
            out_channels: 2,
            in_channels_per_group: 3,
            kernel: 1,
            stride: 1,
            groups: 1,
            pads: [0; 4],
            weight,
            bias,
        }
    }

    #[test]
    fn activations_are_the_data_inputs_of_quantized_ops_in_graph_order() {
        let mut g = crate::onnx::GraphBuilder::new();
        let conv = g.conv("image", &pointwise(vec![0.1; 6], vec![0.0; 2]));
        let relu = g.relu6(&conv);
        let sum = g.add(&relu, &relu);
        let pooled = g.global_pool_flatten(&sum);
        let logits = g.dense(
            &pooled,
            &crate::onnx::DenseParams {
                inputs: 2,
                outputs: 7,
                weight: vec![0.1; 14],
                bias: vec![0.0; 7],
            },
        );
        let model = g.finish(("image", &[1, 3, 4, 4]), (&logits, &[1, 7]), "test");
        let graph = model.graph.as_ref().unwrap();
        let names = quantized_activations(graph, &HashSet::new());
        assert_eq!(names.len(), 4, "{names:?}");
        assert_eq!(names[0], "image");
        assert_eq!(names[1], relu);
        assert_eq!(names[2], sum);
        assert!(!names.contains(&conv));
        assert!(!names.contains(&logits));
        let layers = weight_layers(graph);
        assert_eq!(layers, vec![conv.clone(), logits.clone()]);
        let first_float = quantized_activations(graph, &HashSet::from([conv.clone()]));
        assert!(
            !first_float.contains(&"image".to_string()),
            "{first_float:?}"
        );
        assert_eq!(first_float.len(), 3);
    }

    /// A dense layer from 2 to 3 values on `pooled`.
    fn dense_2_to_3(g: &mut crate::onnx::GraphBuilder, pooled: &str) -> String {
        g.dense(
            pooled,
            &crate::onnx::DenseParams {
                inputs: 2,
                outputs: 3,
                weight: vec![0.5, -0.25, 0.125, 1.0, 0.3, -0.7],
                bias: vec![0.1, -0.2, 0.3],
            },
        )
    }

    fn conv_gemm_model(conv_weight: Vec<f32>, conv_bias: Vec<f32>) -> (ModelProto, String, String) {
        let mut g = crate::onnx::GraphBuilder::new();
        let conv = g.conv("image", &pointwise(conv_weight, conv_bias));
        let pooled = g.global_pool_flatten(&conv);
        let logits = dense_2_to_3(&mut g, &pooled);
        let model = g.finish(("image", &[1, 3, 2, 2]), (&logits, &[1, 3]), "test");
        (model, conv, pooled)
    }

    fn ranges_for(model: &ModelProto) -> Ranges {
        let mut ranges = Ranges::default();
        for tensor in quantized_activations(model.graph.as_ref().unwrap(), &HashSet::new()) {
            ranges.observe(&tensor, [-2.0, 3.0]);
        }
        ranges
    }

    fn initializer<'m>(model: &'m ModelProto, name: &str) -> &'m TensorProto {
        let graph = model.graph.as_ref().unwrap();
        graph.initializer.iter().find(|t| t.name == name).unwrap()
    }

    fn f32s(t: &TensorProto) -> Vec<f32> {
        t.raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    #[test]
    fn dequantized_weights_and_biases_stay_within_half_a_step() {
        let conv_weight = vec![0.3, -0.2, 0.1, 1e-9, 2e-9, -1e-9];
        let conv_bias = vec![0.05, 40.0];
        let (model, _, _) = conv_gemm_model(conv_weight.clone(), conv_bias.clone());
        let ranges = ranges_for(&model);
        let quantized = quantize_model(&model, &ranges, &HashSet::new(), 127).unwrap();
        let graph = model.graph.as_ref().unwrap();
        let conv = &graph.node[0];
        let (w, b) = (&conv.input[1], &conv.input[2]);
        let q: Vec<i8> = initializer(&quantized, &format!("{w}_quantized"))
            .raw_data
            .iter()
            .map(|v| *v as i8)
            .collect();
        let scales = f32s(initializer(&quantized, &format!("{w}_scale")));
        for (i, original) in conv_weight.iter().enumerate() {
            let back = q[i] as f32 * scales[i / 3];
            assert!(
                (back - original).abs() <= scales[i / 3] / 2.0 + 1e-12,
                "{i}"
            );
        }
        let input_scale = ActivationQuant::from_range(-2.0, 3.0).scale;
        let bias_scales = f32s(initializer(&quantized, &format!("{b}_scale")));
        let bias_q: Vec<i32> = initializer(&quantized, &format!("{b}_quantized"))
            .raw_data
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        for c in 0..2 {
            assert!((bias_scales[c] - scales[c] * input_scale).abs() <= 1e-6 * bias_scales[c]);
            let back = bias_q[c] as f32 * bias_scales[c];
            assert!(
                (back - conv_bias[c]).abs() <= bias_scales[c] / 2.0 + 1e-6,
                "{c}"
            );
            assert!(bias_q[c].unsigned_abs() <= BIAS_LIMIT as u32);
        }
        assert!(
            scales[1] > 2e-9 / 127.0,
            "the large bias coarsened the tiny channel"
        );
    }

    /// The int8 values of the weight `node` reads.
    fn quantized_weight(quantized: &ModelProto, node: &NodeProto) -> Vec<i8> {
        let name = format!("{}_quantized", node.input[1]);
        initializer(quantized, &name)
            .raw_data
            .iter()
            .map(|v| *v as i8)
            .collect()
    }

    #[test]
    fn a_seven_bit_bound_applies_to_pointwise_and_dense_weights_only() {
        let mut g = crate::onnx::GraphBuilder::new();
        let spatial = g.conv(
            "image",
            &crate::onnx::ConvParams {
                out_channels: 3,
                in_channels_per_group: 3,
                kernel: 3,
                stride: 1,
                groups: 1,
                pads: [1; 4],
                weight: (0..81).map(|i| (i as f32 - 40.0) / 40.0).collect(),
                bias: vec![0.0; 3],
            },
        );
        let conv = g.conv(
            &spatial,
            &pointwise(vec![0.3, -0.6, 0.1, 0.2, 0.4, -0.8], vec![0.0; 2]),
        );
        let pooled = g.global_pool_flatten(&conv);
        let logits = dense_2_to_3(&mut g, &pooled);
        let model = g.finish(("image", &[1, 3, 4, 4]), (&logits, &[1, 3]), "test");
        let ranges = ranges_for(&model);
        let graph = model.graph.as_ref().unwrap();
        let peak = |bound: i8, at: usize| -> i8 {
            let quantized = quantize_model(&model, &ranges, &HashSet::new(), bound).unwrap();
            let values = quantized_weight(&quantized, &graph.node[at]);
            values.iter().map(|v| v.abs()).max().unwrap()
        };
        let dense = graph.node.iter().position(|n| n.op_type == "Gemm").unwrap();
        assert_eq!([peak(63, 0), peak(63, 1), peak(63, dense)], [127, 63, 63]);
        assert_eq!(
            [peak(127, 0), peak(127, 1), peak(127, dense)],
            [127, 127, 127]
        );
    }

    #[test]
    fn float_layers_keep_f32_weights_and_inputs() {
        let (model, conv, _) = conv_gemm_model(vec![0.1; 6], vec![0.0; 2]);
        let ranges = ranges_for(&model);
        let quantized =
            quantize_model(&model, &ranges, &HashSet::from([conv.clone()]), 127).unwrap();
        let graph = quantized.graph.as_ref().unwrap();
        let node = graph.node.iter().find(|n| n.output[0] == conv).unwrap();
        assert_eq!(node.input[0], "image");
        let weight = graph
            .initializer
            .iter()
            .find(|t| t.name == node.input[1])
            .unwrap();
        assert_eq!(weight.data_type, DataType::Float as i32);
        let gemm = graph.node.iter().find(|n| n.op_type == "Gemm").unwrap();
        assert!(gemm.input[0].ends_with("_dequantized"), "{:?}", gemm.input);
    }

    #[test]
    fn a_float_layer_reads_f32_where_a_quantized_layer_shares_its_input() {
        let mut g = crate::onnx::GraphBuilder::new();
        let kept = g.conv("image", &pointwise(vec![0.1; 6], vec![0.0; 2]));
        let quantized_conv = g.conv("image", &pointwise(vec![0.2; 6], vec![0.0; 2]));
        let sum = g.add(&kept, &quantized_conv);
        let pooled = g.global_pool_flatten(&sum);
        let model = g.finish(("image", &[1, 3, 2, 2]), (&pooled, &[1, 2]), "test");
        let ranges = ranges_for(&model);
        let quantized =
            quantize_model(&model, &ranges, &HashSet::from([kept.clone()]), 127).unwrap();
        let graph = quantized.graph.as_ref().unwrap();
        let reader = |output: &str| graph.node.iter().find(|n| n.output[0] == output).unwrap();
        assert_eq!(reader(&kept).input[0], "image");
        assert_eq!(reader(&quantized_conv).input[0], "image_dequantized");
    }

    #[test]
    fn malformed_initializers_are_refused_with_their_name() {
        let (mut model, _, _) = conv_gemm_model(vec![0.1; 6], vec![0.0; 2]);
        let ranges = ranges_for(&model);
        let graph = model.graph.as_mut().unwrap();
        let weight_name = graph.node[0].input[1].clone();
        let weight = graph
            .initializer
            .iter_mut()
            .find(|t| t.name == weight_name)
            .unwrap();
        weight.raw_data.truncate(8);
        let error = format!(
            "{:#}",
            quantize_model(&model, &ranges, &HashSet::new(), 127).unwrap_err()
        );
        assert!(
            error.contains(&weight_name) && error.contains("2 values"),
            "{error}"
        );
        let (mut model, _, _) = conv_gemm_model(vec![f32::NAN; 6], vec![0.0; 2]);
        let graph = model.graph.as_mut().unwrap();
        graph.node[0].name = "broken".into();
        let error = format!(
            "{:#}",
            quantize_model(&model, &ranges, &HashSet::new(), 127).unwrap_err()
        );
        assert!(error.contains("NaN"), "{error}");
    }
}

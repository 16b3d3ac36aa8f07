//! The project's ONNX writer: builds `tract_onnx::pb` protobuf messages for the operators the
//! project's networks use and encodes them with prost.

use prost::Message;
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::tensor_shape_proto::{dimension, Dimension};
use tract_onnx::pb::type_proto::{Tensor as TensorType, Value as TypeValue};
use tract_onnx::pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

/// ONNX opset the writer targets.
pub const OPSET: i64 = 13;

/// A convolution's parameters with BatchNorm already folded in.
#[derive(Debug, Clone)]
pub struct ConvParams {
    pub out_channels: usize,
    pub in_channels_per_group: usize,
    pub kernel: usize,
    pub stride: usize,
    pub groups: usize,
    /// `(top, left, bottom, right)` zero padding.
    pub pads: [usize; 4],
    /// `[out, in / groups, k, k]`, row-major.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// A dense layer; `weight` is `[inputs, outputs]` row-major (burn's layout), written as Gemm with
/// `transB = 0`.
#[derive(Debug, Clone)]
pub struct DenseParams {
    pub inputs: usize,
    pub outputs: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// Accumulates nodes and initializers into one graph.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    next_id: usize,
}

pub(crate) fn int_attr(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: value,
        ..Default::default()
    }
}

fn ints_attr(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..Default::default()
    }
}

fn tensor_value_info(name: &str, shape: &[usize]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(TypeValue::TensorType(TensorType {
                elem_type: DataType::Float as i32,
                shape: Some(TensorShapeProto {
                    dim: shape
                        .iter()
                        .map(|d| Dimension {
                            value: Some(dimension::Value::DimValue(*d as i64)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl GraphBuilder {
    /// An empty graph.
    pub fn new() -> GraphBuilder {
        GraphBuilder::default()
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}_{}", self.next_id)
    }

    /// Adds an f32 initializer and returns its name.
    pub fn constant(&mut self, prefix: &str, dims: &[usize], data: &[f32]) -> String {
        debug_assert_eq!(dims.iter().product::<usize>(), data.len());
        let name = self.fresh(prefix);
        self.initializers.push(TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|d| *d as i64).collect(),
            data_type: DataType::Float as i32,
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    /// Adds a node with one output and returns the output's name.
    pub fn node(&mut self, op: &str, inputs: &[&str], attributes: Vec<AttributeProto>) -> String {
        let output = self.fresh(&op.to_lowercase());
        self.nodes.push(NodeProto {
            name: format!("{output}_node"),
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.clone()],
            attribute: attributes,
            ..Default::default()
        });
        output
    }

    /// A convolution with explicit padding.
    pub fn conv(&mut self, x: &str, p: &ConvParams) -> String {
        let w = self.constant(
            "conv_w",
            &[p.out_channels, p.in_channels_per_group, p.kernel, p.kernel],
            &p.weight,
        );
        let b = self.constant("conv_b", &[p.out_channels], &p.bias);
        let [top, left, bottom, right] = p.pads.map(|v| v as i64);
        let k = p.kernel as i64;
        let s = p.stride as i64;
        self.node(
            "Conv",
            &[x, &w, &b],
            vec![
                ints_attr("kernel_shape", &[k, k]),
                ints_attr("strides", &[s, s]),
                ints_attr("pads", &[top, left, bottom, right]),
                ints_attr("dilations", &[1, 1]),
                int_attr("group", p.groups as i64),
            ],
        )
    }

    /// Max pooling with a square window and symmetric padding.
    pub fn max_pool(&mut self, x: &str, kernel: usize, stride: usize, pad: usize) -> String {
        let (k, s, p) = (kernel as i64, stride as i64, pad as i64);
        self.node(
            "MaxPool",
            &[x],
            vec![
                ints_attr("kernel_shape", &[k, k]),
                ints_attr("strides", &[s, s]),
                ints_attr("pads", &[p, p, p, p]),
            ],
        )
    }

    /// `max(x, 0)`.
    pub fn relu(&mut self, x: &str) -> String {
        self.node("Relu", &[x], vec![])
    }

    /// `min(max(x, 0), 6)`.
    pub fn relu6(&mut self, x: &str) -> String {
        let lo = self.constant("clip_min", &[], &[0.0]);
        let hi = self.constant("clip_max", &[], &[6.0]);
        self.node("Clip", &[x, &lo, &hi], vec![])
    }

    /// Element-wise sum.
    pub fn add(&mut self, a: &str, b: &str) -> String {
        self.node("Add", &[a, b], vec![])
    }

    /// Global average pooling then flattening to `[N, C]`.
    pub fn global_pool_flatten(&mut self, x: &str) -> String {
        let pooled = self.node("GlobalAveragePool", &[x], vec![]);
        self.node("Flatten", &[&pooled], vec![int_attr("axis", 1)])
    }

    /// A dense layer as Gemm (`transB = 0`).
    pub fn dense(&mut self, x: &str, p: &DenseParams) -> String {
        let w = self.constant("fc_w", &[p.inputs, p.outputs], &p.weight);
        let b = self.constant("fc_b", &[p.outputs], &p.bias);
        self.node("Gemm", &[x, &w, &b], vec![int_attr("transB", 0)])
    }

    /// Closes the graph into a model with one input and one output, both f32 with fixed shapes.
    pub fn finish(
        mut self,
        input: (&str, &[usize]),
        output: (&str, &[usize]),
        doc: &str,
    ) -> ModelProto {
        let named_output = "logits";
        self.nodes.push(NodeProto {
            name: "output_identity".into(),
            op_type: "Identity".into(),
            input: vec![output.0.to_string()],
            output: vec![named_output.into()],
            ..Default::default()
        });
        ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "dermedge-tools".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: doc.into(),
            graph: Some(GraphProto {
                name: "dermedge".into(),
                node: self.nodes,
                initializer: self.initializers,
                input: vec![tensor_value_info(input.0, input.1)],
                output: vec![tensor_value_info(named_output, output.1)],
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// Encodes a model as ONNX protobuf bytes.
pub fn encode(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::prelude::*;

    fn run(model: &ModelProto, input: Tensor) -> Vec<f32> {
        let bytes = encode(model);
        let plan = tract_onnx::onnx()
            .model_for_read(&mut std::io::Cursor::new(bytes))
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        let out = plan.run(tvec!(input.into_tvalue())).unwrap();
        out[0]
            .to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .copied()
            .collect()
    }

    #[test]
    fn conv_relu_pool_dense_match_hand_computation() {
        // Input 1x1x3x3 = 1..9; a 3x3 kernel of ones with bias -20 and padding 1 gives the
        // neighbourhood sums minus 20: corners 12-20, edges 21-20 .. , centre 45-20.
        let mut g = GraphBuilder::new();
        let conv = g.conv(
            "x",
            &ConvParams {
                out_channels: 1,
                in_channels_per_group: 1,
                kernel: 3,
                stride: 1,
                groups: 1,
                pads: [1; 4],
                weight: vec![1.0; 9],
                bias: vec![-20.0],
            },
        );
        let relu = g.relu(&conv);
        let pooled = g.global_pool_flatten(&relu);
        let dense = g.dense(
            &pooled,
            &DenseParams {
                inputs: 1,
                outputs: 2,
                weight: vec![1.0, -2.0],
                bias: vec![0.5, 0.0],
            },
        );
        let model = g.finish(("x", &[1, 1, 3, 3]), (&dense, &[1, 2]), "test");
        let input = tract_ndarray::Array4::from_shape_vec(
            (1, 1, 3, 3),
            (1..=9).map(|v| v as f32).collect(),
        )
        .unwrap()
        .into_tensor();
        // Neighbourhood sums: [12 21 16; 27 45 33; 24 39 28]; minus 20, ReLU:
        // [0 1 0; 7 25 13; 4 19 8] -> mean 77 / 9.
        let mean = 77.0 / 9.0;
        let out = run(&model, input);
        assert!((out[0] - (mean + 0.5)).abs() < 1e-4, "{out:?}");
        assert!((out[1] + 2.0 * mean).abs() < 1e-4, "{out:?}");
    }

    #[test]
    fn depthwise_conv_relu6_and_add() {
        let mut g = GraphBuilder::new();
        let dw = g.conv(
            "x",
            &ConvParams {
                out_channels: 2,
                in_channels_per_group: 1,
                kernel: 1,
                stride: 1,
                groups: 2,
                pads: [0; 4],
                weight: vec![10.0, -1.0],
                bias: vec![0.0, 0.0],
            },
        );
        let clipped = g.relu6(&dw);
        let sum = g.add("x", &clipped);
        let model = g.finish(("x", &[1, 2, 1, 2]), (&sum, &[1, 2, 1, 2]), "test");
        let input =
            tract_ndarray::Array4::from_shape_vec((1, 2, 1, 2), vec![0.2f32, 1.0, 3.0, -4.0])
                .unwrap()
                .into_tensor();
        // Channel 0: 10x -> [2, 10] clipped [2, 6], plus x -> [2.2, 7]. Channel 1: -x -> [-3, 4]
        // clipped [0, 4], plus x -> [3, 0].
        let out = run(&model, input);
        let expected = [2.2, 7.0, 3.0, 0.0];
        for (a, b) in out.iter().zip(expected) {
            assert!((a - b).abs() < 1e-5, "{out:?}");
        }
    }
}

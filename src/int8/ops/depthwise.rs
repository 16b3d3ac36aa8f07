//! Depthwise 3x3 convolution (padding 1, stride 1 or 2) on int8 activations and weights, with
//! bias, zero points, per-channel scales and the activation clip fused; and the rewrite that
//! finds it in a QDQ graph: a 3x3 Conv with one group per channel reading a dequantized tensor.

use tract_core::internal::*;
use tract_core::ops::cnn::Conv;

use super::{int8_fact, output_tensor};
use crate::int8::grid::{recover_int8_rows, InputGrid, OutputGrid};
use crate::int8::kernels::depthwise::{
    output_size, DepthwiseLayer, BAND_ROWS, CHANNELS_LAST_MAX_POSITIONS, LANES,
};
use crate::int8::kernels::{for_each_chunk, KernelSet};
use crate::int8::layout::Layout;
use crate::int8::rewrite::graph::{
    concrete_shape, const_values, conv3x3_stride, depthwise_channels, dequantized_source,
    stays_float,
};
use crate::int8::rewrite::{Chain, Fused, Pattern};

/// Channels one thread convolves at a time.
const CHANNELS_PER_TASK: usize = LANES;

/// Quantization and geometry of a depthwise layer, as read from the QDQ graph.
pub struct DepthwiseParams<'a> {
    pub layer: String,
    /// `[channels, 3, 3]` int8 weights and their per-channel scales.
    pub weights: &'a [i8],
    pub weight_scales: &'a [f32],
    pub bias: &'a [f32],
    pub input_scale: f32,
    /// Input zero point in the i8 domain.
    pub input_zero_point: i8,
    pub output_inverse_scale: f32,
    pub grid: OutputGrid,
    pub stride: usize,
    /// Input height and width.
    pub height: usize,
    pub width: usize,
    pub output_shape: TVec<usize>,
}

/// A depthwise 3x3 convolution on int8 `[.., channels, height, width]` input, or on
/// `[.., height, width, channels]` input and output with [`DepthwiseConvI8::with_layout`].
#[derive(Debug, Clone, PartialEq)]
pub struct DepthwiseConvI8 {
    pub layer: String,
    /// The output's shape in channels-first order.
    pub output_shape: TVec<usize>,
    /// Layout of both input and output.
    pub layout: Layout,
    kernels: KernelSet,
    conv: DepthwiseLayer,
}
impl Eq for DepthwiseConvI8 {}

impl DepthwiseConvI8 {
    /// Builds the op on `kernels`; errors when the parameters do not describe a 3x3 depthwise
    /// layer.
    pub fn new(params: DepthwiseParams, kernels: KernelSet) -> TractResult<DepthwiseConvI8> {
        let channels = params.weight_scales.len();
        ensure!(params.weights.len() == channels * 9 && params.bias.len() == channels);
        ensure!(matches!(params.stride, 1 | 2));
        let (oh, ow) = output_size(params.height, params.width, params.stride);
        ensure!(params.output_shape.iter().product::<usize>() == channels * oh * ow);
        let multiplier: Vec<f32> = params
            .weight_scales
            .iter()
            .map(|s| params.input_scale * s * params.output_inverse_scale)
            .collect();
        let offset: Vec<f32> = params
            .bias
            .iter()
            .map(|b| b * params.output_inverse_scale)
            .collect();
        let conv = DepthwiseLayer::new(
            (channels, params.height, params.width, params.stride),
            params.weights,
            params.input_zero_point,
            multiplier,
            offset,
            params.grid,
        )
        .with_context(|| format!("{}: an empty input plane", params.layer))?;
        Ok(DepthwiseConvI8 {
            layer: params.layer,
            output_shape: params.output_shape,
            layout: Layout::ChannelsFirst,
            kernels,
            conv,
        })
    }

    /// Whether the layer runs faster on channels-last tensors (measured on x86-64: small
    /// planes; large ones run faster plane by plane).
    pub fn faster_channels_last(&self) -> bool {
        let (oh, ow) = self.conv.output_size();
        oh * ow <= CHANNELS_LAST_MAX_POSITIONS
    }

    /// The same layer reading and writing tensors in `layout`.
    pub fn with_layout(self, layout: Layout) -> DepthwiseConvI8 {
        DepthwiseConvI8 { layout, ..self }
    }
}

/// The depthwise rewrite: see the module's documentation.
pub struct DepthwisePattern;

impl Pattern for DepthwisePattern {
    fn name(&self) -> &'static str {
        "DepthwiseConvI8"
    }

    fn fuse(&self, chain: &Chain) -> TractResult<Option<Fused>> {
        let node = chain.layer;
        let Some(conv) = node.op_as::<Conv>() else {
            return Ok(None);
        };
        let (Some(stride), Some(channels)) = (conv3x3_stride(conv, node), depthwise_channels(conv))
        else {
            return Ok(stays_float(&node.name, &format!("{conv:?}")));
        };
        let Some(parts) = DepthwiseParts::read(chain, channels, 9)? else {
            return Ok(None);
        };
        let params = DepthwiseParams {
            layer: node.name.clone(),
            weights: &parts.weights,
            weight_scales: &parts.weight_scales,
            bias: &parts.bias,
            input_scale: parts.input.scale,
            input_zero_point: parts.input.zero_point,
            output_inverse_scale: chain.quantize.scale,
            grid: chain.grid,
            stride,
            height: parts.height,
            width: parts.width,
            output_shape: chain.output_shape.clone(),
        };
        let op = DepthwiseConvI8::new(params, chain.kernels)?;
        Ok(Some(parts.fused(Box::new(op), chain)))
    }
}

/// Logs why `layer` stays in float; no parts.
fn declined(layer: &str, why: &str) -> Option<DepthwiseParts> {
    stays_float(layer, why);
    None
}

/// What a depthwise layer's int8 op needs from the QDQ graph, whatever its kernel: the int8
/// tensor it reads, its integer weights and scales, its bias and its input plane size.
pub struct DepthwiseParts {
    pub source: usize,
    pub input: InputGrid,
    /// `[channels, taps]`.
    pub weights: Vec<i8>,
    pub weight_scales: Vec<f32>,
    pub bias: Vec<f32>,
    pub height: usize,
    pub width: usize,
}

impl DepthwiseParts {
    /// The parts of the chain's depthwise layer of `channels` channels and `taps` weights per
    /// channel, or `None` (logged) when its input is not dequantized, its weights are not
    /// constant or not on an int8 grid, or its input is not `[.., channels, height, width]`.
    pub fn read(chain: &Chain, channels: usize, taps: usize) -> TractResult<Option<Self>> {
        let (model, node) = (chain.model, chain.layer);
        let Some((source, input)) = dequantized_source(model, node.inputs[0]) else {
            return Ok(declined(&node.name, "its input is not dequantized"));
        };
        let (Some(weights), Some(bias)) = (
            const_values(model, node.inputs[1]),
            const_values(model, node.inputs[2]),
        ) else {
            let why = "its weights or bias are not constant";
            return Ok(declined(&node.name, why));
        };
        if weights.len() != channels * taps || bias.len() != channels {
            let why = "weights or bias of another size";
            return Ok(declined(&node.name, why));
        }
        let Some((weights, weight_scales)) = recover_int8_rows(&weights, channels) else {
            let why = "its weights are not an int8 grid";
            return Ok(declined(&node.name, why));
        };
        let input_shape = concrete_shape(model, node.inputs[0])?;
        let rank = input_shape.len();
        if rank < 3 || input_shape[rank - 3] != channels {
            let why = format!("input shape {input_shape:?}");
            return Ok(declined(&node.name, &why));
        }
        Ok(Some(DepthwiseParts {
            source,
            input,
            weights,
            weight_scales,
            bias,
            height: input_shape[rank - 2],
            width: input_shape[rank - 1],
        }))
    }

    /// The match: `op` reading the int8 source in place of the chain's layers.
    pub fn fused(&self, op: Box<dyn TypedOp>, chain: &Chain) -> Fused {
        Fused {
            op,
            sources: vec![self.source.into()],
            absorbed: chain.absorbed.clone(),
        }
    }
}

impl Op for DepthwiseConvI8 {
    fn name(&self) -> StaticName {
        "DepthwiseConvI8".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let c = &self.conv;
        Ok(vec![format!(
            "{} channels, {}x{}, stride {}, {:?}, {}",
            c.channels, c.height, c.width, c.stride, self.layout, self.kernels
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for DepthwiseConvI8 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let c = &self.conv;
        ensure!(
            input.datum_type() == DatumType::I8 && input.len() == c.channels * c.height * c.width
        );
        let input = input.try_as_plain_ram()?;
        let input = input.as_slice::<i8>()?;
        let (oh, ow) = c.output_size();
        let output_shape = self.layout.shape(&self.output_shape);
        output_tensor(&output_shape, |out: &mut [i8]| match self.layout {
            Layout::ChannelsFirst => {
                for_each_chunk(out, CHANNELS_PER_TASK * oh * ow, |task, out| {
                    c.convolve_planes(self.kernels, input, task * CHANNELS_PER_TASK, out)
                })
            }
            Layout::ChannelsLast => {
                for_each_chunk(out, BAND_ROWS * ow * c.channels, |task, out| {
                    c.convolve_rows(self.kernels, input, task * BAND_ROWS, out)
                })
            }
        })
    }
}

impl TypedOp for DepthwiseConvI8 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        int8_fact(
            inputs,
            DatumType::I8,
            &self.layout.shape(&self.output_shape),
        )
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::int8::test_rng::TestRng;

    /// Direct 3x3 convolution in f64 on the dequantized values, quantized on the same grid.
    fn reference(params: &DepthwiseParams, input: &[i8]) -> Vec<i8> {
        let (h, w, s) = (params.height, params.width, params.stride);
        let (oh, ow) = output_size(h, w, s);
        let channels = params.weight_scales.len();
        let mut out = Vec::new();
        for c in 0..channels {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut sum = f64::from(params.bias[c]);
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let (y, x) = ((oy * s + ky) as isize - 1, (ox * s + kx) as isize - 1);
                            if y < 0 || x < 0 || y >= h as isize || x >= w as isize {
                                continue;
                            }
                            let v = input[c * h * w + y as usize * w + x as usize];
                            let real_x = (f64::from(v) - f64::from(params.input_zero_point))
                                * f64::from(params.input_scale);
                            let real_w = f64::from(params.weights[c * 9 + ky * 3 + kx])
                                * f64::from(params.weight_scales[c]);
                            sum += real_x * real_w;
                        }
                    }
                    let steps = sum * f64::from(params.output_inverse_scale);
                    out.push(params.grid.quantize(steps as f32));
                }
            }
        }
        out
    }

    /// Every kernel set writes the portable set's values exactly, in both layouts: whole and
    /// partial channel groups, rows split across bands, planes on and off the vector width
    /// (small planes run channels-last inside, large ones plane by plane), both strides, and
    /// the extreme inputs, with weights as this project's quantizer makes them (no -128: the
    /// NEON pairs' two products per 16-bit lane then reach 32512) and as another may.
    #[test]
    fn every_kernel_set_matches_the_portable_loops_exactly() {
        let mut rng = TestRng(0x5851_f42d_4c95_7f2d);
        for lowest_weight in [-127, i8::MIN] {
            every_set_matches_with_weights_from(&mut rng, lowest_weight);
        }
    }

    fn every_set_matches_with_weights_from(rng: &mut TestRng, lowest_weight: i8) {
        for (channels, height, width, stride) in [
            (8, 5, 6, 1),
            (16, 19, 11, 2),
            (13, 9, 4, 1),
            (40, 3, 21, 2),
            (3, 1, 1, 1),
            (9, 12, 80, 2),
            (10, 7, 70, 1),
            (3, 6, 66, 2),
            (17, 18, 25, 1),
            (5, 11, 31, 2),
        ] {
            for extreme in [false, true] {
                let mut input = rng.i8s(channels * height * width);
                let mut weights = rng.i8s(channels * 9);
                if extreme {
                    input
                        .iter_mut()
                        .for_each(|v| *v = if *v < 0 { -128 } else { 127 });
                    weights
                        .iter_mut()
                        .for_each(|v| *v = if *v < 0 { -128 } else { 127 });
                }
                weights
                    .iter_mut()
                    .for_each(|v| *v = (*v).max(lowest_weight));
                let (oh, ow) = output_size(height, width, stride);
                let weight_scales: Vec<f32> =
                    (0..channels).map(|_| rng.f32_in(0.001, 0.05)).collect();
                let bias: Vec<f32> = (0..channels).map(|_| rng.f32_in(-2.0, 2.0)).collect();
                let input_scale = rng.f32_in(0.01, 0.1);
                let input_zero_point = if extreme { 127 } else { rng.next() as i8 };
                let output_inverse_scale = rng.f32_in(5.0, 50.0);
                let clip = if extreme { f32::INFINITY } else { 6.0 };
                let grid = OutputGrid::new(rng.f32_in(5.0, 50.0), rng.next() as u8, -clip, clip);
                let op = |kernels, layout| {
                    let params = DepthwiseParams {
                        layer: "random".into(),
                        weights: &weights,
                        weight_scales: &weight_scales,
                        bias: &bias,
                        input_scale,
                        input_zero_point,
                        output_inverse_scale,
                        grid,
                        stride,
                        height,
                        width,
                        output_shape: tvec![1, channels, oh, ow],
                    };
                    DepthwiseConvI8::new(params, kernels)
                        .unwrap()
                        .with_layout(layout)
                };
                for layout in [Layout::ChannelsFirst, Layout::ChannelsLast] {
                    let shape = layout.shape(&[1, channels, height, width]);
                    let tensor = Tensor::from_shape(&shape, &input).unwrap();
                    let run = |op: DepthwiseConvI8| {
                        let inputs = tvec!(tensor.clone().into_tvalue());
                        op.eval(&EvalContext::out_of_plan(), inputs)
                            .unwrap()
                            .remove(0)
                    };
                    let portable = run(op(KernelSet::PORTABLE, layout));
                    for kernels in KernelSet::runnable() {
                        assert_eq!(
                            run(op(kernels, layout)),
                            portable,
                            "{kernels}, {layout:?}, {channels}x{height}x{width}, stride {stride}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn matches_a_direct_convolution_on_random_inputs() {
        let mut rng = TestRng(0x9e37_79b9_7f4a_7c15);
        for (channels, height, width, stride) in [
            (3, 7, 9, 1),
            (4, 7, 9, 2),
            (5, 8, 10, 2),
            (2, 1, 1, 1),
            (3, 2, 3, 2),
            (6, 30, 40, 1),
            (5, 21, 20, 2),
            (20, 5, 7, 1),
            (37, 6, 9, 2),
        ] {
            let weights = rng.i8s(channels * 9);
            let weight_scales: Vec<f32> = (0..channels).map(|_| rng.f32_in(0.001, 0.05)).collect();
            let bias: Vec<f32> = (0..channels).map(|_| rng.f32_in(-2.0, 2.0)).collect();
            let input = rng.i8s(channels * height * width);
            let (oh, ow) = output_size(height, width, stride);
            let params = DepthwiseParams {
                layer: "random".into(),
                weights: &weights,
                weight_scales: &weight_scales,
                bias: &bias,
                input_scale: rng.f32_in(0.01, 0.1),
                input_zero_point: rng.next() as i8,
                output_inverse_scale: rng.f32_in(5.0, 50.0),
                grid: OutputGrid::new(rng.f32_in(5.0, 50.0), rng.next() as u8, 0.0, 6.0),
                stride,
                height,
                width,
                output_shape: tvec![1, channels, oh, ow],
            };
            let expected = reference(&params, &input);
            let op = DepthwiseConvI8::new(params, KernelSet::best()).unwrap();
            let channels_last = |values: &[i8]| -> Vec<i8> {
                let plane = values.len() / channels;
                (0..values.len())
                    .map(|at| values[(at % channels) * plane + at / channels])
                    .collect()
            };
            for layout in [Layout::ChannelsFirst, Layout::ChannelsLast] {
                let (input, expected) = match layout {
                    Layout::ChannelsFirst => (input.clone(), expected.clone()),
                    Layout::ChannelsLast => (channels_last(&input), channels_last(&expected)),
                };
                let shape = layout.shape(&[1, channels, height, width]);
                let input = Tensor::from_shape(&shape, &input).unwrap();
                let ours = op
                    .clone()
                    .with_layout(layout)
                    .eval(&EvalContext::out_of_plan(), tvec!(input.into_tvalue()))
                    .unwrap()
                    .remove(0);
                assert_eq!(ours.shape(), &*layout.shape(&[1, channels, oh, ow]));
                let ours = ours.try_as_plain_ram().unwrap();
                let apart = TestRng::steps_apart(ours.as_slice::<i8>().unwrap(), &expected);
                assert!(
                    apart * 100 <= expected.len(),
                    "{layout:?}: {apart} of {} apart",
                    expected.len()
                );
            }
        }
    }
}

//! Pointwise (1x1) convolution on int8 activations and weights, on the fastest int8 matrix
//! kernel of its kernel set, with bias, zero points, per-channel scales and the activation clip
//! fused into one requantization pass; and the rewrite that finds it in a QDQ graph:
//! `Add(EinSum(DequantizeLinear(x), W[co, ci]), bias[co, 1, 1])` (a decluttered 1x1 Conv) or
//! its `mk,kn->mn` form (a Gemm).

use std::sync::Arc;

use tract_core::internal::*;
use tract_core::ops::math::Add;

use super::int8_fact;
use crate::int8::grid::{recover_int8_rows, OutputGrid};
use crate::int8::kernels::matmul::{choose_kernel, ChannelScales, PackedWeights};
use crate::int8::kernels::KernelSet;
use crate::int8::layout::Layout;
use crate::int8::rewrite::graph::{
    bin_op, concrete_shape, const_values, dequantized_source, einsum_with_bias, is_pointwise_form,
    pointwise_positions, stays_float,
};
use crate::int8::rewrite::{Chain, Fused, Pattern};

/// `y[c, p] = grid(multiplier[c] * sum_k w[c, k] * x[k, p] + offset[c])` on int8 `x`; zero
/// points and bias are folded into `offset`. Input and output are channels-first unless set
/// otherwise with [`PointwiseConvI8::set_layouts`].
#[derive(Debug, Clone)]
pub struct PointwiseConvI8 {
    /// Name of the source layer, for plans and errors.
    pub layer: String,
    pub output_channels: usize,
    pub input_channels: usize,
    /// The output's shape in channels-first order.
    pub output_shape: TVec<usize>,
    kernels: KernelSet,
    input_layout: Layout,
    output_layout: Layout,
    positions: usize,
    /// `[output_channels, input_channels]`.
    weights: Arc<Tensor>,
    packed: PackedWeights,
    scales: ChannelScales,
    grid: OutputGrid,
}

/// Quantization of a pointwise layer, as read from the QDQ graph.
pub struct PointwiseParams<'a> {
    pub layer: String,
    /// `[output_channels, input_channels]` int8 weights and their per-channel scales.
    pub weights: &'a [i8],
    pub weight_scales: &'a [f32],
    pub bias: &'a [f32],
    /// Input scale and int8-domain zero point.
    pub input_scale: f32,
    pub input_zero_point: i8,
    pub output_inverse_scale: f32,
    pub grid: OutputGrid,
    pub positions: usize,
    pub output_shape: TVec<usize>,
}

impl PointwiseConvI8 {
    /// Packs the weights for the fastest matrix kernel of `kernels`; `None` when the set has
    /// no int8 matrix kernel.
    pub fn new(params: PointwiseParams, kernels: KernelSet) -> TractResult<Option<Self>> {
        let co = params.weight_scales.len();
        ensure!(co > 0 && params.weights.len().is_multiple_of(co) && params.bias.len() == co);
        let ci = params.weights.len() / co;
        let Some(choice) = choose_kernel(kernels, co, ci, params.positions)? else {
            return Ok(None);
        };
        let weights = Tensor::from_shape(&[co, ci], params.weights)?;
        let packed = PackedWeights::new(choice, &weights, Layout::ChannelsFirst)?;
        let mut multiplier = Vec::with_capacity(co);
        let mut offset = Vec::with_capacity(co);
        for c in 0..co {
            let row_sum: i32 = params.weights[c * ci..(c + 1) * ci]
                .iter()
                .map(|w| i32::from(*w))
                .sum();
            let real_per_step = params.input_scale * params.weight_scales[c];
            let zero_point_term = (i32::from(params.input_zero_point) * row_sum) as f32;
            multiplier.push(real_per_step * params.output_inverse_scale);
            offset.push(
                (params.bias[c] - real_per_step * zero_point_term) * params.output_inverse_scale,
            );
        }
        Ok(Some(PointwiseConvI8 {
            layer: params.layer,
            output_channels: co,
            input_channels: ci,
            output_shape: params.output_shape,
            kernels,
            input_layout: Layout::ChannelsFirst,
            output_layout: Layout::ChannelsFirst,
            positions: params.positions,
            weights: Arc::new(weights),
            packed,
            scales: ChannelScales::new(multiplier, offset)?,
            grid: params.grid,
        }))
    }

    /// Makes the layer read and write tensors in these layouts. A channels-last output is
    /// computed transposed, positions by channels, so that the kernel stores whole rows; the
    /// weights are packed again for that product.
    pub fn set_layouts(&mut self, input: Layout, output: Layout) -> TractResult<()> {
        if output != self.output_layout {
            let (co, ci, n) = (self.output_channels, self.input_channels, self.positions);
            let (m, n) = match output {
                Layout::ChannelsFirst => (co, n),
                Layout::ChannelsLast => (n, co),
            };
            let choice =
                choose_kernel(self.kernels, m, ci, n)?.context("no int8 kernel for this layout")?;
            self.packed = PackedWeights::new(choice, &self.weights, output)?;
        }
        self.input_layout = input;
        self.output_layout = output;
        Ok(())
    }

    /// Layouts of the input and the output.
    pub fn layouts(&self) -> (Layout, Layout) {
        (self.input_layout, self.output_layout)
    }

    /// Name of the int8 matrix kernel this layer runs on.
    pub fn kernel_name(&self) -> &str {
        self.packed.kernel_name()
    }
}

/// The pointwise rewrite: see the module's documentation.
pub struct PointwisePattern;

impl Pattern for PointwisePattern {
    fn name(&self) -> &'static str {
        "PointwiseConvI8"
    }

    fn fuse(&self, chain: &Chain) -> TractResult<Option<Fused>> {
        let (model, add) = (chain.model, chain.layer);
        if !bin_op::<Add>(add) {
            return Ok(None);
        }
        let (bias, einsum_node, expression) = match einsum_with_bias(model, add) {
            Ok(parts) => parts,
            Err(why) => return Ok(stays_float(&add.name, &why)),
        };
        let gemm = expression == "mk,kn->mn";
        if !(gemm || is_pointwise_form(&expression)) {
            return Ok(stays_float(&add.name, &format!("EinSum {expression}")));
        }
        let Some((source, input)) = dequantized_source(model, einsum_node.inputs[0]) else {
            return Ok(stays_float(&add.name, "its input is not dequantized"));
        };
        let Some(mut weights) = const_values(model, einsum_node.inputs[1]) else {
            return Ok(stays_float(&add.name, "its weights are not constant"));
        };
        let co = bias.len();
        let mut input_shape = concrete_shape(model, einsum_node.inputs[0])?;
        if gemm {
            // One row of k inputs is a 1x1 convolution of k channels at one position; the
            // weights come as [k, n] and are wanted as [n, k].
            let k = weights.len() / co.max(1);
            if input_shape[..] != [1, k] || k * co != weights.len() {
                let why = format!("Gemm input {input_shape:?}");
                return Ok(stays_float(&add.name, &why));
            }
            weights = (0..co * k)
                .map(|at| weights[(at % k) * co + at / k])
                .collect();
            input_shape = tvec![k, 1, 1];
        }
        let Some((int_weights, scales)) = recover_int8_rows(&weights, co) else {
            return Ok(stays_float(&add.name, "its weights are not an int8 grid"));
        };
        let Some(positions) = pointwise_positions(&input_shape, weights.len() / co) else {
            let why = format!("input shape {input_shape:?}");
            return Ok(stays_float(&add.name, &why));
        };
        let params = PointwiseParams {
            layer: add.name.clone(),
            weights: &int_weights,
            weight_scales: &scales,
            bias: &bias,
            input_scale: input.scale,
            input_zero_point: input.zero_point,
            output_inverse_scale: chain.quantize.scale,
            grid: chain.grid,
            positions,
            output_shape: chain.output_shape.clone(),
        };
        let Some(op) = PointwiseConvI8::new(params, chain.kernels)? else {
            let why = format!("no int8 matrix kernel in the {} set", chain.kernels);
            return Ok(stays_float(&add.name, &why));
        };
        let mut absorbed = chain.absorbed.clone();
        absorbed.push(einsum_node.id);
        Ok(Some(Fused {
            op: Box::new(op),
            sources: vec![source.into()],
            absorbed,
        }))
    }
}

impl PartialEq for PointwiseConvI8 {
    fn eq(&self, other: &Self) -> bool {
        self.layer == other.layer
            && self.output_shape == other.output_shape
            && self.kernels == other.kernels
            && self.input_layout == other.input_layout
            && self.output_layout == other.output_layout
            && self.scales == other.scales
            && self.grid == other.grid
    }
}
impl Eq for PointwiseConvI8 {}

impl Op for PointwiseConvI8 {
    fn name(&self) -> StaticName {
        "PointwiseConvI8".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} -> {} channels, {:?} -> {:?}, kernel {} ({})",
            self.input_channels,
            self.output_channels,
            self.input_layout,
            self.output_layout,
            self.kernel_name(),
            self.kernels
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for PointwiseConvI8 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let (co, ci) = (self.output_channels, self.input_channels);
        ensure!(input.datum_type() == DatumType::I8 && input.len().is_multiple_of(ci));
        let n = input.len() / ci;
        let output_shape = self.output_layout.shape(&self.output_shape);
        ensure!(co * n == output_shape.iter().product::<usize>());
        // SAFETY: i8 is valid for any bits, and the product writes every value.
        let mut out = unsafe { Tensor::uninitialized::<i8>(&output_shape)? };
        let mut values = out.try_as_plain_ram_mut()?;
        self.packed.multiply_int8(
            input,
            self.input_layout,
            (&self.scales, self.grid),
            self.kernels,
            values.as_slice_mut::<i8>()?,
        )?;
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for PointwiseConvI8 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        int8_fact(
            inputs,
            DatumType::I8,
            &self.output_layout.shape(&self.output_shape),
        )
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::int8::test_rng::TestRng;

    /// Every kernel set writes the portable set's integers, which match a direct product in
    /// f64 but for values on a rounding boundary.
    #[test]
    fn every_kernel_set_matches_a_direct_product_on_random_inputs() {
        let mut rng = TestRng(0x2545_f491_4f6c_dd1d);
        for (co, ci, positions) in [(5, 3, 7), (16, 32, 60), (24, 96, 20), (40, 8, 1)] {
            let weights = rng.i8s(co * ci);
            let weight_scales: Vec<f32> = (0..co).map(|_| rng.f32_in(0.001, 0.02)).collect();
            let bias: Vec<f32> = (0..co).map(|_| rng.f32_in(-1.0, 1.0)).collect();
            let input = rng.i8s(ci * positions);
            let (input_scale, input_zero_point) = (rng.f32_in(0.01, 0.05), rng.next() as i8);
            let output_inverse_scale = rng.f32_in(2.0, 20.0);
            let grid = OutputGrid::new(output_inverse_scale, rng.next() as u8, -6.0, 6.0);
            let expected: Vec<i8> = (0..co * positions)
                .map(|i| {
                    let (c, p) = (i / positions, i % positions);
                    let sum: f64 = (0..ci)
                        .map(|k| {
                            let x = (f64::from(input[k * positions + p])
                                - f64::from(input_zero_point))
                                * f64::from(input_scale);
                            x * f64::from(weights[c * ci + k]) * f64::from(weight_scales[c])
                        })
                        .sum::<f64>()
                        + f64::from(bias[c]);
                    grid.quantize((sum * f64::from(output_inverse_scale)) as f32)
                })
                .collect();
            let params = || PointwiseParams {
                layer: "random".into(),
                weights: &weights,
                weight_scales: &weight_scales,
                bias: &bias,
                input_scale,
                input_zero_point,
                output_inverse_scale,
                grid,
                positions,
                output_shape: tvec![co, positions, 1],
            };
            let reference = PointwiseConvI8::new(params(), KernelSet::PORTABLE)
                .unwrap()
                .expect("a portable int8 matrix kernel");
            let transposed = |values: &[i8], rows: usize| -> Vec<i8> {
                let columns = values.len() / rows;
                (0..values.len())
                    .map(|at| values[(at % rows) * columns + at / rows])
                    .collect()
            };
            for (input_layout, output_layout) in [
                (Layout::ChannelsFirst, Layout::ChannelsFirst),
                (Layout::ChannelsFirst, Layout::ChannelsLast),
                (Layout::ChannelsLast, Layout::ChannelsFirst),
                (Layout::ChannelsLast, Layout::ChannelsLast),
            ] {
                let input = match input_layout {
                    Layout::ChannelsFirst => Tensor::from_shape(&[ci, positions], &input),
                    Layout::ChannelsLast => {
                        Tensor::from_shape(&[positions, ci], &transposed(&input, ci))
                    }
                }
                .unwrap();
                let run = |op: &PointwiseConvI8| {
                    let mut op = op.clone();
                    op.set_layouts(input_layout, output_layout).unwrap();
                    let inputs = tvec!(input.clone().into_tvalue());
                    op.eval(&EvalContext::out_of_plan(), inputs)
                        .unwrap()
                        .remove(0)
                };
                let ours = run(&reference);
                for kernels in KernelSet::runnable() {
                    let op = PointwiseConvI8::new(params(), kernels).unwrap().unwrap();
                    assert_eq!(run(&op), ours, "{kernels} against the portable set");
                }
                let expected = match output_layout {
                    Layout::ChannelsFirst => expected.clone(),
                    Layout::ChannelsLast => transposed(&expected, co),
                };
                assert_eq!(ours.shape(), &*output_layout.shape(&[co, positions, 1]));
                let ours = ours.try_as_plain_ram().unwrap();
                let apart = TestRng::steps_apart(ours.as_slice::<i8>().unwrap(), &expected);
                assert!(
                    apart * 100 <= expected.len(),
                    "{input_layout:?} -> {output_layout:?}: {apart} of {} apart",
                    expected.len()
                );
            }
        }
    }
}

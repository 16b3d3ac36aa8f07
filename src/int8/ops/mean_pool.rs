//! Global average pooling of an int8 tensor, requantized onto the next grid; and the rewrite
//! that finds it in a QDQ graph: `Mul(Reduce<Sum>(DequantizeLinear(x), spatial axes), factor)`
//! (a decluttered global average pool).

use tract_core::internal::*;
use tract_core::ops::math::Mul;
use tract_core::ops::nn::{Reduce, Reducer};

use super::{int8_fact, output_tensor};
use crate::int8::grid::{InputGrid, OutputGrid};
use crate::int8::kernels::{KernelSet, VectorLoop};
use crate::int8::rewrite::graph::{
    bin_op, concrete_shape, dequantized_source, one_constant, scalar_const, single_successor,
    stays_float,
};
use crate::int8::rewrite::{Chain, Fused, Pattern};

/// `y[c] = grid(sum_p (x[c, p] - zero point) * scale * factor / output scale)` over the
/// `positions` values of each channel: the sum is exact in integers, so the result is the same
/// on every CPU.
#[derive(Debug, Clone, PartialEq)]
pub struct MeanPoolI8 {
    pub layer: String,
    pub channels: usize,
    pub positions: usize,
    pub output_shape: TVec<usize>,
    input_zero_point: i32,
    /// `scale * factor / output scale`.
    multiplier: f32,
    grid: OutputGrid,
    kernels: KernelSet,
}
impl Eq for MeanPoolI8 {}

impl MeanPoolI8 {
    /// Builds the op; errors on an empty or mis-shaped pool.
    pub fn new(params: MeanPoolParams, kernels: KernelSet) -> TractResult<MeanPoolI8> {
        let MeanPoolParams {
            layer,
            channels,
            positions,
            input,
            factor,
            output_inverse_scale,
            grid,
            output_shape,
        } = params;
        ensure!(channels > 0 && positions > 0);
        ensure!(output_shape.iter().product::<usize>() == channels);
        Ok(MeanPoolI8 {
            layer,
            channels,
            positions,
            output_shape,
            input_zero_point: i32::from(input.zero_point),
            multiplier: input.scale * factor * output_inverse_scale,
            grid,
            kernels,
        })
    }
}

/// The global-average-pool rewrite: see the module's documentation.
pub struct MeanPoolPattern;

impl Pattern for MeanPoolPattern {
    fn name(&self) -> &'static str {
        "MeanPoolI8"
    }

    fn fuse(&self, chain: &Chain) -> TractResult<Option<Fused>> {
        let (model, mul) = (chain.model, chain.layer);
        if !bin_op::<Mul>(mul) {
            return Ok(None);
        }
        let Some((factor, reduce_outlet)) = one_constant(mul, |o| scalar_const(model, o)) else {
            return Ok(stays_float(&mul.name, "no constant factor"));
        };
        let reduce_node = model.node(reduce_outlet.node);
        let Some(reduce) = reduce_node.op_as::<Reduce>() else {
            return Ok(stays_float(&mul.name, "no Reduce before the factor"));
        };
        let input_shape = concrete_shape(model, reduce_node.inputs[0])?;
        let rank = input_shape.len();
        let spatial: Vec<usize> = (2..rank).collect();
        if reduce.reducer != Reducer::Sum
            || rank < 3
            || input_shape[0] != 1
            || *reduce.axes != *spatial
            || !single_successor(reduce_node)
        {
            let why = format!("{reduce:?} of {input_shape:?}");
            return Ok(stays_float(&mul.name, &why));
        }
        let Some((source, input)) = dequantized_source(model, reduce_node.inputs[0]) else {
            return Ok(stays_float(&mul.name, "its input is not dequantized"));
        };
        let params = MeanPoolParams {
            layer: mul.name.clone(),
            channels: input_shape[1],
            positions: input_shape[2..].iter().product(),
            input,
            factor,
            output_inverse_scale: chain.quantize.scale,
            grid: chain.grid,
            output_shape: chain.output_shape.clone(),
        };
        let op = MeanPoolI8::new(params, chain.kernels)?;
        let mut absorbed = chain.absorbed.clone();
        absorbed.push(reduce_node.id);
        Ok(Some(Fused {
            op: Box::new(op),
            sources: vec![source.into()],
            absorbed,
        }))
    }
}

/// A pool as read from the graph: `[.., channels, positions..]` int8 values on `input`'s
/// grid, summed per channel, times `factor` (`1 / positions` for a mean).
pub struct MeanPoolParams {
    pub layer: String,
    pub channels: usize,
    pub positions: usize,
    pub input: InputGrid,
    pub factor: f32,
    pub output_inverse_scale: f32,
    pub grid: OutputGrid,
    pub output_shape: TVec<usize>,
}

impl Op for MeanPoolI8 {
    fn name(&self) -> StaticName {
        "MeanPoolI8".into()
    }

    op_as_typed_op!();
}

impl EvalOp for MeanPoolI8 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        ensure!(
            input.datum_type() == DatumType::I8 && input.len() == self.channels * self.positions
        );
        let input = input.try_as_plain_ram()?;
        let input = input.as_slice::<i8>()?;
        output_tensor(&self.output_shape, |out: &mut [i8]| {
            self.kernels.run(ChannelMeans {
                op: self,
                input,
                out,
            })
        })
    }
}

/// One requantized mean per channel, in integers.
struct ChannelMeans<'a> {
    op: &'a MeanPoolI8,
    input: &'a [i8],
    out: &'a mut [i8],
}

impl VectorLoop for ChannelMeans<'_> {
    #[inline(always)]
    fn run(self) {
        let op = self.op;
        for (plane, o) in self.input.chunks_exact(op.positions).zip(self.out) {
            let sum: i32 = plane.iter().map(|v| i32::from(*v)).sum::<i32>()
                - op.input_zero_point * op.positions as i32;
            *o = op.grid.quantize(sum as f32 * op.multiplier);
        }
    }
}

impl TypedOp for MeanPoolI8 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        int8_fact(inputs, DatumType::I8, &self.output_shape)
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::int8::test_rng::TestRng;

    /// Every kernel set writes the portable set's values, which match the dequantized mean
    /// but for values on a rounding boundary.
    #[test]
    fn every_kernel_set_matches_the_dequantized_mean_on_random_inputs() {
        let mut rng = TestRng(0x0dd_ba11);
        for (channels, positions) in [(1280, 20), (7, 1), (3, 300)] {
            let input = rng.i8s(channels * positions);
            let grid = InputGrid {
                scale: rng.f32_in(0.01, 0.1),
                zero_point: rng.next() as i8,
            };
            let inverse_scale = rng.f32_in(5.0, 50.0);
            let output = OutputGrid::new(
                inverse_scale,
                rng.next() as u8,
                f32::NEG_INFINITY,
                f32::INFINITY,
            );
            let factor = 1.0 / positions as f32;
            let tensor = Tensor::from_shape(&[1, channels, positions], &input).unwrap();
            let run = |kernels| {
                let params = MeanPoolParams {
                    layer: "random".into(),
                    channels,
                    positions,
                    input: grid,
                    factor,
                    output_inverse_scale: inverse_scale,
                    grid: output,
                    output_shape: tvec![1, channels, 1, 1],
                };
                MeanPoolI8::new(params, kernels)
                    .unwrap()
                    .eval(
                        &EvalContext::out_of_plan(),
                        tvec!(tensor.clone().into_tvalue()),
                    )
                    .unwrap()
                    .remove(0)
            };
            let ours = run(KernelSet::PORTABLE);
            for kernels in KernelSet::runnable() {
                assert_eq!(run(kernels), ours, "{kernels} against the portable set");
            }
            let expected: Vec<i8> = input
                .chunks(positions)
                .map(|plane| {
                    let mean = plane
                        .iter()
                        .map(|v| {
                            (f64::from(*v) - f64::from(grid.zero_point)) * f64::from(grid.scale)
                        })
                        .sum::<f64>()
                        / positions as f64;
                    output.quantize((mean * f64::from(inverse_scale)) as f32)
                })
                .collect();
            let ours = ours.try_as_plain_ram().unwrap();
            let apart = TestRng::steps_apart(ours.as_slice::<i8>().unwrap(), &expected);
            assert!(
                apart * 100 <= expected.len(),
                "{apart} of {} apart",
                expected.len()
            );
        }
    }
}

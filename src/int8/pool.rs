//! Global average pooling of an int8 tensor, requantized onto the next grid.

use tract_core::internal::*;

use super::add::InputGrid;
use super::requant::{int8_fact, output_tensor, OutputGrid};

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
}
impl Eq for MeanPoolI8 {}

impl MeanPoolI8 {
    /// Builds the op; errors on an empty or mis-shaped pool.
    pub fn new(params: MeanPoolParams) -> TractResult<MeanPoolI8> {
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
        })
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
            for (plane, o) in input.chunks_exact(self.positions).zip(out) {
                let sum: i32 = plane.iter().map(|v| i32::from(*v)).sum::<i32>()
                    - self.input_zero_point * self.positions as i32;
                *o = self.grid.quantize(sum as f32 * self.multiplier);
            }
        })
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

    #[test]
    fn matches_the_dequantized_mean_on_random_inputs() {
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
            let op = MeanPoolI8::new(MeanPoolParams {
                layer: "random".into(),
                channels,
                positions,
                input: grid,
                factor,
                output_inverse_scale: inverse_scale,
                grid: output,
                output_shape: tvec![1, channels, 1, 1],
            })
            .unwrap();
            let tensor = Tensor::from_shape(&[1, channels, positions], &input).unwrap();
            let ours = op
                .eval(&EvalContext::out_of_plan(), tvec!(tensor.into_tvalue()))
                .unwrap()
                .remove(0);
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

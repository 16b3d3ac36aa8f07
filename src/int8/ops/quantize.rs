//! Where a float layer hands its output to int8 layers: quantization of f32 to int8.

use tract_core::internal::*;

use super::{int8_fact, output_tensor};
use crate::int8::grid::OutputGrid;
use crate::int8::kernels::{KernelSet, VectorLoop};

/// `y = grid(x / scale)`: an f32 tensor quantized to int8, with any clip before it folded
/// into the grid.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizeI8 {
    pub layer: String,
    pub shape: TVec<usize>,
    inverse_scale: f32,
    grid: OutputGrid,
    kernels: KernelSet,
}
impl Eq for QuantizeI8 {}

impl QuantizeI8 {
    /// Quantizes onto `grid`; `inverse_scale` is `1 / scale`.
    pub fn new(
        layer: String,
        shape: TVec<usize>,
        inverse_scale: f32,
        grid: OutputGrid,
        kernels: KernelSet,
    ) -> Self {
        QuantizeI8 {
            layer,
            shape,
            inverse_scale,
            grid,
            kernels,
        }
    }

    /// The `1 / scale` and the grid it quantizes onto.
    pub fn quantization(&self) -> (f32, OutputGrid) {
        (self.inverse_scale, self.grid)
    }
}

impl Op for QuantizeI8 {
    fn name(&self) -> StaticName {
        "QuantizeI8".into()
    }

    op_as_typed_op!();
}

impl EvalOp for QuantizeI8 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        ensure!(input.datum_type() == DatumType::F32);
        ensure!(input.len() == self.shape.iter().product::<usize>());
        let input = input.try_as_plain_ram()?;
        let input = input.as_slice::<f32>()?;
        output_tensor(&self.shape, |out: &mut [i8]| {
            self.kernels.run(Quantize {
                input,
                inverse_scale: self.inverse_scale,
                grid: self.grid,
                out,
            })
        })
    }
}

/// `out = grid(input * inverse_scale)`, elementwise.
struct Quantize<'a> {
    input: &'a [f32],
    inverse_scale: f32,
    grid: OutputGrid,
    out: &'a mut [i8],
}

impl VectorLoop for Quantize<'_> {
    #[inline(always)]
    fn run(self) {
        for (x, o) in self.input.iter().zip(self.out) {
            *o = self.grid.quantize(x * self.inverse_scale);
        }
    }
}

impl TypedOp for QuantizeI8 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        int8_fact(inputs, DatumType::F32, &self.shape)
    }

    as_op!();
}

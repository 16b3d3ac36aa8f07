//! Elementwise sum of two int8 tensors (the residual connections), requantized; and the rewrite
//! that finds it in a QDQ graph: an `Add` of two dequantized tensors of the output's shape.

use tract_core::internal::*;
use tract_core::ops::math::Add;

use super::{int8_fact, output_tensor};
use crate::int8::grid::{InputGrid, OutputGrid};
use crate::int8::kernels::{KernelSet, VectorLoop};
use crate::int8::rewrite::graph::{bin_op, dequantized_source};
use crate::int8::rewrite::{Chain, Fused, Pattern};

/// `y = grid((a - za) * sa / sy + (b - zb) * sb / sy)` on two int8 tensors of one shape.
#[derive(Debug, Clone, PartialEq)]
pub struct AddI8 {
    pub layer: String,
    pub shape: TVec<usize>,
    left: (f32, f32),
    right: (f32, f32),
    grid: OutputGrid,
    kernels: KernelSet,
}
impl Eq for AddI8 {}

impl AddI8 {
    /// The sum of inputs on `left` and `right`, written on `grid` (`output_inverse_scale` = 1/sy).
    pub fn new(
        layer: String,
        shape: TVec<usize>,
        left: InputGrid,
        right: InputGrid,
        output_inverse_scale: f32,
        grid: OutputGrid,
        kernels: KernelSet,
    ) -> AddI8 {
        let affine = |g: InputGrid| (g.scale * output_inverse_scale, f32::from(g.zero_point));
        AddI8 {
            layer,
            shape,
            left: affine(left),
            right: affine(right),
            grid,
            kernels,
        }
    }
}

/// The residual-sum rewrite: see the module's documentation.
pub struct AddPattern;

impl Pattern for AddPattern {
    fn name(&self) -> &'static str {
        "AddI8"
    }

    fn fuse(&self, chain: &Chain) -> TractResult<Option<Fused>> {
        let (model, add) = (chain.model, chain.layer);
        if !bin_op::<Add>(add) {
            return Ok(None);
        }
        let (Some(left), Some(right)) = (
            dequantized_source(model, add.inputs[0]),
            dequantized_source(model, add.inputs[1]),
        ) else {
            return Ok(None);
        };
        let same_shape = add.inputs.iter().all(|i| {
            model
                .outlet_fact(*i)
                .is_ok_and(|f| f.shape.as_concrete() == Some(&*chain.output_shape))
        });
        if !same_shape {
            return Ok(None);
        }
        let op = AddI8::new(
            add.name.clone(),
            chain.output_shape.clone(),
            left.1,
            right.1,
            chain.quantize.scale,
            chain.grid,
            chain.kernels,
        );
        Ok(Some(Fused {
            op: Box::new(op),
            sources: vec![left.0.into(), right.0.into()],
            absorbed: chain.absorbed.clone(),
        }))
    }
}

impl Op for AddI8 {
    fn name(&self) -> StaticName {
        "AddI8".into()
    }

    op_as_typed_op!();
}

impl EvalOp for AddI8 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (a, b) = args_2!(inputs);
        let len = self.shape.iter().product::<usize>();
        ensure!(a.len() == len && b.len() == len);
        ensure!(a.datum_type() == DatumType::I8 && b.datum_type() == DatumType::I8);
        let (a, b) = (a.try_as_plain_ram()?, b.try_as_plain_ram()?);
        let (a, b) = (a.as_slice::<i8>()?, b.as_slice::<i8>()?);
        output_tensor(&self.shape, |out: &mut [i8]| {
            self.kernels.run(Sum {
                a,
                b,
                left: self.left,
                right: self.right,
                grid: self.grid,
                out,
            })
        })
    }
}

/// `out = grid((a - za) * ma + (b - zb) * mb)`, elementwise.
struct Sum<'a> {
    a: &'a [i8],
    b: &'a [i8],
    left: (f32, f32),
    right: (f32, f32),
    grid: OutputGrid,
    out: &'a mut [i8],
}

impl VectorLoop for Sum<'_> {
    #[inline(always)]
    fn run(self) {
        let ((ma, za), (mb, zb)) = (self.left, self.right);
        for ((a, b), o) in self.a.iter().zip(self.b).zip(self.out) {
            *o = self
                .grid
                .quantize((f32::from(*a) - za) * ma + (f32::from(*b) - zb) * mb);
        }
    }
}

impl TypedOp for AddI8 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        int8_fact(inputs, DatumType::I8, &self.shape)
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::int8::test_rng::TestRng;

    /// Every kernel set writes the portable set's values, which match the dequantized sum but
    /// for values on a rounding boundary.
    #[test]
    fn every_kernel_set_matches_the_dequantized_sum_on_random_inputs() {
        let mut rng = TestRng(0x6a09_e667_f3bc_c909);
        let (a, b) = (rng.i8s(1000), rng.i8s(1000));
        let left = InputGrid {
            scale: 0.03,
            zero_point: -5,
        };
        let right = InputGrid {
            scale: 0.11,
            zero_point: 17,
        };
        let grid = OutputGrid::new(9.0, 120, f32::NEG_INFINITY, f32::INFINITY);
        let expected: Vec<i8> = a
            .iter()
            .zip(&b)
            .map(|(a, b)| {
                let real = (f64::from(*a) + 5.0) * 0.03 + (f64::from(*b) - 17.0) * 0.11;
                grid.quantize((real * 9.0) as f32)
            })
            .collect();
        let tensor = |v: &[i8]| Tensor::from_shape(&[10, 100], v).unwrap().into_tvalue();
        let run = |kernels| {
            let op = AddI8::new(
                "random".into(),
                tvec![10, 100],
                left,
                right,
                9.0,
                grid,
                kernels,
            );
            op.eval(&EvalContext::out_of_plan(), tvec!(tensor(&a), tensor(&b)))
                .unwrap()
                .remove(0)
        };
        let ours = run(KernelSet::PORTABLE);
        for kernels in KernelSet::runnable() {
            assert_eq!(run(kernels), ours, "{kernels} against the portable set");
        }
        let ours = ours.try_as_plain_ram().unwrap();
        let apart = TestRng::steps_apart(ours.as_slice::<i8>().unwrap(), &expected);
        assert!(apart <= 10, "{apart} of 1000 apart");
    }
}

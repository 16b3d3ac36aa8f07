//! Pointwise (1x1) convolution on int8 activations and weights, on tract-linalg's integer
//! matrix kernels or this crate's AVX2 pair product (whichever runs the shape faster), with
//! bias, zero points, per-channel scales and the activation clip fused into one
//! requantization pass.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use tract_core::internal::*;
use tract_linalg::mmm::{AsInputValue, FusedSpec, MMMInputValue, MatMatMul};
use tract_linalg::multithread::{multithread_tract_scope, Executor};
use tract_linalg::{MmmDispatch, WeightType};

use super::layout::Layout;
use super::pairs::{self, PairColumns, PairRows, Strided};
use super::requant::{
    for_each_chunk, int8_fact, output_tensor, vectorized, OutputGrid, VectorLoop,
};

/// Output values one thread requantizes at a time.
const REQUANT_VALUES_PER_TASK: usize = 16 * 1024;

/// The int8 matrix kernel chosen for one `(m, k, n)` shape.
#[derive(Debug, Clone)]
pub enum KernelChoice {
    /// One of tract-linalg's integer kernels, with the index of its int8 packing.
    Tract {
        kernel: Box<dyn MatMatMul>,
        packing: usize,
    },
    /// This crate's AVX2 pair product ([`pairs`]).
    Pairs,
}

impl KernelChoice {
    /// Whether the kernel is written for this CPU's instructions (not a portable one).
    fn is_native(&self) -> bool {
        match self {
            KernelChoice::Tract { kernel, .. } => kernel.arch().is_some(),
            KernelChoice::Pairs => true,
        }
    }

    /// The kernel's name.
    pub fn name(&self) -> &str {
        match self {
            KernelChoice::Tract { kernel, .. } => kernel.name(),
            KernelChoice::Pairs => "dermedge_avx2_pairs_i32_6x16",
        }
    }
}

/// The kernel chosen for each `(m, k, n)`.
type ChosenKernels = HashMap<(usize, usize, usize), KernelChoice>;

fn int8_packing(kernel: &dyn MatMatMul) -> Option<usize> {
    let int8 = WeightType::Plain(DatumType::I8);
    kernel
        .packings()
        .iter()
        .position(|(a, b)| a.precursor() == int8 && b.precursor() == int8)
}

fn time_kernel(choice: &KernelChoice, m: usize, k: usize, n: usize) -> TractResult<f64> {
    let zeros = vec![0i8; m.max(n) * k];
    let a = Tensor::zero::<i8>(&[m, k])?;
    let b = Tensor::zero::<i8>(&[k, n])?;
    let mut c = Tensor::zero::<i32>(&[m, n])?;
    let pair_rows = PairRows::new(row_major(&zeros, m, k));
    let packed_a = match choice {
        KernelChoice::Tract { kernel, packing } => {
            Some(kernel.packings()[*packing].0.prepare_one(&a, 1, 0)?)
        }
        KernelChoice::Pairs => None,
    };
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let started = Instant::now();
        match (choice, &packed_a) {
            (KernelChoice::Tract { kernel, packing }, Some(packed_a)) => {
                let packed_b = kernel.packings()[*packing].1.prepare_one(&b, 0, 1)?;
                unsafe {
                    kernel.run(
                        m,
                        n,
                        &[
                            FusedSpec::AddMatMul {
                                a: AsInputValue::Borrowed(&**packed_a),
                                b: AsInputValue::Borrowed(&*packed_b),
                                packing: *packing,
                            },
                            FusedSpec::Store(kernel.c_view(Some(0), Some(1)).wrap(&c.view_mut())),
                        ],
                    )?;
                }
            }
            _ => {
                let packed_b = PairColumns::new(row_major(&zeros, k, n));
                let mut out = c.try_as_plain_ram_mut()?;
                pairs::product(&pair_rows, &packed_b, out.as_slice_mut::<i32>()?)?;
            }
        }
        best = best.min(started.elapsed().as_secs_f64());
    }
    Ok(best)
}

/// The first `rows * columns` values of `values` as a row-major matrix.
fn row_major(values: &[i8], rows: usize, columns: usize) -> Strided<'_> {
    Strided {
        values,
        shape: (rows, columns),
        strides: (columns, 1),
    }
}

/// The fastest runnable int8 kernel of this CPU for an `m x k` by `k x n` product, timed once
/// per shape and process (members of an ensemble share their shapes), or `None` when the CPU
/// has no integer kernel with int8 packing. Results are exact integers whichever kernel runs.
pub fn choose_kernel(m: usize, k: usize, n: usize) -> TractResult<Option<KernelChoice>> {
    static CHOSEN: OnceLock<Mutex<ChosenKernels>> = OnceLock::new();
    let chosen = CHOSEN.get_or_init(Default::default);
    if let Some(choice) = chosen.lock().ok().and_then(|c| c.get(&(m, k, n)).cloned()) {
        return Ok(Some(choice));
    }
    let mut candidates: Vec<KernelChoice> = MmmDispatch::native()
        .runnable()
        .iter()
        .filter(|kernel| kernel.internal_type() == DatumType::I32 && !kernel.emulated())
        .filter_map(|kernel| {
            Some(KernelChoice::Tract {
                packing: int8_packing(&**kernel)?,
                kernel: kernel.clone(),
            })
        })
        .collect();
    if pairs::available() {
        candidates.push(KernelChoice::Pairs);
    }
    // Portable kernels only where the CPU has nothing written for it.
    if candidates.iter().any(KernelChoice::is_native) {
        candidates.retain(KernelChoice::is_native);
    }
    let mut best: Option<(f64, KernelChoice)> = None;
    for choice in candidates {
        let seconds = time_kernel(&choice, m, k, n)?;
        if best.as_ref().is_none_or(|(b, _)| seconds < *b) {
            best = Some((seconds, choice));
        }
    }
    Ok(best.map(|(_, choice)| {
        log::debug!("int8 kernel for {m}x{k}x{n}: {}", choice.name());
        if let Ok(mut chosen) = chosen.lock() {
            chosen.insert((m, k, n), choice.clone());
        }
        choice
    }))
}

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
    input_layout: Layout,
    output_layout: Layout,
    positions: usize,
    /// `[output_channels, input_channels]`.
    weights: Arc<Tensor>,
    product: Product,
    multiplier: Vec<f32>,
    offset: Vec<f32>,
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
    /// Packs the weights for the kernel [`choose_kernel`] picks; `None` when the CPU has no int8 kernel.
    pub fn new(params: PointwiseParams) -> TractResult<Option<PointwiseConvI8>> {
        let co = params.weight_scales.len();
        ensure!(co > 0 && params.weights.len().is_multiple_of(co) && params.bias.len() == co);
        let ci = params.weights.len() / co;
        let Some(choice) = choose_kernel(co, ci, params.positions)? else {
            return Ok(None);
        };
        let weights = Tensor::from_shape(&[co, ci], params.weights)?;
        let product = Product::new(choice, &weights, Layout::ChannelsFirst)?;
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
            input_layout: Layout::ChannelsFirst,
            output_layout: Layout::ChannelsFirst,
            positions: params.positions,
            weights: Arc::new(weights),
            product,
            multiplier,
            offset,
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
            let choice = choose_kernel(m, ci, n)?.context("no int8 kernel for this layout")?;
            self.product = Product::new(choice, &self.weights, output)?;
        }
        self.input_layout = input;
        self.output_layout = output;
        Ok(())
    }

    /// Layouts of the input and the output.
    pub fn layouts(&self) -> (Layout, Layout) {
        (self.input_layout, self.output_layout)
    }

    /// Name of the int8 kernel this layer runs on.
    pub fn kernel_name(&self) -> &str {
        match &self.product {
            Product::Tract { choice, .. } => choice.name(),
            Product::PairsWeightsLeft(_) | Product::PairsWeightsRight(_) => {
                KernelChoice::Pairs.name()
            }
        }
    }

    /// `acc = weights x input` (channels-first output) or `input x weights^T` (channels-last
    /// output), on tract-linalg's kernel.
    fn tract_product(
        &self,
        kernel: &dyn MatMatMul,
        packing: usize,
        packed_weights: &dyn MMMInputValue,
        input: Tensor,
        acc: &mut Tensor,
    ) -> TractResult<()> {
        let ci = self.input_channels;
        let n = input.len() / ci;
        let (a_format, b_format) = &kernel.packings()[packing];
        let activations = match self.output_layout {
            Layout::ChannelsFirst => b_format,
            Layout::ChannelsLast => a_format,
        };
        let packed_input = match self.input_layout {
            Layout::ChannelsFirst => activations.prepare_one(&input.into_shape(&[ci, n])?, 0, 1)?,
            Layout::ChannelsLast => activations.prepare_one(&input.into_shape(&[n, ci])?, 1, 0)?,
        };
        let weights = AsInputValue::Borrowed(packed_weights);
        let packed_input = AsInputValue::Borrowed(&*packed_input);
        let (a, b) = match self.output_layout {
            Layout::ChannelsFirst => (weights, packed_input),
            Layout::ChannelsLast => (packed_input, weights),
        };
        let (rows, columns) = (acc.shape()[0], acc.shape()[1]);
        // SAFETY: the packed operands and `acc` have the `rows x ci x columns` shape the
        // kernel is told.
        unsafe {
            kernel.run(
                rows,
                columns,
                &[
                    FusedSpec::AddMatMul { a, b, packing },
                    FusedSpec::Store(kernel.c_view(Some(0), Some(1)).wrap(&acc.view_mut())),
                ],
            )
        }
    }
}

impl PointwiseConvI8 {
    /// The input values as an `input_channels x positions` matrix.
    fn input_matrix<'a>(&self, values: &'a [i8], positions: usize) -> Strided<'a> {
        let ci = self.input_channels;
        Strided {
            values,
            shape: (ci, positions),
            strides: match self.input_layout {
                Layout::ChannelsFirst => (positions, 1),
                Layout::ChannelsLast => (1, ci),
            },
        }
    }
}

/// The weights, packed for the kernel that computes the layer's product.
#[derive(Debug, Clone)]
enum Product {
    /// On tract-linalg's kernel: the weights are its left operand for a channels-first output,
    /// its right one for a channels-last output.
    Tract {
        choice: KernelChoice,
        weights: Arc<Box<dyn MMMInputValue>>,
    },
    /// On the pair product, weights on the left: channels-first output.
    PairsWeightsLeft(Arc<PairRows>),
    /// On the pair product, weights on the right: channels-last output.
    PairsWeightsRight(Arc<PairColumns>),
}

impl Product {
    /// Packs `weights` (`[output_channels, input_channels]`) for `choice` and `output`.
    fn new(choice: KernelChoice, weights: &Tensor, output: Layout) -> TractResult<Product> {
        let (co, ci) = (weights.shape()[0], weights.shape()[1]);
        let values = weights.try_as_plain_ram()?;
        let values = values.as_slice::<i8>()?;
        Ok(match (&choice, output) {
            (KernelChoice::Tract { kernel, packing }, _) => {
                let (a_format, b_format) = &kernel.packings()[*packing];
                let format = match output {
                    Layout::ChannelsFirst => a_format,
                    Layout::ChannelsLast => b_format,
                };
                let weights = Arc::new(format.prepare_one(weights, 1, 0)?);
                Product::Tract { choice, weights }
            }
            (KernelChoice::Pairs, Layout::ChannelsFirst) => {
                Product::PairsWeightsLeft(Arc::new(PairRows::new(row_major(values, co, ci))))
            }
            (KernelChoice::Pairs, Layout::ChannelsLast) => Product::PairsWeightsRight(Arc::new(
                PairColumns::new(row_major(values, co, ci).transposed()),
            )),
        })
    }
}

impl PartialEq for PointwiseConvI8 {
    fn eq(&self, other: &Self) -> bool {
        self.layer == other.layer
            && self.output_shape == other.output_shape
            && self.input_layout == other.input_layout
            && self.output_layout == other.output_layout
            && self.multiplier == other.multiplier
            && self.offset == other.offset
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
            "{} -> {} channels, {:?} -> {:?}, kernel {}",
            self.input_channels,
            self.output_channels,
            self.input_layout,
            self.output_layout,
            self.kernel_name()
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for PointwiseConvI8 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs).into_tensor();
        let (co, ci) = (self.output_channels, self.input_channels);
        ensure!(input.datum_type() == DatumType::I8 && input.len().is_multiple_of(ci));
        let n = input.len() / ci;
        let (rows, columns) = match self.output_layout {
            Layout::ChannelsFirst => (co, n),
            Layout::ChannelsLast => (n, co),
        };
        // SAFETY: i32 is valid for any bits, and the product writes every value.
        let mut acc = unsafe { Tensor::uninitialized::<i32>(&[rows, columns])? };
        // One layer's product takes tens of microseconds: handing its panels to the thread pool
        // costs more than it saves (at 2 threads: 2.1-2.9 ms per member in pointwise layers
        // threaded, 1.65-1.86 ms on the calling thread).
        multithread_tract_scope(Executor::SingleThread, || match &self.product {
            Product::Tract {
                choice: KernelChoice::Tract { kernel, packing },
                weights,
            } => self.tract_product(&**kernel, *packing, &***weights, input, &mut acc),
            Product::Tract { .. } => bail!("tract weights packed for another kernel"),
            Product::PairsWeightsLeft(weights) => {
                let values = input.try_as_plain_ram()?;
                let x = self.input_matrix(values.as_slice::<i8>()?, n);
                let mut out = acc.try_as_plain_ram_mut()?;
                pairs::product(weights, &PairColumns::new(x), out.as_slice_mut::<i32>()?)
            }
            Product::PairsWeightsRight(weights) => {
                let values = input.try_as_plain_ram()?;
                let x = self.input_matrix(values.as_slice::<i8>()?, n);
                let mut out = acc.try_as_plain_ram_mut()?;
                let out = out.as_slice_mut::<i32>()?;
                pairs::product(&PairRows::new(x.transposed()), weights, out)
            }
        })?;
        let acc = acc.try_as_plain_ram()?;
        let acc = acc.as_slice::<i32>()?;
        let output_shape = self.output_layout.shape(&self.output_shape);
        output_tensor(&output_shape, |out: &mut [i8]| match self.output_layout {
            Layout::ChannelsFirst => {
                let rows_per_task = (REQUANT_VALUES_PER_TASK / n).max(1);
                for_each_chunk(out, rows_per_task * n, |task, out| {
                    let first = task * rows_per_task;
                    let rows = out.len() / n;
                    vectorized(Requantize {
                        acc: &acc[first * n..(first + rows) * n],
                        multiplier: &self.multiplier[first..first + rows],
                        offset: &self.offset[first..first + rows],
                        grid: self.grid,
                        layout: Layout::ChannelsFirst,
                        out,
                    })
                })
            }
            Layout::ChannelsLast => {
                let positions_per_task = (REQUANT_VALUES_PER_TASK / co).max(1);
                for_each_chunk(out, positions_per_task * co, |task, out| {
                    let first = task * positions_per_task * co;
                    vectorized(Requantize {
                        acc: &acc[first..first + out.len()],
                        multiplier: &self.multiplier,
                        offset: &self.offset,
                        grid: self.grid,
                        layout: Layout::ChannelsLast,
                        out,
                    })
                })
            }
        })
    }
}

/// `out = grid(acc * multiplier[c] + offset[c])` for channel `c` of each value, `acc` and `out`
/// holding whole channel-first rows or whole channel-last positions.
struct Requantize<'a> {
    acc: &'a [i32],
    multiplier: &'a [f32],
    offset: &'a [f32],
    grid: OutputGrid,
    layout: Layout,
    out: &'a mut [i8],
}

impl VectorLoop for Requantize<'_> {
    #[inline(always)]
    fn run(self) {
        let scales = self.multiplier.iter().zip(self.offset);
        match self.layout {
            Layout::ChannelsFirst => {
                let n = self.out.len() / self.multiplier.len();
                let rows = self.out.chunks_exact_mut(n).zip(self.acc.chunks_exact(n));
                for ((out, acc), (m, b)) in rows.zip(scales) {
                    for (a, o) in acc.iter().zip(out) {
                        *o = self.grid.quantize(*a as f32 * m + b);
                    }
                }
            }
            Layout::ChannelsLast => {
                let co = self.multiplier.len();
                let rows = self.out.chunks_exact_mut(co).zip(self.acc.chunks_exact(co));
                for (out, acc) in rows {
                    for ((a, (m, b)), o) in acc.iter().zip(scales.clone()).zip(out) {
                        *o = self.grid.quantize(*a as f32 * m + b);
                    }
                }
            }
        }
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

    #[test]
    fn matches_a_direct_product_on_random_inputs() {
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
            let params = PointwiseParams {
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
            let op = PointwiseConvI8::new(params).unwrap().unwrap();
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
                let mut op = op.clone();
                op.set_layouts(input_layout, output_layout).unwrap();
                let input = match input_layout {
                    Layout::ChannelsFirst => Tensor::from_shape(&[ci, positions], &input),
                    Layout::ChannelsLast => {
                        Tensor::from_shape(&[positions, ci], &transposed(&input, ci))
                    }
                };
                let ours = op
                    .eval(
                        &EvalContext::out_of_plan(),
                        tvec!(input.unwrap().into_tvalue()),
                    )
                    .unwrap()
                    .remove(0);
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

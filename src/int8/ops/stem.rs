//! The float layers of a quantized member (its stem, before the first quantized tensor),
//! computed in one fixed order of operations.
//!
//! A float result that lands next to a rounding step of the following quantization flips to
//! the other step when the last bit differs, and the flip travels through every int8 layer
//! after it. tract's f32 kernels sum in an order that depends on the CPU (vector width, fused
//! multiply-add), so the same member gave visibly different probabilities on aarch64 and
//! x86-64. These ops compute every output as `fma(wn, xn, ... fma(w1, x1, fma(w0, x0, 0))) +
//! bias`: one fused multiply-add per term, each rounded once as IEEE 754 defines it (in
//! hardware on aarch64 and on x86-64 with FMA, else by the correctly rounded software
//! routine), vectorized across output positions only. The bits are the same on every CPU, and
//! the single rounding keeps the stem as precise as tract's own kernels.

use std::borrow::Cow;

use tract_core::internal::*;

use super::output_tensor;
use crate::int8::grid::OutputGrid;
use crate::int8::kernels::fixed_order::{
    copy_run, shared_blocks, sum_channel_positions, sum_shared_positions, Finish, FloatLoop,
    FloatVector, PaddedPlanes, PlainLanes, SHARED_CHANNELS,
};
use crate::int8::kernels::{for_each_chunk, KernelSet};

/// Output positions computed per block, so a block's inputs stay in the L1 cache.
const BLOCK: usize = 256;

/// A float layer whose inner loop is compiled once per [`FloatVector`].
trait Exact {
    /// The type of the output values.
    type Output: Datum + Copy;
    /// Values of the input tensor.
    fn input_len(&self) -> usize;
    /// Positions of one output channel.
    fn plane_len(&self) -> usize;
    /// The output's shape.
    fn output_shape(&self) -> &[usize];
    /// The kernel set the layer runs on.
    fn kernels(&self) -> KernelSet;
    /// What every task reads, made once per evaluation: the input itself unless the layer
    /// needs it in another form.
    fn prepare<'a>(&self, input: &'a [f32]) -> Cow<'a, [f32]> {
        Cow::Borrowed(input)
    }
    /// Output channels `first..` into `out` (as many as it holds), on vectors `V`, reading the
    /// [`Exact::prepare`]d input.
    fn kernel<V: FloatVector>(&self, input: &[f32], first: usize, out: &mut [Self::Output]);
}

/// One task of an [`Exact`] layer, run with [`KernelSet::run_float`].
struct ExactTask<'a, T: Exact> {
    op: &'a T,
    input: &'a [f32],
    first: usize,
    out: &'a mut [T::Output],
}

impl<T: Exact> FloatLoop for ExactTask<'_, T> {
    #[inline(always)]
    fn run<V: FloatVector>(self) {
        self.op.kernel::<V>(self.input, self.first, self.out)
    }
}

/// Output channels one thread computes at a time: whole blocks of [`SHARED_CHANNELS`].
const CHANNELS_PER_TASK: usize = 8;
const _: () = assert!(CHANNELS_PER_TASK.is_multiple_of(SHARED_CHANNELS));

/// Evaluates `op` on its one f32 input into a new `output_shape` tensor.
fn eval_exact<T: Exact + Sync>(
    op: &T,
    output_shape: &[usize],
    inputs: TVec<TValue>,
) -> TractResult<TVec<TValue>> {
    let input = args_1!(inputs);
    ensure!(input.datum_type() == DatumType::F32 && input.len() == op.input_len());
    let input = input.try_as_plain_ram()?;
    let prepared = op.prepare(input.as_slice::<f32>()?);
    let input = &*prepared;
    let plane = op.plane_len();
    output_tensor(output_shape, |out: &mut [T::Output]| {
        for_each_chunk(out, CHANNELS_PER_TASK * plane, |task, out| {
            op.kernels().run_float(ExactTask {
                op,
                input,
                first: task * CHANNELS_PER_TASK,
                out,
            })
        })
    })
}

/// A 3x3 convolution on f32 `[1, ci, h, w]`, stride 1 or 2 with padding 1, or stride 2 with
/// padding after the input only (EfficientNet-Lite's stem), with `groups` groups (1 for a full
/// convolution, `ci` for a depthwise one) and a bias.
#[derive(Debug, Clone, PartialEq)]
pub struct ExactConv3x3 {
    pub layer: String,
    pub input_channels: usize,
    pub output_channels: usize,
    pub groups: usize,
    pub stride: usize,
    /// Padded rows and columns ahead of the input: 1, or 0 for padding after it only.
    pub before: usize,
    pub height: usize,
    pub width: usize,
    /// Output height and width.
    pub output: (usize, usize),
    pub output_shape: TVec<usize>,
    /// `[output_channels, input_channels / groups, 3, 3]`.
    weights: Vec<f32>,
    /// Without groups, `weights` as [`shared_blocks`] lays them out.
    shared: Vec<[f32; SHARED_CHANNELS]>,
    bias: Vec<f32>,
    /// The activation's clip (ReLU6: 0 and 6), applied after the bias.
    clip: (f32, f32),
    kernels: KernelSet,
}
impl Eq for ExactConv3x3 {}

/// Geometry and constants of a 3x3 convolution, as read from the graph.
pub struct Conv3x3Params {
    pub layer: String,
    pub input_channels: usize,
    pub groups: usize,
    pub stride: usize,
    /// Top, left, bottom and right padding.
    pub padding: [usize; 4],
    pub height: usize,
    pub width: usize,
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
    /// Lowest and highest output (the activation's clip), infinite for none.
    pub clip: (f32, f32),
    pub output_shape: TVec<usize>,
}

impl ExactConv3x3 {
    /// Builds the op; errors when the parameters do not describe such a convolution.
    pub fn new(params: Conv3x3Params, kernels: KernelSet) -> TractResult<ExactConv3x3> {
        let output_channels = params.bias.len();
        let groups = params.groups;
        ensure!(groups > 0 && params.input_channels.is_multiple_of(groups));
        ensure!(output_channels.is_multiple_of(groups));
        ensure!(params.weights.len() == output_channels * params.input_channels / groups * 9);
        ensure!(matches!(params.stride, 1 | 2) && params.height > 0 && params.width > 0);
        let before = match params.padding {
            [1, 1, 1, 1] => 1,
            [0, 0, bottom, right] if params.stride == 2 && bottom <= 1 && right <= 1 => 0,
            padding => bail!("{}: padding {padding:?} is not supported", params.layer),
        };
        let [_, _, bottom, right] = params.padding;
        let side = |length: usize, padded: usize| (length + padded).checked_sub(3);
        let (Some(rows), Some(columns)) = (
            side(params.height, before + bottom),
            side(params.width, before + right),
        ) else {
            bail!("{}: an input smaller than the kernel", params.layer);
        };
        let (oh, ow) = (rows / params.stride + 1, columns / params.stride + 1);
        ensure!(params.output_shape.iter().product::<usize>() == output_channels * oh * ow);
        let shared = match groups {
            1 => shared_blocks(&params.weights, params.input_channels * 9),
            _ => Vec::new(),
        };
        Ok(ExactConv3x3 {
            layer: params.layer,
            input_channels: params.input_channels,
            output_channels,
            groups,
            stride: params.stride,
            before,
            height: params.height,
            width: params.width,
            output: (oh, ow),
            output_shape: params.output_shape,
            weights: params.weights,
            shared,
            bias: params.bias,
            clip: params.clip,
            kernels,
        })
    }

    /// Writes the input planes of `group`, zero-padded ([`PaddedPlanes`]), into `planes`.
    #[inline(always)]
    fn pad_group<V: FloatVector>(&self, input: &[f32], group: usize, planes: &mut Vec<f32>) {
        let (h, w) = (self.height, self.width);
        let group_inputs = self.input_channels / self.groups;
        let padded = PaddedPlanes::new(h, w, self.stride, self.before);
        planes.resize(group_inputs * padded.len, 0.0);
        let inputs = &input[group * group_inputs * h * w..][..group_inputs * h * w];
        for (source, target) in inputs
            .chunks_exact(h * w)
            .zip(planes.chunks_exact_mut(padded.len))
        {
            padded.fill::<V>(source, target);
        }
    }
}

impl Exact for ExactConv3x3 {
    type Output = f32;

    fn output_shape(&self) -> &[usize] {
        &self.output_shape
    }

    fn kernels(&self) -> KernelSet {
        self.kernels
    }

    fn input_len(&self) -> usize {
        self.input_channels * self.height * self.width
    }

    fn plane_len(&self) -> usize {
        self.output.0 * self.output.1
    }

    /// Without groups, the input planes are padded once for every task.
    fn prepare<'a>(&self, input: &'a [f32]) -> Cow<'a, [f32]> {
        if self.groups != 1 {
            return Cow::Borrowed(input);
        }
        let mut planes = Vec::new();
        self.pad_group::<PlainLanes>(input, 0, &mut planes);
        Cow::Owned(planes)
    }

    /// With groups, one group's input planes are padded at a time; without, the input comes
    /// padded ([`Exact::prepare`]) and output channels are summed [`SHARED_CHANNELS`] at a time,
    /// sharing the input vectors they read.
    #[inline(always)]
    fn kernel<V: FloatVector>(&self, input: &[f32], first: usize, out: &mut [f32]) {
        let (h, w, s) = (self.height, self.width, self.stride);
        let (oh, ow) = self.output;
        let group_inputs = self.input_channels / self.groups;
        let group_outputs = self.output_channels / self.groups;
        let terms = group_inputs * 9;
        let padded = PaddedPlanes::new(h, w, s, self.before);
        let starts: Vec<usize> = (0..terms)
            .map(|term| (term / 9) * padded.len + padded.tap_start(term % 9))
            .collect();
        debug_assert!(starts
            .iter()
            .all(|start| start + oh * padded.row_len <= group_inputs * padded.len));
        debug_assert!(self.groups != 1 || input.len() == group_inputs * padded.len);
        let shared_channels = match self.groups {
            1 => out.len() / (oh * ow) / SHARED_CHANNELS * SHARED_CHANNELS,
            _ => 0,
        };
        let clip = Some(self.clip);
        let (shared, rest) = out.split_at_mut(shared_channels * oh * ow);
        for (block, block_planes) in shared
            .chunks_exact_mut(SHARED_CHANNELS * oh * ow)
            .enumerate()
        {
            let channel = first + block * SHARED_CHANNELS;
            let weights = &self.shared[channel / SHARED_CHANNELS * terms..][..terms];
            let block_out = block_planes.as_mut_ptr();
            for oy in 0..oh {
                let run = oy * padded.row_len;
                // SAFETY: `sum_shared_positions` asks for terms `0..weights.len()`, and
                // `weights` and `starts` hold `terms` values; every term's run from an output
                // row lies inside `input` (the debug assertions above).
                let inputs =
                    |term: usize| unsafe { input.as_ptr().add(*starts.get_unchecked(term) + run) };
                let finish = Finish {
                    bias: &self.bias[channel..channel + SHARED_CHANNELS],
                    clip,
                    // SAFETY: inside `block_planes`, whose `SHARED_CHANNELS` planes hold `oh`
                    // rows of `ow` outputs.
                    out: |c: usize| unsafe { block_out.add((c * oh + oy) * ow) },
                };
                // SAFETY: every term's run from an output row holds its `ow` outputs' values
                // (see the debug assertion above); each output row has room for `ow` values.
                unsafe { sum_shared_positions::<V, _>(weights, ow, inputs, &finish) };
            }
        }
        let first = first + shared_channels;
        let run_len = oh * padded.row_len;
        let mut rows = vec![0f32; run_len];
        let (mut group_planes, mut padded_group) = (Vec::new(), usize::MAX);
        for (at, plane) in rest.chunks_exact_mut(oh * ow).enumerate() {
            let channel = first + at;
            let group = channel / group_outputs;
            let planes: &[f32] = if self.groups == 1 {
                input
            } else {
                if group != padded_group {
                    self.pad_group::<V>(input, group, &mut group_planes);
                    padded_group = group;
                }
                &group_planes
            };
            let weights = &self.weights[channel * terms..][..terms];
            // SAFETY: as above, for the whole run of each term inside `planes`.
            let inputs = |term: usize| unsafe { planes.as_ptr().add(*starts.get_unchecked(term)) };
            let rows_out = rows.as_mut_ptr();
            let finish = Finish {
                bias: &self.bias[channel..=channel],
                clip,
                out: |_: usize| rows_out,
            };
            // SAFETY: every term's run holds `run_len` values (the debug assertion above), and
            // so does `rows`.
            unsafe { sum_channel_positions::<V, _>(weights, run_len, inputs, &finish) };
            for (row, o) in rows
                .chunks_exact(padded.row_len)
                .zip(plane.chunks_exact_mut(ow))
            {
                copy_run::<V>(&row[..ow], o);
            }
        }
    }
}

/// A pointwise (1x1) convolution on f32 `[.., ci, positions..]` with a bias.
#[derive(Debug, Clone, PartialEq)]
pub struct ExactPointwise {
    pub layer: String,
    pub input_channels: usize,
    pub output_channels: usize,
    pub positions: usize,
    pub output_shape: TVec<usize>,
    /// `[output_channels, input_channels]`.
    weights: Vec<f32>,
    /// `weights` as [`shared_blocks`] lays them out.
    shared: Vec<[f32; SHARED_CHANNELS]>,
    bias: Vec<f32>,
    kernels: KernelSet,
}
impl Eq for ExactPointwise {}

impl ExactPointwise {
    /// Builds the op from `[co, ci]` weights and `[co]` bias.
    pub fn new(
        layer: String,
        weights: Vec<f32>,
        bias: Vec<f32>,
        positions: usize,
        output_shape: TVec<usize>,
        kernels: KernelSet,
    ) -> TractResult<ExactPointwise> {
        let output_channels = bias.len();
        ensure!(output_channels > 0 && weights.len().is_multiple_of(output_channels));
        ensure!(output_shape.iter().product::<usize>() == output_channels * positions);
        let input_channels = weights.len() / output_channels;
        Ok(ExactPointwise {
            layer,
            input_channels,
            output_channels,
            positions,
            output_shape,
            shared: shared_blocks(&weights, input_channels),
            weights,
            bias,
            kernels,
        })
    }

    /// Sums output channels `first..first + channels` of `input` block by block of [`BLOCK`]
    /// positions, [`SHARED_CHANNELS`] channels at a time sharing each input vector they read,
    /// each output's sum in the one order of terms: for the block of `len` positions from
    /// `start`, channel `first + c`'s values (bias added) go to `out(c, start)`, then
    /// `done(start, len)` runs.
    ///
    /// # Safety
    /// `input` holds `positions` values per input channel; `out(c, start)` points at room for
    /// a block's values.
    #[inline(always)]
    unsafe fn sum_blocks<V: FloatVector>(
        &self,
        input: &[f32],
        (first, channels): (usize, usize),
        out: impl Fn(usize, usize) -> *mut f32,
        mut done: impl FnMut(usize, usize),
    ) {
        let (ci, positions) = (self.input_channels, self.positions);
        let weights_of = |channel: usize| &self.weights[channel * ci..(channel + 1) * ci];
        let shared = channels / SHARED_CHANNELS * SHARED_CHANNELS;
        for start in (0..positions).step_by(BLOCK) {
            let len = BLOCK.min(positions - start);
            // SAFETY: `i < ci` and `start < positions`, inside `input` (this function's
            // contract).
            let inputs = |i: usize| unsafe { input.as_ptr().add(i * positions + start) };
            for block in 0..shared / SHARED_CHANNELS {
                let channel = first + block * SHARED_CHANNELS;
                let weights = &self.shared[channel / SHARED_CHANNELS * ci..][..ci];
                let finish = Finish {
                    bias: &self.bias[channel..channel + SHARED_CHANNELS],
                    clip: None,
                    out: |c: usize| out(block * SHARED_CHANNELS + c, start),
                };
                sum_shared_positions::<V, _>(weights, len, inputs, &finish);
            }
            for at in shared..channels {
                let finish = Finish {
                    bias: &self.bias[first + at..=first + at],
                    clip: None,
                    out: |_: usize| out(at, start),
                };
                sum_channel_positions::<V, _>(weights_of(first + at), len, inputs, &finish);
            }
            done(start, len);
        }
    }
}

impl Exact for ExactPointwise {
    type Output = f32;

    fn output_shape(&self) -> &[usize] {
        &self.output_shape
    }

    fn kernels(&self) -> KernelSet {
        self.kernels
    }

    fn input_len(&self) -> usize {
        self.input_channels * self.positions
    }

    fn plane_len(&self) -> usize {
        self.positions
    }

    #[inline(always)]
    fn kernel<V: FloatVector>(&self, input: &[f32], first: usize, out: &mut [f32]) {
        let positions = self.positions;
        let channels = out.len() / positions;
        let out = out.as_mut_ptr();
        // SAFETY: `input` holds `positions` values per input channel (`eval_exact`); `out`
        // holds `channels` planes of `positions`.
        unsafe {
            self.sum_blocks::<V>(
                input,
                (first, channels),
                |c, start| out.add(c * positions + start),
                |_, _| {},
            )
        }
    }
}

/// An [`ExactPointwise`] whose output goes to int8 as a [`QuantizeI8`] boundary would take it
/// (`grid(x * inverse_scale)` of each f32 output), block by block, without the f32 tensor.
///
/// [`QuantizeI8`]: super::quantize::QuantizeI8
#[derive(Debug, Clone, PartialEq)]
pub struct ExactPointwiseI8 {
    pub pointwise: ExactPointwise,
    inverse_scale: f32,
    grid: OutputGrid,
}
impl Eq for ExactPointwiseI8 {}

impl ExactPointwiseI8 {
    /// `pointwise`, its output quantized onto `grid` after multiplying by `inverse_scale`.
    pub fn new(pointwise: ExactPointwise, inverse_scale: f32, grid: OutputGrid) -> Self {
        ExactPointwiseI8 {
            pointwise,
            inverse_scale,
            grid,
        }
    }
}

impl Exact for ExactPointwiseI8 {
    type Output = i8;

    fn output_shape(&self) -> &[usize] {
        &self.pointwise.output_shape
    }

    fn kernels(&self) -> KernelSet {
        self.pointwise.kernels
    }

    fn input_len(&self) -> usize {
        self.pointwise.input_len()
    }

    fn plane_len(&self) -> usize {
        self.pointwise.positions
    }

    #[inline(always)]
    fn kernel<V: FloatVector>(&self, input: &[f32], first: usize, out: &mut [i8]) {
        let positions = self.pointwise.positions;
        let channels = out.len() / positions;
        let mut block = vec![0f32; channels * BLOCK];
        let sums = block.as_mut_ptr();
        let (inverse_scale, grid) = (self.inverse_scale, self.grid);
        let quantize = |start: usize, len: usize| {
            for (c, out) in out.chunks_exact_mut(positions).enumerate() {
                // SAFETY: inside `block`, which holds `BLOCK` values per channel and is not
                // written while this slice lives.
                let values = unsafe { std::slice::from_raw_parts(sums.add(c * BLOCK), len) };
                V::quantize_run(values, inverse_scale, grid, &mut out[start..start + len]);
            }
        };
        // SAFETY: `input` holds `positions` values per input channel (`eval_exact`); `block`
        // holds `BLOCK` values per channel.
        unsafe {
            self.pointwise.sum_blocks::<V>(
                input,
                (first, channels),
                |c, _| sums.add(c * BLOCK),
                quantize,
            )
        }
    }
}

macro_rules! exact_op {
    ($op:ty, $name:literal) => {
        impl Op for $op {
            fn name(&self) -> StaticName {
                $name.into()
            }

            op_as_typed_op!();
        }

        impl EvalOp for $op {
            op_out_of_plan!();

            fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
                eval_exact(self, Exact::output_shape(self), inputs)
            }
        }

        impl TypedOp for $op {
            fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
                ensure!(inputs.iter().all(|i| i.datum_type == DatumType::F32));
                let datum_type = <$op as Exact>::Output::datum_type();
                Ok(tvec!(TypedFact::dt_shape(
                    datum_type,
                    Exact::output_shape(self)
                )))
            }

            as_op!();
        }
    };
}

exact_op!(ExactConv3x3, "ExactConv3x3");
exact_op!(ExactPointwise, "ExactPointwise");
exact_op!(ExactPointwiseI8, "ExactPointwiseI8");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::int8::test_rng::TestRng;

    fn eval(op: &dyn TypedOp, shape: &[usize], input: &[f32]) -> Vec<f32> {
        let input = Tensor::from_shape(shape, input).unwrap();
        let out = op
            .as_op()
            .eval(&EvalContext::out_of_plan(), tvec!(input.into_tvalue()))
            .unwrap()
            .remove(0);
        out.try_as_plain_ram()
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec()
    }

    fn random(rng: &mut TestRng, len: usize) -> Vec<f32> {
        (0..len).map(|_| rng.f32_in(-2.0, 2.0)).collect()
    }

    /// The sum the ops promise, in the promised order, written out plainly.
    fn conv_reference(op: &ExactConv3x3, input: &[f32]) -> Vec<f32> {
        let (h, w, s) = (op.height, op.width, op.stride);
        let (oh, ow) = op.output;
        let before = op.before as isize;
        let group_inputs = op.input_channels / op.groups;
        let group_outputs = op.output_channels / op.groups;
        let mut out = Vec::new();
        for co in 0..op.output_channels {
            let group = co / group_outputs;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut sum = 0f32;
                    for i in 0..group_inputs {
                        let ci = group * group_inputs + i;
                        for tap in 0..9 {
                            let (y, x) = (
                                (oy * s + tap / 3) as isize - before,
                                (ox * s + tap % 3) as isize - before,
                            );
                            let value = if y < 0 || x < 0 || y >= h as isize || x >= w as isize {
                                0.0
                            } else {
                                input[ci * h * w + y as usize * w + x as usize]
                            };
                            sum = op.weights[(co * group_inputs + i) * 9 + tap].mul_add(value, sum);
                        }
                    }
                    out.push((sum + op.bias[co]).clamp(op.clip.0, op.clip.1));
                }
            }
        }
        out
    }

    /// On every kernel set, padded on every side and (stride 2) after the input only.
    #[test]
    fn convolutions_give_the_bits_of_the_written_order() {
        let mut rng = TestRng(0x5eed_0fc0_de00);
        let relu6 = (0.0, 6.0);
        let none = (f32::NEG_INFINITY, f32::INFINITY);
        let (around, after) = ([1; 4], [0, 0, 1, 1]);
        for (ci, co, groups, h, w, s, padding, clip) in [
            (3, 32, 1, 12, 16, 2, around, relu6),
            (3, 5, 1, 7, 9, 1, around, none),
            (3, 10, 1, 9, 70, 2, around, relu6),
            (2, 8, 1, 5, 40, 1, around, none),
            (24, 24, 24, 9, 11, 1, around, relu6),
            (19, 19, 19, 20, 30, 2, around, none),
            (4, 6, 2, 5, 5, 1, around, (-0.5, 0.5)),
            (3, 32, 1, 12, 16, 2, after, relu6),
            (3, 10, 1, 9, 71, 2, after, none),
            (3, 5, 1, 8, 9, 2, [0, 0, 0, 1], none),
            (19, 19, 19, 21, 30, 2, after, relu6),
        ] {
            let weights = random(&mut rng, co * ci / groups * 9);
            let bias = random(&mut rng, co);
            let [top, left, bottom, right] = padding;
            let (oh, ow) = (
                (h + top + bottom - 3) / s + 1,
                (w + left + right - 3) / s + 1,
            );
            let input = random(&mut rng, ci * h * w);
            for kernels in KernelSet::runnable() {
                let params = Conv3x3Params {
                    layer: "random".into(),
                    input_channels: ci,
                    groups,
                    stride: s,
                    padding,
                    height: h,
                    width: w,
                    weights: weights.clone(),
                    bias: bias.clone(),
                    clip,
                    output_shape: tvec![1, co, oh, ow],
                };
                let op = ExactConv3x3::new(params, kernels).unwrap();
                assert_eq!(op.output, (oh, ow));
                let ours = eval(&op, &[1, ci, h, w], &input);
                let expected = conv_reference(&op, &input);
                assert_eq!(ours.len(), expected.len());
                for (a, b) in ours.iter().zip(&expected) {
                    assert_eq!(
                        a.to_bits(),
                        b.to_bits(),
                        "{kernels}: {ci}->{co}/{groups} stride {s} {padding:?}: {a} against {b}"
                    );
                }
            }
        }
    }

    /// Padding it does not compute (one-sided at stride 1, two after, or before only) is
    /// refused with the layer's name, so the layer stays on tract.
    #[test]
    fn other_paddings_are_refused() {
        for (stride, padding) in [(1, [0, 0, 1, 1]), (2, [0, 0, 2, 2]), (2, [1, 1, 0, 0])] {
            let [top, left, bottom, right] = padding;
            let (oh, ow) = (
                (8 + top + bottom - 3) / stride + 1,
                (8 + left + right - 3) / stride + 1,
            );
            let params = Conv3x3Params {
                layer: "odd".into(),
                input_channels: 1,
                groups: 1,
                stride,
                padding,
                height: 8,
                width: 8,
                weights: vec![1.0; 9],
                bias: vec![0.0],
                clip: (f32::NEG_INFINITY, f32::INFINITY),
                output_shape: tvec![1, 1, oh, ow],
            };
            let error = ExactConv3x3::new(params, KernelSet::PORTABLE).unwrap_err();
            assert!(format!("{error}").contains("odd: padding"), "{error}");
        }
    }

    /// A pointwise layer of `bias.len()` output channels over `positions` on `kernels`.
    fn random_pointwise(
        weights: &[f32],
        bias: &[f32],
        positions: usize,
        kernels: KernelSet,
    ) -> ExactPointwise {
        let output_shape = tvec![1, bias.len(), positions];
        ExactPointwise::new(
            "random".into(),
            weights.to_vec(),
            bias.to_vec(),
            positions,
            output_shape,
            kernels,
        )
        .unwrap()
    }

    /// On every kernel set.
    #[test]
    fn pointwise_gives_the_bits_of_the_written_order() {
        let mut rng = TestRng(0xfeed_beef);
        for (ci, co, positions) in [(32, 16, 4800), (16, 96, 300), (5, 7, 1), (3, 2, 257)] {
            let weights = random(&mut rng, co * ci);
            let bias = random(&mut rng, co);
            let input = random(&mut rng, ci * positions);
            for kernels in KernelSet::runnable() {
                let op = random_pointwise(&weights, &bias, positions, kernels);
                let ours = eval(&op, &[1, ci, positions], &input);
                for co_at in 0..co {
                    for p in 0..positions {
                        let mut sum = 0f32;
                        for i in 0..ci {
                            sum = weights[co_at * ci + i].mul_add(input[i * positions + p], sum);
                        }
                        let expected = sum + bias[co_at];
                        let got = ours[co_at * positions + p];
                        assert_eq!(
                            got.to_bits(),
                            expected.to_bits(),
                            "{kernels}: {ci}->{co} at {p}"
                        );
                    }
                }
            }
        }
    }

    /// The pointwise layer with its quantization writes the bits of the pointwise layer
    /// followed by the boundary's quantization, on every kernel set.
    #[test]
    fn quantized_pointwise_gives_the_bits_of_the_pointwise_then_its_quantization() {
        let mut rng = TestRng(0x0dd_ba11);
        for (ci, co, positions) in [(16, 96, 300), (5, 7, 1), (3, 12, 257)] {
            let weights = random(&mut rng, co * ci);
            let bias = random(&mut rng, co);
            let input = random(&mut rng, ci * positions);
            let grid = OutputGrid::new(rng.f32_in(5.0, 50.0), rng.next() as u8, 0.0, 6.0);
            let inverse_scale = rng.f32_in(5.0, 50.0);
            for kernels in KernelSet::runnable() {
                let pointwise = random_pointwise(&weights, &bias, positions, kernels);
                let expected: Vec<i8> = eval(&pointwise, &[1, ci, positions], &input)
                    .iter()
                    .map(|x| grid.quantize(x * inverse_scale))
                    .collect();
                let op = ExactPointwiseI8::new(pointwise, inverse_scale, grid);
                let input = Tensor::from_shape(&[1, ci, positions], &input).unwrap();
                let out = op
                    .eval(&EvalContext::out_of_plan(), tvec!(input.into_tvalue()))
                    .unwrap()
                    .remove(0);
                let out = out.try_as_plain_ram().unwrap();
                assert_eq!(
                    out.as_slice::<i8>().unwrap(),
                    expected,
                    "{kernels}: {ci}->{co}"
                );
            }
        }
    }
}

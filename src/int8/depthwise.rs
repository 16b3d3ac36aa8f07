//! Depthwise 3x3 convolution (padding 1, stride 1 or 2) on int8 activations and weights,
//! with bias, zero points, per-channel scales and the activation clip fused.

use tract_core::internal::*;

use super::depthwise_avx2::{self, GroupedLayer};
use super::layout::Layout;
use super::requant::{
    for_each_chunk, int8_fact, output_tensor, vectorized, OutputGrid, VectorLoop,
};

/// Channels one thread convolves at a time, and the lanes of the channels-last kernel.
const CHANNELS_PER_TASK: usize = LANES;
const LANES: usize = 16;
/// Outputs the planar kernel sums at a time.
const PLANAR_BLOCK: usize = 64;
/// Channels-first input planes up to this many positions run channels-last, larger ones plane
/// by plane; layers of up to this many output positions run faster on channels-last tensors.
const CHANNELS_LAST_MAX_POSITIONS: usize = 300;
/// Output rows a channels-last band computes: its padded input rows stay in the cache.
const BAND_ROWS: usize = 8;
/// Channels the channels-last kernel sums at a time.
const CHANNEL_BLOCK: usize = 64;

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
///
/// Products and sums run in f32 on integer values (`|w| <= 127`, `|x - zero point| <= 255`,
/// nine taps), which is exact and vectorizes on every x86-64 and aarch64 CPU.
#[derive(Debug, Clone, PartialEq)]
pub struct DepthwiseConvI8 {
    pub layer: String,
    pub channels: usize,
    pub stride: usize,
    pub height: usize,
    pub width: usize,
    /// The output's shape in channels-first order.
    pub output_shape: TVec<usize>,
    /// Layout of both input and output.
    pub layout: Layout,
    /// `[channels, 9]`.
    weights: Vec<f32>,
    /// `[9, channels]`.
    tap_weights: Vec<f32>,
    input_zero_point: f32,
    multiplier: Vec<f32>,
    offset: Vec<f32>,
    grid: OutputGrid,
    /// The channels-last layer for the AVX2 kernel.
    grouped: GroupedLayer,
}
impl Eq for DepthwiseConvI8 {}

impl DepthwiseConvI8 {
    /// Builds the op; errors when the parameters do not describe a 3x3 depthwise layer.
    pub fn new(params: DepthwiseParams) -> TractResult<DepthwiseConvI8> {
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
        let weights: Vec<f32> = params.weights.iter().map(|w| f32::from(*w)).collect();
        let input_zero_point = f32::from(params.input_zero_point);
        let grouped = GroupedLayer::new(
            (channels, params.height, params.width, params.stride),
            input_zero_point,
            &weights,
            &multiplier,
            &offset,
            params.grid,
        );
        Ok(DepthwiseConvI8 {
            layer: params.layer,
            channels,
            stride: params.stride,
            height: params.height,
            width: params.width,
            output_shape: params.output_shape,
            layout: Layout::ChannelsFirst,
            weights,
            tap_weights: (0..9 * channels)
                .map(|at| f32::from(params.weights[(at % channels) * 9 + at / channels]))
                .collect(),
            input_zero_point,
            multiplier,
            offset,
            grid: params.grid,
            grouped,
        })
    }

    /// Whether the layer runs faster on channels-last tensors (measured on x86-64: small
    /// planes; large ones run faster plane by plane).
    pub fn faster_channels_last(&self) -> bool {
        let (oh, ow) = output_size(self.height, self.width, self.stride);
        oh * ow <= CHANNELS_LAST_MAX_POSITIONS
    }

    /// The same layer reading and writing tensors in `layout`.
    pub fn with_layout(self, layout: Layout) -> DepthwiseConvI8 {
        DepthwiseConvI8 { layout, ..self }
    }

    /// Convolves channels `first..` of channels-first `input` into `out` (as many as it holds).
    fn run(&self, input: &[i8], first: usize, out: &mut [i8]) {
        let channels_last = self.height * self.width <= CHANNELS_LAST_MAX_POSITIONS;
        if !channels_last && depthwise_avx2::convolve_planes(&self.grouped, input, first, out) {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        {
            let avx512 =
                is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw");
            let avx2 = is_x86_feature_detected!("avx2");
            // SAFETY: each kernel runs only where the CPU has its features, checked here.
            unsafe {
                match (channels_last, avx512, avx2) {
                    (true, true, _) => return self.run_channels_last_avx512(input, first, out),
                    (true, false, true) => return self.run_channels_last_avx2(input, first, out),
                    (false, _, true) => return self.run_planar_avx2(input, first, out),
                    _ => {}
                }
            }
        }
        if channels_last {
            self.run_channels_last(input, first, out);
        } else {
            self.run_planar(input, first, out);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn run_channels_last_avx512(&self, input: &[i8], first: usize, out: &mut [i8]) {
        self.run_channels_last(input, first, out);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn run_channels_last_avx2(&self, input: &[i8], first: usize, out: &mut [i8]) {
        self.run_channels_last(input, first, out);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn run_planar_avx2(&self, input: &[i8], first: usize, out: &mut [i8]) {
        self.run_planar(input, first, out);
    }

    /// Convolves up to [`LANES`] channels at once, each channel in one lane: the input is
    /// copied into a zero-padded channels-last buffer, and every output position takes nine
    /// lane-wide products. Fast where the planes are small and the channels many.
    #[inline(always)]
    fn run_channels_last(&self, input: &[i8], first: usize, out: &mut [i8]) {
        let (h, w, s) = (self.height, self.width, self.stride);
        let (oh, ow) = output_size(h, w, s);
        let (pw, outputs) = (w + 2, oh * ow);
        let channels = out.len() / outputs;
        let mut padded = vec![[0f32; LANES]; (h + 2) * pw];
        let planes = &input[first * h * w..(first + channels) * h * w];
        for y in 0..h {
            let at = (y + 1) * pw + 1;
            for (x, d) in padded[at..at + w].iter_mut().enumerate() {
                let position = y * w + x;
                for (lane, d) in d[..channels].iter_mut().enumerate() {
                    *d = f32::from(planes[lane * h * w + position]) - self.input_zero_point;
                }
            }
        }
        let lanes = |values: &[f32]| -> [f32; LANES] {
            std::array::from_fn(|lane| values.get(first + lane).copied().unwrap_or(0.0))
        };
        let taps: [[f32; LANES]; 9] = std::array::from_fn(|tap| {
            std::array::from_fn(|lane| {
                self.weights
                    .get((first + lane) * 9 + tap)
                    .copied()
                    .unwrap_or(0.0)
            })
        });
        let (multiplier, offset) = (lanes(&self.multiplier), lanes(&self.offset));
        let mut quantized = vec![[0i8; LANES]; outputs];
        for oy in 0..oh {
            for ox in 0..ow {
                let mut sum = [0f32; LANES];
                for (tap, weights) in taps.iter().enumerate() {
                    let x = &padded[(oy * s + tap / 3) * pw + ox * s + tap % 3];
                    for lane in 0..LANES {
                        sum[lane] += weights[lane] * x[lane];
                    }
                }
                let q = &mut quantized[oy * ow + ox];
                for lane in 0..LANES {
                    q[lane] = self
                        .grid
                        .quantize(sum[lane] * multiplier[lane] + offset[lane]);
                }
            }
        }
        for (lane, plane) in out.chunks_exact_mut(outputs).enumerate() {
            for (o, q) in plane.iter_mut().zip(&quantized) {
                *o = q[lane];
            }
        }
    }

    /// Convolves output rows `first_row..` (as many as `out` holds) of channels-last `input`
    /// into channels-last `out`: per band of [`BAND_ROWS`] output rows, the band's input rows
    /// are copied into a zero-padded f32 buffer, and every output position sums nine taps over
    /// its channels, [`CHANNEL_BLOCK`] at a time.
    #[inline(always)]
    fn run_channels_last_rows(&self, input: &[i8], first_row: usize, out: &mut [i8]) {
        let (h, w, s, c) = (self.height, self.width, self.stride, self.channels);
        let (_, ow) = output_size(h, w, s);
        let rows = out.len() / (ow * c);
        let (pw, zero_point, grid) = (w + 2, self.input_zero_point, self.grid);
        let mut padded = vec![0f32; ((BAND_ROWS - 1) * s + 3) * pw * c];
        for band in (0..rows).step_by(BAND_ROWS) {
            let band_rows = BAND_ROWS.min(rows - band);
            let top = (first_row + band) * s;
            for (r, row) in padded
                .chunks_exact_mut(pw * c)
                .take((band_rows - 1) * s + 3)
                .enumerate()
            {
                let Some(y) = (top + r).checked_sub(1).filter(|y| *y < h) else {
                    row.fill(0.0);
                    continue;
                };
                let (left, rest) = row.split_at_mut(c);
                let (inside, right) = rest.split_at_mut(w * c);
                left.fill(0.0);
                right.fill(0.0);
                let source = &input[y * w * c..(y + 1) * w * c];
                for (d, v) in inside.iter_mut().zip(source) {
                    *d = f32::from(*v) - zero_point;
                }
            }
            for by in 0..band_rows {
                let out_row = &mut out[(band + by) * ow * c..(band + by + 1) * ow * c];
                for (ox, position) in out_row.chunks_exact_mut(c).enumerate() {
                    let tap_at: [usize; 9] =
                        std::array::from_fn(|tap| ((by * s + tap / 3) * pw + ox * s + tap % 3) * c);
                    for start in (0..c).step_by(CHANNEL_BLOCK) {
                        let len = CHANNEL_BLOCK.min(c - start);
                        let x = |tap: usize| &padded[tap_at[tap] + start..][..len];
                        let weights = |tap: usize| &self.tap_weights[tap * c + start..][..len];
                        let sums = match nine_taps::<CHANNEL_BLOCK>(x, weights) {
                            Some(sums) => sums,
                            None => {
                                let mut sums = [0f32; CHANNEL_BLOCK];
                                for tap in 0..9 {
                                    for ((sum, x), weight) in
                                        sums.iter_mut().zip(x(tap)).zip(weights(tap))
                                    {
                                        *sum += weight * x;
                                    }
                                }
                                sums
                            }
                        };
                        let scales = self.multiplier[start..start + len]
                            .iter()
                            .zip(&self.offset[start..start + len]);
                        for ((o, sum), (m, b)) in position[start..start + len]
                            .iter_mut()
                            .zip(&sums)
                            .zip(scales)
                        {
                            *o = grid.quantize(sum * m + b);
                        }
                    }
                }
            }
        }
    }

    /// Convolves one channel at a time over a flattened padded plane.
    #[inline(always)]
    fn run_planar(&self, input: &[i8], first: usize, out: &mut [i8]) {
        let (h, w, s) = (self.height, self.width, self.stride);
        let (oh, ow) = output_size(h, w, s);
        let pw = w + 2;
        // Zero-padded planes in f32. With stride 2 the padded rows are split into an even-row
        // plane and an odd-row plane, and each row into its even then its odd columns, so that
        // every tap of every output reads one contiguous run.
        let even = pw.div_ceil(2);
        let plane_rows = if s == 1 { h + 2 } else { oh + 2 };
        let odd_plane = plane_rows * pw;
        let row_start = |padded_row: usize| match s {
            1 => padded_row * pw,
            _ => (padded_row % 2) * odd_plane + (padded_row / 2) * pw,
        };
        // Whole blocks of outputs, and spare values so the last block's taps stay in bounds.
        let n = (oh * pw).div_ceil(PLANAR_BLOCK) * PLANAR_BLOCK;
        let mut padded = vec![0f32; 2 * odd_plane + pw + PLANAR_BLOCK];
        let mut rows = vec![0i8; n];
        let zero_point = self.input_zero_point;
        for (at, c) in (first..first + out.len() / (oh * ow)).enumerate() {
            let plane = &input[c * h * w..(c + 1) * h * w];
            for y in 0..h {
                let start = row_start(y + 1);
                let row = &mut padded[start..start + pw];
                let src = &plane[y * w..(y + 1) * w];
                if s == 1 {
                    for (d, x) in row[1..=w].iter_mut().zip(src) {
                        *d = f32::from(*x) - zero_point;
                    }
                } else {
                    // Input column x is padded column x + 1: even x go to the odd half.
                    let (evens, odds) = row.split_at_mut(even);
                    let pairs = src.chunks_exact(2);
                    if let [last] = pairs.remainder() {
                        odds[w / 2] = f32::from(*last) - zero_point;
                    }
                    for ((pair, o), e) in pairs.zip(odds.iter_mut()).zip(&mut evens[1..]) {
                        *o = f32::from(pair[0]) - zero_point;
                        *e = f32::from(pair[1]) - zero_point;
                    }
                }
            }
            let taps: [f32; 9] = std::array::from_fn(|i| self.weights[c * 9 + i]);
            let (m, b) = (self.multiplier[c], self.offset[c]);
            // Position `oy * pw + ox` of `rows` is output (oy, ox); the columns past `ow`
            // of each row are discarded.
            let tap_rows: [&[f32]; 9] = std::array::from_fn(|tap| {
                let (ky, kx) = (tap / 3, tap % 3);
                let column = match (s, kx) {
                    (1, _) => kx,
                    (_, 0) => 0,
                    (_, 1) => even,
                    _ => 1,
                };
                let start = row_start(ky) + column;
                &padded[start..start + n]
            });
            // Fixed-size blocks summed in a local array: the loop vectorizes whatever the
            // compiler knows of the slices' aliasing.
            for (start, block) in rows.chunks_exact_mut(PLANAR_BLOCK).enumerate() {
                let start = start * PLANAR_BLOCK;
                let mut sums = [0f32; PLANAR_BLOCK];
                for (tap, row) in tap_rows.iter().enumerate() {
                    if let Ok(row) =
                        <&[f32; PLANAR_BLOCK]>::try_from(&row[start..start + PLANAR_BLOCK])
                    {
                        for lane in 0..PLANAR_BLOCK {
                            sums[lane] += taps[tap] * row[lane];
                        }
                    }
                }
                for (o, sum) in block.iter_mut().zip(&sums) {
                    *o = self.grid.quantize(sum * m + b);
                }
            }
            let out = &mut out[at * oh * ow..(at + 1) * oh * ow];
            for (row, o) in rows.chunks(pw).zip(out.chunks_mut(ow)) {
                o.copy_from_slice(&row[..ow]);
            }
        }
    }
}

/// `sum over taps t of weights(t)[i] * inputs(t)[i]` for `i < N`, accumulated in registers;
/// `None` unless every slice holds exactly `N` values.
#[inline(always)]
fn nine_taps<'a, const N: usize>(
    inputs: impl Fn(usize) -> &'a [f32],
    weights: impl Fn(usize) -> &'a [f32],
) -> Option<[f32; N]> {
    let mut sums = [0f32; N];
    for tap in 0..9 {
        let inputs = <&[f32; N]>::try_from(inputs(tap)).ok()?;
        let weights = <&[f32; N]>::try_from(weights(tap)).ok()?;
        for lane in 0..N {
            sums[lane] += weights[lane] * inputs[lane];
        }
    }
    Some(sums)
}

/// Output height and width of a 3x3, padding 1 convolution.
pub fn output_size(height: usize, width: usize, stride: usize) -> (usize, usize) {
    ((height - 1) / stride + 1, (width - 1) / stride + 1)
}

impl Op for DepthwiseConvI8 {
    fn name(&self) -> StaticName {
        "DepthwiseConvI8".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} channels, {}x{}, stride {}, {:?}",
            self.channels, self.height, self.width, self.stride, self.layout
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for DepthwiseConvI8 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let (h, w) = (self.height, self.width);
        ensure!(input.datum_type() == DatumType::I8 && input.len() == self.channels * h * w);
        let input = input.try_as_plain_ram()?;
        let input = input.as_slice::<i8>()?;
        let (oh, ow) = output_size(h, w, self.stride);
        let output_shape = self.layout.shape(&self.output_shape);
        output_tensor(&output_shape, |out: &mut [i8]| match self.layout {
            Layout::ChannelsFirst => {
                for_each_chunk(out, CHANNELS_PER_TASK * oh * ow, |task, out| {
                    self.run(input, task * CHANNELS_PER_TASK, out)
                })
            }
            Layout::ChannelsLast => {
                for_each_chunk(out, BAND_ROWS * ow * self.channels, |task, out| {
                    let first_row = task * BAND_ROWS;
                    if depthwise_avx2::convolve_rows(
                        &self.grouped,
                        input,
                        first_row,
                        BAND_ROWS,
                        out,
                    ) {
                        return;
                    }
                    vectorized(ChannelsLastRows {
                        op: self,
                        input,
                        first_row: task * BAND_ROWS,
                        out,
                    })
                })
            }
        })
    }
}

/// [`DepthwiseConvI8::run_channels_last_rows`], compiled per vector width.
struct ChannelsLastRows<'a> {
    op: &'a DepthwiseConvI8,
    input: &'a [i8],
    first_row: usize,
    out: &'a mut [i8],
}

impl VectorLoop for ChannelsLastRows<'_> {
    #[inline(always)]
    fn run(self) {
        self.op
            .run_channels_last_rows(self.input, self.first_row, self.out)
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

    /// The AVX2 kernels write the portable loops' values exactly: channels-last on whole and
    /// partial channel groups and rows split across bands, planar on rows off the vector
    /// width, both strides, and the extreme inputs.
    #[test]
    fn the_avx2_kernels_match_the_portable_loops_exactly() {
        if !depthwise_avx2::available() {
            eprintln!("no AVX2 and FMA on this CPU: the kernel is not used here");
            return;
        }
        let mut rng = TestRng(0x5851_f42d_4c95_7f2d);
        for (channels, height, width, stride) in [
            (8, 5, 6, 1),
            (16, 19, 11, 2),
            (13, 9, 4, 1),
            (40, 3, 21, 2),
            (3, 1, 1, 1),
            (9, 12, 80, 2),
            (10, 7, 70, 1),
            (3, 6, 33, 2),
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
                let (oh, ow) = output_size(height, width, stride);
                let params = DepthwiseParams {
                    layer: "random".into(),
                    weights: &weights,
                    weight_scales: &(0..channels)
                        .map(|_| rng.f32_in(0.001, 0.05))
                        .collect::<Vec<_>>(),
                    bias: &(0..channels)
                        .map(|_| rng.f32_in(-2.0, 2.0))
                        .collect::<Vec<_>>(),
                    input_scale: rng.f32_in(0.01, 0.1),
                    input_zero_point: if extreme { 127 } else { rng.next() as i8 },
                    output_inverse_scale: rng.f32_in(5.0, 50.0),
                    grid: OutputGrid::new(rng.f32_in(5.0, 50.0), rng.next() as u8, -6.0, 6.0),
                    stride,
                    height,
                    width,
                    output_shape: tvec![1, channels, oh, ow],
                };
                let op = DepthwiseConvI8::new(params)
                    .unwrap()
                    .with_layout(Layout::ChannelsLast);
                let mut portable = vec![0i8; oh * ow * channels];
                let mut kernel = vec![0i8; oh * ow * channels];
                let band = BAND_ROWS * ow * channels;
                for (task, out) in portable.chunks_mut(band).enumerate() {
                    op.run_channels_last_rows(&input, task * BAND_ROWS, out);
                }
                for (task, out) in kernel.chunks_mut(band).enumerate() {
                    let first_row = task * BAND_ROWS;
                    assert!(depthwise_avx2::convolve_rows(
                        &op.grouped,
                        &input,
                        first_row,
                        BAND_ROWS,
                        out
                    ));
                }
                assert_eq!(
                    kernel, portable,
                    "{channels}x{height}x{width}, stride {stride}"
                );
                let planes = |values: &[i8], positions: usize| -> Vec<i8> {
                    (0..values.len())
                        .map(|at| values[(at % positions) * channels + at / positions])
                        .collect()
                };
                let planar_input = planes(&input, height * width);
                let mut planar = vec![0i8; oh * ow * channels];
                op.run_planar(&planar_input, 0, &mut planar);
                let mut kernel = vec![0i8; oh * ow * channels];
                let (first, rest) = kernel.split_at_mut(oh * ow);
                assert!(depthwise_avx2::convolve_planes(
                    &op.grouped,
                    &planar_input,
                    0,
                    first
                ));
                assert!(depthwise_avx2::convolve_planes(
                    &op.grouped,
                    &planar_input,
                    1,
                    rest
                ));
                assert_eq!(
                    kernel, planar,
                    "planes of {channels}x{height}x{width}, stride {stride}"
                );
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
            let op = DepthwiseConvI8::new(params).unwrap();
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

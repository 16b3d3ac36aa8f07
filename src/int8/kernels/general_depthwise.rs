//! Depthwise convolution of any square kernel up to [`MAX_KERNEL`], any stride and any padding on
//! int8 tensors, channel plane by plane: the layers the 3x3 kernels of `depthwise` do not take
//! (EfficientNet's 5x5 layers, its stride-2 layers padded on one side), and the 3x3 layers' loops
//! where no kernel of their own applies.
//!
//! Two portable loops ([`PlaneLoop`]), compiled per vector width: [`LANES`] channels side by side
//! for small planes, one channel's flattened plane at a time for large ones. Products and sums
//! run in f32 on integer values (`|w| <= 127`, `|x - zero point| <= 255`, at most 49 taps, so
//! every sum stays below 2^24 and is exact on every set), then requantize as the 3x3 kernels do.

use std::borrow::Cow;

use super::{KernelSet, VectorLoop};
use crate::int8::grid::OutputGrid;

/// The largest kernel side: 49 taps keep every sum exact in f32.
pub const MAX_KERNEL: usize = 7;
/// Channels convolved side by side, one per lane.
pub const LANES: usize = 16;
/// Planes of up to this many input positions run on [`PlaneLoop::Lanes`].
pub const LANES_MAX_POSITIONS: usize = 300;
/// Outputs the planar loop sums at a time.
const PLANAR_BLOCK: usize = 64;

/// How a layer's channels are convolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaneLoop {
    /// [`LANES`] channels side by side on a zero-padded channels-last copy of their planes.
    Lanes,
    /// One channel at a time over its zero-padded plane, split into one flattened plane per
    /// stride phase so that every tap reads one contiguous run.
    Planar,
}

/// A depthwise layer's size, kernel, stride and padding (top, left, bottom, right).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DepthwiseGeometry {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: [usize; 4],
}

impl From<(usize, usize, usize, usize, usize, [usize; 4])> for DepthwiseGeometry {
    /// `(channels, height, width, kernel, stride, padding)`.
    fn from(
        (channels, height, width, kernel, stride, padding): (
            usize,
            usize,
            usize,
            usize,
            usize,
            [usize; 4],
        ),
    ) -> DepthwiseGeometry {
        DepthwiseGeometry {
            channels,
            height,
            width,
            kernel,
            stride,
            padding,
        }
    }
}

impl DepthwiseGeometry {
    /// Output height and width; `None` when the padded input is smaller than the kernel or the
    /// kernel, stride or input is empty.
    pub fn output_size(&self) -> Option<(usize, usize)> {
        let [top, left, bottom, right] = self.padding;
        let side = |length: usize, before: usize, after: usize| {
            let padded = length + before + after;
            (length > 0 && self.stride > 0 && self.kernel > 0 && padded >= self.kernel)
                .then(|| (padded - self.kernel) / self.stride + 1)
        };
        Some((
            side(self.height, top, bottom)?,
            side(self.width, left, right)?,
        ))
    }
}

/// A depthwise layer of any geometry, its weights and requantization laid out for its loop.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneralDepthwiseLayer {
    pub geometry: DepthwiseGeometry,
    output: (usize, usize),
    /// `[channels, kernel * kernel]`.
    weights: Vec<f32>,
    input_zero_point: f32,
    multiplier: Vec<f32>,
    offset: Vec<f32>,
    grid: OutputGrid,
    /// `[channels / LANES rounded up][kernel * kernel]`: the weights of each group of
    /// [`LANES`] channels (from channel `group * LANES`) as [`PlaneLoop::Lanes`] reads them.
    lane_taps: Vec<[f32; LANES]>,
    /// Each group's multipliers and offsets, lane by lane.
    lane_scales: Vec<([f32; LANES], [f32; LANES])>,
}

impl GeneralDepthwiseLayer {
    /// `weights` is `[channels, kernel, kernel]`; `multiplier` and `offset` take a channel's
    /// sum of products (zero point removed) to output steps. `None` when the geometry has no
    /// output, its kernel is over [`MAX_KERNEL`], or a slice has another length.
    pub fn new(
        geometry: DepthwiseGeometry,
        weights: &[i8],
        input_zero_point: i8,
        multiplier: Vec<f32>,
        offset: Vec<f32>,
        grid: OutputGrid,
    ) -> Option<GeneralDepthwiseLayer> {
        let output = geometry.output_size()?;
        let c = geometry.channels;
        let fits = geometry.kernel <= MAX_KERNEL
            && weights.len() == c * geometry.kernel * geometry.kernel
            && multiplier.len() == c
            && offset.len() == c;
        if !fits {
            return None;
        }
        let mut layer = GeneralDepthwiseLayer {
            geometry,
            output,
            weights: weights.iter().map(|w| f32::from(*w)).collect(),
            input_zero_point: f32::from(input_zero_point),
            multiplier,
            offset,
            grid,
            lane_taps: Vec::new(),
            lane_scales: Vec::new(),
        };
        let firsts = (0..c).step_by(LANES);
        layer.lane_taps = firsts
            .clone()
            .flat_map(|first| layer.taps_of_lanes(first))
            .collect();
        layer.lane_scales = firsts.map(|first| layer.scales_of_lanes(first)).collect();
        Some(layer)
    }

    /// The weights of channels `first..first + LANES`, tap by tap, lane by lane (0 past the
    /// last channel).
    fn taps_of_lanes(&self, first: usize) -> Vec<[f32; LANES]> {
        let taps = self.geometry.kernel * self.geometry.kernel;
        (0..taps)
            .map(|tap| {
                std::array::from_fn(|lane| {
                    self.weights
                        .get((first + lane) * taps + tap)
                        .copied()
                        .unwrap_or(0.0)
                })
            })
            .collect()
    }

    /// The multipliers and offsets of channels `first..first + LANES` (0 past the last).
    fn scales_of_lanes(&self, first: usize) -> ([f32; LANES], [f32; LANES]) {
        let lanes = |values: &[f32]| -> [f32; LANES] {
            std::array::from_fn(|lane| values.get(first + lane).copied().unwrap_or(0.0))
        };
        (lanes(&self.multiplier), lanes(&self.offset))
    }

    /// Output height and width.
    pub fn output_size(&self) -> (usize, usize) {
        self.output
    }

    /// The loop [`convolve_planes`](Self::convolve_planes) takes: [`PlaneLoop::Planar`] for
    /// planes over [`LANES_MAX_POSITIONS`], else [`PlaneLoop::Lanes`] (the faster on every x86-64
    /// set for the shipped Lite0's layers, `cargo bench --bench int8-depthwise`).
    pub fn plane_loop(&self) -> PlaneLoop {
        let g = &self.geometry;
        if g.height * g.width > LANES_MAX_POSITIONS {
            PlaneLoop::Planar
        } else {
            PlaneLoop::Lanes
        }
    }

    /// Convolves channels `first..` of channels-first `input` into `out` (as many channels as
    /// it holds).
    pub fn convolve_planes(&self, set: KernelSet, input: &[i8], first: usize, out: &mut [i8]) {
        self.convolve_planes_by(self.plane_loop(), set, input, first, out)
    }

    /// [`convolve_planes`](Self::convolve_planes) on the loop `how`; both give the same values.
    pub fn convolve_planes_by(
        &self,
        how: PlaneLoop,
        set: KernelSet,
        input: &[i8],
        first: usize,
        out: &mut [i8],
    ) {
        set.run(Planes {
            layer: self,
            how,
            input,
            first,
            out,
        })
    }

    /// Convolves one channel at a time. The zero-padded plane is split by stride phase: padded
    /// position `(py, px)` goes to phase `(py % s, px % s)` at `(py / s, px / s)`, each phase a
    /// flattened `rows x columns` plane, so that output `oy * columns + ox` of every tap
    /// `(ky, kx)` reads phase `(ky % s, kx % s)` at `(oy + ky / s) * columns + ox + kx / s`: one
    /// contiguous run per tap. The columns past the output width are computed and discarded.
    #[inline(always)]
    fn run_planar(&self, input: &[i8], first: usize, out: &mut [i8]) {
        let g = &self.geometry;
        let (h, w, k, s) = (g.height, g.width, g.kernel, g.stride);
        let [top, left, _, _] = g.padding;
        let (oh, ow) = self.output;
        let reach = (k - 1) / s;
        let (rows, columns) = (oh + reach, ow + reach);
        let phase_len = rows * columns;
        let n = (oh * columns).div_ceil(PLANAR_BLOCK) * PLANAR_BLOCK;
        let tap_at: Vec<usize> = (0..k * k)
            .map(|tap| {
                let (ky, kx) = (tap / k, tap % k);
                ((ky % s) * s + kx % s) * phase_len + (ky / s) * columns + kx / s
            })
            .collect();
        let mut padded = vec![0f32; s * s * phase_len + n];
        let mut quantized = vec![0i8; n];
        let zero_point = self.input_zero_point;
        for (at, c) in (first..first + out.len() / (oh * ow)).enumerate() {
            let plane = &input[c * h * w..(c + 1) * h * w];
            for (y, source) in plane.chunks_exact(w).enumerate() {
                let (a, row) = ((y + top) % s, (y + top) / s);
                if row >= rows {
                    break;
                }
                for b in 0..s {
                    let x0 = (b + s - left % s) % s;
                    let start = (a * s + b) * phase_len + row * columns + (x0 + left) / s;
                    let end = (a * s + b) * phase_len + (row + 1) * columns;
                    let Some(d) = padded.get_mut(start..end) else {
                        continue;
                    };
                    fill_every(d, source.get(x0..).unwrap_or_default(), s, zero_point);
                }
            }
            let weights = &self.weights[c * k * k..(c + 1) * k * k];
            let (m, b) = (self.multiplier[c], self.offset[c]);
            for (start, block) in quantized.chunks_exact_mut(PLANAR_BLOCK).enumerate() {
                let start = start * PLANAR_BLOCK;
                let mut sums = [0f32; PLANAR_BLOCK];
                for (at, weight) in tap_at.iter().zip(weights) {
                    if let Ok(x) = <&[f32; PLANAR_BLOCK]>::try_from(
                        &padded[at + start..at + start + PLANAR_BLOCK],
                    ) {
                        for lane in 0..PLANAR_BLOCK {
                            sums[lane] = multiply_add(*weight, x[lane], sums[lane]);
                        }
                    }
                }
                for (o, sum) in block.iter_mut().zip(&sums) {
                    *o = self.grid.quantize(sum * m + b);
                }
            }
            let plane_out = &mut out[at * oh * ow..(at + 1) * oh * ow];
            for (row, o) in quantized.chunks(columns).zip(plane_out.chunks_mut(ow)) {
                o.copy_from_slice(&row[..ow]);
            }
        }
    }

    /// Convolves up to [`LANES`] channels at once, each channel in one lane: their planes are
    /// copied into a zero-padded channels-last buffer, and every output position sums its taps
    /// lane-wide.
    #[inline(always)]
    fn run_planes(&self, input: &[i8], first: usize, out: &mut [i8]) {
        let g = &self.geometry;
        let (h, w, k, s) = (g.height, g.width, g.kernel, g.stride);
        let [top, left, _, _] = g.padding;
        let (oh, ow) = self.output;
        let outputs = oh * ow;
        let channels = out.len() / outputs;
        let (rows, columns) = ((oh - 1) * s + k, (ow - 1) * s + k);
        let mut padded = vec![[0f32; LANES]; rows * columns];
        let zero_point = self.input_zero_point;
        let filled_rows = h.min(rows.saturating_sub(top));
        let filled_columns = w.min(columns.saturating_sub(left));
        if channels == LANES {
            let planes: [&[i8]; LANES] =
                std::array::from_fn(|lane| &input[(first + lane) * h * w..][..h * w]);
            for y in 0..filled_rows {
                let sources: [&[i8]; LANES] =
                    std::array::from_fn(|lane| &planes[lane][y * w..][..w]);
                let start = (y + top) * columns + left;
                let Some(row) = padded.get_mut(start..start + filled_columns) else {
                    continue;
                };
                for (x, d) in row.iter_mut().enumerate() {
                    *d = std::array::from_fn(|lane| f32::from(sources[lane][x]) - zero_point);
                }
            }
        } else {
            for lane in 0..channels {
                let plane = &input[(first + lane) * h * w..][..h * w];
                for (y, source) in plane.chunks_exact(w).enumerate().take(filled_rows) {
                    let start = (y + top) * columns + left;
                    let Some(row) = padded.get_mut(start..start + filled_columns) else {
                        continue;
                    };
                    for (d, v) in row.iter_mut().zip(source) {
                        d[lane] = f32::from(*v) - zero_point;
                    }
                }
            }
        }
        let aligned = first.is_multiple_of(LANES);
        let taps = match aligned {
            true => Cow::Borrowed(&self.lane_taps[first / LANES * k * k..][..k * k]),
            false => Cow::Owned(self.taps_of_lanes(first)),
        };
        let (multiplier, offset) = match aligned {
            true => self.lane_scales[first / LANES],
            false => self.scales_of_lanes(first),
        };
        let mut quantized = vec![[0i8; LANES]; outputs];
        let sums = Sums {
            taps: &taps,
            padded: &padded,
            columns,
            stride: s,
            output: (oh, ow),
        };
        let requantize = |sum: [f32; LANES], q: &mut [i8; LANES]| {
            for lane in 0..LANES {
                q[lane] = self
                    .grid
                    .quantize(sum[lane] * multiplier[lane] + offset[lane]);
            }
        };
        match k {
            3 => sums.each(3, &mut quantized, requantize),
            5 => sums.each(5, &mut quantized, requantize),
            _ => sums.each(k, &mut quantized, requantize),
        }
        for (lane, plane) in out.chunks_exact_mut(outputs).enumerate() {
            for (o, q) in plane.iter_mut().zip(&quantized) {
                *o = q[lane];
            }
        }
    }
}

/// `a * b + c` in one fused instruction on aarch64, where every CPU has it, and as a product then
/// a sum elsewhere (a fused one would be a call where the vector set lacks it): the values here
/// are integers whose products and sums are exact in f32, so both give the same bits.
#[inline(always)]
fn multiply_add(a: f32, b: f32, c: f32) -> f32 {
    #[cfg(target_arch = "aarch64")]
    {
        a.mul_add(b, c)
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        a * b + c
    }
}

/// Writes every `step`-th value of `source` from the first, zero point removed, to `target`
/// (as many as it holds); steps 1 and 2 in loops that vectorize.
#[inline(always)]
fn fill_every(target: &mut [f32], source: &[i8], step: usize, zero_point: f32) {
    let value = |v: &i8| f32::from(*v) - zero_point;
    match step {
        1 => {
            for (d, v) in target.iter_mut().zip(source) {
                *d = value(v);
            }
        }
        2 => {
            let pairs = source.chunks_exact(2);
            let last = pairs.remainder().first();
            let whole = pairs.len();
            for (d, pair) in target.iter_mut().zip(pairs) {
                *d = value(&pair[0]);
            }
            if let (Some(d), Some(v)) = (target.get_mut(whole), last) {
                *d = value(v);
            }
        }
        _ => {
            for (d, v) in target.iter_mut().zip(source.iter().step_by(step)) {
                *d = value(v);
            }
        }
    }
}

/// The sums of every output position over a zero-padded channels-last buffer.
struct Sums<'a> {
    taps: &'a [[f32; LANES]],
    padded: &'a [[f32; LANES]],
    columns: usize,
    stride: usize,
    output: (usize, usize),
}

impl Sums<'_> {
    /// Writes each output position's requantized sums; inlined where it is called with a constant
    /// `k`, so that the taps of the kernel sizes matched on are unrolled.
    #[inline(always)]
    fn each(
        &self,
        k: usize,
        quantized: &mut [[i8; LANES]],
        requantize: impl Fn([f32; LANES], &mut [i8; LANES]),
    ) {
        let (oh, ow) = self.output;
        for oy in 0..oh {
            for ox in 0..ow {
                let mut sum = [0f32; LANES];
                for (ky, row_taps) in self.taps.chunks_exact(k).enumerate() {
                    let at = (oy * self.stride + ky) * self.columns + ox * self.stride;
                    for (x, weights) in self.padded[at..at + k].iter().zip(row_taps) {
                        for lane in 0..LANES {
                            sum[lane] = multiply_add(weights[lane], x[lane], sum[lane]);
                        }
                    }
                }
                requantize(sum, &mut quantized[oy * ow + ox]);
            }
        }
    }
}

/// [`GeneralDepthwiseLayer::run_planes`] or [`GeneralDepthwiseLayer::run_planar`], compiled per
/// vector width.
struct Planes<'a> {
    layer: &'a GeneralDepthwiseLayer,
    how: PlaneLoop,
    input: &'a [i8],
    first: usize,
    out: &'a mut [i8],
}

impl VectorLoop for Planes<'_> {
    #[inline(always)]
    fn run(self) {
        match self.how {
            PlaneLoop::Lanes => self.layer.run_planes(self.input, self.first, self.out),
            PlaneLoop::Planar => self.layer.run_planar(self.input, self.first, self.out),
        }
    }
}

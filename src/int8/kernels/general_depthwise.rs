//! Depthwise convolution of any square kernel up to [`MAX_KERNEL`], any stride and any padding on
//! int8 tensors, channel plane by plane: the layers the 3x3 kernels of `depthwise` do not take
//! (EfficientNet's 5x5 layers, its stride-2 layers padded on one side).
//!
//! One portable loop, compiled per vector width, over [`LANES`] channels side by side (these
//! layers have small planes and many channels): products and sums run in f32 on integer values
//! (`|w| <= 127`, `|x - zero point| <= 255`, at most 49 taps, so every sum stays below 2^24 and
//! is exact on every set), then requantize as the 3x3 kernels do.

use super::{KernelSet, VectorLoop};
use crate::int8::grid::OutputGrid;

/// The largest kernel side: 49 taps keep every sum exact in f32.
pub const MAX_KERNEL: usize = 7;
/// Channels convolved side by side, one per lane.
pub const LANES: usize = 16;

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
        fits.then(|| GeneralDepthwiseLayer {
            geometry,
            output,
            weights: weights.iter().map(|w| f32::from(*w)).collect(),
            input_zero_point: f32::from(input_zero_point),
            multiplier,
            offset,
            grid,
        })
    }

    /// Output height and width.
    pub fn output_size(&self) -> (usize, usize) {
        self.output
    }

    /// Convolves channels `first..` of channels-first `input` into `out` (as many channels as
    /// it holds).
    pub fn convolve_planes(&self, set: KernelSet, input: &[i8], first: usize, out: &mut [i8]) {
        set.run(Planes {
            layer: self,
            input,
            first,
            out,
        })
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
        for lane in 0..channels {
            let plane = &input[(first + lane) * h * w..(first + lane + 1) * h * w];
            for (y, source) in plane
                .chunks_exact(w)
                .enumerate()
                .take(rows.saturating_sub(top))
            {
                let row = &mut padded[(y + top) * columns..(y + top + 1) * columns];
                for (d, v) in row.iter_mut().skip(left).zip(source) {
                    d[lane] = f32::from(*v) - self.input_zero_point;
                }
            }
        }
        let lanes = |values: &[f32]| -> [f32; LANES] {
            std::array::from_fn(|lane| values.get(first + lane).copied().unwrap_or(0.0))
        };
        let taps: Vec<[f32; LANES]> = (0..k * k)
            .map(|tap| {
                std::array::from_fn(|lane| {
                    self.weights
                        .get((first + lane) * k * k + tap)
                        .copied()
                        .unwrap_or(0.0)
                })
            })
            .collect();
        let (multiplier, offset) = (lanes(&self.multiplier), lanes(&self.offset));
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
                            sum[lane] += weights[lane] * x[lane];
                        }
                    }
                }
                requantize(sum, &mut quantized[oy * ow + ox]);
            }
        }
    }
}

/// [`GeneralDepthwiseLayer::run_planes`], compiled per vector width.
struct Planes<'a> {
    layer: &'a GeneralDepthwiseLayer,
    input: &'a [i8],
    first: usize,
    out: &'a mut [i8],
}

impl VectorLoop for Planes<'_> {
    #[inline(always)]
    fn run(self) {
        self.layer.run_planes(self.input, self.first, self.out)
    }
}

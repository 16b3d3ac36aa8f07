//! Float sums of products in one fixed order of operations, one fused multiply-add per term,
//! for the stem ops ([`crate::int8::ops::stem`]): vectors run across output positions only, so
//! their width never changes a bit. The loops are written once over a [`FloatVector`] (AVX-512
//! and AVX2 on x86-64, NEON on aarch64, four plain lanes elsewhere) and run by
//! [`KernelSet::run_float`](super::KernelSet::run_float) on the set's vectors.

use super::depthwise::output_size;
use crate::int8::grid::OutputGrid;

/// Zero-padded input planes, flattened so that each tap of all outputs reads one contiguous
/// run: position `oy * row_len + ox` of a run is output `(oy, ox)`, and the columns past the
/// output width are discarded. With stride 2 the even padded rows come first, then the odd
/// ones, and each row holds its even columns, then its odd ones. The input starts at padded row
/// and column `before` (1, or 0 for padding after the input only), and zeros follow it.
pub struct PaddedPlanes {
    pub stride: usize,
    pub width: usize,
    pub before: usize,
    pub row_len: usize,
    pub even_columns: usize,
    pub odd_rows_at: usize,
    pub len: usize,
}

impl PaddedPlanes {
    /// Planes of `height x width` inputs for a 3x3 kernel at `stride`, `before` (0 or 1) padded
    /// rows and columns ahead of the input.
    pub fn new(height: usize, width: usize, stride: usize, before: usize) -> PaddedPlanes {
        let row_len = width + 2;
        let (oh, _) = output_size(height, width, stride);
        let rows = if stride == 1 { height + 2 } else { oh + 2 };
        let odd_rows_at = rows * row_len;
        PaddedPlanes {
            stride,
            width,
            before,
            row_len,
            even_columns: row_len.div_ceil(2),
            odd_rows_at,
            len: 2 * odd_rows_at + row_len,
        }
    }

    pub fn row_at(&self, padded_row: usize) -> usize {
        match self.stride {
            1 => padded_row * self.row_len,
            _ => (padded_row % 2) * self.odd_rows_at + (padded_row / 2) * self.row_len,
        }
    }

    /// Copies the planes of `source` into their padded places in `target`, row by row on `V`'s
    /// vectors.
    #[inline(always)]
    pub fn fill<V: FloatVector>(&self, source: &[f32], target: &mut [f32]) {
        let w = self.width;
        for (y, source) in source.chunks_exact(w).enumerate() {
            let at = self.row_at(y + self.before);
            let row = &mut target[at..at + self.row_len];
            if self.stride == 1 {
                copy_run::<V>(source, &mut row[self.before..self.before + w]);
            } else {
                // Input column x is padded column x + before: the even x go to the odd half
                // when `before` is 1, to the even half when it is 0.
                let (evens, odds) = row.split_at_mut(self.even_columns);
                let (even_x, odd_x) = match self.before {
                    1 => (odds, &mut evens[1..]),
                    _ => (evens, odds),
                };
                let pairs = source.chunks_exact(2);
                if let [last] = pairs.remainder() {
                    even_x[w / 2] = *last;
                }
                for ((pair, e), o) in pairs.zip(even_x.iter_mut()).zip(odd_x.iter_mut()) {
                    *e = pair[0];
                    *o = pair[1];
                }
            }
        }
    }

    /// Where the run of tap `(ky, kx)` starts.
    pub fn tap_start(&self, tap: usize) -> usize {
        let (ky, kx) = (tap / 3, tap % 3);
        let column = match (self.stride, kx) {
            (1, _) => kx,
            (_, 0) => 0,
            (_, 1) => self.even_columns,
            _ => 1,
        };
        self.row_at(ky) + column
    }
}

/// Copies `source` into `target`, of the same length, with `V`'s loads and stores: the rows of a
/// stem layer are short, and this copies them without a call.
#[inline(always)]
pub fn copy_run<V: FloatVector>(source: &[f32], target: &mut [f32]) {
    let len = source.len().min(target.len());
    let (from, to) = (source.as_ptr(), target.as_mut_ptr());
    let fours = len / (4 * V::LANES) * (4 * V::LANES);
    for at in (0..fours).step_by(4 * V::LANES) {
        // SAFETY: `at + 4 * LANES <= fours <= len`, inside both slices.
        unsafe {
            let v: [V; 4] = std::array::from_fn(|i| V::load(from.add(at + i * V::LANES)));
            for (i, v) in v.into_iter().enumerate() {
                v.store(to.add(at + i * V::LANES));
            }
        }
    }
    let whole = len / V::LANES * V::LANES;
    for at in (fours..whole).step_by(V::LANES) {
        // SAFETY: `at + LANES <= whole <= len`, inside both slices.
        unsafe { V::load(from.add(at)).store(to.add(at)) };
    }
    for (t, s) in target[whole..len].iter_mut().zip(&source[whole..len]) {
        *t = *s;
    }
}

/// Most output channels that share the input vectors they read in [`sum_positions`].
pub const SHARED_CHANNELS: usize = 8;

/// Vectors that [`sum_channel_positions`] sums at a time.
const CHANNEL_VECTORS: usize = 8;

/// A vector of f32 lanes for the fixed-order sums.
pub trait FloatVector: Copy {
    /// Lanes of one vector.
    const LANES: usize;
    /// Vectors per channel summed at a time when [`SHARED_CHANNELS`] channels share the inputs
    /// (what the architecture's registers hold), 1 to 3.
    const SHARED_VECTORS: usize;
    /// Zero in every lane.
    fn zero() -> Self;
    /// `value` in every lane.
    fn splat(value: f32) -> Self;
    /// # Safety
    /// `at` points at `LANES` values.
    unsafe fn load(at: *const f32) -> Self;
    /// # Safety
    /// `at` points at room for `LANES` values.
    unsafe fn store(self, at: *mut f32);
    /// `weight * x + self` rounded once (a fused multiply-add), lane by lane.
    fn mul_add(self, weight: Self, x: Self) -> Self;
    /// `self + other`, lane by lane.
    fn add(self, other: Self) -> Self;
    /// [`f32::max`] lane by lane (a NaN lane of `self` takes `other`'s value).
    fn max(self, other: Self) -> Self;
    /// [`f32::min`] lane by lane (a NaN lane of `self` takes `other`'s value).
    fn min(self, other: Self) -> Self;
    /// Each of `weights` in every lane of its own vector ([`FloatVector::splat`] of each), as
    /// the architecture reads them best.
    #[inline(always)]
    fn splat_each<const C: usize>(weights: &[f32; C]) -> [Self; C] {
        std::array::from_fn(|c| Self::splat(weights[c]))
    }
    /// `out[i] = grid.quantize(values[i] * scale)` for every `i` of the shorter slice.
    #[inline(always)]
    fn quantize_run(values: &[f32], scale: f32, grid: OutputGrid, out: &mut [i8]) {
        for (o, v) in out.iter_mut().zip(values) {
            *o = grid.quantize(v * scale);
        }
    }
}

/// A loop that [`KernelSet::run_float`](super::KernelSet::run_float) runs on one
/// [`FloatVector`], compiled with that vector's target features: `run` must be
/// `#[inline(always)]`.
pub trait FloatLoop {
    fn run<V: FloatVector>(self);
}

/// Four plain lanes: [`f32::mul_add`] rounds once on every CPU (in software where it has no
/// fused multiply-add).
#[derive(Clone, Copy)]
pub struct PlainLanes([f32; 4]);

impl FloatVector for PlainLanes {
    const LANES: usize = 4;
    const SHARED_VECTORS: usize = 2;

    #[inline(always)]
    fn zero() -> Self {
        PlainLanes([0.0; 4])
    }

    #[inline(always)]
    fn splat(value: f32) -> Self {
        PlainLanes([value; 4])
    }

    #[inline(always)]
    unsafe fn load(at: *const f32) -> Self {
        PlainLanes(at.cast::<[f32; 4]>().read_unaligned())
    }

    #[inline(always)]
    unsafe fn store(self, at: *mut f32) {
        at.cast::<[f32; 4]>().write_unaligned(self.0)
    }

    #[inline(always)]
    fn mul_add(self, weight: Self, x: Self) -> Self {
        PlainLanes(std::array::from_fn(|lane| {
            weight.0[lane].mul_add(x.0[lane], self.0[lane])
        }))
    }

    #[inline(always)]
    fn add(self, other: Self) -> Self {
        PlainLanes(std::array::from_fn(|lane| self.0[lane] + other.0[lane]))
    }

    #[inline(always)]
    fn max(self, other: Self) -> Self {
        PlainLanes(std::array::from_fn(|lane| self.0[lane].max(other.0[lane])))
    }

    #[inline(always)]
    fn min(self, other: Self) -> Self {
        PlainLanes(std::array::from_fn(|lane| self.0[lane].min(other.0[lane])))
    }
}

/// The sums of `C` output channels over `N` vectors of consecutive positions, the channels
/// sharing each input vector: lane `p` of `sums[c][n]` is `fma(w[t-1], x[t-1], ... fma(w[0],
/// x[0], 0))` with `w[t] = weights[t][c]` and `x[t]` the value at `inputs(t) + n * LANES + p`.
///
/// # Safety
/// `inputs(t)` points at `N * V::LANES` values for each term `t`.
#[inline(always)]
unsafe fn channel_sums<V: FloatVector, const C: usize, const N: usize>(
    weights: &[[f32; C]],
    inputs: &impl Fn(usize) -> *const f32,
) -> [[V; N]; C] {
    let mut sums = [[V::zero(); N]; C];
    let (pairs, last) = weights.as_chunks::<2>();
    for (pair, [first, second]) in pairs.iter().enumerate() {
        add_term(&mut sums, first, inputs(2 * pair));
        add_term(&mut sums, second, inputs(2 * pair + 1));
    }
    if let [weights] = last {
        add_term(&mut sums, weights, inputs(2 * pairs.len()));
    }
    sums
}

/// One term of [`channel_sums`]: `weights[c]` times the `N` vectors at `at`, added to
/// `sums[c]`.
///
/// # Safety
/// `at` points at `N * V::LANES` values.
#[inline(always)]
unsafe fn add_term<V: FloatVector, const C: usize, const N: usize>(
    sums: &mut [[V; N]; C],
    weights: &[f32; C],
    at: *const f32,
) {
    let x: [V; N] = std::array::from_fn(|n| V::load(at.add(n * V::LANES)));
    for (sum, weight) in sums.iter_mut().zip(V::splat_each(weights)) {
        for (s, x) in sum.iter_mut().zip(&x) {
            *s = s.mul_add(weight, *x);
        }
    }
}

/// Where [`sum_positions`] writes channel `c`'s sums: position `p` at `out(c) + p`, as `sum +
/// bias[c]`, then clipped to `clip` when it is set.
pub struct Finish<'a, O: Fn(usize) -> *mut f32> {
    pub bias: &'a [f32],
    pub clip: Option<(f32, f32)>,
    pub out: O,
}

impl<O: Fn(usize) -> *mut f32> Finish<'_, O> {
    /// The biases of channels `0..C` and the clip in vectors, made once per [`sum_positions`].
    #[inline(always)]
    fn vectors<V: FloatVector, const C: usize>(&self) -> FinishVectors<V, C> {
        FinishVectors {
            bias: std::array::from_fn(|c| V::splat(self.bias[c])),
            clip: self.clip.map(|(low, high)| (V::splat(low), V::splat(high))),
        }
    }

    /// # Safety
    /// `out(c) + p` points at room for `V::LANES` values.
    #[inline(always)]
    unsafe fn vector<V: FloatVector, const C: usize>(
        &self,
        vectors: &FinishVectors<V, C>,
        c: usize,
        p: usize,
        sum: V,
    ) {
        let mut value = sum.add(vectors.bias[c]);
        if let Some((low, high)) = vectors.clip {
            value = value.max(low).min(high);
        }
        value.store((self.out)(c).add(p));
    }

    /// # Safety
    /// `out(c) + p` points at room for a value.
    #[inline(always)]
    unsafe fn value(&self, c: usize, p: usize, sum: f32) {
        let mut value = sum + self.bias[c];
        if let Some((low, high)) = self.clip {
            value = value.max(low).min(high);
        }
        *(self.out)(c).add(p) = value;
    }
}

/// A [`Finish`]'s bias of `C` channels and clip in vectors.
struct FinishVectors<V, const C: usize> {
    bias: [V; C],
    clip: Option<(V, V)>,
}

/// Sums positions `0..len` of `C` output channels in fixed order ([`channel_sums`]; `weights`
/// term by term, `[terms][C]`), `N` vectors per channel at a time, then one vector, then lane
/// by lane, with `inputs(t)` the position 0 of term `t`, and writes them as `finish` says.
///
/// # Safety
/// `inputs(t)` points at `len` values for each term `t`; `(finish.out)(c)` at room for `len`
/// values for each channel `c`.
#[inline(always)]
pub unsafe fn sum_positions<V: FloatVector, const C: usize, const N: usize, O>(
    weights: &[[f32; C]],
    len: usize,
    inputs: impl Fn(usize) -> *const f32,
    finish: &Finish<'_, O>,
) where
    O: Fn(usize) -> *mut f32,
{
    let vectors = finish.vectors::<V, C>();
    let mut first = 0;
    while first + N * V::LANES <= len {
        let sums = channel_sums::<V, C, N>(weights, &|t| inputs(t).add(first));
        for (c, sum) in sums.iter().enumerate() {
            for (n, v) in sum.iter().enumerate() {
                finish.vector(&vectors, c, first + n * V::LANES, *v);
            }
        }
        first += N * V::LANES;
    }
    while first + V::LANES <= len {
        let sums = channel_sums::<V, C, 1>(weights, &|t| inputs(t).add(first));
        for (c, [v]) in sums.iter().enumerate() {
            finish.vector(&vectors, c, first, *v);
        }
        first += V::LANES;
    }
    for p in first..len {
        for c in 0..C {
            let mut sum = 0f32;
            for (t, w) in weights.iter().enumerate() {
                sum = w[c].mul_add(*inputs(t).add(p), sum);
            }
            finish.value(c, p, sum);
        }
    }
}

/// [`sum_positions`] with [`SHARED_CHANNELS`] channels and the vectors per channel that `V`'s
/// registers hold.
///
/// # Safety
/// As [`sum_positions`].
#[inline(always)]
pub unsafe fn sum_shared_positions<V: FloatVector, O: Fn(usize) -> *mut f32>(
    weights: &[[f32; SHARED_CHANNELS]],
    len: usize,
    inputs: impl Fn(usize) -> *const f32,
    finish: &Finish<'_, O>,
) {
    match V::SHARED_VECTORS {
        1 => sum_positions::<V, SHARED_CHANNELS, 1, O>(weights, len, inputs, finish),
        2 => sum_positions::<V, SHARED_CHANNELS, 2, O>(weights, len, inputs, finish),
        _ => sum_positions::<V, SHARED_CHANNELS, 3, O>(weights, len, inputs, finish),
    }
}

/// [`sum_positions`] for one channel (`weights` its terms), [`CHANNEL_VECTORS`] vectors at a
/// time. Nine terms (a depthwise 3x3 channel) are compiled apart, so that their weights and
/// input offsets stay in registers across positions.
///
/// # Safety
/// As [`sum_positions`].
#[inline(always)]
pub unsafe fn sum_channel_positions<V: FloatVector, O: Fn(usize) -> *mut f32>(
    weights: &[f32],
    len: usize,
    inputs: impl Fn(usize) -> *const f32,
    finish: &Finish<'_, O>,
) {
    let (weights, _) = weights.as_chunks::<1>();
    if let Ok(nine) = <&[[f32; 1]; 9]>::try_from(weights) {
        let offsets: [*const f32; 9] = std::array::from_fn(&inputs);
        let inputs = |t: usize| offsets[t];
        return sum_positions::<V, 1, CHANNEL_VECTORS, O>(nine, len, inputs, finish);
    }
    sum_positions::<V, 1, CHANNEL_VECTORS, O>(weights, len, inputs, finish)
}

/// The weights of every whole block of [`SHARED_CHANNELS`] channels, block by block and term by
/// term (`[blocks][terms]`), as [`sum_shared_positions`] reads them: `weights` holds `terms`
/// values per channel. Made once, when a layer is built.
pub fn shared_blocks(weights: &[f32], terms: usize) -> Vec<[f32; SHARED_CHANNELS]> {
    let blocks = weights.len() / terms.max(1) / SHARED_CHANNELS;
    (0..blocks * terms)
        .map(|at| {
            let (block, term) = (at / terms, at % terms);
            std::array::from_fn(|c| weights[(block * SHARED_CHANNELS + c) * terms + term])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::int8::kernels::KernelSet;

    /// [`FloatVector::quantize_run`] on one set's vectors.
    struct QuantizeRun<'a> {
        values: &'a [f32],
        scale: f32,
        grid: OutputGrid,
        out: &'a mut [i8],
    }

    impl FloatLoop for QuantizeRun<'_> {
        #[inline(always)]
        fn run<V: FloatVector>(self) {
            V::quantize_run(self.values, self.scale, self.grid, self.out)
        }
    }

    /// Every set quantizes a run as [`OutputGrid::quantize`] does value by value: ties (to
    /// even), both clips, NaN (to the lowest step), infinities, signed zeros, whole vectors and
    /// a tail.
    #[test]
    fn quantized_runs_match_the_grid_on_every_set() {
        let specials = [
            0.5,
            1.5,
            2.5,
            -0.5,
            -1.5,
            0.0,
            -0.0,
            1e9,
            -1e9,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            127.49,
            127.5,
            -128.5,
            3.25,
        ];
        let values: Vec<f32> = (0..53)
            .map(|i| specials[i % specials.len()] + (i / specials.len()) as f32 * 7.0)
            .collect();
        for (scale, grid) in [
            (
                1.0,
                OutputGrid::new(1.0, 128, f32::NEG_INFINITY, f32::INFINITY),
            ),
            (0.5, OutputGrid::new(4.0, 3, 0.0, 6.0)),
            (3.0, OutputGrid::new(20.0, 250, -6.0, 6.0)),
        ] {
            let expected: Vec<i8> = values.iter().map(|v| grid.quantize(v * scale)).collect();
            for kernels in KernelSet::runnable() {
                let mut out = vec![0i8; values.len()];
                kernels.run_float(QuantizeRun {
                    values: &values,
                    scale,
                    grid,
                    out: &mut out,
                });
                assert_eq!(out, expected, "{kernels}, scale {scale}");
            }
        }
    }
}

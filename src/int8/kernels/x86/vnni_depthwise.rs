//! The depthwise layers of the x86-64 AVX-512 VNNI sets ([`TripleDepthwise`]): `vpdpbusd`
//! multiplies the triples' unsigned bytes (the input plus 128) by the signed weights and sums
//! four products into each 32-bit lane, so sixteen channels of an output (channels-last) or
//! sixteen outputs of a plane take three instructions; the sums start at `-(zero_point + 128) *
//! sum(weights)`. With VBMI (`x86-avx512-vnni-vbmi`) one `vpermb` per kernel row gathers the
//! triples from the padded input rows in registers; without it they are laid out in memory.

use std::arch::x86_64::*;

use crate::int8::kernels::triple_depthwise::{Scratch, TripleDepthwise, GROUP, TRIPLES};
use crate::int8::kernels::KernelSet;

/// Convolves output rows `first_row..` (as many as `out` holds) of channels-last `input` into
/// channels-last `out`, `band_rows` output rows at a time, on the AVX-512 VNNI set; `false`,
/// with nothing written, for another set or a shape the layer refuses.
pub fn convolve_rows_dot(
    set: KernelSet,
    layer: &TripleDepthwise,
    input: &[i8],
    first_row: usize,
    band_rows: usize,
    out: &mut [i8],
) -> bool {
    if set.has_avx512_vbmi() {
        return layer.for_each_band(input, first_row, band_rows, out, |first, out, scratch| {
            // SAFETY: a set with VBMI exists only on a CPU with AVX-512 F, BW, VNNI and VBMI;
            // the band fits the layer.
            unsafe { convolve_band_gathered(layer, input, first, out, scratch) }
        });
    }
    set.has_avx512_vnni()
        && layer.for_each_band(input, first_row, band_rows, out, |first, out, scratch| {
            // SAFETY: a set with AVX-512 VNNI exists only on a CPU with AVX-512 F, BW and
            // VNNI; the band fits the layer and the scratch its sizes.
            unsafe { convolve_band(layer, input, first, out, scratch) }
        })
}

/// For `vpermb`, each channel's three taps of a kernel row from three consecutive padded
/// channels-last columns of sixteen channels (48 bytes): byte `4 i + k` of a group of triples is
/// byte `16 k + i` (`k < 3`; the fourth meets a zero weight).
const COLUMN_TAPS: [u8; TRIPLES] = {
    let mut index = [0u8; TRIPLES];
    let mut j = 0;
    while j < TRIPLES {
        if j % 4 < 3 {
            index[j] = (16 * (j % 4) + j / 4) as u8;
        }
        j += 1;
    }
    index
};

/// For `vpermb`, the three taps of sixteen consecutive outputs of a padded plane row: byte `4 i
/// + k` of a group of triples is byte `stride * i + k` (`k < 3`).
const fn plane_taps(stride: usize) -> [u8; TRIPLES] {
    let mut index = [0u8; TRIPLES];
    let mut j = 0;
    while j < TRIPLES {
        if j % 4 < 3 {
            index[j] = (stride * (j / 4) + j % 4) as u8;
        }
        j += 1;
    }
    index
}

/// [`convolve_band`] with each output's triples gathered from the band's padded input rows by
/// `vpermb` as they are summed, instead of laid out in memory first.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi")]
unsafe fn convolve_band_gathered(
    layer: &TripleDepthwise,
    input: &[i8],
    first_row: usize,
    out: &mut [i8],
    scratch: &mut Scratch,
) {
    let (c, s, ow, pw) = (
        layer.channels,
        layer.stride,
        layer.output_width(),
        layer.width + 2,
    );
    let input_rows = layer.band_input_rows(out.len() / (ow * c));
    let row_len = pw * GROUP;
    let band = &mut scratch.triples;
    band.resize(band.len().max(input_rows * row_len + TRIPLES), 0);
    let quantizer = Quantizer::new(layer);
    let gather = _mm512_loadu_si512(COLUMN_TAPS.as_ptr().cast());
    for group in 0..c.div_ceil(GROUP) {
        let lanes = GROUP.min(c - group * GROUP);
        for r in 0..input_rows {
            let y = layer.input_row(first_row, r);
            let row = &mut band[r * row_len..(r + 1) * row_len];
            fill_padded_row(layer, input, y, (group, lanes), row);
        }
        let at = group * GROUP;
        let sums = RowSums::of_group(layer, group);
        for (oy, out_row) in out.chunks_exact_mut(ow * c).enumerate() {
            let kernel_rows: [*const i8; 3] =
                std::array::from_fn(|ky| band.as_ptr().add((oy * s + ky) * row_len));
            for ox in 0..ow {
                let sum = sums.of(|ky| {
                    let columns = _mm512_loadu_si512(kernel_rows[ky].add(ox * s * GROUP).cast());
                    _mm512_permutexvar_epi8(gather, columns)
                });
                let target = out_row.as_mut_ptr().add(ox * c + at);
                store_quantized(sum, sums.scales, &quantizer, target, lanes);
            }
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn convolve_band(
    layer: &TripleDepthwise,
    input: &[i8],
    first_row: usize,
    out: &mut [i8],
    scratch: &mut Scratch,
) {
    let (c, s, ow) = (layer.channels, layer.stride, layer.output_width());
    let input_rows = layer.band_input_rows(out.len() / (ow * c));
    let Scratch {
        triples,
        padded_row,
    } = scratch;
    let quantizer = Quantizer::new(layer);
    for group in 0..c.div_ceil(GROUP) {
        let lanes = GROUP.min(c - group * GROUP);
        for r in 0..input_rows {
            let y = layer.input_row(first_row, r);
            let row = &mut triples[r * ow * TRIPLES..(r + 1) * ow * TRIPLES];
            fill_triples(layer, input, y, (group, lanes), padded_row, row);
        }
        let at = group * GROUP;
        let sums = RowSums::of_group(layer, group);
        for (oy, out_row) in out.chunks_exact_mut(ow * c).enumerate() {
            let kernel_rows: [*const i8; 3] =
                std::array::from_fn(|ky| triples.as_ptr().add((oy * s + ky) * ow * TRIPLES));
            for ox in 0..ow {
                let sum =
                    sums.of(|ky| _mm512_loadu_si512(kernel_rows[ky].add(ox * TRIPLES).cast()));
                let target = out_row.as_mut_ptr().add(ox * c + at);
                store_quantized(sum, sums.scales, &quantizer, target, lanes);
            }
        }
    }
}

/// Lays out input row `y` (padding where `None`) of channel group `group` (`lanes` channels) as
/// triples of unsigned bytes: for each output column `ox`, the channels' bytes at input columns
/// `ox * stride - 1 ..= ox * stride + 1`, plus 128, four channels per 16 bytes. Bytes of
/// channels past `lanes` are left as they were: they meet zero weights.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn fill_triples(
    layer: &TripleDepthwise,
    input: &[i8],
    y: Option<usize>,
    (group, lanes): (usize, usize),
    padded_row: &mut [i8],
    target: &mut [i8],
) {
    fill_padded_row(layer, input, y, (group, lanes), padded_row);
    store_row_triples(layer, padded_row, target);
}

/// Copies input row `y` (padding where `None`) of channel group `group` (`lanes` channels) into
/// `padded_row` as unsigned bytes, [`GROUP`] channels per column, with a padding column on each
/// side: `width + 2` columns holding the input plus 128, the zero point's where padded. Bytes of
/// channels past `lanes` are left as they were: they meet zero weights.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn fill_padded_row(
    layer: &TripleDepthwise,
    input: &[i8],
    y: Option<usize>,
    (group, lanes): (usize, usize),
    padded_row: &mut [i8],
) {
    let (w, c) = (layer.width, layer.channels);
    let pad = unsigned_bits(layer.input_zero_point);
    let Some(y) = y else {
        padded_row[..(w + 2) * GROUP].fill(pad);
        return;
    };
    padded_row[..GROUP].fill(pad);
    padded_row[(w + 1) * GROUP..(w + 2) * GROUP].fill(pad);
    let flip = _mm_set1_epi8(i8::MIN);
    for x in 0..w {
        let source = input.as_ptr().add((y * w + x) * c + group * GROUP);
        let slot = padded_row.as_mut_ptr().add((x + 1) * GROUP);
        if lanes == GROUP {
            let values = _mm_loadu_si128(source.cast());
            _mm_storeu_si128(slot.cast(), _mm_xor_si128(values, flip));
        } else {
            for lane in 0..lanes {
                *slot.add(lane) = unsigned_bits(*source.add(lane));
            }
        }
    }
}

/// Lays out a padded channels-last row (`width + 2` slots of [`GROUP`] channels) as triples,
/// one per output column.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn store_row_triples(layer: &TripleDepthwise, padded_row: &[i8], target: &mut [i8]) {
    let column = |x: usize| _mm_loadu_si128(padded_row.as_ptr().add(x * GROUP).cast());
    for ox in 0..layer.output_width() {
        let x = ox * layer.stride;
        let (left, middle, right) = (column(x), column(x + 1), column(x + 2));
        store_triples(left, middle, right, target.as_mut_ptr().add(ox * TRIPLES));
    }
}

/// Convolves channels `first..` (as many as `out` holds, plane after plane) of channels-first
/// `input` on the AVX-512 VNNI set, sixteen outputs of a row at a time; `false`, with nothing
/// written, for another set or a shape the layer refuses.
pub fn convolve_planes_dot(
    set: KernelSet,
    layer: &TripleDepthwise,
    input: &[i8],
    first: usize,
    out: &mut [i8],
) -> bool {
    if set.has_avx512_vbmi() {
        return layer.for_each_plane(input, first, out, |channel, plane, out, scratch| {
            // SAFETY: as in `convolve_rows_dot`.
            unsafe { convolve_plane_gathered(layer, channel, plane, scratch, out) }
        });
    }
    set.has_avx512_vnni()
        && layer.for_each_plane(input, first, out, |channel, plane, out, scratch| {
            // SAFETY: as in `convolve_rows_dot`.
            unsafe { convolve_plane(layer, channel, plane, scratch, out) }
        })
}

/// [`convolve_plane`] with the triples of sixteen outputs gathered from the padded input rows by
/// `vpermb` as they are summed. The padded rows hold the zero point at columns 0 and `width + 1`;
/// bytes past them reach only outputs past the row's end, which are not stored.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi")]
unsafe fn convolve_plane_gathered(
    layer: &TripleDepthwise,
    channel: usize,
    plane: &[i8],
    scratch: &mut Scratch,
    out: &mut [i8],
) {
    let (h, w, s, ow) = (
        layer.height,
        layer.width,
        layer.stride,
        layer.output_width(),
    );
    let pw = w + 2;
    let rows = &mut scratch.triples;
    rows.resize(rows.len().max((h + 2) * pw + TRIPLES), 0);
    let pad = unsigned_bits(layer.input_zero_point);
    rows[..pw].fill(pad);
    rows[(h + 1) * pw..(h + 2) * pw].fill(pad);
    let flip = _mm_set1_epi8(i8::MIN);
    for (y, source) in plane.chunks_exact(w).enumerate() {
        let row = &mut rows[(y + 1) * pw..(y + 2) * pw];
        row[0] = pad;
        row[w + 1] = pad;
        let mut x = 0;
        while x + GROUP <= w {
            let values = _mm_loadu_si128(source.as_ptr().add(x).cast());
            _mm_storeu_si128(
                row.as_mut_ptr().add(x + 1).cast(),
                _mm_xor_si128(values, flip),
            );
            x += GROUP;
        }
        for (d, v) in row[x + 1..=w].iter_mut().zip(&source[x..]) {
            *d = unsigned_bits(*v);
        }
    }
    let taps = match s {
        1 => plane_taps(1),
        _ => plane_taps(2),
    };
    let gather = _mm512_loadu_si512(taps.as_ptr().cast());
    let sums = RowSums::of_channel(layer, channel);
    let quantizer = Quantizer::new(layer);
    for (oy, out_row) in out.chunks_exact_mut(ow).enumerate() {
        let kernel_rows: [*const i8; 3] =
            std::array::from_fn(|ky| rows.as_ptr().add((oy * s + ky) * pw));
        for ox in (0..ow).step_by(GROUP) {
            let sum = sums.of(|ky| {
                let columns = _mm512_loadu_si512(kernel_rows[ky].add(ox * s).cast());
                _mm512_permutexvar_epi8(gather, columns)
            });
            let target = out_row.as_mut_ptr().add(ox);
            store_quantized(sum, sums.scales, &quantizer, target, GROUP.min(ow - ox));
        }
    }
}

/// One channel's plane. The padded row holds the zero point at columns 0 and `width + 1`; its
/// bytes past them reach only outputs past the row's end, which are not stored.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn convolve_plane(
    layer: &TripleDepthwise,
    channel: usize,
    plane: &[i8],
    scratch: &mut Scratch,
    out: &mut [i8],
) {
    let (w, s, ow) = (layer.width, layer.stride, layer.output_width());
    let row_len = layer.plane_row_len();
    let Scratch {
        triples,
        padded_row,
    } = scratch;
    let pad = unsigned_bits(layer.input_zero_point);
    let even_then_odd = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    let split = |at: *const i8| {
        let (a, b) = (
            _mm_shuffle_epi8(_mm_loadu_si128(at.cast()), even_then_odd),
            _mm_shuffle_epi8(_mm_loadu_si128(at.add(16).cast()), even_then_odd),
        );
        (_mm_unpacklo_epi64(a, b), _mm_unpackhi_epi64(a, b))
    };
    for r in 0..layer.height + 2 {
        if (1..=layer.height).contains(&r) {
            padded_row[0] = pad;
            for (d, v) in padded_row[1..=w].iter_mut().zip(&plane[(r - 1) * w..r * w]) {
                *d = unsigned_bits(*v);
            }
            padded_row[w + 1] = pad;
        } else {
            padded_row[..w + 2].fill(pad);
        }
        let row = triples.as_mut_ptr().add(r * row_len);
        let source = padded_row.as_ptr();
        for block in 0..ow.div_ceil(GROUP) {
            let ox = block * GROUP;
            let (left, middle, right) = if s == 1 {
                let at = source.add(ox);
                let load = |x: usize| _mm_loadu_si128(at.add(x).cast());
                (load(0), load(1), load(2))
            } else {
                let (evens, odds) = split(source.add(2 * ox));
                (evens, odds, split(source.add(2 * ox + 2)).0)
            };
            store_triples(left, middle, right, row.add(block * TRIPLES));
        }
    }
    let sums = RowSums::of_channel(layer, channel);
    let quantizer = Quantizer::new(layer);
    for (oy, out_row) in out.chunks_exact_mut(ow).enumerate() {
        let kernel_rows: [*const i8; 3] =
            std::array::from_fn(|ky| triples.as_ptr().add((oy * s + ky) * row_len));
        for block in 0..ow.div_ceil(GROUP) {
            let sum = sums.of(|ky| _mm512_loadu_si512(kernel_rows[ky].add(block * TRIPLES).cast()));
            let ox = block * GROUP;
            let target = out_row.as_mut_ptr().add(ox);
            store_quantized(sum, sums.scales, &quantizer, target, GROUP.min(ow - ox));
        }
    }
}

/// The bits of the unsigned byte `vpdpbusd` reads for an input byte: the value plus 128.
fn unsigned_bits(value: i8) -> i8 {
    value ^ i8::MIN
}

/// The constants of sixteen lanes' sums: a channel group's (channels-last) or one channel's
/// (planes) weights per kernel row, its start `-(zero_point + 128) * sum(weights)` and its
/// requantization scales.
struct RowSums {
    weights: [__m512i; 3],
    start: __m512i,
    scales: (__m512, __m512),
}

impl RowSums {
    /// Channel group `group`'s sixteen channels.
    #[target_feature(enable = "avx512f")]
    unsafe fn of_group(layer: &TripleDepthwise, group: usize) -> RowSums {
        let at = group * GROUP;
        let sums = _mm512_loadu_si512(layer.weight_sums.as_ptr().add(at).cast());
        let start_factor = _mm512_set1_epi32(-(i32::from(layer.input_zero_point) + 128));
        RowSums {
            weights: std::array::from_fn(|ky| {
                let at = (group * 3 + ky) * TRIPLES;
                _mm512_loadu_si512(layer.weights.as_ptr().add(at).cast())
            }),
            start: _mm512_mullo_epi32(sums, start_factor),
            scales: (
                _mm512_loadu_ps(layer.multiplier.as_ptr().add(at)),
                _mm512_loadu_ps(layer.offset.as_ptr().add(at)),
            ),
        }
    }

    /// Channel `channel`, in every lane.
    #[target_feature(enable = "avx512f")]
    unsafe fn of_channel(layer: &TripleDepthwise, channel: usize) -> RowSums {
        let start = -(i32::from(layer.input_zero_point) + 128) * layer.weight_sums[channel];
        RowSums {
            weights: std::array::from_fn(|ky| {
                let at = layer.plane_weights.as_ptr().add((channel * 3 + ky) * 16);
                _mm512_broadcast_i32x4(_mm_loadu_si128(at.cast()))
            }),
            start: _mm512_set1_epi32(start),
            scales: (
                _mm512_set1_ps(layer.multiplier[channel]),
                _mm512_set1_ps(layer.offset[channel]),
            ),
        }
    }

    /// The sums of the triples `x(ky)` of the three kernel rows.
    #[target_feature(enable = "avx512f,avx512vnni")]
    #[inline]
    fn of(&self, x: impl Fn(usize) -> __m512i) -> __m512i {
        let mut sum = self.start;
        for (ky, weights) in self.weights.iter().enumerate() {
            sum = _mm512_dpbusd_epi32(sum, x(ky), *weights);
        }
        sum
    }
}

/// A layer's output grid in vectors.
struct Quantizer {
    low: __m512,
    high: __m512,
    zero_point: __m512i,
}

impl Quantizer {
    #[target_feature(enable = "avx512f")]
    fn new(layer: &TripleDepthwise) -> Quantizer {
        let grid = &layer.grid;
        Quantizer {
            low: _mm512_set1_ps(grid.low),
            high: _mm512_set1_ps(grid.high),
            zero_point: _mm512_set1_epi32(i32::from(grid.zero_point)),
        }
    }
}

/// Stores the first `lanes` of `grid.quantize(sum * multiplier + offset)` at `target`:
/// multiplied, then added, then clamped with NaN going to `low`, then rounded to the nearest,
/// ties to even, as [`crate::int8::grid::OutputGrid::quantize`] does.
///
/// # Safety
/// `target` points at room for `lanes <= 16` bytes.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn store_quantized(
    sum: __m512i,
    (multiplier, offset): (__m512, __m512),
    quantizer: &Quantizer,
    target: *mut i8,
    lanes: usize,
) {
    let steps = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(sum), multiplier), offset);
    let clamped = _mm512_min_ps(_mm512_max_ps(steps, quantizer.low), quantizer.high);
    let values = _mm512_add_epi32(_mm512_cvtps_epi32(clamped), quantizer.zero_point);
    let bytes = _mm512_cvtsepi32_epi8(values);
    if lanes == GROUP {
        _mm_storeu_si128(target.cast(), bytes);
    } else {
        let mut all = [0i8; GROUP];
        _mm_storeu_si128(all.as_mut_ptr().cast(), bytes);
        std::ptr::copy_nonoverlapping(all.as_ptr(), target, lanes);
    }
}

/// Stores the sixteen lanes of `left`, `middle` and `right` as triples: lane `i`'s three bytes,
/// then a fourth byte (which meets a zero weight), four lanes per 16 bytes at `target`.
///
/// # Safety
/// `target` points at room for 64 bytes.
#[inline(always)]
unsafe fn store_triples(left: __m128i, middle: __m128i, right: __m128i, target: *mut i8) {
    let pairs = [
        _mm_unpacklo_epi8(left, middle),
        _mm_unpackhi_epi8(left, middle),
    ];
    let rights = [
        _mm_unpacklo_epi8(right, right),
        _mm_unpackhi_epi8(right, right),
    ];
    for half in 0..2 {
        let low = _mm_unpacklo_epi16(pairs[half], rights[half]);
        let high = _mm_unpackhi_epi16(pairs[half], rights[half]);
        _mm_storeu_si128(target.add(32 * half).cast(), low);
        _mm_storeu_si128(target.add(32 * half + 16).cast(), high);
    }
}

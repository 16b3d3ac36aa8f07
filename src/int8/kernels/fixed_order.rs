//! Float sums of products in one fixed order of operations, one fused multiply-add per term,
//! for the stem ops ([`crate::int8::ops::stem`]): vectors run across output positions only, so
//! their width never changes a bit.

use super::depthwise::output_size;

/// Zero-padded input planes, flattened so that each tap of all outputs reads one contiguous
/// run: position `oy * row_len + ox` of a run is output `(oy, ox)`, and the columns past the
/// output width are discarded. With stride 2 the even padded rows come first, then the odd
/// ones, and each row holds its even columns, then its odd ones.
pub struct PaddedPlanes {
    pub stride: usize,
    pub width: usize,
    pub row_len: usize,
    pub even_columns: usize,
    pub odd_rows_at: usize,
    pub len: usize,
}

impl PaddedPlanes {
    pub fn new(height: usize, width: usize, stride: usize) -> PaddedPlanes {
        let row_len = width + 2;
        let (oh, _) = output_size(height, width, stride);
        let rows = if stride == 1 { height + 2 } else { oh + 2 };
        let odd_rows_at = rows * row_len;
        PaddedPlanes {
            stride,
            width,
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

    pub fn fill(&self, source: &[f32], target: &mut [f32]) {
        let w = self.width;
        for (y, source) in source.chunks_exact(w).enumerate() {
            let at = self.row_at(y + 1);
            let row = &mut target[at..at + self.row_len];
            if self.stride == 1 {
                row[1..=w].copy_from_slice(source);
            } else {
                let (evens, odds) = row.split_at_mut(self.even_columns);
                let pairs = source.chunks_exact(2);
                if let [last] = pairs.remainder() {
                    odds[w / 2] = *last;
                }
                for ((pair, o), e) in pairs.zip(odds.iter_mut()).zip(&mut evens[1..]) {
                    *o = pair[0];
                    *e = pair[1];
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

/// Output positions summed at a time, in registers.
pub const CHUNK: usize = 64;

/// `out[p] = fma(wn, xn[p], ... fma(w0, x0[p], 0)) + bias` with `xi = inputs(i)`.
#[inline(always)]
pub fn sum_of_products<'a>(
    out: &mut [f32],
    bias: f32,
    weights: &[f32],
    inputs: impl Fn(usize) -> &'a [f32],
) {
    let len = out.len();
    for start in (0..len).step_by(CHUNK) {
        let out = &mut out[start..(start + CHUNK).min(len)];
        if let Ok(out) = <&mut [f32; CHUNK]>::try_from(&mut *out) {
            let mut sum = [0f32; CHUNK];
            for (i, weight) in weights.iter().enumerate() {
                if let Some(Ok(x)) = inputs(i)
                    .get(start..start + CHUNK)
                    .map(<&[f32; CHUNK]>::try_from)
                {
                    for lane in 0..CHUNK {
                        sum[lane] = weight.mul_add(x[lane], sum[lane]);
                    }
                }
            }
            for lane in 0..CHUNK {
                out[lane] = sum[lane] + bias;
            }
        } else {
            out.fill(0.0);
            for (i, weight) in weights.iter().enumerate() {
                for (o, x) in out.iter_mut().zip(&inputs(i)[start..]) {
                    *o = weight.mul_add(*x, *o);
                }
            }
            for o in out.iter_mut() {
                *o += bias;
            }
        }
    }
}

/// Output channels that share the input vectors they read in [`shared_sums`].
pub const SHARED_CHANNELS: usize = 4;
/// Output positions [`shared_sums`] sums at a time.
pub const SHARED_CHUNK: usize = 16;

/// `fma(wn[c], xn[p], ... fma(w0[c], x0[p], 0))` for `SHARED_CHUNK` positions of
/// `SHARED_CHANNELS` channels, with `xi = inputs(i)`: each input vector is read once for all
/// the channels.
#[inline(always)]
pub fn shared_sums<'a>(
    weights: &[&[f32]; SHARED_CHANNELS],
    inputs: impl Fn(usize) -> &'a [f32],
) -> [[f32; SHARED_CHUNK]; SHARED_CHANNELS] {
    let mut sums = [[0f32; SHARED_CHUNK]; SHARED_CHANNELS];
    for i in 0..weights[0].len() {
        if let Some(Ok(x)) = inputs(i)
            .get(..SHARED_CHUNK)
            .map(<&[f32; SHARED_CHUNK]>::try_from)
        {
            for (sum, w) in sums.iter_mut().zip(weights) {
                let w = w[i];
                for lane in 0..SHARED_CHUNK {
                    sum[lane] = w.mul_add(x[lane], sum[lane]);
                }
            }
        }
    }
    sums
}

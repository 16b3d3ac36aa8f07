//! The grids of int8 tensors: rounding, requantization onto an output grid, input grids, and
//! the recovery of int8 weights from a QDQ graph's dequantized constants.

use tract_core::internal::*;

/// `1.5 * 2^23`: adding then subtracting it rounds an `f32` of magnitude below `2^22` to the
/// nearest integer, ties to even (ONNX QuantizeLinear's rounding), in a form that vectorizes.
const ROUNDING_MAGIC: f32 = 12_582_912.0;

/// Rounds `v` (|v| < 2^22) to the nearest integer, ties to even.
#[inline(always)]
pub fn round_ties_even(v: f32) -> f32 {
    (v + ROUNDING_MAGIC) - ROUNDING_MAGIC
}

/// The grid of an int8 input: its scale and i8-domain zero point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputGrid {
    pub scale: f32,
    pub zero_point: i8,
}

/// An output quantizer: `q = clamp(round(v), low, high) + zero_point` with `v` already in
/// output steps. `low` and `high` fold the activation clip (ReLU6) into the u8 range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutputGrid {
    /// Zero point, in the i8 domain (uint8 zero point minus 128).
    pub zero_point: i8,
    /// Lowest value of `round(v)`, relative to the zero point.
    pub low: f32,
    /// Highest value of `round(v)`, relative to the zero point.
    pub high: f32,
}

impl OutputGrid {
    /// The grid of a uint8 QuantizeLinear (`inverse_scale` is tract's `1/scale`, `zero_point`
    /// the uint8 zero point), clipped to `[clip_low, clip_high]` in real units.
    pub fn new(inverse_scale: f32, zero_point: u8, clip_low: f32, clip_high: f32) -> OutputGrid {
        let zp = f32::from(zero_point);
        let to_steps = |x: f32| {
            if x.is_finite() {
                round_ties_even(x * inverse_scale).clamp(-zp, 255.0 - zp)
            } else if x > 0.0 {
                255.0 - zp
            } else {
                -zp
            }
        };
        OutputGrid {
            zero_point: (i32::from(zero_point) - 128) as i8,
            low: to_steps(clip_low),
            high: to_steps(clip_high),
        }
    }

    /// The lowest byte this grid writes (`low` plus the zero point).
    pub fn low_byte(&self) -> i16 {
        self.low as i16 + i16::from(self.zero_point)
    }

    /// The highest byte this grid writes (`high` plus the zero point).
    pub fn high_byte(&self) -> i16 {
        self.high as i16 + i16::from(self.zero_point)
    }

    /// Whether the grid spans every i8 value, so that saturating to i8 clamps alone.
    pub fn is_whole_range(&self) -> bool {
        self.low_byte() == i16::from(i8::MIN) && self.high_byte() == i16::from(i8::MAX)
    }

    /// Quantizes `v` (in output steps) onto this grid; NaN goes to the lowest step.
    #[inline(always)]
    pub fn quantize(&self, v: f32) -> i8 {
        let above_low = if v > self.low { v } else { self.low };
        let clamped = if above_low < self.high {
            above_low
        } else {
            self.high
        };
        let steps = (clamped + ROUNDING_MAGIC).to_bits() as i32 - ROUNDING_MAGIC.to_bits() as i32;
        (steps + i32::from(self.zero_point)) as i8
    }
}

/// The largest magnitude of an 8-bit weight as `dermedge-tools quantize` writes it.
pub const WEIGHT_BOUND_8_BITS: i8 = 127;
/// The largest magnitude of a 7-bit weight (`quantize --pointwise-weight-bits 7`): a product with
/// any int8 or uint8 activation is then below 2^14 in magnitude, so four of them fit a 16-bit sum
/// (two for uint8 activations).
pub const WEIGHT_BOUND_7_BITS: i8 = 63;

/// Integer weights and one scale per output channel recovered from dequantized f32 weights
/// `w[c, ..] = scale[c] * q[c, ..]` as the quantizer wrote them: the channel's largest value at
/// `|q| = 127` (8 bits), else at `|q| = 63` (7 bits, `quantize --pointwise-weight-bits 7`), else
/// (a channel whose scale the quantizer raised so that its bias fits 32 bits) at the smallest
/// `|q|` that puts every value on the grid within [`FALLBACK_GRID_TOLERANCE`] of a step.
/// `None` when a channel's values are on no grid (then the layer is left in float).
pub fn recover_int8_rows(weights: &[f32], rows: usize) -> Option<(Vec<i8>, Vec<f32>)> {
    if rows == 0 || !weights.len().is_multiple_of(rows) {
        return None;
    }
    let per_row = weights.len() / rows;
    let mut q = Vec::with_capacity(weights.len());
    let mut scales = Vec::with_capacity(rows);
    for row in weights.chunks(per_row) {
        let amax = row.iter().fold(0.0f32, |m, w| m.max(w.abs()));
        if !amax.is_finite() {
            return None;
        }
        if amax == 0.0 {
            q.extend(std::iter::repeat_n(0i8, per_row));
            scales.push(1.0);
            continue;
        }
        let on_grid = |largest: i8, tolerance: f32| {
            let scale = amax / f32::from(largest);
            Some((row_on_grid(row, scale, tolerance)?, scale))
        };
        let (values, scale) = [WEIGHT_BOUND_8_BITS, WEIGHT_BOUND_7_BITS]
            .into_iter()
            .find_map(|bound| on_grid(bound, QUANTIZER_GRID_TOLERANCE))
            .or_else(|| {
                (1..=WEIGHT_BOUND_8_BITS)
                    .find_map(|largest| on_grid(largest, FALLBACK_GRID_TOLERANCE))
            })?;
        q.extend(values);
        scales.push(scale);
    }
    Some((q, scales))
}

/// How far from a step (in steps) a weight may lie on the quantizer's 8- or 7-bit grid.
const QUANTIZER_GRID_TOLERANCE: f32 = 1e-3;
/// The same on the grids tried for a raised scale: tighter, since with every largest `|q|` tried
/// a row of float weights is likelier to come near one.
pub const FALLBACK_GRID_TOLERANCE: f32 = 1e-4;

/// `row` in steps of `scale`, when every value lies within `tolerance` of a step in [-127, 127].
fn row_on_grid(row: &[f32], scale: f32, tolerance: f32) -> Option<Vec<i8>> {
    row.iter()
        .map(|w| {
            let steps = w / scale;
            let rounded = steps.round();
            ((steps - rounded).abs() <= tolerance && rounded.abs() <= 127.0)
                .then_some(rounded as i8)
        })
        .collect()
}

/// The f32 values of a constant tensor.
pub fn f32_values(tensor: &Tensor) -> TractResult<Vec<f32>> {
    Ok(tensor
        .cast_to::<f32>()?
        .try_as_plain_ram()?
        .as_slice::<f32>()?
        .to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_ties_to_even() {
        for (v, r) in [
            (0.5, 0.0),
            (1.5, 2.0),
            (2.5, 2.0),
            (-0.5, 0.0),
            (-1.5, -2.0),
            (1.4, 1.0),
        ] {
            assert_eq!(round_ties_even(v), r, "{v}");
        }
    }

    #[test]
    fn grid_folds_the_clip_into_the_range() {
        let grid = OutputGrid::new(10.0, 20, 0.0, 6.0);
        assert_eq!(grid.zero_point, -108);
        assert_eq!(grid.quantize(-50.0), -108);
        assert_eq!(grid.quantize(1000.0), -108 + 60);
        assert_eq!(grid.quantize(3.5), -108 + 4);
        let unclipped = OutputGrid::new(1.0, 128, f32::NEG_INFINITY, f32::INFINITY);
        assert_eq!(unclipped.quantize(-1000.0), -128);
        assert_eq!(unclipped.quantize(1000.0), 127);
        assert_eq!((grid.low_byte(), grid.high_byte()), (-108, -48));
        assert!(!grid.is_whole_range());
        assert!(unclipped.is_whole_range());
        let relu = OutputGrid::new(1.0, 0, 0.0, f32::INFINITY);
        assert_eq!((relu.low_byte(), relu.high_byte()), (-128, 127));
        assert!(relu.is_whole_range());
        let shifted = OutputGrid::new(1.0, 20, 0.0, f32::INFINITY);
        assert_eq!((shifted.low_byte(), shifted.high_byte()), (-108, 127));
        assert!(!shifted.is_whole_range());
    }

    #[test]
    fn recovers_the_quantizer_grid_and_refuses_other_values() {
        let scales = [0.01f32, 0.5];
        let eight_bits: Vec<i8> = vec![127, -3, 0, 5, -127, 64];
        let seven_bits: Vec<i8> = vec![63, -3, 0, 5, -63, 32];
        for q in [eight_bits, seven_bits] {
            let w: Vec<f32> = q
                .iter()
                .enumerate()
                .map(|(i, q)| f32::from(*q) * scales[i / 3])
                .collect();
            let (back, back_scales) = recover_int8_rows(&w, 2).unwrap();
            assert_eq!(back, q);
            for (a, b) in back_scales.iter().zip(scales) {
                assert!((a - b).abs() <= b * 1e-6);
            }
        }
        assert!(recover_int8_rows(&[1.0, 0.3001, 0.0], 1).is_none());
        assert!(recover_int8_rows(&[0.61, -0.2837, 0.0519, 0.9], 1).is_none());
        assert_eq!(recover_int8_rows(&[0.0; 4], 2).unwrap().0, vec![0; 4]);
    }

    /// A channel whose scale was raised above `max |w| / bound` (so that its bias fits 32 bits)
    /// comes back as the same real weights on the coarsest exact grid, within 7 bits.
    #[test]
    fn recovers_a_channel_with_a_raised_scale() {
        let scale = 3.7e-4f32;
        let q: [i8; 5] = [40, -12, 0, 8, -36];
        let w: Vec<f32> = q.iter().map(|v| f32::from(*v) * scale).collect();
        let (back, back_scales) = recover_int8_rows(&w, 1).unwrap();
        assert_eq!(back, vec![10, -3, 0, 2, -9]);
        for (value, weight) in back.iter().zip(&w) {
            let real = f32::from(*value) * back_scales[0];
            assert!(
                (real - weight).abs() <= weight.abs() * 1e-6,
                "{real} {weight}"
            );
        }
    }
}

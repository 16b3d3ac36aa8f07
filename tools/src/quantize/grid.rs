//! The integer grids of the QDQ rewrite: affine uint8 for activations, symmetric per-channel int8
//! for weights.

pub use dermedge::int8::grid::{WEIGHT_BOUND_7_BITS, WEIGHT_BOUND_8_BITS};

/// Affine uint8 quantization of one activation tensor: `x = scale * (q - zero_point)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActivationQuant {
    pub scale: f32,
    pub zero_point: u8,
}

impl ActivationQuant {
    /// The uint8 grid covering `[lo, hi]` widened to hold zero exactly.
    pub fn from_range(lo: f32, hi: f32) -> ActivationQuant {
        let lo = lo.min(0.0);
        let hi = hi.max(0.0);
        let scale = if hi > lo {
            ((hi - lo) / 255.0).max(f32::MIN_POSITIVE)
        } else {
            1.0
        };
        let zero_point = (-lo / scale).round().clamp(0.0, 255.0) as u8;
        ActivationQuant { scale, zero_point }
    }

    /// Quantizes then dequantizes `x`, as the QDQ pair does.
    pub fn fake_quantize(&self, x: f32) -> f32 {
        let q = ((x / self.scale).round() + self.zero_point as f32).clamp(0.0, 255.0);
        (q - self.zero_point as f32) * self.scale
    }
}

/// Symmetric int8 weights with one scale per output channel.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelQuantized {
    pub values: Vec<i8>,
    pub scales: Vec<f32>,
}

/// Quantizes `weights` symmetrically to [-bound, bound], one scale per channel, each scale at
/// least `min_scales[c]`; `channel_of` maps a flat index to its channel.
pub fn quantize_per_channel(
    weights: &[f32],
    channels: usize,
    channel_of: impl Fn(usize) -> usize,
    min_scales: &[f32],
    bound: i8,
) -> ChannelQuantized {
    let bound = f32::from(bound);
    let mut max_abs = vec![0.0f32; channels];
    for (i, w) in weights.iter().enumerate() {
        let c = channel_of(i);
        max_abs[c] = max_abs[c].max(w.abs());
    }
    let scales: Vec<f32> = max_abs
        .iter()
        .zip(min_scales.iter().chain(std::iter::repeat(&0.0)))
        .map(|(&m, &floor)| {
            let scale = (m / bound).max(floor);
            if scale > 0.0 {
                scale
            } else {
                1.0
            }
        })
        .collect();
    let values = weights
        .iter()
        .enumerate()
        .map(|(i, w)| (w / scales[channel_of(i)]).round().clamp(-bound, bound) as i8)
        .collect();
    ChannelQuantized { values, scales }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_grid_holds_zero_and_spans_the_range() {
        let q = ActivationQuant::from_range(-1.0, 3.0);
        assert_eq!(q.fake_quantize(0.0), 0.0);
        assert!((q.fake_quantize(-1.0) + 1.0).abs() <= q.scale / 2.0);
        assert!((q.fake_quantize(3.0) - 3.0).abs() <= q.scale / 2.0);
        assert!((q.fake_quantize(10.0) - 3.0).abs() <= q.scale);
        let positive = ActivationQuant::from_range(0.5, 6.0);
        assert_eq!(positive.zero_point, 0);
        assert!((positive.scale - 6.0 / 255.0).abs() < 1e-7);
        let constant = ActivationQuant::from_range(0.0, 0.0);
        assert_eq!(constant.fake_quantize(0.0), 0.0);
    }

    #[test]
    fn per_channel_weights_round_within_half_a_step() {
        let weights = [0.5, -1.0, 0.25, 0.01, -0.02, 0.005, 0.0, 0.0, 0.0];
        let q = quantize_per_channel(&weights, 3, |i| i / 3, &[], WEIGHT_BOUND_8_BITS);
        assert_eq!(q.values[1], -127);
        assert_eq!(q.values[4], -127);
        assert_eq!(q.scales[2], 1.0);
        for (i, w) in weights.iter().enumerate() {
            let back = q.values[i] as f32 * q.scales[i / 3];
            assert!((back - w).abs() <= q.scales[i / 3] / 2.0 + 1e-9, "{i}");
        }
        let columns = quantize_per_channel(&[1.0, 0.1, -2.0, 0.2], 2, |i| i % 2, &[], 127);
        let floored = quantize_per_channel(&[1.0, 0.5], 1, |_| 0, &[0.1], 127);
        assert_eq!((floored.values, floored.scales), (vec![10, 5], vec![0.1]));
        assert_eq!(columns.values, vec![64, 64, -127, 127]);
        let seven = quantize_per_channel(&weights, 3, |i| i / 3, &[], WEIGHT_BOUND_7_BITS);
        assert_eq!((seven.values[1], seven.values[4]), (-63, -63));
        assert!(seven.values.iter().all(|v| v.abs() <= 63));
        for (i, w) in weights.iter().enumerate() {
            let back = seven.values[i] as f32 * seven.scales[i / 3];
            assert!((back - w).abs() <= seven.scales[i / 3] / 2.0 + 1e-9, "{i}");
        }
        let floored_seven = quantize_per_channel(&[1.0, 0.5], 1, |_| 0, &[0.1], 63);
        assert_eq!(floored_seven.values, vec![10, 5]);
    }
}

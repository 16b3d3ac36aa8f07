//! Activation ranges from calibration images: min/max, or the histogram range with the least
//! expected quantization error.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::Arc;

use anyhow::Context;

use tract_onnx::prelude::*;

use super::grid::ActivationQuant;

/// Smallest and largest value seen in each calibrated tensor.
#[derive(Debug, Clone, Default)]
pub struct Ranges {
    ranges: HashMap<String, (f32, f32)>,
}

impl Ranges {
    /// Widens the range of `tensor` to cover `values`.
    pub fn observe(&mut self, tensor: &str, values: impl IntoIterator<Item = f32>) {
        let entry = self
            .ranges
            .entry(tensor.to_string())
            .or_insert((f32::INFINITY, f32::NEG_INFINITY));
        for v in values {
            if v.is_finite() {
                entry.0 = entry.0.min(v);
                entry.1 = entry.1.max(v);
            }
        }
    }

    /// The observed range of `tensor`.
    pub fn get(&self, tensor: &str) -> Option<(f32, f32)> {
        self.ranges
            .get(tensor)
            .copied()
            .filter(|(lo, hi)| lo.is_finite() && hi.is_finite())
    }
}

/// Value counts of one tensor over fixed bins spanning its observed range.
#[derive(Debug, Clone)]
pub struct Histogram {
    pub lo: f32,
    pub hi: f32,
    pub counts: Vec<u64>,
}

impl Histogram {
    /// Empty bins over `[lo, hi]`.
    pub fn new(lo: f32, hi: f32, bins: usize) -> Histogram {
        Histogram {
            lo,
            hi,
            counts: vec![0; bins.max(1)],
        }
    }

    /// Counts `values` (clamped into the range).
    pub fn add(&mut self, values: impl IntoIterator<Item = f32>) {
        let bins = self.counts.len();
        let width = (self.hi - self.lo).max(f32::MIN_POSITIVE);
        for v in values {
            if v.is_finite() {
                let at = ((v - self.lo) / width * bins as f32) as isize;
                self.counts[at.clamp(0, bins as isize - 1) as usize] += 1;
            }
        }
    }

    /// Expected squared error of quantizing the counted values onto the uint8 grid of `quant`:
    /// rounding noise inside the grid's range, clipping error outside it.
    pub fn quantization_error(&self, quant: ActivationQuant) -> f64 {
        let bins = self.counts.len();
        let width = (self.hi - self.lo) / bins as f32;
        let grid_lo = -(quant.zero_point as f32) * quant.scale;
        let grid_hi = (255.0 - quant.zero_point as f32) * quant.scale;
        let rounding = (quant.scale as f64).powi(2) / 12.0;
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(i, &c)| {
                let centre = self.lo + (i as f32 + 0.5) * width;
                let clipped = (centre - centre.clamp(grid_lo, grid_hi)) as f64;
                c as f64 * (clipped * clipped + rounding)
            })
            .sum()
    }

    /// The range inside the observed one whose uint8 grid has the smallest expected squared
    /// error: each end is shrunk in turn (coordinate descent over 200 steps per end).
    pub fn best_range(&self) -> (f32, f32) {
        let (lo, hi) = (self.lo.min(0.0), self.hi.max(0.0));
        let error = |lo: f32, hi: f32| self.quantization_error(ActivationQuant::from_range(lo, hi));
        let shrink = |end: f32, error_at: &dyn Fn(f32) -> f64| {
            (1..=200)
                .map(|step| end * step as f32 / 200.0)
                .map(|candidate| (error_at(candidate), candidate))
                .min_by(|a, b| a.0.total_cmp(&b.0))
                .map_or(end, |(_, candidate)| candidate)
        };
        let mut best = (lo, hi);
        for _ in 0..3 {
            if hi > 0.0 {
                best.1 = shrink(hi, &|candidate| error(best.0, candidate));
            }
            if lo < 0.0 {
                best.0 = shrink(lo, &|candidate| error(candidate, best.1));
            }
        }
        best
    }
}

/// How activation ranges are chosen from the calibration images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum RangeMethod {
    /// Smallest and largest value seen.
    MinMax,
    /// The range that minimises the expected squared quantization error over a histogram.
    #[default]
    Mse,
}

/// Bins of the calibration histograms.
const HISTOGRAM_BINS: usize = 2048;

/// A model run that exposes named intermediate tensors as outputs.
struct Probe {
    plan: Arc<TypedSimplePlan>,
    input_name: String,
    observed: Vec<String>,
    with_input: bool,
    shape: [usize; 4],
}

impl Probe {
    /// Loads `bytes` with `tensors` (those other than the graph input) as outputs.
    fn new(bytes: &[u8], shape: [usize; 4], tensors: &[String]) -> anyhow::Result<Probe> {
        let mut model = tract_onnx::onnx().model_for_read(&mut Cursor::new(bytes))?;
        let input_name = model
            .input_outlets()?
            .first()
            .map(|o| model.node(o.node).name.clone())
            .context("the model has no input")?;
        let mut outlets = Vec::new();
        let mut observed = Vec::new();
        for name in tensors.iter().filter(|n| **n != input_name) {
            let outlet = model
                .find_outlet_label(name)
                .with_context(|| format!("tensor {name} not found in the model"))?;
            outlets.push(outlet);
            observed.push(name.clone());
        }
        model.select_output_outlets(&outlets)?;
        let plan = model
            .with_input_fact(0, f32::fact(shape).into())?
            .into_optimized()?
            .into_runnable()?;
        Ok(Probe {
            plan,
            with_input: tensors.contains(&input_name),
            input_name,
            observed,
            shape,
        })
    }

    /// Runs every input and hands each observed tensor's values to `f`.
    fn visit(&self, inputs: &[Vec<f32>], f: &mut dyn FnMut(&str, &[f32])) -> anyhow::Result<()> {
        for input in inputs {
            if self.with_input {
                f(&self.input_name, input);
            }
            let tensor = Tensor::from_shape(&self.shape, input)?;
            let outputs = self.plan.run(tvec!(tensor.into()))?;
            for (name, value) in self.observed.iter().zip(&outputs) {
                let view = value.to_plain_array_view::<f32>()?;
                match view.as_slice() {
                    Some(values) => f(name, values),
                    None => f(name, &view.iter().copied().collect::<Vec<f32>>()),
                }
            }
        }
        Ok(())
    }
}

/// Runs the f32 model on every input and chooses a range for each tensor in `tensors`.
pub fn calibrate(
    bytes: &[u8],
    input_shape: [usize; 4],
    tensors: &[String],
    inputs: &[Vec<f32>],
    method: RangeMethod,
) -> anyhow::Result<Ranges> {
    let probe = Probe::new(bytes, input_shape, tensors)?;
    let mut min_max = Ranges::default();
    probe.visit(inputs, &mut |name, values| {
        min_max.observe(name, values.iter().copied())
    })?;
    if method == RangeMethod::MinMax {
        return Ok(min_max);
    }
    let mut histograms: HashMap<String, Histogram> = HashMap::new();
    for name in tensors {
        if let Some((lo, hi)) = min_max.get(name) {
            histograms.insert(name.clone(), Histogram::new(lo, hi, HISTOGRAM_BINS));
        }
    }
    probe.visit(inputs, &mut |name, values| {
        if let Some(h) = histograms.get_mut(name) {
            h.add(values.iter().copied());
        }
    })?;
    let mut ranges = Ranges::default();
    for (name, histogram) in &histograms {
        let (lo, hi) = histogram.best_range();
        ranges.observe(name, [lo, hi]);
    }
    Ok(ranges)
}

/// The largest magnitude of each channel (axis 1 of an NCHW tensor with `channels` channels)
/// of each named tensor, over the f32 model's runs on `inputs`.
pub fn channel_peaks(
    bytes: &[u8],
    input_shape: [usize; 4],
    tensors: &[(String, usize)],
    inputs: &[Vec<f32>],
) -> anyhow::Result<HashMap<String, Vec<f32>>> {
    let names: Vec<String> = tensors.iter().map(|(name, _)| name.clone()).collect();
    let probe = Probe::new(bytes, input_shape, &names)?;
    let mut peaks: HashMap<String, Vec<f32>> = tensors
        .iter()
        .map(|(name, channels)| (name.clone(), vec![0.0; *channels]))
        .collect();
    let mut mismatch = None;
    probe.visit(inputs, &mut |name, values| {
        let Some(peaks) = peaks.get_mut(name) else {
            return;
        };
        if values.is_empty() || !values.len().is_multiple_of(peaks.len()) {
            mismatch = Some(format!(
                "tensor {name} holds {} values, not {} channels",
                values.len(),
                peaks.len()
            ));
            return;
        }
        let plane = values.len() / peaks.len();
        for (peak, channel) in peaks.iter_mut().zip(values.chunks_exact(plane)) {
            *peak = channel
                .iter()
                .filter(|v| v.is_finite())
                .fold(*peak, |m, v| m.max(v.abs()));
        }
    })?;
    if let Some(mismatch) = mismatch {
        anyhow::bail!(mismatch);
    }
    Ok(peaks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_range_clips_a_rare_tail_and_keeps_a_uniform_range() {
        let mut tail = Histogram::new(0.0, 100.0, HISTOGRAM_BINS);
        tail.counts[..10].fill(100_000_000);
        tail.counts[HISTOGRAM_BINS - 1] = 1;
        let (lo, hi) = tail.best_range();
        let best = tail.quantization_error(ActivationQuant::from_range(lo, hi));
        let full = tail.quantization_error(ActivationQuant::from_range(0.0, 100.0));
        assert!(
            lo == 0.0 && hi < 5.0 && best < full / 100.0,
            "{hi} {best} {full}"
        );
        let mut uniform = Histogram::new(0.0, 6.0, HISTOGRAM_BINS);
        uniform.add((0..60_000).map(|i| i as f32 / 10_000.0));
        let (lo, hi) = uniform.best_range();
        assert!(lo == 0.0 && hi > 5.7, "{lo} {hi}");
    }

    #[test]
    fn channel_peaks_are_the_largest_magnitudes_over_every_input() {
        let mut g = crate::onnx::GraphBuilder::new();
        let conv = g.conv(
            "image",
            &crate::onnx::ConvParams {
                out_channels: 2,
                in_channels_per_group: 2,
                kernel: 1,
                stride: 1,
                groups: 1,
                pads: [0; 4],
                weight: vec![1.0, 0.0, 0.0, -2.0],
                bias: vec![0.0, 0.0],
            },
        );
        let relu = g.relu(&conv);
        let model = g.finish(("image", &[1, 2, 2, 2]), (&relu, &[1, 2, 2, 2]), "test");
        let bytes = crate::onnx::encode(&model);
        let inputs = vec![
            vec![0.5, -3.0, 1.0, 2.0, 1.0, 0.25, -0.5, 0.0],
            vec![0.0, 0.0, 0.0, 2.5, 0.0, 0.0, 0.0, 0.0],
        ];
        let peaks = channel_peaks(
            &bytes,
            [1, 2, 2, 2],
            &[(conv.clone(), 2), (relu.clone(), 2)],
            &inputs,
        )
        .unwrap();
        assert_eq!(peaks[&conv], [3.0, 2.0]);
        assert_eq!(peaks[&relu], [2.5, 1.0]);
        let error = channel_peaks(&bytes, [1, 2, 2, 2], &[(conv.clone(), 3)], &inputs)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(&conv) && error.contains("3 channels"),
            "{error}"
        );
    }

    #[test]
    fn ranges_ignore_non_finite_values() {
        let mut ranges = Ranges::default();
        ranges.observe("x", [1.0, f32::NAN, -2.0, f32::INFINITY]);
        assert_eq!(ranges.get("x"), Some((-2.0, 1.0)));
        ranges.observe("empty", []);
        assert_eq!(ranges.get("empty"), None);
    }
}

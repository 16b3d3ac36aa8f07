//! Depthwise convolution of any square kernel up to 7x7, any stride and any padding on int8
//! activations and weights, with bias, zero points, per-channel scales and the activation clip
//! fused; and the rewrite that finds it in a QDQ graph: a Conv with one group per channel
//! reading a dequantized tensor that [`DepthwiseConvI8`] does not take (its 3x3 kernels cover
//! padding 1 and strides 1 and 2), such as EfficientNet's 5x5 layers. Its 3x3 stride-2 layers
//! padded after the input only run on the 3x3 kernels ([`ShiftedDepthwise`]).
//!
//! [`DepthwiseConvI8`]: super::depthwise::DepthwiseConvI8

use tract_core::internal::*;
use tract_core::ops::cnn::Conv;

use super::depthwise::DepthwiseParts;
use super::{int8_fact, output_tensor};
use crate::int8::grid::OutputGrid;
use crate::int8::kernels::general_depthwise::{DepthwiseGeometry, GeneralDepthwiseLayer, LANES};
use crate::int8::kernels::shifted_depthwise::ShiftedDepthwise;
use crate::int8::kernels::{for_each_chunk, KernelSet};
use crate::int8::rewrite::graph::{
    conv3x3_stride, depthwise_channels, square_conv_geometry, stays_float,
};
use crate::int8::rewrite::{Chain, Fused, Pattern};

/// Channels one thread convolves at a time.
const CHANNELS_PER_TASK: usize = LANES;

/// A depthwise convolution of any geometry on int8 `[.., channels, height, width]` input.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneralDepthwiseI8 {
    pub layer: String,
    /// The output's shape.
    pub output_shape: TVec<usize>,
    kernels: KernelSet,
    conv: GeneralDepthwiseLayer,
    /// The same layer on the 3x3 kernels, where its geometry allows.
    shifted: Option<ShiftedDepthwise>,
}
impl Eq for GeneralDepthwiseI8 {}

impl GeneralDepthwiseI8 {
    /// The layer `layer` of `geometry` with `[channels, kernel, kernel]` int8 `weights` (one
    /// scale per channel), its bias, input grid (scale and i8 zero point) and output grid, on
    /// `kernels`; errors when the parts do not fit the geometry or `output_shape`.
    pub fn new(
        layer: String,
        geometry: DepthwiseGeometry,
        parts: &DepthwiseParts,
        output_inverse_scale: f32,
        grid: OutputGrid,
        output_shape: TVec<usize>,
        kernels: KernelSet,
    ) -> TractResult<GeneralDepthwiseI8> {
        let multiplier: Vec<f32> = parts
            .weight_scales
            .iter()
            .map(|s| parts.input.scale * s * output_inverse_scale)
            .collect();
        let offset: Vec<f32> = parts
            .bias
            .iter()
            .map(|b| b * output_inverse_scale)
            .collect();
        let shifted = ShiftedDepthwise::new(
            geometry,
            &parts.weights,
            parts.input.zero_point,
            multiplier.clone(),
            offset.clone(),
            grid,
        );
        let conv = GeneralDepthwiseLayer::new(
            geometry,
            &parts.weights,
            parts.input.zero_point,
            multiplier,
            offset,
            grid,
        )
        .with_context(|| format!("{layer}: depthwise geometry {geometry:?} is not supported"))?;
        let (oh, ow) = conv.output_size();
        ensure!(output_shape.iter().product::<usize>() == geometry.channels * oh * ow);
        Ok(GeneralDepthwiseI8 {
            layer,
            output_shape,
            kernels,
            conv,
            shifted,
        })
    }
}

/// The rewrite: see the module's documentation.
pub struct GeneralDepthwisePattern;

impl Pattern for GeneralDepthwisePattern {
    fn name(&self) -> &'static str {
        "GeneralDepthwiseI8"
    }

    fn fuse(&self, chain: &Chain) -> TractResult<Option<Fused>> {
        let node = chain.layer;
        let Some((conv, channels)) = node
            .op_as::<Conv>()
            .and_then(|conv| Some((conv, depthwise_channels(conv)?)))
        else {
            return Ok(None);
        };
        let taken_by_3x3_kernels = conv3x3_stride(conv, node).is_some();
        let Some((kernel, stride, padding)) =
            square_conv_geometry(conv, node).filter(|_| !taken_by_3x3_kernels)
        else {
            return Ok(None);
        };
        let Some(parts) = DepthwiseParts::read(chain, channels, kernel * kernel)? else {
            return Ok(None);
        };
        let geometry = DepthwiseGeometry {
            channels,
            height: parts.height,
            width: parts.width,
            kernel,
            stride,
            padding,
        };
        let op = match GeneralDepthwiseI8::new(
            node.name.clone(),
            geometry,
            &parts,
            chain.quantize.scale,
            chain.grid,
            chain.output_shape.clone(),
            chain.kernels,
        ) {
            Ok(op) => op,
            Err(e) => return Ok(stays_float(&node.name, &format!("{e:#}"))),
        };
        Ok(Some(parts.fused(Box::new(op), chain)))
    }
}

impl Op for GeneralDepthwiseI8 {
    fn name(&self) -> StaticName {
        "GeneralDepthwiseI8".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let g = &self.conv.geometry;
        Ok(vec![format!(
            "{} channels, {}x{}, kernel {}, stride {}, padding {:?}, {}{}",
            g.channels,
            g.height,
            g.width,
            g.kernel,
            g.stride,
            g.padding,
            self.kernels,
            if self.shifted.is_some() {
                ", on the 3x3 kernels"
            } else {
                ""
            }
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for GeneralDepthwiseI8 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let g = &self.conv.geometry;
        ensure!(
            input.datum_type() == DatumType::I8 && input.len() == g.channels * g.height * g.width
        );
        let input = input.try_as_plain_ram()?;
        let input = input.as_slice::<i8>()?;
        let (oh, ow) = self.conv.output_size();
        let shifted = self
            .shifted
            .as_ref()
            .map(|layer| (layer, layer.shifted_input(input)));
        output_tensor(&self.output_shape, |out: &mut [i8]| {
            for_each_chunk(out, CHANNELS_PER_TASK * oh * ow, |task, out| {
                let first = task * CHANNELS_PER_TASK;
                match &shifted {
                    Some((layer, input)) => layer.convolve_planes(self.kernels, input, first, out),
                    None => self.conv.convolve_planes(self.kernels, input, first, out),
                }
            })
        })
    }
}

impl TypedOp for GeneralDepthwiseI8 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        int8_fact(inputs, DatumType::I8, &self.output_shape)
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::int8::grid::InputGrid;
    use crate::int8::kernels::general_depthwise::PlaneLoop;
    use crate::int8::test_rng::TestRng;

    /// Direct convolution in f64 on the dequantized values, quantized on the same grid.
    fn reference(
        g: &DepthwiseGeometry,
        parts: &DepthwiseParts,
        output_inverse_scale: f32,
        grid: OutputGrid,
        input: &[i8],
    ) -> Vec<i8> {
        let (h, w, k, s) = (g.height, g.width, g.kernel, g.stride);
        let [top, left, _, _] = g.padding;
        let (oh, ow) = g.output_size().unwrap();
        let mut out = Vec::new();
        for c in 0..g.channels {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut sum = f64::from(parts.bias[c]);
                    for ky in 0..k {
                        for kx in 0..k {
                            let y = (oy * s + ky) as isize - top as isize;
                            let x = (ox * s + kx) as isize - left as isize;
                            if y < 0 || x < 0 || y >= h as isize || x >= w as isize {
                                continue;
                            }
                            let v = input[c * h * w + y as usize * w + x as usize];
                            let real_x = (f64::from(v) - f64::from(parts.input.zero_point))
                                * f64::from(parts.input.scale);
                            let real_w = f64::from(parts.weights[c * k * k + ky * k + kx])
                                * f64::from(parts.weight_scales[c]);
                            sum += real_x * real_w;
                        }
                    }
                    let steps = sum * f64::from(output_inverse_scale);
                    out.push(grid.quantize(steps as f32));
                }
            }
        }
        out
    }

    /// On random layers of several geometries (EfficientNet's 5x5 and one-sided stride-2
    /// padding among them, planes small and large), every kernel set writes the same values on
    /// both loops and, for 3x3 stride-2 layers padded after the input, on the 3x3 kernels; and
    /// they match a direct convolution but for the odd value a rounding tie sends one step
    /// apart.
    #[test]
    fn every_kernel_set_matches_a_direct_convolution() {
        let mut rng = TestRng(0x5151_2727_9e37_79b9);
        for layer in [
            (3, 9, 11, 5, 1, [2, 2, 2, 2]),
            (20, 10, 8, 5, 2, [1, 1, 2, 2]),
            (17, 7, 9, 3, 2, [0, 0, 1, 1]),
            (5, 6, 6, 7, 1, [3, 3, 3, 3]),
            (4, 5, 7, 1, 1, [0, 0, 0, 0]),
            (2, 1, 1, 5, 2, [2, 2, 2, 2]),
            (33, 19, 25, 5, 1, [2, 2, 2, 2]),
            (6, 8, 9, 4, 3, [1, 0, 2, 1]),
            (5, 75, 100, 3, 2, [0, 0, 1, 1]),
            (18, 21, 17, 5, 2, [1, 1, 2, 2]),
            (7, 12, 11, 3, 2, [0, 0, 0, 1]),
        ] {
            let geometry = DepthwiseGeometry::from(layer);
            let (channels, height, width, kernel, stride, padding) = layer;
            let (oh, ow) = geometry.output_size().unwrap();
            let parts = DepthwiseParts {
                source: 0,
                input: InputGrid {
                    scale: rng.f32_in(0.01, 0.1),
                    zero_point: rng.next() as i8,
                },
                weights: rng
                    .i8s(channels * kernel * kernel)
                    .into_iter()
                    .map(|w| w.max(-127))
                    .collect(),
                weight_scales: (0..channels).map(|_| rng.f32_in(0.001, 0.05)).collect(),
                bias: (0..channels).map(|_| rng.f32_in(-2.0, 2.0)).collect(),
                height,
                width,
            };
            let output_inverse_scale = rng.f32_in(5.0, 50.0);
            let grid = OutputGrid::new(rng.f32_in(5.0, 50.0), rng.next() as u8, 0.0, 6.0);
            let input = rng.i8s(channels * height * width);
            let expected = reference(&geometry, &parts, output_inverse_scale, grid, &input);
            let op = |kernels| {
                GeneralDepthwiseI8::new(
                    "random".into(),
                    geometry,
                    &parts,
                    output_inverse_scale,
                    grid,
                    tvec![1, channels, oh, ow],
                    kernels,
                )
                .unwrap()
            };
            let run = |kernels| {
                let input = Tensor::from_shape(&[1, channels, height, width], &input).unwrap();
                let out = op(kernels)
                    .eval(&EvalContext::out_of_plan(), tvec!(input.into_tvalue()))
                    .unwrap()
                    .remove(0);
                assert_eq!(out.shape(), &[1, channels, oh, ow]);
                out.try_as_plain_ram()
                    .unwrap()
                    .as_slice::<i8>()
                    .unwrap()
                    .to_vec()
            };
            let portable = run(KernelSet::PORTABLE);
            let apart = TestRng::steps_apart(&portable, &expected);
            assert!(
                apart * 100 <= expected.len(),
                "{geometry:?}: {apart} of {} apart",
                expected.len()
            );
            let padded_after = kernel == 3 && stride == 2 && padding[..2] == [0, 0];
            assert_eq!(op(KernelSet::PORTABLE).shifted.is_some(), padded_after);
            for kernels in KernelSet::runnable() {
                assert_eq!(run(kernels), portable, "{kernels}, {geometry:?}");
                for how in [PlaneLoop::Lanes, PlaneLoop::Planar] {
                    let layer = op(kernels).conv;
                    let mut out = vec![0; channels * oh * ow];
                    for (task, out) in out.chunks_mut(LANES * oh * ow).enumerate() {
                        layer.convolve_planes_by(how, kernels, &input, task * LANES, out);
                    }
                    assert_eq!(out, portable, "{kernels}, {how:?}, {geometry:?}");
                    let from_second = &mut out[oh * ow..(channels.min(LANES + 1)) * oh * ow];
                    from_second.fill(0);
                    layer.convolve_planes_by(how, kernels, &input, 1, from_second);
                    assert_eq!(
                        out, portable,
                        "{kernels}, {how:?}, {geometry:?} from channel 1"
                    );
                }
            }
        }
    }

    #[test]
    fn refuses_a_kernel_over_seven_or_a_geometry_without_output() {
        let geometry = |kernel, padding| DepthwiseGeometry {
            channels: 1,
            height: 4,
            width: 4,
            kernel,
            stride: 1,
            padding,
        };
        assert_eq!(geometry(5, [0; 4]).output_size(), None);
        assert_eq!(geometry(5, [1; 4]).output_size(), Some((2, 2)));
        let grid = OutputGrid::new(1.0, 0, 0.0, 6.0);
        let layer = |kernel, padding| {
            GeneralDepthwiseLayer::new(
                geometry(kernel, padding),
                &vec![1; kernel * kernel],
                0,
                vec![1.0],
                vec![0.0],
                grid,
            )
        };
        assert!(layer(7, [3; 4]).is_some());
        assert!(layer(9, [4; 4]).is_none());
        assert!(layer(5, [0; 4]).is_none());
    }
}

//! The float layers before the first quantized tensor (the stem), moved to ops that compute in
//! one fixed order, so that the first quantization sees the same bits on every CPU.

use std::collections::HashSet;

use tract_core::internal::*;
use tract_core::ops::cnn::Conv;
use tract_core::ops::math::Add;
use tract_core::ops::quant::DequantizeLinearF32;

use super::graph::{
    before_reshapes, bin_op, clip_after, concrete_shape, const_values, einsum_with_bias,
    is_pointwise_form, pointwise_positions, square_conv_geometry,
};
use super::{Fused, Translator};
use crate::int8::kernels::KernelSet;
use crate::int8::ops::quantize::QuantizeI8;
use crate::int8::ops::stem::{Conv3x3Params, ExactConv3x3, ExactPointwise, ExactPointwiseI8};

/// A float 3x3 convolution (with the clip after it) or a float pointwise convolution with its
/// bias that does not read a dequantized tensor (a layer of the stem), as an op that computes in
/// a fixed order ([`crate::int8::ops::stem`]) on `kernels`, and the node whose output it
/// replaces; `None` for anything else.
pub fn exact_float_layer(
    model: &TypedModel,
    node: &TypedNode,
    taken: &HashSet<usize>,
    kernels: KernelSet,
) -> TractResult<Option<(Fused, usize)>> {
    let reads_dequantized = |outlet: OutletId| {
        model
            .node(before_reshapes(model, outlet).node)
            .op_is::<DequantizeLinearF32>()
    };
    let output_shape = concrete_shape(model, node.id.into())?;
    if let Some(conv) = node.op_as::<Conv>() {
        let Some((3, stride, padding)) = square_conv_geometry(conv, node) else {
            return Ok(None);
        };
        let input_shape = concrete_shape(model, node.inputs[0])?;
        let rank = input_shape.len();
        let batch_of_one = input_shape.iter().rev().skip(3).all(|d| *d == 1);
        if reads_dequantized(node.inputs[0])
            || rank < 3
            || !batch_of_one
            || model.outlet_fact(node.inputs[0])?.datum_type != DatumType::F32
        {
            return Ok(None);
        }
        let (Some(weights), Some(bias)) = (
            const_values(model, node.inputs[1]),
            const_values(model, node.inputs[2]),
        ) else {
            return Ok(None);
        };
        let (clip, mut chain) = clip_after(model, node, taken);
        let op = ExactConv3x3::new(
            Conv3x3Params {
                layer: node.name.clone(),
                input_channels: input_shape[rank - 3],
                groups: conv.group,
                stride,
                padding,
                height: input_shape[rank - 2],
                width: input_shape[rank - 1],
                weights,
                bias,
                clip,
                output_shape,
            },
            kernels,
        );
        chain.insert(0, node.id);
        let output = chain.pop().unwrap_or(node.id);
        return Ok(op.ok().map(|op| {
            let fused = Fused {
                op: Box::new(op),
                sources: vec![node.inputs[0]],
                absorbed: chain,
            };
            (fused, output)
        }));
    }
    if !bin_op::<Add>(node) {
        return Ok(None);
    }
    let Ok((bias, einsum_node, expression)) = einsum_with_bias(model, node) else {
        return Ok(None);
    };
    let input = einsum_node.inputs[0];
    if !is_pointwise_form(&expression)
        || reads_dequantized(input)
        || model.outlet_fact(input)?.datum_type != DatumType::F32
    {
        return Ok(None);
    }
    let Some(weights) = const_values(model, einsum_node.inputs[1]) else {
        return Ok(None);
    };
    let input_shape = concrete_shape(model, input)?;
    let ci = weights.len() / bias.len().max(1);
    let Some(positions) = pointwise_positions(&input_shape, ci) else {
        return Ok(None);
    };
    let op = ExactPointwise::new(
        node.name.clone(),
        weights,
        bias,
        positions,
        output_shape,
        kernels,
    );
    Ok(op.ok().map(|op| {
        let fused = Fused {
            op: Box::new(op),
            sources: vec![input],
            absorbed: vec![einsum_node.id],
        };
        (fused, node.id)
    }))
}

/// Each [`ExactPointwise`] whose output only a [`QuantizeI8`] boundary reads becomes one
/// [`ExactPointwiseI8`] in the boundary's place, so that the float tensor between them is never
/// written.
pub fn quantize_in_pointwise(model: &TypedModel, translator: &mut Translator) {
    let fusions: Vec<(usize, usize, ExactPointwiseI8, OutletId)> = translator
        .fused
        .iter()
        .filter_map(|(&boundary, (op, sources))| {
            let (inverse_scale, grid) = op.downcast_ref::<QuantizeI8>()?.quantization();
            let [source] = sources.as_slice() else {
                return None;
            };
            let (exact, input) = translator.exact.get(&source.node)?;
            let pointwise = exact.downcast_ref::<ExactPointwise>()?.clone();
            let read_once = model.node(source.node).outputs[0].successors.len() == 1;
            let fused = ExactPointwiseI8::new(pointwise, inverse_scale, grid);
            (source.slot == 0 && read_once).then_some((boundary, source.node, fused, *input))
        })
        .collect();
    for (boundary, layer, fused, input) in fusions {
        translator.exact.remove(&layer);
        translator.absorbed.insert(layer);
        translator
            .fused
            .insert(boundary, (Box::new(fused), vec![input]));
    }
}

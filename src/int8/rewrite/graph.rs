//! Reading a decluttered QDQ graph: the node shapes the rewrite patterns match on.

use std::collections::HashSet;

use tract_core::internal::*;
use tract_core::ops::binary::TypedBinOp;
use tract_core::ops::change_axes::AxisOp;
use tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec};
use tract_core::ops::einsum::EinSum;
use tract_core::ops::element_wise::ElementWiseOp;
use tract_core::ops::math::{Max, Min};
use tract_core::ops::nn::DataFormat;
use tract_core::ops::quant::{DequantizeLinearF32, QuantizeLinearU8};

use super::Fused;
use crate::int8::grid::{f32_values, InputGrid};

/// The uint8 QuantizeLinear of `node`, if it is one.
pub fn quantize_u8(node: &TypedNode) -> Option<&QuantizeLinearU8> {
    node.op_as::<ElementWiseOp>()
        .and_then(|e| e.0.downcast_ref::<QuantizeLinearU8>())
}

/// The quantized tensor behind a DequantizeLinear input of `node`: the QuantizeLinear node id,
/// its scale and its i8-domain zero point.
pub fn dequantized_source(model: &TypedModel, outlet: OutletId) -> Option<(usize, InputGrid)> {
    let dq_node = model.node(before_reshapes(model, outlet).node);
    let dq = dq_node.op_as::<DequantizeLinearF32>()?;
    let source = model.node(before_reshapes(model, dq_node.inputs[0]).node);
    quantize_u8(source)?;
    Some((
        source.id,
        InputGrid {
            scale: dq.scale,
            zero_point: (dq.zero_point - 128).clamp(-128, 127) as i8,
        },
    ))
}

/// The outlet behind any changes of shape that keep the values' order (adding, removing or
/// merging axes), which the int8 ops read through as flat buffers.
pub fn before_reshapes(model: &TypedModel, mut outlet: OutletId) -> OutletId {
    loop {
        let node = model.node(outlet.node);
        match node.op_as::<AxisOp>() {
            Some(AxisOp::Add(_) | AxisOp::Rm(_) | AxisOp::Reshape(..))
                if node.inputs.len() == 1 =>
            {
                outlet = node.inputs[0]
            }
            _ => return outlet,
        }
    }
}

/// Whether `node` has one output read by one node.
pub fn single_successor(node: &TypedNode) -> bool {
    node.outputs.len() == 1 && node.outputs[0].successors.len() == 1
}

/// Whether `node` is the binary op `T`.
pub fn bin_op<T: tract_core::ops::binary::BinMiniOp>(node: &TypedNode) -> bool {
    node.op_as::<TypedBinOp>().is_some_and(|b| b.0.is::<T>())
}

/// The single value of a constant input, when it has exactly one.
pub fn scalar_const(model: &TypedModel, outlet: OutletId) -> Option<f32> {
    let konst = model.outlet_fact(outlet).ok()?.konst.clone()?;
    (konst.len() == 1)
        .then(|| f32_values(&konst).ok()?.first().copied())
        .flatten()
}

/// `value` of exactly one of a binary node's two inputs, and the other input.
pub fn one_constant<T>(
    node: &TypedNode,
    value: impl Fn(OutletId) -> Option<T>,
) -> Option<(T, OutletId)> {
    match (value(node.inputs[0]), value(node.inputs[1])) {
        (None, Some(v)) => Some((v, node.inputs[0])),
        (Some(v), None) => Some((v, node.inputs[1])),
        _ => None,
    }
}

/// The f32 values of a constant input.
pub fn const_values(model: &TypedModel, outlet: OutletId) -> Option<Vec<f32>> {
    let konst = model.outlet_fact(outlet).ok()?.konst.clone()?;
    f32_values(&konst).ok()
}

/// Logs why `layer` keeps running in float.
pub fn stays_float(layer: &str, why: &str) -> Option<Fused> {
    log::debug!("int8 rewrite: {layer} stays in float: {why}");
    None
}

/// The concrete shape of `outlet`; an error for a symbolic one.
pub fn concrete_shape(model: &TypedModel, outlet: OutletId) -> TractResult<TVec<usize>> {
    Ok(model
        .outlet_fact(outlet)?
        .shape
        .as_concrete()
        .context("int8 rewrite needs concrete shapes")?
        .into())
}

/// `Add(EinSum(x, W), bias)` with a constant bias and an unquantized EinSum read by the Add
/// alone: the bias, the EinSum node and its expression; or why not.
pub fn einsum_with_bias<'m>(
    model: &'m TypedModel,
    add: &TypedNode,
) -> Result<(Vec<f32>, &'m TypedNode, String), String> {
    let (bias, einsum_outlet) =
        one_constant(add, |o| const_values(model, o)).ok_or("no constant bias")?;
    let einsum_node = model.node(einsum_outlet.node);
    let einsum = einsum_node
        .op_as::<EinSum>()
        .ok_or("no EinSum before the bias")?;
    let expression = einsum.axes.to_string();
    if einsum.q_params.is_some() || !single_successor(einsum_node) {
        return Err(format!("EinSum {expression}"));
    }
    Ok((bias, einsum_node, expression))
}

/// The EinSum forms of a decluttered 1x1 convolution.
pub fn is_pointwise_form(expression: &str) -> bool {
    matches!(expression, "IHW,OI->OHW" | "NIHW,OI->OHW" | "NIHW,OI->NOHW")
}

/// Positions of a 1x1 convolution's `[.., ci, h, w]` input, when its channel axis holds `ci`.
pub fn pointwise_positions(input_shape: &[usize], ci: usize) -> Option<usize> {
    let values = input_shape.iter().product::<usize>();
    let positions = values / ci.max(1);
    (input_shape.len() >= 3 && input_shape[input_shape.len() - 3] == ci && positions * ci == values)
        .then_some(positions)
}

/// The stride of an unquantized NCHW Conv with OIHW weights, a bias input, a 3x3 kernel,
/// padding 1 and stride 1 or 2 (the same both ways); `None` for any other Conv.
pub fn conv3x3_stride(conv: &Conv, node: &TypedNode) -> Option<usize> {
    let spec = &conv.pool_spec;
    let stride = spec.strides.as_ref().map_or(1, |s| s[0]);
    let ok = conv.q_params.is_none()
        && conv.kernel_fmt == KernelFormat::OIHW
        && matches!(spec.data_format, DataFormat::NCHW | DataFormat::CHW)
        && *spec.kernel_shape == [3, 3]
        && matches!(&spec.padding, PaddingSpec::Explicit(b, a) if **b == [1, 1] && **a == [1, 1])
        && spec
            .dilations
            .as_ref()
            .is_none_or(|d| d.iter().all(|d| *d == 1))
        && spec
            .strides
            .as_ref()
            .is_none_or(|s| s.len() == 2 && s[0] == s[1])
        && matches!(stride, 1 | 2)
        && node.inputs.len() == 3;
    ok.then_some(stride)
}

/// The channel count of a Conv with one group per channel and as many outputs as inputs.
pub fn depthwise_channels(conv: &Conv) -> Option<usize> {
    let channels = conv.pool_spec.input_channels;
    (conv.group == channels && conv.pool_spec.output_channels == channels).then_some(channels)
}

/// The kernel side, stride and padding (top, left, bottom, right) of an unquantized NCHW Conv
/// with OIHW weights, a bias input, a square kernel, no dilation and the same stride both ways;
/// `None` for any other Conv.
pub fn square_conv_geometry(conv: &Conv, node: &TypedNode) -> Option<(usize, usize, [usize; 4])> {
    let spec = &conv.pool_spec;
    let stride = spec.strides.as_ref().map_or(Some(1), |s| match **s {
        [a, b] if a == b => Some(a),
        _ => None,
    })?;
    let padding = match &spec.padding {
        PaddingSpec::Explicit(b, a) if b.len() == 2 && a.len() == 2 => [b[0], b[1], a[0], a[1]],
        PaddingSpec::Valid => [0; 4],
        _ => return None,
    };
    let ok = conv.q_params.is_none()
        && conv.kernel_fmt == KernelFormat::OIHW
        && matches!(spec.data_format, DataFormat::NCHW | DataFormat::CHW)
        && matches!(*spec.kernel_shape, [a, b] if a == b)
        && spec
            .dilations
            .as_ref()
            .is_none_or(|d| d.iter().all(|d| *d == 1))
        && node.inputs.len() == 3;
    ok.then_some((spec.kernel_shape[0], stride, padding))
}

/// When `node` is `Max` or `Min` with a scalar constant: its other input, and `bounds` (low,
/// high) tightened by it.
pub fn clip_step(
    model: &TypedModel,
    node: &TypedNode,
    (low, high): (f32, f32),
) -> Option<(OutletId, (f32, f32))> {
    let is_max = bin_op::<Max>(node);
    if !(is_max || bin_op::<Min>(node)) {
        return None;
    }
    let (bound, input) = one_constant(node, |o| scalar_const(model, o))?;
    Some(if is_max {
        (input, (low.max(bound), high))
    } else {
        (input, (low, high.min(bound)))
    })
}

/// The constant clip (`Max`/`Min` with a scalar) right after `node`, if any, that no other
/// rewrite has taken: its bounds and its nodes in graph order.
pub fn clip_after(
    model: &TypedModel,
    node: &TypedNode,
    taken: &HashSet<usize>,
) -> ((f32, f32), Vec<usize>) {
    let (mut low, mut high) = (f32::NEG_INFINITY, f32::INFINITY);
    let mut chain = vec![];
    let mut current = node;
    while single_successor(current) {
        let next = model.node(current.outputs[0].successors[0].node);
        if taken.contains(&next.id) {
            break;
        }
        match clip_step(model, next, (low, high)) {
            Some((input, bounds)) if input.node == current.id => (low, high) = bounds,
            _ => break,
        }
        chain.push(next.id);
        current = next;
    }
    ((low, high), chain)
}

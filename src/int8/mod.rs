//! Integer execution of QDQ-quantized members.
//!
//! tract runs an ONNX QDQ graph in float between QuantizeLinear and DequantizeLinear pairs.
//! [`rewrite`] translates the loaded, decluttered graph so that the quantized layers run on
//! int8 tensors end to end: every uint8 activation becomes an int8 tensor (zero point minus
//! 128), and each `DequantizeLinear -> layer -> [clip] -> QuantizeLinear` chain becomes one op
//! ([`PointwiseConvI8`], [`DepthwiseConvI8`], [`AddI8`]) with requantization fused. Layers the
//! rewrite does not recognise keep running in float on dequantized values, so the model's
//! meaning never depends on what was matched.

mod add;
mod boundary;
mod depthwise;
mod depthwise_avx2;
mod exact;
mod layout;
mod pairs;
mod pointwise;
mod pool;
mod requant;
#[cfg(test)]
mod test_rng;

use std::collections::{HashMap, HashSet};

use tract_core::internal::*;
use tract_core::model::translator::Translate;
use tract_core::ops::binary::TypedBinOp;
use tract_core::ops::change_axes::AxisOp;
use tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec};
use tract_core::ops::einsum::EinSum;
use tract_core::ops::element_wise::ElementWiseOp;
use tract_core::ops::math::{Add, Max, Min, Mul};
use tract_core::ops::nn::DataFormat;
use tract_core::ops::nn::{Reduce, Reducer};
use tract_core::ops::quant::{DequantizeLinearF32, QuantizeLinearU8};

pub use add::{AddI8, InputGrid};
pub use boundary::QuantizeI8;
pub use depthwise::{DepthwiseConvI8, DepthwiseParams};
pub use exact::{Conv3x3Params, ExactConv3x3, ExactPointwise};
pub use layout::Layout;
pub use pointwise::{choose_kernel, PointwiseConvI8, PointwiseParams};
pub use pool::{MeanPoolI8, MeanPoolParams};
pub use requant::{recover_int8_rows, round_ties_even, OutputGrid};

/// How many layers of each kind a rewrite turned into int8 ops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RewriteSummary {
    pub pointwise: usize,
    pub depthwise: usize,
    pub add: usize,
    /// Global average pools.
    pub pool: usize,
    /// QuantizeLinear nodes left as the boundary from float layers.
    pub boundaries: usize,
    /// Float convolutions moved to [`ExactConv3x3`] and [`ExactPointwise`].
    pub exact_float: usize,
}

impl RewriteSummary {
    /// Number of layers that now run on int8 ops.
    pub fn fused(&self) -> usize {
        self.pointwise + self.depthwise + self.add + self.pool
    }
}

/// Declutters a typed model. A quantized one keeps its layout: tract moves depthwise
/// convolutions to channels-last where it has a channels-last f32 depthwise kernel (aarch64),
/// which would make the graph the int8 rewrite matches depend on the CPU. The layout pass still
/// runs when the rewritten model is optimised.
pub fn declutter(mut model: TypedModel) -> TractResult<TypedModel> {
    if !is_quantized(&model) {
        return model.into_decluttered();
    }
    let mut optimizer = tract_core::optim::Optimizer::declutter();
    optimizer
        .passes
        .retain(|pass| !format!("{pass:?}").starts_with("ChangeAxes"));
    optimizer.optimize(&mut model)?;
    Ok(model)
}

/// Whether `model` holds uint8 QuantizeLinear nodes, i.e. is a QDQ-quantized member.
pub fn is_quantized(model: &TypedModel) -> bool {
    model.nodes().iter().any(|n| quantize_u8(n).is_some())
}

/// Rewrites a decluttered QDQ model to run its quantized layers on int8 ops. Returns `None`
/// when the model has nothing to rewrite, or a quantized tensor is read by something other
/// than a DequantizeLinear or a change of axes (a form this rewrite does not handle).
pub fn rewrite(model: &TypedModel) -> TractResult<Option<(TypedModel, RewriteSummary)>> {
    rewrite_layers(model, Scope::Int8)
}

/// What [`rewrite_layers`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Only the float layers move to [`exact`]: the QDQ graph as tract runs it, with the stem
    /// the rewritten member computes.
    StemOnly,
    /// [`rewrite`] with every int8 tensor channels-first.
    #[cfg(test)]
    Int8ChannelsFirst,
    /// [`rewrite`].
    Int8,
}

fn rewrite_layers(
    model: &TypedModel,
    scope: Scope,
) -> TractResult<Option<(TypedModel, RewriteSummary)>> {
    let int8 = scope != Scope::StemOnly;
    if !is_quantized(model) {
        return Ok(None);
    }
    for node in model.nodes() {
        if quantize_u8(node).is_some() {
            let only_dequantized = node.outputs[0].successors.iter().all(|s| {
                let reader = model.node(s.node);
                reader.op_is::<DequantizeLinearF32>() || reader.op_is::<AxisOp>()
            });
            if !only_dequantized {
                log::info!(
                    "int8 rewrite skipped: {} is read by something other than a DequantizeLinear",
                    node.name
                );
                return Ok(None);
            }
        }
    }
    let mut translator = Translator::default();
    for node in model.nodes().iter().filter(|_| int8) {
        if quantize_u8(node).is_some() {
            let fused = fuse(model, node)?;
            translator.summary_count(&*fused.op);
            translator.absorbed.extend(fused.absorbed);
            translator.fused.insert(node.id, (fused.op, fused.sources));
        }
    }
    if scope == Scope::Int8 {
        plan_channels_last(model, &mut translator)?;
    }
    for node in model.nodes() {
        if translator.absorbed.contains(&node.id) || translator.fused.contains_key(&node.id) {
            continue;
        }
        if let Some((exact, output)) = exact_float_layer(model, node, &translator.absorbed)? {
            translator.summary.exact_float += 1;
            translator.absorbed.extend(exact.absorbed);
            translator
                .exact
                .insert(output, (exact.op, exact.sources[0]));
        }
    }
    let summary = translator.summary;
    let rewritten = translator.translate_model(model)?;
    Ok(Some((rewritten, summary)))
}

fn quantize_u8(node: &TypedNode) -> Option<&QuantizeLinearU8> {
    node.op_as::<ElementWiseOp>()
        .and_then(|e| e.0.downcast_ref::<QuantizeLinearU8>())
}

/// A matched chain: the op that replaces it, the QuantizeLinear nodes whose int8 outputs feed
/// it, and the nodes it absorbs.
struct Fused {
    op: Box<dyn TypedOp>,
    sources: Vec<OutletId>,
    absorbed: Vec<usize>,
}

/// The quantized tensor behind a DequantizeLinear input of `node`: the QuantizeLinear node id,
/// its scale and its i8-domain zero point.
fn dequantized_source(model: &TypedModel, outlet: OutletId) -> Option<(usize, InputGrid)> {
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
fn before_reshapes(model: &TypedModel, mut outlet: OutletId) -> OutletId {
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

fn single_successor(node: &TypedNode) -> bool {
    node.outputs.len() == 1 && node.outputs[0].successors.len() == 1
}

fn bin_op<T: tract_core::ops::binary::BinMiniOp>(node: &TypedNode) -> bool {
    node.op_as::<TypedBinOp>().is_some_and(|b| b.0.is::<T>())
}

/// The single value of a constant input, when it has exactly one.
fn scalar_const(model: &TypedModel, outlet: OutletId) -> Option<f32> {
    let konst = model.outlet_fact(outlet).ok()?.konst.clone()?;
    (konst.len() == 1)
        .then(|| requant::f32_values(&konst).ok()?.first().copied())
        .flatten()
}

/// `value` of exactly one of a binary node's two inputs, and the other input.
fn one_constant<T>(
    node: &TypedNode,
    value: impl Fn(OutletId) -> Option<T>,
) -> Option<(T, OutletId)> {
    match (value(node.inputs[0]), value(node.inputs[1])) {
        (None, Some(v)) => Some((v, node.inputs[0])),
        (Some(v), None) => Some((v, node.inputs[1])),
        _ => None,
    }
}

fn const_values(model: &TypedModel, outlet: OutletId) -> Option<Vec<f32>> {
    let konst = model.outlet_fact(outlet).ok()?.konst.clone()?;
    requant::f32_values(&konst).ok()
}

/// Logs why `layer` keeps running in float.
fn stays_float(layer: &str, why: &str) -> Option<Fused> {
    log::debug!("int8 rewrite: {layer} stays in float: {why}");
    None
}

fn concrete_shape(model: &TypedModel, outlet: OutletId) -> TractResult<TVec<usize>> {
    Ok(model
        .outlet_fact(outlet)?
        .shape
        .as_concrete()
        .context("int8 rewrite needs concrete shapes")?
        .into())
}

fn fuse(model: &TypedModel, quantize: &TypedNode) -> TractResult<Fused> {
    let q = quantize_u8(quantize).context("not a QuantizeLinearU8")?;
    let mut absorbed = vec![quantize.id];
    let (mut clip_low, mut clip_high) = (f32::NEG_INFINITY, f32::INFINITY);
    let mut core_outlet = quantize.inputs[0];
    let mut core = model.node(core_outlet.node);
    while single_successor(core) {
        let Some((other, bounds)) = clip_step(model, core, (clip_low, clip_high)) else {
            break;
        };
        (clip_low, clip_high) = bounds;
        absorbed.push(core.id);
        core_outlet = other;
        core = model.node(other.node);
    }
    let grid = OutputGrid::new(q.scale, q.zero_point, clip_low, clip_high);
    let output_shape = concrete_shape(model, quantize.id.into())?;
    let boundary = |absorbed: Vec<usize>| {
        let op = QuantizeI8::new(quantize.name.clone(), output_shape.clone(), q.scale, grid);
        Fused {
            op: Box::new(op),
            sources: vec![core_outlet],
            absorbed,
        }
    };
    if !single_successor(core) {
        return Ok(boundary(absorbed));
    }
    let layer = core.name.clone();
    let chain = absorbed.clone();
    absorbed.push(core.id);
    if bin_op::<Add>(core) {
        if let (Some(left), Some(right)) = (
            dequantized_source(model, core.inputs[0]),
            dequantized_source(model, core.inputs[1]),
        ) {
            let same_shape = core.inputs.iter().all(|i| {
                model
                    .outlet_fact(*i)
                    .is_ok_and(|f| f.shape.as_concrete() == Some(&*output_shape))
            });
            if same_shape {
                let op = AddI8::new(layer, output_shape, left.1, right.1, q.scale, grid);
                return Ok(Fused {
                    op: Box::new(op),
                    sources: vec![left.0.into(), right.0.into()],
                    absorbed,
                });
            }
        }
        if let Some(fused) =
            fuse_pointwise(model, core, q, grid, output_shape.clone(), absorbed.clone())?
        {
            return Ok(fused);
        }
    }
    if bin_op::<Mul>(core) {
        if let Some(fused) = fuse_mean_pool(model, core, q, grid, &output_shape, absorbed.clone())?
        {
            return Ok(fused);
        }
    }
    if let Some(conv) = core.op_as::<Conv>() {
        if let Some(fused) = fuse_depthwise(
            model,
            core,
            conv,
            q,
            grid,
            output_shape.clone(),
            absorbed.clone(),
        )? {
            return Ok(fused);
        }
    }
    Ok(boundary(chain))
}

/// `Add(EinSum(DequantizeLinear(x), W[co, ci]), bias[co, 1, 1])`: a decluttered 1x1 Conv.
fn fuse_pointwise(
    model: &TypedModel,
    add: &TypedNode,
    q: &QuantizeLinearU8,
    grid: OutputGrid,
    output_shape: TVec<usize>,
    mut absorbed: Vec<usize>,
) -> TractResult<Option<Fused>> {
    let (bias, einsum_node, expression) = match einsum_with_bias(model, add) {
        Ok(parts) => parts,
        Err(why) => return Ok(stays_float(&add.name, &why)),
    };
    let gemm = expression == "mk,kn->mn";
    if !(gemm || is_pointwise_form(&expression)) {
        return Ok(stays_float(&add.name, &format!("EinSum {expression}")));
    }
    let Some((source, input)) = dequantized_source(model, einsum_node.inputs[0]) else {
        return Ok(stays_float(&add.name, "its input is not dequantized"));
    };
    let Some(mut weights) = const_values(model, einsum_node.inputs[1]) else {
        return Ok(stays_float(&add.name, "its weights are not constant"));
    };
    let co = bias.len();
    let mut input_shape = concrete_shape(model, einsum_node.inputs[0])?;
    if gemm {
        // One row of k inputs is a 1x1 convolution of k channels at one position; the
        // weights come as [k, n] and are wanted as [n, k].
        let k = weights.len() / co.max(1);
        if input_shape[..] != [1, k] || k * co != weights.len() {
            return Ok(stays_float(
                &add.name,
                &format!("Gemm input {input_shape:?}"),
            ));
        }
        weights = (0..co * k)
            .map(|at| weights[(at % k) * co + at / k])
            .collect();
        input_shape = tvec![k, 1, 1];
    }
    let Some((int_weights, scales)) = recover_int8_rows(&weights, co) else {
        return Ok(stays_float(&add.name, "its weights are not an int8 grid"));
    };
    let Some(positions) = pointwise_positions(&input_shape, weights.len() / co) else {
        return Ok(stays_float(
            &add.name,
            &format!("input shape {input_shape:?}"),
        ));
    };
    let params = PointwiseParams {
        layer: add.name.clone(),
        weights: &int_weights,
        weight_scales: &scales,
        bias: &bias,
        input_scale: input.scale,
        input_zero_point: input.zero_point,
        output_inverse_scale: q.scale,
        grid,
        positions,
        output_shape,
    };
    let Some(op) = PointwiseConvI8::new(params)? else {
        return Ok(stays_float(&add.name, "no int8 matrix kernel on this CPU"));
    };
    absorbed.push(einsum_node.id);
    Ok(Some(Fused {
        op: Box::new(op),
        sources: vec![source.into()],
        absorbed,
    }))
}

/// `Add(EinSum(x, W), bias)` with a constant bias and an unquantized EinSum read by the Add
/// alone: the bias, the EinSum node and its expression; or why not.
fn einsum_with_bias<'m>(
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
fn is_pointwise_form(expression: &str) -> bool {
    matches!(expression, "IHW,OI->OHW" | "NIHW,OI->OHW" | "NIHW,OI->NOHW")
}

/// Positions of a 1x1 convolution's `[.., ci, h, w]` input, when its channel axis holds `ci`.
fn pointwise_positions(input_shape: &[usize], ci: usize) -> Option<usize> {
    let values = input_shape.iter().product::<usize>();
    let positions = values / ci.max(1);
    (input_shape.len() >= 3 && input_shape[input_shape.len() - 3] == ci && positions * ci == values)
        .then_some(positions)
}

/// `Mul(Reduce<Sum>(DequantizeLinear(x), spatial axes), factor)`: a decluttered global
/// average pool.
fn fuse_mean_pool(
    model: &TypedModel,
    mul: &TypedNode,
    q: &QuantizeLinearU8,
    grid: OutputGrid,
    output_shape: &[usize],
    mut absorbed: Vec<usize>,
) -> TractResult<Option<Fused>> {
    let Some((factor, reduce_outlet)) = one_constant(mul, |o| scalar_const(model, o)) else {
        return Ok(stays_float(&mul.name, "no constant factor"));
    };
    let reduce_node = model.node(reduce_outlet.node);
    let Some(reduce) = reduce_node.op_as::<Reduce>() else {
        return Ok(stays_float(&mul.name, "no Reduce before the factor"));
    };
    let input_shape = concrete_shape(model, reduce_node.inputs[0])?;
    let rank = input_shape.len();
    let spatial: Vec<usize> = (2..rank).collect();
    if reduce.reducer != Reducer::Sum
        || rank < 3
        || input_shape[0] != 1
        || *reduce.axes != *spatial
        || !single_successor(reduce_node)
    {
        return Ok(stays_float(
            &mul.name,
            &format!("{reduce:?} of {input_shape:?}"),
        ));
    }
    let Some((source, input)) = dequantized_source(model, reduce_node.inputs[0]) else {
        return Ok(stays_float(&mul.name, "its input is not dequantized"));
    };
    let op = MeanPoolI8::new(MeanPoolParams {
        layer: mul.name.clone(),
        channels: input_shape[1],
        positions: input_shape[2..].iter().product(),
        input,
        factor,
        output_inverse_scale: q.scale,
        grid,
        output_shape: output_shape.into(),
    })?;
    absorbed.push(reduce_node.id);
    Ok(Some(Fused {
        op: Box::new(op),
        sources: vec![source.into()],
        absorbed,
    }))
}

/// The stride of an unquantized NCHW Conv with OIHW weights, a bias input, a 3x3 kernel,
/// padding 1 and stride 1 or 2 (the same both ways); `None` for any other Conv.
fn conv3x3_stride(conv: &Conv, node: &TypedNode) -> Option<usize> {
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

/// A 3x3, padding 1, stride 1 or 2 Conv with one group per channel.
fn fuse_depthwise(
    model: &TypedModel,
    node: &TypedNode,
    conv: &Conv,
    q: &QuantizeLinearU8,
    grid: OutputGrid,
    output_shape: TVec<usize>,
    absorbed: Vec<usize>,
) -> TractResult<Option<Fused>> {
    let spec = &conv.pool_spec;
    let channels = spec.input_channels;
    let stride = match conv3x3_stride(conv, node) {
        Some(stride) if conv.group == channels && spec.output_channels == channels => stride,
        _ => return Ok(stays_float(&node.name, &format!("{conv:?}"))),
    };
    let Some((source, input)) = dequantized_source(model, node.inputs[0]) else {
        return Ok(stays_float(&node.name, "its input is not dequantized"));
    };
    let (Some(weights), Some(bias)) = (
        const_values(model, node.inputs[1]),
        const_values(model, node.inputs[2]),
    ) else {
        return Ok(stays_float(
            &node.name,
            "its weights or bias are not constant",
        ));
    };
    if weights.len() != channels * 9 || bias.len() != channels {
        return Ok(stays_float(&node.name, "weights or bias of another size"));
    }
    let Some((int_weights, scales)) = recover_int8_rows(&weights, channels) else {
        return Ok(stays_float(&node.name, "its weights are not an int8 grid"));
    };
    let input_shape = concrete_shape(model, node.inputs[0])?;
    let rank = input_shape.len();
    if rank < 3 || input_shape[rank - 3] != channels {
        return Ok(stays_float(
            &node.name,
            &format!("input shape {input_shape:?}"),
        ));
    }
    let op = DepthwiseConvI8::new(DepthwiseParams {
        layer: node.name.clone(),
        weights: &int_weights,
        weight_scales: &scales,
        bias: &bias,
        input_scale: input.scale,
        input_zero_point: input.zero_point,
        output_inverse_scale: q.scale,
        grid,
        stride,
        height: input_shape[rank - 2],
        width: input_shape[rank - 1],
        output_shape,
    })?;
    Ok(Some(Fused {
        op: Box::new(op),
        sources: vec![source.into()],
        absorbed,
    }))
}

/// When `node` is `Max` or `Min` with a scalar constant: its other input, and `bounds` (low,
/// high) tightened by it.
fn clip_step(
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
fn clip_after(
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

/// A float 3x3 convolution (with the clip after it) or a float pointwise convolution with its
/// bias that does not read a dequantized tensor (a layer of the stem), as an op that computes in
/// a fixed order ([`exact`]), and the node whose output it replaces; `None` for anything else.
fn exact_float_layer(
    model: &TypedModel,
    node: &TypedNode,
    taken: &HashSet<usize>,
) -> TractResult<Option<(Fused, usize)>> {
    let reads_dequantized = |outlet: OutletId| {
        model
            .node(before_reshapes(model, outlet).node)
            .op_is::<DequantizeLinearF32>()
    };
    let output_shape = concrete_shape(model, node.id.into())?;
    if let Some(conv) = node.op_as::<Conv>() {
        let Some(stride) = conv3x3_stride(conv, node) else {
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
        let op = ExactConv3x3::new(Conv3x3Params {
            layer: node.name.clone(),
            input_channels: input_shape[rank - 3],
            groups: conv.group,
            stride,
            height: input_shape[rank - 2],
            width: input_shape[rank - 1],
            weights,
            bias,
            clip,
            output_shape,
        });
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
    let op = ExactPointwise::new(node.name.clone(), weights, bias, positions, output_shape);
    Ok(op.ok().map(|op| {
        let fused = Fused {
            op: Box::new(op),
            sources: vec![input],
            absorbed: vec![einsum_node.id],
        };
        (fused, node.id)
    }))
}

/// Moves to channels-last tensors each depthwise convolution that runs faster so, whose input
/// only a pointwise convolution writes and only it reads, and whose output only pointwise
/// convolutions read:
/// the depthwise kernel then convolves the channels of a position side by side, and the
/// pointwise ones read and write that layout through their packing and store, so no tensor is
/// ever transposed.
fn plan_channels_last(model: &TypedModel, translator: &mut Translator) -> TractResult<()> {
    let mut readers: HashMap<usize, Vec<usize>> = HashMap::new();
    for (id, (_, sources)) in &translator.fused {
        for source in sources {
            readers.entry(source.node).or_default().push(*id);
        }
    }
    let is_op = |id: usize, pointwise: bool| {
        translator.fused.get(&id).is_some_and(|(op, _)| {
            if pointwise {
                op.downcast_ref::<PointwiseConvI8>().is_some()
            } else {
                op.downcast_ref::<DepthwiseConvI8>()
                    .is_some_and(DepthwiseConvI8::faster_channels_last)
            }
        })
    };
    let only_int8_readers = |tensor: usize| read_only_by_int8_ops(model, tensor, translator);
    let mut moves = vec![];
    for (&id, (_, sources)) in &translator.fused {
        let [input] = sources[..] else { continue };
        let output_readers = readers.get(&id).map(Vec::as_slice).unwrap_or_default();
        if is_op(id, false)
            && is_op(input.node, true)
            && readers.get(&input.node).map(Vec::as_slice) == Some(&[id])
            && only_int8_readers(input.node)
            && !output_readers.is_empty()
            && output_readers.iter().all(|r| is_op(*r, true))
            && only_int8_readers(id)
        {
            moves.push((id, input.node, output_readers.to_vec()));
        }
    }
    for (depthwise, producer, consumers) in moves {
        if let Some(op) = translator.fused_op::<DepthwiseConvI8>(depthwise) {
            op.layout = Layout::ChannelsLast;
        }
        if let Some(op) = translator.fused_op::<PointwiseConvI8>(producer) {
            op.set_layouts(op.layouts().0, Layout::ChannelsLast)?;
        }
        for consumer in consumers {
            if let Some(op) = translator.fused_op::<PointwiseConvI8>(consumer) {
                op.set_layouts(Layout::ChannelsLast, op.layouts().1)?;
            }
        }
    }
    Ok(())
}

/// Whether the int8 tensor of QuantizeLinear node `tensor` is read only by fused int8 ops
/// (through DequantizeLinear nodes and changes of shape they absorb), not by a float layer
/// or as a model output.
fn read_only_by_int8_ops(model: &TypedModel, tensor: usize, translator: &Translator) -> bool {
    let node = model.node(tensor);
    let outputs = model.output_outlets().unwrap_or_default();
    node.outputs.iter().enumerate().all(|(slot, output)| {
        !outputs.contains(&OutletId::new(tensor, slot))
            && output.successors.iter().all(|reader| {
                let reader = model.node(reader.node);
                translator.absorbed.contains(&reader.id)
                    || ((reader.op_is::<DequantizeLinearF32>() || reader.op_is::<AxisOp>())
                        && read_only_by_int8_ops(model, reader.id, translator))
            })
    })
}

/// Rewrites the graph node by node: every uint8 QuantizeLinear becomes its fused int8 op (or a
/// [`QuantizeI8`] boundary), the nodes a chain absorbed are dropped, DequantizeLinear reads the
/// int8 tensor, the rest is copied.
#[derive(Debug, Default)]
struct Translator {
    fused: HashMap<usize, (Box<dyn TypedOp>, Vec<OutletId>)>,
    /// Float layers replaced by an op of [`exact`] reading one input.
    exact: HashMap<usize, (Box<dyn TypedOp>, OutletId)>,
    absorbed: HashSet<usize>,
    summary: RewriteSummary,
}

impl Translator {
    /// The fused op that replaces QuantizeLinear node `id`, when it is a `T`.
    fn fused_op<T: TypedOp>(&mut self, id: usize) -> Option<&mut T> {
        self.fused.get_mut(&id)?.0.downcast_mut::<T>()
    }

    fn summary_count(&mut self, op: &dyn TypedOp) {
        if op.downcast_ref::<PointwiseConvI8>().is_some() {
            self.summary.pointwise += 1;
        } else if op.downcast_ref::<DepthwiseConvI8>().is_some() {
            self.summary.depthwise += 1;
        } else if op.downcast_ref::<AddI8>().is_some() {
            self.summary.add += 1;
        } else if op.downcast_ref::<MeanPoolI8>().is_some() {
            self.summary.pool += 1;
        } else {
            self.summary.boundaries += 1;
        }
    }
}

impl Translate<TypedFact, Box<dyn TypedOp>, TypedFact, Box<dyn TypedOp>> for Translator {
    fn translate_node(
        &self,
        source: &TypedModel,
        node: &TypedNode,
        target: &mut TypedModel,
        mapping: &HashMap<OutletId, OutletId>,
    ) -> TractResult<TVec<OutletId>> {
        if let Some((op, sources)) = self.fused.get(&node.id) {
            let inputs: TVec<OutletId> = sources.iter().map(|s| mapping[s]).collect();
            return target.wire_node(&node.name, op.clone(), &inputs);
        }
        if self.absorbed.contains(&node.id) {
            return Ok(tvec!());
        }
        if let Some((op, input)) = self.exact.get(&node.id) {
            return target.wire_node(&node.name, op.clone(), &[mapping[input]]);
        }
        let inputs: TVec<OutletId> = node.inputs.iter().map(|i| mapping[i]).collect();
        if let Some(dq) = node.op_as::<DequantizeLinearF32>() {
            let was_u8 = source.outlet_fact(node.inputs[0])?.datum_type == DatumType::U8;
            if was_u8 && target.outlet_fact(inputs[0])?.datum_type == DatumType::I8 {
                let op = DequantizeLinearF32::new(dq.scale, dq.zero_point - 128);
                return target.wire_node(&node.name, op, &inputs);
            }
        }
        target.wire_node(&node.name, node.op.clone(), &inputs)
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use tract_linalg::multithread::{multithread_tract_scope, Executor};

    use super::*;
    use crate::classify::{expand_inputs, InputItem};
    use crate::ensemble::{typed_model_for_input, Ensemble};
    use crate::preprocess::{load_image_file, ImageLimits};

    const MANIFEST: &str = "models/ensemble.toml";

    fn shipped() -> (Ensemble, TypedModel) {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join(MANIFEST);
        let ensemble = Ensemble::load(&manifest).unwrap();
        let member = &ensemble.members[0];
        let bytes = std::fs::read(&member.path).unwrap();
        let typed =
            typed_model_for_input(&bytes, &member.path, &ensemble.manifest.input, &manifest)
                .unwrap();
        (ensemble, typed)
    }

    fn samples() -> Vec<PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/samples");
        expand_inputs(&[dir])
            .into_iter()
            .filter_map(|item| match item {
                InputItem::Image(path) => Some(path),
                InputItem::Unreadable { .. } => None,
            })
            .collect()
    }

    fn to_i8(u8_tensor: &Tensor) -> Tensor {
        let values: Vec<i8> = u8_tensor
            .try_as_plain_ram()
            .unwrap()
            .as_slice::<u8>()
            .unwrap()
            .iter()
            .map(|v| (i32::from(*v) - 128) as i8)
            .collect();
        Tensor::from_shape(u8_tensor.shape(), &values).unwrap()
    }

    /// Every fused op, fed the QDQ graph's own quantized tensors from real images, writes the
    /// QDQ graph's quantized output: the same integers, or one step apart where float
    /// summation order lands a value on the other side of a rounding boundary.
    #[test]
    fn every_int8_op_matches_the_qdq_graph_on_real_images() {
        let (ensemble, model) = shipped();
        let fused: Vec<(usize, Fused)> = model
            .nodes()
            .iter()
            .filter(|n| quantize_u8(n).is_some())
            .map(|n| (n.id, fuse(&model, n).unwrap()))
            .collect();
        let mut outlets: Vec<OutletId> = fused.iter().map(|(q, _)| OutletId::new(*q, 0)).collect();
        outlets.extend(fused.iter().flat_map(|(_, f)| f.sources.iter().copied()));
        outlets.sort();
        outlets.dedup();
        let mut probe = model.clone();
        probe.select_output_outlets(&outlets).unwrap();
        let plan = probe.into_runnable().unwrap();
        let (mut values, mut off_by_one) = (0usize, 0usize);
        let mut kinds = HashSet::new();
        for path in samples().iter().take(2) {
            let image = load_image_file(path, &ImageLimits::default()).unwrap();
            let results = plan.run(tvec!(ensemble.input_for(&image.rgb))).unwrap();
            let value_of = |outlet: &OutletId| {
                let at = outlets.iter().position(|o| o == outlet).unwrap();
                results[at].clone().into_tensor()
            };
            for (q, fused) in &fused {
                kinds.insert(fused.op.name());
                let inputs: TVec<TValue> = fused
                    .sources
                    .iter()
                    .map(|s| {
                        let value = value_of(s);
                        if value.datum_type() == DatumType::U8 {
                            to_i8(&value).into_tvalue()
                        } else {
                            value.into_tvalue()
                        }
                    })
                    .collect();
                let ours = fused
                    .op
                    .eval(&EvalContext::out_of_plan(), inputs)
                    .unwrap()
                    .remove(0);
                let expected = to_i8(&value_of(&OutletId::new(*q, 0)));
                let ours = ours.try_as_plain_ram().unwrap();
                let expected = expected.try_as_plain_ram().unwrap();
                for (a, b) in ours
                    .as_slice::<i8>()
                    .unwrap()
                    .iter()
                    .zip(expected.as_slice::<i8>().unwrap())
                {
                    let gap = (i32::from(*a) - i32::from(*b)).abs();
                    assert!(gap <= 1, "{}: {a} against {b}", fused.op.name());
                    off_by_one += usize::from(gap == 1);
                    values += 1;
                }
            }
        }
        assert_eq!(kinds.len(), 5, "{kinds:?}");
        let share = off_by_one as f64 / values as f64;
        assert!(
            share < 1e-4,
            "{off_by_one} of {values} values one step apart"
        );
    }

    /// Moving tensors to channels-last changes where values sit, not what they are: the
    /// member gives the same logits, bit for bit, with every int8 tensor channels-first, and
    /// with its ops splitting their work over threads.
    #[test]
    fn channels_last_tensors_leave_the_logits_unchanged() {
        let (ensemble, model) = shipped();
        let plan = |scope: Scope| {
            let (rewritten, _) = rewrite_layers(&model, scope).unwrap().unwrap();
            let layouts: Vec<String> = rewritten
                .nodes()
                .iter()
                .filter_map(|n| n.op_as::<DepthwiseConvI8>())
                .map(|d| format!("{:?}", d.layout))
                .collect();
            let plan = rewritten.into_optimized().unwrap().into_runnable().unwrap();
            (plan, layouts)
        };
        let (moved, moved_layouts) = plan(Scope::Int8);
        let (planar, planar_layouts) = plan(Scope::Int8ChannelsFirst);
        assert!(
            moved_layouts.iter().any(|l| l == "ChannelsLast"),
            "{moved_layouts:?}"
        );
        assert!(planar_layouts.iter().all(|l| l == "ChannelsFirst"));
        for path in samples() {
            let image = load_image_file(&path, &ImageLimits::default()).unwrap();
            let input = ensemble.input_for(&image.rgb);
            let moved_threaded = multithread_tract_scope(Executor::multithread(3), || {
                moved.run(tvec!(input.clone())).unwrap().remove(0)
            });
            let moved = moved.run(tvec!(input.clone())).unwrap().remove(0);
            let planar = planar.run(tvec!(input)).unwrap().remove(0);
            assert_eq!(moved, planar, "{}", path.display());
            assert_eq!(moved, moved_threaded, "{} on 3 threads", path.display());
        }
    }

    /// The shipped int8 member runs its quantized layers on the int8 ops, and gives the QDQ
    /// graph's probabilities on every sample image (the same top-1, or the same two on top
    /// where the reference's are within 0.03 of each other). The reference runs the same stem ops: a
    /// float stem computed in another order moves some values across a rounding step of the
    /// first quantization, and the int8 layers are checked here, not the stem.
    #[test]
    fn the_rewritten_member_tracks_the_qdq_graph() {
        let (ensemble, model) = shipped();
        let (_, summary) = rewrite(&model).unwrap().unwrap();
        assert_eq!(
            (
                summary.pointwise,
                summary.depthwise,
                summary.add,
                summary.pool,
                summary.exact_float
            ),
            (33, 16, 10, 1, 4)
        );
        let (same_stem, stem_only) = rewrite_layers(&model, Scope::StemOnly).unwrap().unwrap();
        assert_eq!((stem_only.fused(), stem_only.exact_float), (0, 4));
        let plain = same_stem.into_optimized().unwrap().into_runnable().unwrap();
        let member = &ensemble.members[0];
        let int8_nodes = member
            .plan()
            .model()
            .nodes()
            .iter()
            .filter(|n| n.op.name().ends_with("I8"))
            .count();
        assert!(
            int8_nodes >= summary.fused(),
            "{int8_nodes} int8 nodes in the plan"
        );
        let clips = member
            .plan()
            .model()
            .nodes()
            .iter()
            .filter(|n| n.op.name().contains("Max") || n.op.name().contains("Min"))
            .count();
        assert_eq!(clips, 0, "the stem's clips run inside its convolutions");
        let softmax = |logits: &[f32]| {
            let top = logits.iter().fold(f32::MIN, |m, v| m.max(*v));
            let exp: Vec<f32> = logits.iter().map(|v| (v - top).exp()).collect();
            let sum: f32 = exp.iter().sum();
            exp.iter().map(|e| e / sum).collect::<Vec<f32>>()
        };
        for path in samples() {
            let image = load_image_file(&path, &ImageLimits::default()).unwrap();
            let input = ensemble.input_for(&image.rgb);
            let ours = softmax(&member.run_raw(&input).unwrap());
            let reference = plain.run(tvec!(input)).unwrap().remove(0);
            let reference = softmax(
                reference
                    .try_as_plain_ram()
                    .unwrap()
                    .as_slice::<f32>()
                    .unwrap(),
            );
            let ranked = |p: &[f32]| {
                let mut order: Vec<usize> = (0..p.len()).collect();
                order.sort_by(|a, b| p[*b].total_cmp(&p[*a]));
                order
            };
            let (ours_ranked, reference_ranked) = (ranked(&ours), ranked(&reference));
            let margin = reference[reference_ranked[0]] - reference[reference_ranked[1]];
            if margin >= 0.03 {
                assert_eq!(ours_ranked[0], reference_ranked[0], "{}", path.display());
            } else {
                let mut top_two = [ours_ranked[0], ours_ranked[1]];
                let mut reference_two = [reference_ranked[0], reference_ranked[1]];
                top_two.sort();
                reference_two.sort();
                assert_eq!(top_two, reference_two, "{} (a near tie)", path.display());
            }
            for (a, b) in ours.iter().zip(&reference) {
                assert!((a - b).abs() < 0.03, "{}: {a} against {b}", path.display());
            }
        }
    }
}

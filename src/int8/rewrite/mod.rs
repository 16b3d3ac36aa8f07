//! The rewrite of a decluttered QDQ graph onto int8 ops: every uint8 QuantizeLinear and the
//! layer before it (with its clip) become the op of the first [`PATTERNS`] entry that matches,
//! or a [`QuantizeI8`] boundary; the stem's float layers move to fixed-order ops; tensors
//! between pointwise and depthwise layers go channels-last where that runs faster.
//!
//! Adding an int8 op is one file in [`crate::int8::ops`] (the op and its [`Pattern`]) and one
//! line in [`PATTERNS`].

mod channels_last;
pub mod graph;
mod stem;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};

use tract_core::internal::*;
use tract_core::model::translator::Translate;
use tract_core::ops::change_axes::AxisOp;
use tract_core::ops::quant::{DequantizeLinearF32, QuantizeLinearU8};

use self::graph::{clip_step, concrete_shape, quantize_u8, single_successor};
use super::grid::OutputGrid;
use super::kernels::KernelSet;
use super::ops::add::AddPattern;
use super::ops::depthwise::DepthwisePattern;
use super::ops::general_depthwise::GeneralDepthwisePattern;
use super::ops::mean_pool::MeanPoolPattern;
use super::ops::pointwise::PointwisePattern;
use super::ops::quantize::QuantizeI8;
use super::RewriteSummary;

/// The layer forms that become int8 ops, tried in this order.
pub const PATTERNS: &[&dyn Pattern] = &[
    &AddPattern,
    &PointwisePattern,
    &MeanPoolPattern,
    &GeneralDepthwisePattern,
    &DepthwisePattern,
];

/// A layer form that one int8 op replaces.
pub trait Pattern: Sync {
    /// The op's name, as the rewrite summary counts it.
    fn name(&self) -> &'static str;
    /// The op that replaces `chain`, or `None` when its layer is not of this form (logged at
    /// debug level when it nearly is).
    fn fuse(&self, chain: &Chain) -> TractResult<Option<Fused>>;
}

/// A uint8 QuantizeLinear and the layer that writes the values it quantizes, with what an op
/// replacing them needs.
pub struct Chain<'m> {
    pub model: &'m TypedModel,
    /// The layer before the quantization and its clip, read by them alone.
    pub layer: &'m TypedNode,
    pub quantize: &'m QuantizeLinearU8,
    /// The output grid, with the clip folded in.
    pub grid: OutputGrid,
    pub output_shape: TVec<usize>,
    /// The QuantizeLinear, the clip and the layer: what a match absorbs, at least.
    pub absorbed: Vec<usize>,
    pub kernels: KernelSet,
}

/// A matched chain: the op that replaces it, the QuantizeLinear nodes whose int8 outputs feed
/// it, and the nodes it absorbs.
pub struct Fused {
    pub op: Box<dyn TypedOp>,
    pub sources: Vec<OutletId>,
    pub absorbed: Vec<usize>,
}

/// What [`rewrite_layers`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Only the float layers move to fixed-order ops: the QDQ graph as tract runs it, with the
    /// stem the rewritten member computes.
    StemOnly,
    /// [`Scope::Int8`] with every int8 tensor channels-first.
    #[cfg(test)]
    Int8ChannelsFirst,
    /// The whole rewrite.
    Int8,
}

/// Rewrites `model` within `scope` on `kernels`; `None` when it has nothing to rewrite, or a
/// quantized tensor is read by something other than a DequantizeLinear or a change of axes (a
/// form this rewrite does not handle).
pub fn rewrite_layers(
    model: &TypedModel,
    scope: Scope,
    kernels: KernelSet,
) -> TractResult<Option<(TypedModel, RewriteSummary)>> {
    let int8 = scope != Scope::StemOnly;
    if !super::is_quantized(model) {
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
    translator.summary.kernels = Some(kernels);
    for node in model.nodes().iter().filter(|_| int8) {
        if quantize_u8(node).is_some() {
            let (fused, pattern) = fuse(model, node, kernels)?;
            match pattern {
                Some(name) => *translator.summary.ops.entry(name).or_default() += 1,
                None => translator.summary.boundaries += 1,
            }
            translator.absorbed.extend(fused.absorbed);
            translator.fused.insert(node.id, (fused.op, fused.sources));
        }
    }
    if scope == Scope::Int8 {
        channels_last::plan_channels_last(model, &mut translator)?;
    }
    for node in model.nodes() {
        if translator.absorbed.contains(&node.id) || translator.fused.contains_key(&node.id) {
            continue;
        }
        let exact = stem::exact_float_layer(model, node, &translator.absorbed, kernels)?;
        if let Some((exact, output)) = exact {
            translator.summary.stem += 1;
            translator.absorbed.extend(exact.absorbed);
            translator
                .exact
                .insert(output, (exact.op, exact.sources[0]));
        }
    }
    stem::quantize_in_pointwise(model, &mut translator);
    let summary = translator.summary.clone();
    let rewritten = translator.translate_model(model)?;
    Ok(Some((rewritten, summary)))
}

/// The op replacing QuantizeLinear node `quantize` and the layer before it, and the name of the
/// pattern that matched; a [`QuantizeI8`] boundary (and no name) when none does.
fn fuse(
    model: &TypedModel,
    quantize: &TypedNode,
    kernels: KernelSet,
) -> TractResult<(Fused, Option<&'static str>)> {
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
    if single_successor(core) {
        let mut chain_nodes = absorbed.clone();
        chain_nodes.push(core.id);
        let chain = Chain {
            model,
            layer: core,
            quantize: q,
            grid,
            output_shape: output_shape.clone(),
            absorbed: chain_nodes,
            kernels,
        };
        for pattern in PATTERNS {
            if let Some(fused) = pattern.fuse(&chain)? {
                return Ok((fused, Some(pattern.name())));
            }
        }
    }
    let op = QuantizeI8::new(quantize.name.clone(), output_shape, q.scale, grid, kernels);
    let boundary = Fused {
        op: Box::new(op),
        sources: vec![core_outlet],
        absorbed,
    };
    Ok((boundary, None))
}

/// Rewrites the graph node by node: every uint8 QuantizeLinear becomes its fused int8 op (or a
/// [`QuantizeI8`] boundary), the nodes a chain absorbed are dropped, DequantizeLinear reads the
/// int8 tensor, the rest is copied.
#[derive(Debug, Default)]
pub struct Translator {
    fused: HashMap<usize, (Box<dyn TypedOp>, Vec<OutletId>)>,
    /// Float layers replaced by a fixed-order op of the stem reading one input.
    exact: HashMap<usize, (Box<dyn TypedOp>, OutletId)>,
    absorbed: HashSet<usize>,
    summary: RewriteSummary,
}

impl Translator {
    /// The fused op that replaces QuantizeLinear node `id`, when it is a `T`.
    pub fn fused_op<T: TypedOp>(&mut self, id: usize) -> Option<&mut T> {
        self.fused.get_mut(&id)?.0.downcast_mut::<T>()
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

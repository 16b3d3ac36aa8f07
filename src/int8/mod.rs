//! Integer execution of QDQ-quantized members.
//!
//! tract runs an ONNX QDQ graph in float between QuantizeLinear and DequantizeLinear pairs.
//! [`rewrite`] translates the loaded, decluttered graph so that the quantized layers run on
//! int8 tensors end to end: every uint8 activation becomes an int8 tensor (zero point minus
//! 128), and each `DequantizeLinear -> layer -> [clip] -> QuantizeLinear` chain becomes one op
//! with requantization fused. Layers the rewrite does not recognise keep running in float on
//! dequantized values, so the model's meaning never depends on what was matched.
//!
//! - [`ops`]: one file per op, holding the op and the rewrite pattern that finds its layer;
//! - [`rewrite`](mod@rewrite): the pattern table and the graph translation;
//! - [`kernels`]: the loops per architecture, and the CPU probe behind [`KernelSet`].

pub mod grid;
pub mod kernels;
pub mod layout;
pub mod ops;
pub mod rewrite;
#[cfg(test)]
mod test_rng;

use std::collections::BTreeMap;

use tract_core::internal::*;
use tract_core::optim::change_axes::ChangeAxes;

pub use kernels::{KernelSet, KernelSetError, KERNELS_VAR};
pub use layout::Layout;

/// What a rewrite turned into int8 ops, and on which kernel set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RewriteSummary {
    /// Layers per int8 op, by the op's name.
    pub ops: BTreeMap<&'static str, usize>,
    /// QuantizeLinear nodes left as the boundary from float layers.
    pub boundaries: usize,
    /// Float layers of the stem moved to fixed-order ops.
    pub stem: usize,
    /// The kernel set every op of the rewrite runs on.
    pub kernels: Option<KernelSet>,
}

impl RewriteSummary {
    /// Number of layers that now run on int8 ops.
    pub fn fused(&self) -> usize {
        self.ops.values().sum()
    }
}

impl std::fmt::Display for RewriteSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ops: Vec<String> = self
            .ops
            .iter()
            .map(|(name, count)| format!("{count} {name}"))
            .collect();
        write!(
            f,
            "{} quantized layers on int8 ops ({}), {} float stem layers on fixed-order ops",
            self.fused(),
            ops.join(", "),
            self.stem
        )?;
        if let Some(kernels) = self.kernels {
            write!(f, ", kernels {kernels}")?;
        }
        Ok(())
    }
}

/// Declutters a typed model. A quantized one keeps its layout: tract's [`ChangeAxes`] pass moves
/// depthwise convolutions to channels-last where it has a channels-last f32 depthwise kernel
/// (aarch64), which would make the graph the int8 rewrite matches depend on the CPU. The layout
/// pass still runs when the rewritten model is optimised.
pub fn declutter(mut model: TypedModel) -> TractResult<TypedModel> {
    if !is_quantized(&model) {
        return model.into_decluttered();
    }
    optimizer_keeping_layout().optimize(&mut model)?;
    Ok(model)
}

/// tract's declutter passes without [`ChangeAxes`]. A pass is known by what it prints: tract
/// exposes no other handle on a boxed pass.
fn optimizer_keeping_layout() -> tract_core::optim::Optimizer {
    let change_axes = format!("{:?}", ChangeAxes::default());
    let mut optimizer = tract_core::optim::Optimizer::declutter();
    optimizer
        .passes
        .retain(|pass| format!("{pass:?}") != change_axes);
    optimizer
}

/// Whether `model` holds uint8 QuantizeLinear nodes, i.e. is a QDQ-quantized member.
pub fn is_quantized(model: &TypedModel) -> bool {
    model
        .nodes()
        .iter()
        .any(|n| rewrite::graph::quantize_u8(n).is_some())
}

/// Rewrites a decluttered QDQ model to run its quantized layers on int8 ops of the configured
/// [`KernelSet`]. Returns `None` when the model has nothing to rewrite, or a quantized tensor is
/// read by something other than a DequantizeLinear or a change of axes (a form this rewrite does
/// not handle).
pub fn rewrite(model: &TypedModel) -> TractResult<Option<(TypedModel, RewriteSummary)>> {
    rewrite_on(model, KernelSet::configured()?)
}

/// [`rewrite`] on the kernel set `kernels`.
pub fn rewrite_on(
    model: &TypedModel,
    kernels: KernelSet,
) -> TractResult<Option<(TypedModel, RewriteSummary)>> {
    rewrite::rewrite_layers(model, rewrite::Scope::Int8, kernels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_keeping_declutter_drops_exactly_the_change_of_axes() {
        let all = tract_core::optim::Optimizer::declutter().passes.len();
        assert_eq!(optimizer_keeping_layout().passes.len(), all - 1);
    }
}

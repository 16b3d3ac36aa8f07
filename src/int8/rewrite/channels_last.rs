//! Where int8 tensors go channels-last: between a pointwise convolution and a depthwise one
//! that runs faster so.

use std::collections::HashMap;

use tract_core::internal::*;
use tract_core::ops::change_axes::AxisOp;
use tract_core::ops::quant::DequantizeLinearF32;

use super::Translator;
use crate::int8::layout::Layout;
use crate::int8::ops::depthwise::DepthwiseConvI8;
use crate::int8::ops::pointwise::PointwiseConvI8;

/// Moves to channels-last tensors each depthwise convolution that runs faster so, whose input
/// only a pointwise convolution writes and only it reads, and whose output only pointwise
/// convolutions read:
/// the depthwise kernel then convolves the channels of a position side by side, and the
/// pointwise ones read and write that layout through their packing and store, so no tensor is
/// ever transposed.
pub fn plan_channels_last(model: &TypedModel, translator: &mut Translator) -> TractResult<()> {
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

//! The int8 ops a rewritten member runs, one per file, each with the rewrite [`Pattern`] that
//! finds its layer in a QDQ graph; and the fixed-order float ops of the stem.
//!
//! [`Pattern`]: crate::int8::rewrite::Pattern

pub mod add;
pub mod depthwise;
pub mod general_depthwise;
pub mod mean_pool;
pub mod pointwise;
pub mod quantize;
pub mod stem;

use tract_core::internal::*;

/// An op's result: a new tensor of `shape` whose values `fill` writes, made in place rather
/// than copied from a vector. `fill` must write every value: the tensor starts uninitialized,
/// as tract's own ops make their outputs.
pub fn output_tensor<T: Datum + Copy>(
    shape: &[usize],
    fill: impl FnOnce(&mut [T]),
) -> TractResult<TVec<TValue>> {
    // SAFETY: T is a plain number type, valid for any bits; `fill` writes every value before
    // anything reads the tensor.
    let mut tensor = unsafe { Tensor::uninitialized::<T>(shape)? };
    fill(tensor.try_as_plain_ram_mut()?.as_slice_mut::<T>()?);
    Ok(tvec!(tensor.into_tvalue()))
}

/// The output fact of an int8 op writing `shape`, after checking its inputs are `input_type`.
pub fn int8_fact(
    inputs: &[&TypedFact],
    input_type: DatumType,
    shape: &[usize],
) -> TractResult<TVec<TypedFact>> {
    ensure!(inputs.iter().all(|i| i.datum_type == input_type));
    Ok(tvec!(i8::fact(shape)))
}

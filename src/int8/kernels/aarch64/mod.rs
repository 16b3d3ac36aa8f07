//! Kernels for aarch64: NEON (every aarch64 CPU) and the dot-product instructions (Armv8.2
//! `dotprod`).

pub mod depthwise;
pub mod float_vectors;
pub mod neon_pairs;
pub mod pair_depthwise;
pub mod requantize;
pub mod sdot_depthwise;
pub mod sdot_product;
pub mod vectors;

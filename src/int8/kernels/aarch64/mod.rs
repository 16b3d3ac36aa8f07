//! Kernels for aarch64: the dot-product instructions (Armv8.2 `dotprod`).

pub mod sdot_product;

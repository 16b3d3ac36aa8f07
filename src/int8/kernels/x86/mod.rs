//! Kernels for x86-64: AVX2 with FMA, AVX-512 F and BW, and AVX-512 VNNI.

pub mod depthwise;
pub mod float_vectors;
pub mod pair_product;
pub mod quad_product;
pub mod vnni_depthwise;

use super::VectorLoop;

/// # Safety
/// The CPU must have AVX-512 F and BW, AVX2 and FMA.
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
pub unsafe fn run_avx512<L: VectorLoop>(kernel: L) {
    kernel.run()
}

/// # Safety
/// The CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn run_avx2<L: VectorLoop>(kernel: L) {
    kernel.run()
}

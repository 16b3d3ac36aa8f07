//! dermedge-tools: the host-side companion of the `dermedge` runtime. It writes the ONNX members
//! the runtime loads, with the runtime library's own preprocessing.

pub mod augment;
pub mod batch;
pub mod data;
pub mod fixture;
pub mod onnx;
pub mod rng;
pub mod sign;
pub mod split;

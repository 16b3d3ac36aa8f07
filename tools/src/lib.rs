//! dermedge-tools: the host-side companion of the `dermedge` runtime. It writes the ONNX members
//! the runtime loads, with the runtime library's own preprocessing.

pub mod augment;
pub mod backend;
pub mod batch;
pub mod commands;
pub mod data;
pub mod evaluate;
pub mod export;
pub mod fixture;
pub mod import;
pub mod loss;
pub mod metrics;
pub mod nn;
pub mod onnx;
pub mod plot;
pub mod quantize;
pub mod rng;
pub mod sign;
pub mod split;
pub mod train;

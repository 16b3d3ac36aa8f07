//! dermedge-tools: the host-side companion of the `dermedge` runtime. It trains the members, writes
//! the ONNX files and manifests the runtime loads (with the runtime library's own preprocessing),
//! and evaluates, calibrates, quantizes and signs them. The class list comes from an ensemble
//! manifest ([`classes`]). Every command is a module that returns values; the binary prints them.

pub mod augment;
pub mod backend;
pub mod batch;
pub mod calibrate;
pub mod classes;
pub mod compare;
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
pub mod sides;
pub mod sign;
pub mod split;
pub mod train;

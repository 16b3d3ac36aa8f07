//! Integration tests of dermedge-tools: ImageNet weight import and ONNX export parity.

mod export;
mod import;
mod quantize;
mod recipe;
mod util;

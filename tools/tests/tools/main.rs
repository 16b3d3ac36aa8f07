//! Integration tests of dermedge-tools: ImageNet weight import, ONNX export parity, int8
//! quantization, the committed fixture ensemble, and the training pipeline end to end.

mod export;
mod fixture;
mod import;
mod member_inputs;
mod pipeline;
mod quantize;
mod recipe;
mod util;

//! End-to-end tests of the `dermedge` binary.

mod bad_inputs;
mod classify;
mod inspect_bench;
mod manifest_errors;
mod util;

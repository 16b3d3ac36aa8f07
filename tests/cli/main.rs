//! End-to-end tests of the `dermedge` binary.

mod bad_inputs;
mod capture;
mod classify;
mod fuzz;
mod gate;
mod inspect_bench;
mod manifest_errors;
mod pipeline;
mod reliability;
mod run;
mod util;

//! End-to-end tests of the `dermedge` binary.

mod bad_inputs;
mod browser;
#[cfg(feature = "camera")]
mod camera;
mod capture;
mod classify;
mod disk;
mod gate;
mod inspect_bench;
mod kernels;
mod manifest_errors;
mod reliability;
mod run;
#[path = "../support/scratch_dir.rs"]
mod scratch_dir;
mod serve;
mod util;

//! dermedge: an edge runtime that classifies dermatoscope images into the seven HAM10000
//! classes with an ensemble of CNNs run by tract, as decision support for a clinician.
//!
//! The library returns values and typed errors and never prints; the binary (`dermedge`, in
//! `src/main.rs` and `src/cli/`) owns the command line, the output and the exit codes. The
//! training tools (`dermedge-tools`) call [`preprocess`] so that training and device prepare
//! images the same way.

pub mod bench;
pub mod capture;
pub mod classify;
pub mod codec;
pub mod config;
pub mod decision;
pub mod device_loop;
pub mod digest;
pub mod ensemble;
pub mod health;
pub mod history;
pub mod inputs;
pub mod int8;
pub mod integrity;
pub mod journal;
pub mod manifest;
pub mod paths;
pub mod preprocess;
pub mod profile;
pub mod quality;
pub mod record;
pub mod serve;
pub mod trigger;

#[cfg(test)]
#[path = "../tests/support/scratch_dir.rs"]
mod scratch_dir;

pub use ensemble::{Ensemble, EnsembleError, Prediction};
pub use manifest::Manifest;
pub use record::DECISION_SUPPORT_NOTICE;

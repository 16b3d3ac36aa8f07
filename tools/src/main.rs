//! The `dermedge-tools` binary: parses the command line, runs one command, prints its result and
//! sets the exit code.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use cli::{
    calibrate, compare, evaluate, export, fixture, keygen, quantize, sign, split, throughput, train,
};

#[derive(Debug, Parser)]
#[command(
    name = "dermedge-tools",
    version,
    about = "Training-side tools for the dermedge runtime."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write an untrained fixture ensemble (seeded random weights) for tests and benchmarks.
    Fixture(fixture::Args),
    /// Lesion-grouped, class-stratified, seeded split of a HAM10000 folder, written as CSV.
    Split(split::Args),
    /// Train ensemble members (every --arch x --seed) on a HAM10000 folder.
    Train(Box<train::Args>),
    /// Export a run's members (best checkpoints) as ONNX plus ensemble.toml, checked against tract.
    Export(export::Args),
    /// Evaluate an ensemble through the runtime's tract path on one side of a lesion-grouped split.
    Evaluate(evaluate::Args),
    /// Fit temperature, logit adjustment, referral and uncertainty thresholds on the validation side; writes them into the manifest.
    Calibrate(calibrate::Args),
    /// Post-training int8 quantization of an f32 ensemble (QDQ members), calibrated on training images; compares int8 with f32 on the validation side.
    Quantize(quantize::Args),
    /// Compare an int8 ensemble with its f32 reference through tract: top-1 agreement and accuracy on one side of the split.
    Compare(compare::Args),
    /// Training throughput (images/s) of one backbone on one backend, on random batches.
    Throughput(throughput::Args),
    /// Make an ed25519 release key pair: PREFIX.key (private, 0600; keep it off devices) and PREFIX.pub.
    Keygen(keygen::Args),
    /// Sign an ensemble manifest (after checking that it loads) into <manifest>.sig.
    Sign(sign::Args),
}

fn main() -> ExitCode {
    keep_freed_memory();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let result = match Cli::parse().command {
        Command::Fixture(args) => fixture::run(args),
        Command::Split(args) => split::run(args),
        Command::Train(args) => train::run(*args),
        Command::Export(args) => export::run(args),
        Command::Evaluate(args) => evaluate::run(args),
        Command::Calibrate(args) => calibrate::run(args),
        Command::Quantize(args) => quantize::run(args),
        Command::Compare(args) => compare::run(args),
        Command::Throughput(args) => throughput::run(args),
        Command::Keygen(args) => keygen::run(args),
        Command::Sign(args) => sign::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dermedge-tools: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Keeps freed memory in glibc's heap instead of handing it back to the kernel. Training frees
/// and reallocates the same tens-of-megabyte activations every step; by default each comes back
/// as fresh pages that the kernel faults in and zeroes (measured: 15-18% of a libtorch training
/// step of EfficientNet-Lite0 on 2 cores). The main thread's heap serves allocations of every
/// size (no separate mappings at all: above 32 MiB glibc would map each afresh whatever the
/// threshold); other threads' arenas still map what does not fit their 64 MiB heaps.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    const MIB: libc::c_int = 1 << 20;
    // SAFETY: mallopt only sets allocator tunables; it runs before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 * MIB);
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
        libc::mallopt(libc::M_TOP_PAD, 512 * MIB);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

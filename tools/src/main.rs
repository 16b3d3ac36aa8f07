use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dermedge_tools::data::load_ham10000;
use dermedge_tools::fixture::{write_fixture_ensemble, FixtureArch};
use dermedge_tools::sign::{keygen, sign};
use dermedge_tools::split::{counts_table, k_fold, train_val_test, write_split_csv};

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
    Fixture {
        /// Folder to write the members and ensemble.toml into.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value_t = FixtureArch::TinyCnn)]
        arch: FixtureArch,
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=16))]
        members: u8,
        #[arg(long, default_value_t = 64)]
        width: u32,
        #[arg(long, default_value_t = 48)]
        height: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Lesion-grouped, class-stratified, seeded split of a HAM10000 folder, written as CSV.
    Split {
        /// Dataset root: HAM10000_metadata.csv plus images/ or HAM10000_images_part_1/ and _2/.
        #[arg(long, default_value = "../shared/ham10000")]
        data: PathBuf,
        /// Output CSV (image_id,lesion_id,dx,split).
        #[arg(long, default_value = "splits/split.csv")]
        out: PathBuf,
        /// Share of each class's lesions for validation.
        #[arg(long, default_value_t = 0.15)]
        val: f64,
        /// Share of each class's lesions for test.
        #[arg(long, default_value_t = 0.15)]
        test: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// K folds instead of train/val/test.
        #[arg(long, value_parser = clap::value_parser!(u8).range(2..=20))]
        folds: Option<u8>,
    },
    /// Make an ed25519 release key pair: PREFIX.key (private, 0600; keep it off devices) and PREFIX.pub.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign an ensemble manifest (after checking that it loads) into <manifest>.sig.
    Sign {
        #[arg(long, default_value = "models/ensemble.toml")]
        manifest: PathBuf,
        /// The private key written by `keygen`.
        #[arg(long)]
        key: PathBuf,
    },
}

fn split(
    data: &Path,
    out: &Path,
    val: f64,
    test: f64,
    seed: u64,
    folds: Option<u8>,
) -> anyhow::Result<()> {
    if !(0.0..1.0).contains(&val) || !(0.0..1.0).contains(&test) || val + test >= 1.0 {
        anyhow::bail!("--val {val} and --test {test} must be shares in [0, 1) that sum below 1. Fix: e.g. --val 0.15 --test 0.15");
    }
    let (samples, report) = load_ham10000(data)?;
    if !report.is_clean() {
        eprint!("{}", report.summary());
    }
    if samples.is_empty() {
        anyhow::bail!(
            "no usable images under {}. Fix: point --data at a HAM10000 folder",
            data.display()
        );
    }
    let assignment = match folds {
        Some(k) => k_fold(&samples, usize::from(k), seed),
        None => train_val_test(&samples, val, test, seed),
    };
    write_split_csv(out, &samples, &assignment)?;
    print!("{}", counts_table(&samples, &assignment));
    println!(
        "wrote {} ({} images, seed {seed})",
        out.display(),
        samples.len()
    );
    Ok(())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Fixture {
            out,
            arch,
            members,
            width,
            height,
            seed,
        } => write_fixture_ensemble(&out, arch, usize::from(members), width, height, seed).map(
            |path| {
                println!("wrote {}", path.display());
            },
        ),
        Command::Split {
            data,
            out,
            val,
            test,
            seed,
            folds,
        } => split(&data, &out, val, test, seed, folds),
        Command::Keygen { out } => keygen(&out).map(|(private, public)| {
            println!(
                "wrote {} (private: keep it off devices) and {}",
                private.display(),
                public.display()
            );
        }),
        Command::Sign { manifest, key } => sign(&manifest, &key).map(|path| {
            println!("wrote {}", path.display());
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dermedge-tools: {e:#}");
            ExitCode::from(2)
        }
    }
}

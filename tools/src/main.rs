use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dermedge_tools::fixture::{write_fixture_ensemble, FixtureArch};
use dermedge_tools::sign::{keygen, sign};

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

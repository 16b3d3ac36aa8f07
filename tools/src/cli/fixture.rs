//! `dermedge-tools fixture`.

use std::path::PathBuf;

use dermedge_tools::fixture::{write_fixture_ensemble, FixtureArch, FixtureSpec};

use super::ClassesArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
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
    #[command(flatten)]
    classes: ClassesArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let spec = FixtureSpec {
        arch: args.arch,
        members: usize::from(args.members),
        width: args.width,
        height: args.height,
        seed: args.seed,
    };
    let classes = args.classes.load()?;
    let path = write_fixture_ensemble(&args.out, &spec, classes.infos())?;
    println!("wrote {}", path.display());
    Ok(())
}

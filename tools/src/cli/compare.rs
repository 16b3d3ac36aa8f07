//! `dermedge-tools compare`.

use std::path::PathBuf;

use dermedge_tools::classes::DEFAULT_MANIFEST;
use dermedge_tools::compare::{compare, CompareRequest};

use super::DatasetArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The int8 ensemble.
    #[arg(long, default_value = DEFAULT_MANIFEST)]
    manifest: PathBuf,
    /// The f32 ensemble it was made from.
    #[arg(long, default_value = "models/f32/ensemble.toml")]
    reference: PathBuf,
    #[command(flatten)]
    dataset: DatasetArgs,
    #[arg(long, default_value = "test")]
    side: String,
    /// At most this many images of the side.
    #[arg(long)]
    limit: Option<usize>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let comparison = compare(&CompareRequest {
        reference: args.reference,
        candidate: args.manifest,
        data: args.dataset.data,
        split: args.dataset.split,
        side: args.side.clone(),
        limit: args.limit,
    })?;
    println!("{} side: {}", args.side, comparison.summary());
    Ok(())
}

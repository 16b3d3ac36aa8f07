//! `dermedge-tools sign`.

use std::path::PathBuf;

use dermedge_tools::classes::DEFAULT_MANIFEST;
use dermedge_tools::sign::sign;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, default_value = DEFAULT_MANIFEST)]
    manifest: PathBuf,
    /// The private key written by `keygen`.
    #[arg(long)]
    key: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let path = sign(&args.manifest, &args.key)?;
    println!("wrote {}", path.display());
    Ok(())
}

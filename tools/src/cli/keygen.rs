//! `dermedge-tools keygen`.

use std::path::PathBuf;

use dermedge_tools::sign::keygen;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (private, public) = keygen(&args.out)?;
    println!(
        "wrote {} (private: keep it off devices) and {}",
        private.display(),
        public.display()
    );
    Ok(())
}

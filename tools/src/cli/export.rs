//! `dermedge-tools export`.

use std::path::PathBuf;

use dermedge_tools::export::{export, ExportRequest};

use super::ClassesArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The --out folder of `train`.
    #[arg(long)]
    run: PathBuf,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value = "dermedge-ham10000")]
    name: String,
    #[arg(long, default_value = "0.1.0")]
    version: String,
    /// Folder of images on which burn and tract logits must agree.
    #[arg(long)]
    check_images: Option<PathBuf>,
    #[arg(long, default_value_t = 1e-4)]
    tolerance: f32,
    #[command(flatten)]
    classes: ClassesArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let exported = export(&ExportRequest {
        classes: args.classes.load()?,
        run: args.run,
        out: args.out,
        name: args.name,
        version: args.version,
        check_images: args.check_images,
        tolerance: args.tolerance,
    })?;
    for m in &exported.members {
        println!(
            "{}: {} ({:.1} MiB), burn vs tract max |logit difference| {:.2e} on {} inputs",
            m.name,
            m.arch,
            m.bytes as f64 / (1024.0 * 1024.0),
            m.worst,
            m.inputs
        );
    }
    println!("wrote {}", exported.manifest.display());
    Ok(())
}

//! `dermedge-tools throughput`.

use dermedge_tools::nn::Arch;
use dermedge_tools::train::training_throughput;

use super::{ClassesArgs, ModelArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    common: ModelArgs,
    #[arg(long, value_enum)]
    arch: Arch,
    #[arg(long, default_value_t = 3)]
    steps: usize,
    #[command(flatten)]
    classes: ClassesArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        common,
        arch,
        steps,
        classes,
    } = args;
    let config = common.config(arch, classes.load()?.len());
    let device = common.backend.device()?;
    let rate = training_throughput(&config, &device, steps.max(1))?;
    println!(
        "{arch} backend={:?} batch={} input={}x{}: {rate:.2} training images/s",
        common.backend, common.batch, common.width, common.height
    );
    Ok(())
}

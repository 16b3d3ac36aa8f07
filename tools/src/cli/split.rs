//! `dermedge-tools split`.

use std::path::PathBuf;

use dermedge_tools::split::{counts_table, split_dataset, SplitRequest};

use super::ClassesArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
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
    #[command(flatten)]
    classes: ClassesArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let classes = args.classes.load()?;
    let request = SplitRequest {
        data: args.data,
        out: args.out,
        val: args.val,
        test: args.test,
        seed: args.seed,
        folds: args.folds.map(usize::from),
    };
    let made = split_dataset(&request, &classes)?;
    if !made.report.is_clean() {
        eprint!("{}", made.report.summary());
    }
    print!(
        "{}",
        counts_table(&made.samples, &made.assignment, &classes)
    );
    println!(
        "wrote {} ({} images, seed {})",
        request.out.display(),
        made.samples.len(),
        request.seed
    );
    Ok(())
}

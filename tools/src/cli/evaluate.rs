//! `dermedge-tools evaluate`.

use std::path::PathBuf;

use dermedge_tools::evaluate::{evaluate, EvaluateRequest};

use super::SideArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    side: SideArgs,
    /// Report folder (report.md, predictions.csv, reliability.png, melanoma-roc.png).
    #[arg(long, default_value = "reports/test")]
    out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let evaluation = evaluate(&EvaluateRequest {
        side: args.side.request("test"),
        out: args.out,
    })?;
    print!("{}", evaluation.markdown);
    eprintln!("wrote {}", evaluation.report.display());
    Ok(())
}

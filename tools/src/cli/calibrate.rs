//! `dermedge-tools calibrate`.

use dermedge_tools::calibrate::{calibrate, CalibrateRequest};

use super::SideArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    side: SideArgs,
    /// Share of malignant validation images the referral threshold must refer.
    #[arg(long, default_value_t = 0.95)]
    sensitivity: f64,
    /// Fit a post-hoc logit adjustment (an exponent on the training side's class shares, chosen
    /// for the best mean of top-1 and balanced accuracy) or leave it off.
    #[arg(long, value_enum, default_value_t = Adjustment::Fit)]
    logit_adjustment: Adjustment,
}

/// `--logit-adjustment` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Adjustment {
    Fit,
    Off,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let calibration = calibrate(&CalibrateRequest {
        side: args.side.request("val"),
        sensitivity: args.sensitivity,
        logit_adjustment: args.logit_adjustment == Adjustment::Fit,
    })?;
    println!("{}", calibration.summary());
    Ok(())
}

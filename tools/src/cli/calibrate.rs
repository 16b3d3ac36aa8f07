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
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let calibration = calibrate(&CalibrateRequest {
        side: args.side.request("val"),
        sensitivity: args.sensitivity,
    })?;
    println!("{}", calibration.summary());
    Ok(())
}

//! `dermedge-tools quantize`.

use std::path::PathBuf;

use dermedge_tools::quantize::{quantize, quantize_summary, QuantizeRequest, RangeMethod};

use super::DatasetArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The f32 ensemble.
    #[arg(long, default_value = "models/f32/ensemble.toml")]
    manifest: PathBuf,
    #[command(flatten)]
    dataset: DatasetArgs,
    /// Folder for the int8 members and their ensemble.toml.
    #[arg(long)]
    out: PathBuf,
    /// Training images to calibrate activation ranges on.
    #[arg(long, default_value_t = 200)]
    calibration_images: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How activation ranges are chosen from the calibration images.
    #[arg(long, value_enum, default_value_t = RangeMethod::Mse)]
    ranges: RangeMethod,
    /// Keep the first N Conv/Gemm layers in f32 (the full-resolution stem, where int8 costs the most agreement).
    #[arg(long, default_value_t = 4)]
    float_layers: usize,
    /// Equalize the channels of depthwise inputs before calibrating: 1 scales every channel
    /// to the widest one's calibrated peak, 0 turns it off.
    #[arg(long, default_value_t = 1.0)]
    equalize: f32,
    /// The same for pointwise inputs that no other layer reads (a linear bottleneck, say): the
    /// gains move rounding from the input onto the pointwise weights.
    #[arg(long, default_value_t = 0.0)]
    equalize_pointwise: f32,
    /// Bits of the pointwise (1x1) and dense weights: 8, or 7 ([-63, 63]) for kernels that sum
    /// more products in 16-bit lanes.
    #[arg(long, default_value_t = 8)]
    pointwise_weight_bits: u8,
    /// At most this many validation images for the int8 vs f32 comparison.
    #[arg(long)]
    compare_limit: Option<usize>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (members, comparison) = quantize(&QuantizeRequest {
        manifest: args.manifest,
        data: args.dataset.data,
        split: args.dataset.split,
        out: args.out,
        calibration_images: args.calibration_images,
        seed: args.seed,
        range_method: args.ranges,
        float_layers: args.float_layers,
        equalize: args.equalize,
        equalize_pointwise: args.equalize_pointwise,
        pointwise_weight_bits: args.pointwise_weight_bits,
        compare_limit: args.compare_limit,
    })?;
    print!("{}", quantize_summary(&members, &comparison));
    Ok(())
}

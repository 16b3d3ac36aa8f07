//! `dermedge-tools quantize`: post-training static int8 quantization of an exported ensemble,
//! calibrated on training images, with int8-against-f32 figures on the validation side.

mod calibration;
mod equalize;
mod grid;
mod qdq;

pub use calibration::{calibrate, channel_peaks, Histogram, RangeMethod, Ranges};
pub use equalize::{channel_gains, equalizable_inputs, equalize, EqualizableInput, Reader};
pub use grid::{
    quantize_per_channel, ActivationQuant, ChannelQuantized, WEIGHT_BOUND_7_BITS,
    WEIGHT_BOUND_8_BITS,
};
pub use qdq::{decode_model, quantize_model, quantized_activations, weight_layers};

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use dermedge::ensemble::read_member_file;
use dermedge::manifest::{InputSpec, Manifest};
use dermedge::preprocess::{load_image_file, sha256_hex, to_input_tensor, ImageLimits};
use image::RgbImage;

use crate::classes::Classes;
use crate::compare::{compare, CompareRequest, Comparison};
use crate::rng::SeededRng;
use crate::sides::side_samples;

/// Options of `dermedge-tools quantize`.
#[derive(Debug, Clone)]
pub struct QuantizeRequest {
    /// The f32 ensemble's manifest.
    pub manifest: PathBuf,
    pub data: PathBuf,
    pub split: Option<PathBuf>,
    /// Folder for the int8 members and their `ensemble.toml`.
    pub out: PathBuf,
    /// Training images the activation ranges are calibrated on.
    pub calibration_images: usize,
    pub seed: u64,
    pub range_method: RangeMethod,
    /// The first Conv or Gemm layers (graph order) kept in f32.
    pub float_layers: usize,
    /// How far the channels of depthwise inputs are equalized before calibration, from 0 (not
    /// at all) to 1 (every channel to the widest one's peak): see [`equalize`].
    pub equalize: f32,
    /// The same for the inputs of pointwise layers that read a tensor no other layer reads
    /// (a linear bottleneck, say), where the gains move rounding from the input onto the
    /// weights.
    pub equalize_pointwise: f32,
    /// Bits of the weights of pointwise (1x1) convolutions and Gemm layers: 8 ([-127, 127]), or
    /// 7 ([-63, 63]), which lets a kernel sum more products in 16-bit lanes.
    pub pointwise_weight_bits: u8,
    /// Validation images the int8 ensemble is compared on (all when `None`).
    pub compare_limit: Option<usize>,
}

/// One member's file sizes.
#[derive(Debug, Clone)]
pub struct QuantizedMember {
    pub file: PathBuf,
    pub f32_bytes: usize,
    pub int8_bytes: usize,
}

/// `request.calibration_images` training images drawn with its seed, decoded.
fn calibration_images(
    request: &QuantizeRequest,
    manifest: &Manifest,
) -> anyhow::Result<Vec<RgbImage>> {
    let classes = Classes::new(manifest.classes.clone())?;
    let (samples, mut indices) = side_samples(
        &request.data,
        request.split.as_deref(),
        "train",
        None,
        &classes,
    )?;
    let mut rng = SeededRng::new(request.seed);
    for i in (1..indices.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        indices.swap(i, j);
    }
    if request.calibration_images == 0 {
        bail!(
            "no calibration images asked for. Fix: --calibration-images 1 or more (200 by default)"
        );
    }
    indices.truncate(request.calibration_images);
    indices
        .iter()
        .map(|&i| Ok(load_image_file(&samples[i].path, &ImageLimits::default())?.rgb))
        .collect()
}

/// The calibration images prepared for a member with input `spec`, and the input's shape.
fn calibration_inputs(images: &[RgbImage], spec: &InputSpec) -> (Vec<Vec<f32>>, [usize; 4]) {
    let inputs = images
        .iter()
        .map(|image| to_input_tensor(image, spec))
        .collect();
    (inputs, [1, 3, spec.height as usize, spec.width as usize])
}

/// `model` (encoded as `bytes`) with the inputs of its depthwise layers equalized to
/// `strengths.0` and those of its pointwise layers to `strengths.1` on the calibration
/// `inputs`, re-encoded, and how many inputs were equalized.
fn equalized_member(
    model: tract_onnx::pb::ModelProto,
    bytes: Vec<u8>,
    float_layers: &HashSet<String>,
    shape: [usize; 4],
    inputs: &[Vec<f32>],
    strengths: (f32, f32),
) -> anyhow::Result<(tract_onnx::pb::ModelProto, Vec<u8>, usize)> {
    let graph = model.graph.as_ref().context("the model has no graph")?;
    let found: Vec<(EqualizableInput, f32)> = [
        (Reader::Depthwise, strengths.0),
        (Reader::Pointwise, strengths.1),
    ]
    .into_iter()
    .filter(|(_, strength)| *strength != 0.0)
    .flat_map(|(reader, strength)| {
        equalizable_inputs(graph, float_layers, reader)
            .into_iter()
            .map(move |input| (input, strength))
    })
    .collect();
    if found.is_empty() {
        return Ok((model, bytes, 0));
    }
    let tensors: Vec<(String, usize)> = found
        .iter()
        .map(|(d, _)| (d.tensor.clone(), d.channels))
        .collect();
    let peaks = channel_peaks(&bytes, shape, &tensors, inputs)?;
    let gains: Vec<Vec<f32>> = found
        .iter()
        .map(|(d, strength)| {
            peaks
                .get(&d.tensor)
                .map(|p| channel_gains(p, *strength))
                .with_context(|| format!("no peaks measured for {}", d.tensor))
        })
        .collect::<anyhow::Result<_>>()?;
    let found: Vec<EqualizableInput> = found.into_iter().map(|(d, _)| d).collect();
    let equalized = equalize(&model, &found, &gains)?;
    let bytes = crate::onnx::encode(&equalized);
    Ok((equalized, bytes, found.len()))
}

/// Quantizes every member of the request's ensemble, writes them with a manifest into
/// `request.out`, and compares int8 with f32 on the validation side.
pub fn quantize(request: &QuantizeRequest) -> anyhow::Result<(Vec<QuantizedMember>, Comparison)> {
    let manifest = Manifest::load(&request.manifest)?;
    if manifest.members.iter().any(|m| m.precision != "f32") {
        bail!(
            "{} already holds non-f32 members. Fix: quantize the f32 ensemble it was made from",
            request.manifest.display()
        );
    }
    let source_dir = match request.manifest.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(&request.out)
        .with_context(|| format!("cannot create {}", request.out.display()))?;
    let canonical = |dir: &Path| {
        dir.canonicalize()
            .with_context(|| format!("cannot resolve {}", dir.display()))
    };
    if canonical(&request.out)? == canonical(source_dir)? {
        bail!(
            "--out {} is the f32 ensemble's folder. Fix: write the int8 ensemble to its own folder",
            request.out.display()
        );
    }
    for (option, strength) in [
        ("--equalize", request.equalize),
        ("--equalize-pointwise", request.equalize_pointwise),
    ] {
        if !(0.0..=1.0).contains(&strength) {
            bail!(
                "equalization strength {strength} is outside [0, 1]. Fix: {option} 1 (full), 0 (off) or a value between"
            );
        }
    }
    let pointwise_bound = match request.pointwise_weight_bits {
        8 => WEIGHT_BOUND_8_BITS,
        7 => WEIGHT_BOUND_7_BITS,
        bits => bail!(
            "pointwise weights of {bits} bits are not supported. Fix: --pointwise-weight-bits 8 (the default) or 7"
        ),
    };
    let images = calibration_images(request, &manifest)?;
    let mut int8_manifest = manifest.clone();
    int8_manifest.version = int8_version(&manifest.version, pointwise_bound);
    int8_manifest.description = format!(
        "{}; post-training int8 by dermedge-tools quantize (per-channel symmetric int8 weights, uint8 activations calibrated on {} training images, first {} Conv/Gemm layers kept in f32, depthwise inputs equalized with strength {}{}{})",
        manifest.description,
        images.len(),
        request.float_layers,
        request.equalize,
        match request.equalize_pointwise {
            0.0 => String::new(),
            strength => format!(", pointwise inputs read once with strength {strength}"),
        },
        match pointwise_bound {
            WEIGHT_BOUND_7_BITS => ", pointwise and dense weights in [-63, 63]",
            _ => "",
        }
    );
    let mut members = Vec::new();
    for (spec, int8_spec) in manifest.members.iter().zip(&mut int8_manifest.members) {
        let path = source_dir.join(&spec.file);
        let bytes = read_member_file(&path, &spec.sha256, &request.manifest)?;
        let model = decode_model(&bytes).with_context(|| path.display().to_string())?;
        let (inputs, shape) = calibration_inputs(&images, manifest.input_of(spec));
        let graph = model.graph.as_ref().context("the model has no graph")?;
        let float_layers: HashSet<String> = weight_layers(graph)
            .into_iter()
            .take(request.float_layers)
            .collect();
        let (model, bytes, equalized) = equalized_member(
            model,
            bytes,
            &float_layers,
            shape,
            &inputs,
            (request.equalize, request.equalize_pointwise),
        )
        .with_context(|| format!("equalizing {}", path.display()))?;
        let graph = model.graph.as_ref().context("the model has no graph")?;
        let tensors = quantized_activations(graph, &float_layers);
        let ranges = calibrate(&bytes, shape, &tensors, &inputs, request.range_method)
            .with_context(|| format!("calibrating {}", path.display()))?;
        let quantized = quantize_model(&model, &ranges, &float_layers, pointwise_bound)
            .with_context(|| format!("quantizing {}", path.display()))?;
        let encoded = crate::onnx::encode(&quantized);
        let stem = spec
            .file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("member");
        let file = PathBuf::from(format!("{stem}-int8.onnx"));
        if members.iter().any(|m: &QuantizedMember| m.file == file) {
            bail!(
                "two members of {} would both be written as {}. Fix: give the f32 members distinct file names",
                request.manifest.display(),
                file.display()
            );
        }
        let out_path = request.out.join(&file);
        std::fs::write(&out_path, &encoded)
            .with_context(|| format!("cannot write {}", out_path.display()))?;
        int8_spec.file = file.clone();
        int8_spec.sha256 = sha256_hex(&encoded);
        int8_spec.precision = "int8".into();
        log::info!(
            "{}: {} activations calibrated ({} inputs equalized), layers kept in f32: {:?}, {} -> {} bytes",
            path.display(),
            tensors.len(),
            equalized,
            float_layers,
            bytes.len(),
            encoded.len()
        );
        members.push(QuantizedMember {
            file,
            f32_bytes: bytes.len(),
            int8_bytes: encoded.len(),
        });
    }
    let int8_path = request.out.join("ensemble.toml");
    std::fs::write(&int8_path, int8_manifest.to_toml())
        .with_context(|| format!("cannot write {}", int8_path.display()))?;
    let comparison = compare(&CompareRequest {
        reference: request.manifest.clone(),
        candidate: int8_path,
        data: request.data.clone(),
        split: request.split.clone(),
        side: "val".into(),
        limit: request.compare_limit,
    })?;
    Ok((members, comparison))
}

/// The figures `quantize` prints.
pub fn quantize_summary(members: &[QuantizedMember], comparison: &Comparison) -> String {
    let mut text = String::new();
    for m in members {
        let _ = writeln!(
            text,
            "{}: {:.2} MiB (f32 {:.2} MiB, {:.1}%)",
            m.file.display(),
            m.int8_bytes as f64 / 1048576.0,
            m.f32_bytes as f64 / 1048576.0,
            100.0 * m.int8_bytes as f64 / m.f32_bytes as f64
        );
    }
    let _ = writeln!(text, "validation side: {}", comparison.summary());
    text
}
/// The version of the int8 ensemble made from an f32 one: its version with the build metadata
/// `int8`, and `int8.w7` for 7-bit pointwise weights (other bytes, so another version).
fn int8_version(f32_version: &str, pointwise_bound: i8) -> String {
    match pointwise_bound {
        WEIGHT_BOUND_7_BITS => format!("{f32_version}+int8.w7"),
        _ => format!("{f32_version}+int8"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantize::grid::WEIGHT_BOUND_8_BITS;

    #[test]
    fn seven_bit_members_get_their_own_version() {
        assert_eq!(int8_version("0.6.0", WEIGHT_BOUND_8_BITS), "0.6.0+int8");
        assert_eq!(int8_version("0.6.0", WEIGHT_BOUND_7_BITS), "0.6.0+int8.w7");
    }
}

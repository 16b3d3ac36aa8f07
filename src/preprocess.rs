//! The one preprocessing path, shared by the runtime and the training tools: bytes -> checked
//! decode -> EXIF orientation -> resize -> normalised NCHW `f32`.

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

use crate::codec::jpeg::{self, with_huffman_tables};
use crate::codec::png;
use crate::manifest::{ChannelOrder, ColourConstancy, Flip, InputSpec, ResizePolicy};

/// Re-exported for the training tools; new code imports it from [`crate::digest`].
pub use crate::digest::sha256_hex;

/// Bounds checked before an image is decoded, so a hostile header cannot force a large allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    pub max_bytes: u64,
    pub max_width: u32,
    pub max_height: u32,
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits {
            max_bytes: 64 << 20,
            max_width: 8192,
            max_height: 8192,
        }
    }
}

/// Why an image could not be turned into a model input.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read {path}: {source}. Fix: check the path and its permissions")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is empty (0 bytes). Fix: recapture or re-copy the image")]
    Empty { path: PathBuf },
    #[error("{path} is {size} bytes, over the {limit}-byte limit. Fix: export the image at a lower resolution")]
    TooManyBytes {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("{path} is not a JPEG or PNG image (its content matches neither). Fix: pass JPEG or PNG files")]
    UnknownFormat { path: PathBuf },
    #[error("{path} claims {width}x{height} pixels, over the {max_width}x{max_height} limit. Fix: downscale the image before classifying it")]
    TooLarge {
        path: PathBuf,
        width: u32,
        height: u32,
        max_width: u32,
        max_height: u32,
    },
    #[error("{path} could not be decoded ({message}). Fix: the file is damaged or truncated; recapture or re-copy it")]
    Decode { path: PathBuf, message: String },
    #[error("{path} is incomplete: {reason}. Fix: it was cut short or damaged while being copied or captured; re-copy or recapture it")]
    Incomplete { path: PathBuf, reason: String },
}

/// An image read from disk or a camera, with the hash of its exact bytes.
#[derive(Debug, Clone)]
pub struct LoadedImage {
    pub rgb: RgbImage,
    /// SHA-256 of the encoded bytes, lowercase hex.
    pub sha256: String,
}

/// Reads an image file within `limits`, hashes it and decodes it upright.
pub fn load_image_file(path: &Path, limits: &ImageLimits) -> Result<LoadedImage, ImageError> {
    load_image_bytes(&read_image_file(path, limits)?, path, limits)
}

/// Reads an image file's bytes, refusing files over the byte limit without reading them whole.
pub fn read_image_file(path: &Path, limits: &ImageLimits) -> Result<Vec<u8>, ImageError> {
    let read_error = |source| ImageError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let size = file.metadata().map_err(read_error)?.len();
    let too_many = |size| ImageError::TooManyBytes {
        path: path.to_path_buf(),
        size,
        limit: limits.max_bytes,
    };
    if size > limits.max_bytes {
        return Err(too_many(size));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(limits.max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > limits.max_bytes {
        return Err(too_many(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Hashes and decodes encoded image bytes; `origin` names them in errors.
pub fn load_image_bytes(
    bytes: &[u8],
    origin: &Path,
    limits: &ImageLimits,
) -> Result<LoadedImage, ImageError> {
    let rgb = decode_upright(bytes, origin, limits)?;
    Ok(LoadedImage {
        rgb,
        sha256: sha256_hex(bytes),
    })
}

/// Decodes encoded image bytes upright within `limits`, without hashing them (for callers that
/// hash the bytes themselves); `origin` names them in errors.
pub fn decode_upright(
    bytes: &[u8],
    origin: &Path,
    limits: &ImageLimits,
) -> Result<RgbImage, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty {
            path: origin.to_path_buf(),
        });
    }
    let decode_error = |e: image::ImageError| ImageError::Decode {
        path: origin.to_path_buf(),
        message: e.to_string(),
    };
    let patched = with_huffman_tables(bytes);
    let bytes: &[u8] = &patched;
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageError::Read {
            path: origin.to_path_buf(),
            source: e,
        })?;
    let complete = match reader.format() {
        Some(ImageFormat::Jpeg) => jpeg::check_complete(bytes).map_err(|e| e.to_string()),
        Some(ImageFormat::Png) => png::check_complete(bytes).map_err(|e| e.to_string()),
        _ => {
            return Err(ImageError::UnknownFormat {
                path: origin.to_path_buf(),
            })
        }
    };
    if let Err(reason) = complete {
        return Err(ImageError::Incomplete {
            path: origin.to_path_buf(),
            reason,
        });
    }
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_image_width = Some(limits.max_width);
    decoder_limits.max_image_height = Some(limits.max_height);
    decoder_limits.max_alloc = Some(u64::from(limits.max_width) * u64::from(limits.max_height) * 8);
    reader.limits(decoder_limits);
    let mut decoder = reader.into_decoder().map_err(|e| match e {
        image::ImageError::Limits(_) => too_large(bytes, origin, limits),
        other => decode_error(other),
    })?;
    let (width, height) = decoder.dimensions();
    if width > limits.max_width || height > limits.max_height {
        return Err(ImageError::TooLarge {
            path: origin.to_path_buf(),
            width,
            height,
            max_width: limits.max_width,
            max_height: limits.max_height,
        });
    }
    if width == 0 || height == 0 {
        return Err(ImageError::Decode {
            path: origin.to_path_buf(),
            message: format!("the header gives {width}x{height} pixels"),
        });
    }
    let orientation = decoder.orientation().map_err(decode_error)?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(decode_error)?;
    image.apply_orientation(orientation);
    Ok(image.into_rgb8())
}

/// Builds the size error when the decoder refused to open the image for its limits, reading the
/// claimed size without limits on the header alone.
fn too_large(bytes: &[u8], origin: &Path, limits: &ImageLimits) -> ImageError {
    let (width, height) = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .ok()
        .and_then(|mut reader| {
            reader.no_limits();
            reader.into_dimensions().ok()
        })
        .unwrap_or((0, 0));
    if width == 0 || height == 0 {
        return ImageError::Decode {
            path: origin.to_path_buf(),
            message: format!(
                "its header exceeds the {}x{}-pixel decoding limit",
                limits.max_width, limits.max_height
            ),
        };
    }
    ImageError::TooLarge {
        path: origin.to_path_buf(),
        width,
        height,
        max_width: limits.max_width,
        max_height: limits.max_height,
    }
}

/// Resizes `image` to the spec's input size by its resize policy.
pub fn resize_for_input(image: &RgbImage, spec: &InputSpec) -> RgbImage {
    let (w, h) = (spec.width, spec.height);
    if image.dimensions() == (w, h) {
        return image.clone();
    }
    match spec.resize {
        ResizePolicy::Stretch => image::imageops::resize(image, w, h, FilterType::Triangle),
        ResizePolicy::CenterCrop => {
            let (iw, ih) = image.dimensions();
            let scale = f64::max(f64::from(w) / f64::from(iw), f64::from(h) / f64::from(ih));
            let sw = ((f64::from(iw) * scale).round() as u32).max(w);
            let sh = ((f64::from(ih) * scale).round() as u32).max(h);
            let scaled = image::imageops::resize(image, sw, sh, FilterType::Triangle);
            image::imageops::crop_imm(&scaled, (sw - w) / 2, (sh - h) / 2, w, h).to_image()
        }
    }
}

/// Normalises an image already at the input size into NCHW `f32` (batch 1), channel order and
/// mean/std as the spec says.
pub fn normalise_nchw(image: &RgbImage, spec: &InputSpec) -> Vec<f32> {
    let (w, h) = image.dimensions();
    let plane = (w * h) as usize;
    let mut out = vec![0f32; 3 * plane];
    let source_channel = match spec.channel_order {
        ChannelOrder::Rgb => [0, 1, 2],
        ChannelOrder::Bgr => [2, 1, 0],
    };
    let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * spec.std[c]));
    let offset: [f32; 3] = std::array::from_fn(|c| -spec.mean[c] / spec.std[c]);
    for (i, pixel) in image.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = f32::from(pixel.0[source_channel[c]]) * scale[c] + offset[c];
        }
    }
    out
}

/// Mirrors NCHW data (batch 1) of `width` x `height` planes. For an image already at the input
/// size this equals preprocessing the mirrored image; after a resize or crop it can differ from
/// that by the resampling grid.
pub fn flip_nchw(data: &[f32], width: usize, height: usize, flip: Flip) -> Vec<f32> {
    if flip == Flip::None {
        return data.to_vec();
    }
    let (mirror_x, mirror_y) = (
        matches!(flip, Flip::Horizontal | Flip::Both),
        matches!(flip, Flip::Vertical | Flip::Both),
    );
    let mut out = Vec::with_capacity(data.len());
    for plane in data.chunks_exact(width * height) {
        for y in 0..height {
            let source_y = if mirror_y { height - 1 - y } else { y };
            let row = &plane[source_y * width..(source_y + 1) * width];
            if mirror_x {
                out.extend(row.iter().rev());
            } else {
                out.extend_from_slice(row);
            }
        }
    }
    out
}

/// Applies the spec's colour-constancy step to an image in place.
pub fn apply_colour_constancy(image: &mut RgbImage, method: ColourConstancy) {
    match method {
        ColourConstancy::None => {}
        ColourConstancy::ShadesOfGray => shades_of_gray(image),
    }
}

/// Shades of Gray with p = 6: the illuminant estimate of channel c is `mean(v^6)^(1/6)`; each
/// channel is multiplied by `|e| / (sqrt(3) e_c)`, so a grey illuminant (all `e_c` equal) leaves
/// the image unchanged. An image with an empty channel (all zero) is left as it is.
fn shades_of_gray(image: &mut RgbImage) {
    let pixels = u64::from(image.width()) * u64::from(image.height());
    if pixels == 0 {
        return;
    }
    let mut sums = [0f64; 3];
    for pixel in image.pixels() {
        for (sum, &v) in sums.iter_mut().zip(&pixel.0) {
            let square = f64::from(v) * f64::from(v);
            *sum += square * square * square;
        }
    }
    let estimate = sums.map(|s| (s / pixels as f64).powf(1.0 / 6.0));
    if estimate.iter().any(|&e| e <= 0.0) {
        return;
    }
    let norm = estimate.iter().map(|e| e * e).sum::<f64>().sqrt();
    let gain = estimate.map(|e| (norm / (3f64.sqrt() * e)) as f32);
    for pixel in image.pixels_mut() {
        for (v, g) in pixel.0.iter_mut().zip(gain) {
            *v = (f32::from(*v) * g).round().clamp(0.0, 255.0) as u8;
        }
    }
}

/// The full model input for an upright RGB image: resize, colour constancy, normalise.
pub fn to_input_tensor(image: &RgbImage, spec: &InputSpec) -> Vec<f32> {
    let mut resized = resize_for_input(image, spec);
    apply_colour_constancy(&mut resized, spec.colour_constancy);
    normalise_nchw(&resized, spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn spec(width: u32, height: u32, resize: ResizePolicy, order: ChannelOrder) -> InputSpec {
        InputSpec {
            width,
            height,
            resize,
            mean: [0.5, 0.25, 0.0],
            std: [0.5, 0.25, 1.0],
            channel_order: order,
            colour_constancy: crate::manifest::ColourConstancy::None,
        }
    }

    #[test]
    fn shades_of_gray_keeps_a_grey_image_and_balances_a_colour_cast() {
        let spec_sog = InputSpec {
            colour_constancy: ColourConstancy::ShadesOfGray,
            ..spec(4, 2, ResizePolicy::Stretch, ChannelOrder::Rgb)
        };
        let grey = RgbImage::from_fn(4, 2, |x, y| {
            let v = (20 + 20 * x + 30 * y) as u8;
            Rgb([v, v, v])
        });
        let mut balanced = grey.clone();
        apply_colour_constancy(&mut balanced, spec_sog.colour_constancy);
        assert_eq!(balanced, grey);

        // The same scene under a reddish illuminant: red x1.5, blue x0.5.
        let cast = RgbImage::from_fn(4, 2, |x, y| {
            let v = (20 + 20 * x + 30 * y) as f32;
            Rgb([(v * 1.5) as u8, v as u8, (v * 0.5) as u8])
        });
        let mut corrected = cast.clone();
        apply_colour_constancy(&mut corrected, spec_sog.colour_constancy);
        for (c, g) in corrected.pixels().zip(grey.pixels()) {
            let spread = c.0.iter().max().unwrap() - c.0.iter().min().unwrap();
            assert!(spread <= 2, "{c:?} is not grey (scene {g:?})");
        }
        let plain = to_input_tensor(&cast, &spec(4, 2, ResizePolicy::Stretch, ChannelOrder::Rgb));
        let with_step = to_input_tensor(&cast, &spec_sog);
        assert_ne!(plain, with_step);
        assert_eq!(
            with_step,
            normalise_nchw(&corrected, &spec_sog),
            "the step runs between resize and normalisation"
        );
    }

    #[test]
    fn shades_of_gray_leaves_an_image_with_an_empty_channel_unchanged() {
        let mut image = RgbImage::from_pixel(3, 3, Rgb([200, 100, 0]));
        let original = image.clone();
        apply_colour_constancy(&mut image, ColourConstancy::ShadesOfGray);
        assert_eq!(image, original);
    }

    #[test]
    fn normalises_by_hand_computed_values() {
        let mut img = RgbImage::new(2, 1);
        img.put_pixel(0, 0, Rgb([255, 0, 51]));
        img.put_pixel(1, 0, Rgb([0, 255, 102]));
        let t = to_input_tensor(&img, &spec(2, 1, ResizePolicy::Stretch, ChannelOrder::Rgb));
        // R: (1 - 0.5) / 0.5 = 1, (0 - 0.5) / 0.5 = -1; G: (0 - .25) / .25 = -1, (1 - .25) / .25 = 3;
        // B: 0.2, 0.4.
        let expected = [1.0, -1.0, -1.0, 3.0, 0.2, 0.4];
        for (a, b) in t.iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{t:?}");
        }
        let t = to_input_tensor(&img, &spec(2, 1, ResizePolicy::Stretch, ChannelOrder::Bgr));
        // First plane is now blue, normalised with mean[0]/std[0]: (0.2 - 0.5) / 0.5 = -0.6.
        assert!(
            (t[0] + 0.6).abs() < 1e-6 && (t[1] + 0.2).abs() < 1e-6,
            "{t:?}"
        );
        // Last plane is red, normalised with mean[2]/std[2] = 0/1: 1.0 and 0.0.
        assert!((t[4] - 1.0).abs() < 1e-6 && t[5].abs() < 1e-6, "{t:?}");
    }

    #[test]
    fn center_crop_keeps_the_middle_and_stretch_keeps_everything() {
        let mut img = RgbImage::from_pixel(8, 4, Rgb([0, 255, 0]));
        for y in 0..4 {
            for x in 0..2 {
                img.put_pixel(x, y, Rgb([255, 0, 0]));
                img.put_pixel(7 - x, y, Rgb([0, 0, 255]));
            }
        }
        let cropped = resize_for_input(
            &img,
            &spec(2, 2, ResizePolicy::CenterCrop, ChannelOrder::Rgb),
        );
        assert_eq!(cropped.dimensions(), (2, 2));
        for p in cropped.pixels() {
            assert!(p.0[1] > 200 && p.0[0] < 60 && p.0[2] < 60, "{p:?}");
        }
        let stretched =
            resize_for_input(&img, &spec(4, 2, ResizePolicy::Stretch, ChannelOrder::Rgb));
        assert!(stretched.get_pixel(0, 0).0[0] > 200);
        assert!(stretched.get_pixel(3, 1).0[2] > 200);
    }

    /// A 16x8 JPEG, left half red and right half blue, with an EXIF orientation tag.
    fn jpeg_with_orientation(orientation: u16) -> Vec<u8> {
        let img = RgbImage::from_fn(16, 8, |x, _| {
            if x < 8 {
                Rgb([255, 0, 0])
            } else {
                Rgb([0, 0, 255])
            }
        });
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
            .encode_image(&img)
            .unwrap();
        let mut exif = b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01".to_vec();
        exif.extend(orientation.to_be_bytes());
        exif.extend([0, 0, 0, 0, 0, 0]);
        let mut out = jpeg[..2].to_vec();
        out.extend([0xFF, 0xE1]);
        out.extend(((exif.len() + 2) as u16).to_be_bytes());
        out.extend(exif);
        out.extend(&jpeg[2..]);
        out
    }

    #[test]
    fn applies_exif_orientation() {
        let limits = ImageLimits::default();
        let upright =
            load_image_bytes(&jpeg_with_orientation(1), Path::new("a.jpg"), &limits).unwrap();
        assert_eq!(upright.rgb.dimensions(), (16, 8));
        // 6: the camera was turned; the picture must be rotated 90 degrees clockwise to be upright.
        let rotated =
            load_image_bytes(&jpeg_with_orientation(6), Path::new("b.jpg"), &limits).unwrap();
        assert_eq!(rotated.rgb.dimensions(), (8, 16));
        let top = rotated.rgb.get_pixel(4, 2).0;
        let bottom = rotated.rgb.get_pixel(4, 13).0;
        assert!(top[0] > 200 && top[2] < 60, "{top:?}");
        assert!(bottom[2] > 200 && bottom[0] < 60, "{bottom:?}");
    }

    #[test]
    fn refuses_bad_bytes_with_the_right_error() {
        let limits = ImageLimits::default();
        let p = Path::new("x.jpg");
        assert!(matches!(
            load_image_bytes(b"", p, &limits),
            Err(ImageError::Empty { .. })
        ));
        assert!(matches!(
            load_image_bytes(b"hello, not an image", p, &limits),
            Err(ImageError::UnknownFormat { .. })
        ));
        let truncated = &[0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10][..];
        assert!(matches!(
            load_image_bytes(truncated, p, &limits),
            Err(ImageError::Incomplete { .. })
        ));
    }

    #[test]
    fn flipping_the_input_equals_preprocessing_the_flipped_image() {
        let image = RgbImage::from_fn(5, 3, |x, y| {
            Rgb([(x * 40) as u8, (y * 70) as u8, (x * y) as u8])
        });
        let spec = spec(5, 3, ResizePolicy::Stretch, ChannelOrder::Bgr);
        let input = to_input_tensor(&image, &spec);
        let cases = [
            (Flip::Horizontal, image::imageops::flip_horizontal(&image)),
            (Flip::Vertical, image::imageops::flip_vertical(&image)),
            (Flip::Both, image::imageops::rotate180(&image)),
            (Flip::None, image.clone()),
        ];
        for (flip, mirrored) in cases {
            assert_eq!(
                flip_nchw(&input, 5, 3, flip),
                to_input_tensor(&mirrored, &spec),
                "{flip:?}"
            );
        }
        assert_ne!(flip_nchw(&input, 5, 3, Flip::Horizontal), input);
    }
}

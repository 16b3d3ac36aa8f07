//! The quality gate run on a frame before inference: focus, exposure, and whether the view holds
//! skin at all. A rejected frame says why and what to do.

use image::imageops::FilterType;
use image::RgbImage;
use serde::{Deserialize, Serialize};

/// Width the gate measures at, so thresholds do not depend on the camera's resolution.
pub const GATE_WIDTH: u32 = 256;

/// Thresholds of the gate (the `[gate]` table of the config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GateSettings {
    /// Minimum variance of the Laplacian of the luminance (sharpness).
    pub min_focus: f32,
    /// Accepted range of mean luminance, 0-255.
    pub min_brightness: f32,
    pub max_brightness: f32,
    /// Largest fraction of pixels at the ends of the range (<= 5 or >= 250).
    pub max_clipped: f32,
    /// Minimum standard deviation of luminance: a blank view has almost none.
    pub min_contrast: f32,
    /// Minimum fraction of warm, skin- or lesion-coloured pixels.
    pub min_skin: f32,
}

impl Default for GateSettings {
    fn default() -> Self {
        GateSettings {
            min_focus: 8.0,
            min_brightness: 40.0,
            max_brightness: 225.0,
            max_clipped: 0.25,
            min_contrast: 6.0,
            min_skin: 0.15,
        }
    }
}

/// What the gate measured on one frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateMeasures {
    pub focus: f32,
    pub brightness: f32,
    pub clipped: f32,
    pub contrast: f32,
    pub skin: f32,
}

/// What is wrong with a rejected frame, one per reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GateIssue {
    BlankView,
    NoSkin,
    TooDark,
    TooBright,
    Clipped,
    Blurred,
}

impl GateIssue {
    /// A word or two for a live view (a preview overlay).
    pub fn label(self) -> &'static str {
        match self {
            GateIssue::BlankView => "blank view",
            GateIssue::NoSkin => "no skin",
            GateIssue::TooDark => "too dark",
            GateIssue::TooBright => "too bright",
            GateIssue::Clipped => "clipped",
            GateIssue::Blurred => "blurred",
        }
    }
}

/// The gate's verdict: the measures and, for a rejected frame, every reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateVerdict {
    pub measures: GateMeasures,
    pub reasons: Vec<String>,
    /// The kind of each reason, in the same order.
    #[serde(default)]
    pub issues: Vec<GateIssue>,
}

impl GateVerdict {
    /// Whether the frame may go to the ensemble.
    pub fn accepted(&self) -> bool {
        self.reasons.is_empty()
    }

    /// `sharp` for an accepted frame, else the labels of its issues (`blurred, too dark`).
    pub fn label(&self) -> String {
        if self.accepted() {
            return "sharp".into();
        }
        self.issues
            .iter()
            .map(|i| i.label())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Measures a frame at the gate's working size.
pub fn measure(image: &RgbImage) -> GateMeasures {
    let (w, h) = image.dimensions();
    let small;
    let view = if w > GATE_WIDTH {
        let height = ((h as f32 * GATE_WIDTH as f32 / w as f32).round() as u32).max(3);
        small = image::imageops::resize(image, GATE_WIDTH, height, FilterType::Triangle);
        &small
    } else {
        image
    };
    let (w, h) = view.dimensions();
    let n = (w * h) as usize;
    let mut luma = Vec::with_capacity(n);
    let (mut skin, mut clipped) = (0usize, 0usize);
    for p in view.pixels() {
        let [r, g, b] = p.0.map(f32::from);
        let y = 0.299 * r + 0.587 * g + 0.114 * b;
        if is_skin_tone(r, g, b) {
            skin += 1;
        }
        if y <= 5.0 || y >= 250.0 {
            clipped += 1;
        }
        luma.push(y);
    }
    let mean = luma.iter().sum::<f32>() / n.max(1) as f32;
    let variance = luma.iter().map(|y| (y - mean).powi(2)).sum::<f32>() / n.max(1) as f32;
    GateMeasures {
        focus: laplacian_variance(&luma, w as usize, h as usize),
        brightness: mean,
        clipped: clipped as f32 / n.max(1) as f32,
        contrast: variance.sqrt(),
        skin: skin as f32 / n.max(1) as f32,
    }
}

/// Skin and lesions under a dermatoscope's light run from yellow-brown through red to pink and
/// violet: green never leads red, and the pixel is neither grey nor near black. Grey, green and
/// blue scenes (a wall, a table, a cover) fail.
fn is_skin_tone(r: f32, g: f32, b: f32) -> bool {
    let chroma = r.max(g).max(b) - r.min(g).min(b);
    g <= r && chroma >= 10.0 && r >= 40.0
}

/// Variance of the 4-neighbour Laplacian over the interior pixels.
pub fn laplacian_variance(luma: &[f32], width: usize, height: usize) -> f32 {
    if width < 3 || height < 3 {
        return 0.0;
    }
    let mut values = Vec::with_capacity((width - 2) * (height - 2));
    for y in 1..height - 1 {
        for x in 1..width - 1 {
            let i = y * width + x;
            values.push(
                luma[i - 1] + luma[i + 1] + luma[i - width] + luma[i + width] - 4.0 * luma[i],
            );
        }
    }
    let mean = values.iter().sum::<f32>() / values.len() as f32;
    values.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / values.len() as f32
}

/// Runs the gate on a frame.
pub fn check(image: &RgbImage, settings: &GateSettings) -> GateVerdict {
    let m = measure(image);
    let mut reasons = Vec::new();
    let mut issues = Vec::new();
    if m.contrast < settings.min_contrast {
        issues.push(GateIssue::BlankView);
        reasons.push(format!(
            "retake: blank view (contrast {:.1} < {:.1}); place the dermatoscope on the lesion",
            m.contrast, settings.min_contrast
        ));
    } else if m.skin < settings.min_skin {
        issues.push(GateIssue::NoSkin);
        reasons.push(format!(
            "retake: no skin in view (skin {:.0} % < {:.0} %); place the dermatoscope on the lesion",
            m.skin * 100.0,
            settings.min_skin * 100.0
        ));
    }
    if m.brightness < settings.min_brightness {
        issues.push(GateIssue::TooDark);
        reasons.push(format!(
            "retake: too dark (brightness {:.0} < {:.0}); check the dermatoscope's light",
            m.brightness, settings.min_brightness
        ));
    } else if m.brightness > settings.max_brightness {
        issues.push(GateIssue::TooBright);
        reasons.push(format!(
            "retake: too bright (brightness {:.0} > {:.0}); reduce glare or the light",
            m.brightness, settings.max_brightness
        ));
    }
    if m.clipped > settings.max_clipped {
        issues.push(GateIssue::Clipped);
        reasons.push(format!(
            "retake: {:.0} % of pixels are clipped black or white (> {:.0} %); adjust the exposure",
            m.clipped * 100.0,
            settings.max_clipped * 100.0
        ));
    }
    if m.focus < settings.min_focus && m.contrast >= settings.min_contrast {
        issues.push(GateIssue::Blurred);
        reasons.push(format!(
            "retake: out of focus (focus {:.1} < {:.1}); hold still and refocus",
            m.focus, settings.min_focus
        ));
    }
    GateVerdict {
        measures: m,
        reasons,
        issues,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laplacian_variance_by_hand() {
        // A single bright pixel in the centre of a 3x3: one interior value, variance 0.
        let mut luma = vec![0.0; 9];
        luma[4] = 1.0;
        assert_eq!(laplacian_variance(&luma, 3, 3), 0.0);
        // 4x3 with interior values -4 and 1: mean -1.5, variance 6.25.
        let luma = [0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        assert!((laplacian_variance(&luma, 4, 3) - 6.25).abs() < 1e-6);
    }

    #[test]
    fn a_blank_frame_is_rejected_as_blank_not_as_blurred() {
        let grey = RgbImage::from_pixel(64, 48, image::Rgb([128, 128, 128]));
        let verdict = check(&grey, &GateSettings::default());
        assert!(!verdict.accepted());
        assert_eq!(verdict.reasons.len(), 1, "{:?}", verdict.reasons);
        assert!(verdict.reasons[0].contains("blank view"));
    }
}

//! The ensemble manifest (`ensemble.toml`): what the members are, how inputs are prepared,
//! which classes come out in which order, and the decision settings applied to the result.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Largest manifest file accepted, in bytes.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// Most members one ensemble may hold.
pub const MAX_MEMBERS: usize = 16;

/// Errors found while reading or checking a manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read ensemble manifest {path}: {source}. Fix: pass --ensemble with the path of an ensemble.toml")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ensemble manifest {path} is {size} bytes, over the {MAX_MANIFEST_BYTES}-byte limit. Fix: point --ensemble at a real ensemble.toml")]
    TooLarge { path: PathBuf, size: u64 },
    #[error("ensemble manifest {path} is not valid: {message}. Fix: correct the TOML (see models/ensemble.toml for the format)")]
    Parse { path: PathBuf, message: String },
    #[error("ensemble manifest {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Whether an ensemble's outputs carry any clinical meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EnsembleStatus {
    /// Trained and evaluated; its model card gives the figures.
    Trained,
    /// Untrained weights for tests and plumbing: outputs are meaningless.
    UntrainedFixture,
}

/// How a source image is brought to the model's input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResizePolicy {
    /// Scale both axes to the input size, ignoring aspect ratio.
    Stretch,
    /// Scale so the image covers the input size, then crop the centre.
    CenterCrop,
}

/// Channel order of the model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    Rgb,
    Bgr,
}

/// A colour-constancy step between resizing and normalisation, so that images taken under
/// different illuminants and dermatoscopes reach the members with similar colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ColourConstancy {
    /// Colours as captured.
    #[default]
    None,
    /// Shades of Gray with Minkowski norm p = 6 (Finlayson and Trezzi 2004): each channel is
    /// divided by its 6-norm illuminant estimate, scaled so that a grey illuminant is unchanged.
    ShadesOfGray,
}

impl ColourConstancy {
    /// Whether the step leaves colours unchanged.
    pub fn is_none(&self) -> bool {
        *self == ColourConstancy::None
    }
}

/// What a member's single output holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberOutput {
    /// Unnormalised scores; the runtime applies (temperature-scaled) softmax.
    Logits,
    /// Already a probability distribution.
    Probabilities,
}

/// The preprocessing a member expects: the manifest's `[input]`, or a member's own `input`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub width: u32,
    pub height: u32,
    pub resize: ResizePolicy,
    /// Per-channel mean, in the model's channel order, applied after scaling pixels to [0, 1].
    pub mean: [f32; 3],
    /// Per-channel standard deviation, same order as `mean`.
    pub std: [f32; 3],
    pub channel_order: ChannelOrder,
    /// Colour constancy applied after resizing, before normalisation.
    #[serde(default, skip_serializing_if = "ColourConstancy::is_none")]
    pub colour_constancy: ColourConstancy,
}

/// One output class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassInfo {
    /// Short code, as in HAM10000 (`mel`, `nv`, ...).
    pub code: String,
    pub name: String,
    pub malignant: bool,
    /// The class watched on its own (melanoma in HAM10000): evaluation reports its sensitivity,
    /// specificity and ROC curve. At most one class is watched.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub watch: bool,
}

/// One member network of the ensemble.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberSpec {
    /// ONNX file, relative to the manifest's folder.
    pub file: PathBuf,
    /// SHA-256 of the file, lowercase hex.
    pub sha256: String,
    /// Weight in the ensemble mean; weights are normalised to sum to one.
    #[serde(default = "default_weight")]
    pub weight: f32,
    pub backbone: String,
    /// Numeric precision of the file's weights (`f32`, `int8`).
    pub precision: String,
    pub output: MemberOutput,
    /// This member's preprocessing when it differs from the manifest's `[input]` (a member
    /// trained at another size or with another colour step); the ensemble's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<InputSpec>,
}

fn default_weight() -> f32 {
    1.0
}

/// A mirror image of a model input; the views of test-time augmentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flip {
    None,
    Horizontal,
    Vertical,
    Both,
}

/// Test-time augmentation: each member also runs on mirrored views of the input, and its
/// probabilities are averaged over the views.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TestTimeAugmentation {
    /// The input only.
    #[default]
    None,
    /// The input and its left-right mirror (2 views).
    HorizontalFlip,
    /// The input, both mirrors and the 180-degree turn (4 views).
    Flips,
}

impl TestTimeAugmentation {
    /// Every name accepted, as written in the manifest.
    pub const NAMES: [&'static str; 3] = ["none", "horizontal-flip", "flips"];

    /// The views each member runs on.
    pub fn views(self) -> &'static [Flip] {
        match self {
            TestTimeAugmentation::None => &[Flip::None],
            TestTimeAugmentation::HorizontalFlip => &[Flip::None, Flip::Horizontal],
            TestTimeAugmentation::Flips => {
                &[Flip::None, Flip::Horizontal, Flip::Vertical, Flip::Both]
            }
        }
    }

    /// The name written in the manifest.
    pub fn name(self) -> &'static str {
        match self {
            TestTimeAugmentation::None => Self::NAMES[0],
            TestTimeAugmentation::HorizontalFlip => Self::NAMES[1],
            TestTimeAugmentation::Flips => Self::NAMES[2],
        }
    }
}

impl std::str::FromStr for TestTimeAugmentation {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        [
            TestTimeAugmentation::None,
            TestTimeAugmentation::HorizontalFlip,
            TestTimeAugmentation::Flips,
        ]
        .into_iter()
        .find(|t| t.name() == text)
        .ok_or_else(|| {
            format!(
                "unknown test-time augmentation `{text}`. Fix: use one of {}",
                Self::NAMES.join(", ")
            )
        })
    }
}

/// How the members are run on an input.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceSettings {
    #[serde(default)]
    pub test_time_augmentation: TestTimeAugmentation,
}

impl InferenceSettings {
    /// Whether every setting has its default value.
    pub fn is_default(&self) -> bool {
        *self == InferenceSettings::default()
    }
}

/// Settings applied to the ensemble's output, fitted by the tools on a validation split.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionSettings {
    /// Divides logits before softmax (temperature scaling); 1.0 when absent.
    pub temperature: Option<f32>,
    /// Refer when the summed probability of malignant classes reaches this value.
    pub referral_threshold: Option<f32>,
    /// Flag as uncertain when the normalised entropy of the ensemble output reaches this value.
    pub uncertainty_entropy: Option<f32>,
    /// Post-hoc logit adjustment: the ensemble's probabilities are divided by `class_prior`
    /// raised to this power and renormalised, which trades top-1 accuracy on the common classes
    /// for sensitivity on the rare ones; none when absent.
    pub logit_adjustment: Option<f32>,
    /// Each class's share of the split's training side (its HAM10000 images, not extra training
    /// sets), in class order; needed by `logit_adjustment`.
    pub class_prior: Option<Vec<f32>>,
}

/// A parsed and checked `ensemble.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub status: EnsembleStatus,
    #[serde(default)]
    pub description: String,
    pub input: InputSpec,
    pub classes: Vec<ClassInfo>,
    pub members: Vec<MemberSpec>,
    /// Left out of the written TOML when default, so runtimes older than the setting still load it.
    #[serde(default, skip_serializing_if = "InferenceSettings::is_default")]
    pub inference: InferenceSettings,
    #[serde(default)]
    pub decision: DecisionSettings,
}

impl Manifest {
    /// Reads, parses and checks a manifest file.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        Manifest::parse(&Manifest::read_text(path)?, path)
    }

    /// Reads a manifest file's text within [`MAX_MANIFEST_BYTES`].
    pub fn read_text(path: &Path) -> Result<String, ManifestError> {
        let read_error = |source| ManifestError::Read {
            path: path.to_path_buf(),
            source,
        };
        let size = std::fs::metadata(path).map_err(read_error)?.len();
        if size > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge {
                path: path.to_path_buf(),
                size,
            });
        }
        crate::paths::read_text_limited(path, MAX_MANIFEST_BYTES).map_err(read_error)
    }

    /// Parses and checks manifest text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest, ManifestError> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| ManifestError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        manifest.check().map_err(|message| ManifestError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(manifest)
    }

    /// The manifest as TOML text.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a manifest always serialises to TOML")
    }

    /// `name@version`, the identifier written with every result.
    pub fn id(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// Member weights normalised to sum to one.
    pub fn normalised_weights(&self) -> Vec<f32> {
        let total: f32 = self.members.iter().map(|m| m.weight).sum();
        self.members.iter().map(|m| m.weight / total).collect()
    }

    /// The preprocessing `member` expects: its own `input`, else the manifest's `[input]`.
    pub fn input_of<'a>(&'a self, member: &'a MemberSpec) -> &'a InputSpec {
        member.input.as_ref().unwrap_or(&self.input)
    }

    /// The distinct preprocessings the members expect, in order of first use, and for each
    /// member the index of its own among them: an image is prepared once per distinct spec.
    pub fn input_groups(&self) -> (Vec<InputSpec>, Vec<usize>) {
        let mut specs: Vec<InputSpec> = Vec::new();
        let indices = self
            .members
            .iter()
            .map(|member| {
                let spec = self.input_of(member);
                specs.iter().position(|s| s == spec).unwrap_or_else(|| {
                    specs.push(spec.clone());
                    specs.len() - 1
                })
            })
            .collect();
        (specs, indices)
    }

    /// Class codes in output order.
    pub fn class_codes(&self) -> Vec<&str> {
        self.classes.iter().map(|c| c.code.as_str()).collect()
    }

    fn check(&self) -> Result<(), String> {
        if self.name.trim().is_empty() || self.version.trim().is_empty() {
            return Err("`name` and `version` must not be empty. Fix: set both".into());
        }
        if self.classes.len() < 2 {
            return Err(format!(
                "{} class(es) listed; an ensemble needs at least 2. Fix: list every output class in [[classes]], in output order",
                self.classes.len()
            ));
        }
        let mut seen = HashSet::new();
        for class in &self.classes {
            if !seen.insert(class.code.as_str()) {
                return Err(format!(
                    "class code `{}` is listed twice. Fix: give each [[classes]] entry its own code",
                    class.code
                ));
            }
        }
        if self.classes.iter().filter(|c| c.watch).count() > 1 {
            return Err(
                "more than one class has `watch = true`. Fix: watch one class (melanoma) at most"
                    .into(),
            );
        }
        if self.members.is_empty() || self.members.len() > MAX_MEMBERS {
            return Err(format!(
                "{} member(s) listed; 1 to {MAX_MEMBERS} are allowed. Fix: list the member ONNX files in [[members]]",
                self.members.len()
            ));
        }
        for member in &self.members {
            if !(member.weight.is_finite() && member.weight > 0.0) {
                return Err(format!(
                    "member {} has weight {}; weights must be positive. Fix: set `weight` above 0",
                    member.file.display(),
                    member.weight
                ));
            }
            if member.sha256.len() != 64 || !member.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "member {} has sha256 `{}`, not 64 hex digits. Fix: run `sha256sum` on the file and paste the digest",
                    member.file.display(),
                    member.sha256
                ));
            }
        }
        check_input(&self.input, "[input]")?;
        for member in &self.members {
            if let Some(input) = &member.input {
                check_input(input, &format!("member {} input", member.file.display()))?;
            }
        }
        let decision = &self.decision;
        if let Some(t) = decision.temperature {
            if !(t.is_finite() && t > 0.0) {
                return Err(format!(
                    "[decision] temperature {t} must be positive. Fix: set it above 0 or remove it"
                ));
            }
        }
        for (key, value) in [
            ("referral_threshold", decision.referral_threshold),
            ("uncertainty_entropy", decision.uncertainty_entropy),
        ] {
            if let Some(v) = value {
                if !(0.0..=1.0).contains(&v) {
                    return Err(format!(
                        "[decision] {key} {v} is outside 0..=1. Fix: set a probability between 0 and 1"
                    ));
                }
            }
        }
        if let Some(prior) = &decision.class_prior {
            if prior.len() != self.classes.len()
                || prior
                    .iter()
                    .any(|p| !(p.is_finite() && (1e-6..=1.0).contains(p)))
            {
                return Err(format!(
                    "[decision] class_prior must hold one share in [1e-6, 1] per class ({} classes, {} values). Fix: write the training share of each class in class order",
                    self.classes.len(),
                    prior.len()
                ));
            }
        }
        match (decision.logit_adjustment, &decision.class_prior) {
            (Some(tau), _) if !(0.0..=2.0).contains(&tau) => {
                return Err(format!(
                    "[decision] logit_adjustment {tau} is outside 0..=2. Fix: set the exponent the tools fitted, or remove it"
                ));
            }
            (Some(_), None) => {
                return Err(
                    "[decision] logit_adjustment is set without class_prior. Fix: add class_prior (the training share of each class) or remove logit_adjustment"
                        .into(),
                );
            }
            _ => {}
        }
        if decision.referral_threshold.is_some() && !self.classes.iter().any(|c| c.malignant) {
            return Err(
                "[decision] referral_threshold is set but no class is marked malignant. Fix: mark the malignant classes"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Checks a preprocessing spec; `name` says where it is written.
fn check_input(input: &InputSpec, name: &str) -> Result<(), String> {
    if !(1..=4096).contains(&input.width) || !(1..=4096).contains(&input.height) {
        return Err(format!(
            "{name} size {}x{} is out of range (1 to 4096 per side). Fix: set its width and height",
            input.width, input.height
        ));
    }
    if input.std.iter().any(|s| !(s.is_finite() && *s > 0.0))
        || input.mean.iter().any(|m| !m.is_finite())
    {
        return Err(format!(
            "{name} std must be positive and mean finite. Fix: correct them"
        ));
    }
    Ok(())
}

/// The seven HAM10000 diagnostic classes as `models/ensemble.toml` lists them, for tests; the
/// tools and the runtime read the class list from a manifest.
#[cfg(test)]
pub fn ham10000_classes() -> Vec<ClassInfo> {
    [
        (
            "akiec",
            "Actinic keratosis / intraepithelial carcinoma (Bowen's disease)",
            true,
        ),
        ("bcc", "Basal cell carcinoma", true),
        ("bkl", "Benign keratosis-like lesion", false),
        ("df", "Dermatofibroma", false),
        ("mel", "Melanoma", true),
        ("nv", "Melanocytic nevus", false),
        ("vasc", "Vascular lesion", false),
    ]
    .into_iter()
    .map(|(code, name, malignant)| ClassInfo {
        code: code.into(),
        name: name.into(),
        malignant,
        watch: code == "mel",
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            name: "t".into(),
            version: "1".into(),
            status: EnsembleStatus::UntrainedFixture,
            description: String::new(),
            input: InputSpec {
                width: 8,
                height: 6,
                resize: ResizePolicy::Stretch,
                mean: [0.5; 3],
                std: [0.5; 3],
                channel_order: ChannelOrder::Rgb,
                colour_constancy: ColourConstancy::None,
            },
            classes: ham10000_classes(),
            members: vec![MemberSpec {
                file: "m.onnx".into(),
                sha256: "ab".repeat(32),
                weight: 2.0,
                backbone: "tiny-cnn".into(),
                precision: "f32".into(),
                output: MemberOutput::Logits,
                input: None,
            }],
            inference: InferenceSettings::default(),
            decision: DecisionSettings::default(),
        }
    }

    #[test]
    fn round_trips_through_toml() {
        let m = sample();
        let back = Manifest::parse(&m.to_toml(), Path::new("x.toml")).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.id(), "t@1");
    }

    /// A member with its own input round-trips, groups apart from the ensemble's `[input]`,
    /// and is checked like it.
    #[test]
    fn members_may_take_their_own_input() {
        let mut m = sample();
        let mut other = m.members[0].clone();
        other.file = "wide.onnx".into();
        other.input = Some(InputSpec {
            width: 20,
            colour_constancy: ColourConstancy::ShadesOfGray,
            ..m.input.clone()
        });
        let mut same = m.members[0].clone();
        same.file = "same.onnx".into();
        same.input = Some(m.input.clone());
        m.members.extend([other.clone(), same]);
        let back = Manifest::parse(&m.to_toml(), Path::new("x.toml")).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.input_of(&back.members[0]), &m.input);
        assert_eq!(back.input_of(&back.members[1]).width, 20);
        let (specs, indices) = back.input_groups();
        assert_eq!(specs, vec![m.input.clone(), other.input.clone().unwrap()]);
        assert_eq!(indices, vec![0, 1, 0]);

        m.members[1].input.as_mut().unwrap().height = 0;
        let err = Manifest::parse(&m.to_toml(), Path::new("e.toml")).unwrap_err();
        assert!(
            err.to_string().contains("member wide.onnx input size 20x0"),
            "{err}"
        );
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        let text = sample().to_toml().replace("weight = 2.0", "wieght = 2.0");
        let err = Manifest::parse(&text, Path::new("e.toml")).unwrap_err();
        assert!(err.to_string().contains("wieght"), "{err}");

        let mut m = sample();
        m.members[0].sha256 = "xyz".into();
        let err = Manifest::parse(&m.to_toml(), Path::new("e.toml")).unwrap_err();
        assert!(err.to_string().contains("64 hex digits"), "{err}");

        let mut m = sample();
        m.classes.truncate(1);
        let err = Manifest::parse(&m.to_toml(), Path::new("e.toml")).unwrap_err();
        assert!(err.to_string().contains("at least 2"), "{err}");

        let mut m = sample();
        m.decision.referral_threshold = Some(1.5);
        let err = Manifest::parse(&m.to_toml(), Path::new("e.toml")).unwrap_err();
        assert!(err.to_string().contains("outside 0..=1"), "{err}");
    }

    #[test]
    fn checks_the_logit_adjustment_against_the_class_list() {
        let mut m = sample();
        m.decision.logit_adjustment = Some(0.3);
        m.decision.class_prior = Some(vec![0.03, 0.05, 0.11, 0.01, 0.11, 0.67, 0.02]);
        let text = m.to_toml();
        assert!(text.contains("logit_adjustment = 0.3"), "{text}");
        assert_eq!(Manifest::parse(&text, Path::new("x.toml")).unwrap(), m);

        let mut short = m.clone();
        short.decision.class_prior = Some(vec![0.5, 0.5]);
        let err = Manifest::parse(&short.to_toml(), Path::new("e.toml")).unwrap_err();
        assert!(err.to_string().contains("7 classes, 2 values"), "{err}");

        let mut missing = m.clone();
        missing.decision.class_prior = None;
        let err = Manifest::parse(&missing.to_toml(), Path::new("e.toml")).unwrap_err();
        assert!(err.to_string().contains("without class_prior"), "{err}");

        let mut unused = sample();
        unused.decision.class_prior = Some(vec![0.5; 3]);
        let err = Manifest::parse(&unused.to_toml(), Path::new("e.toml")).unwrap_err();
        assert!(err.to_string().contains("7 classes, 3 values"), "{err}");

        let mut steep = m;
        steep.decision.logit_adjustment = Some(5.0);
        let err = Manifest::parse(&steep.to_toml(), Path::new("e.toml")).unwrap_err();
        assert!(err.to_string().contains("outside 0..=2"), "{err}");
    }

    #[test]
    fn reads_test_time_augmentation() {
        let mut m = sample();
        m.inference.test_time_augmentation = TestTimeAugmentation::Flips;
        let text = m.to_toml();
        assert!(
            text.contains("test_time_augmentation = \"flips\""),
            "{text}"
        );
        let back = Manifest::parse(&text, Path::new("x.toml")).unwrap();
        assert_eq!(back.inference.test_time_augmentation.views().len(), 4);
        let without = sample().to_toml();
        assert!(!without.contains("[inference]"), "{without}");
        let back = Manifest::parse(&without, Path::new("x.toml")).unwrap();
        assert_eq!(
            back.inference.test_time_augmentation,
            TestTimeAugmentation::None
        );
        let err = Manifest::parse(
            &text.replace("\"flips\"", "\"mirror\""),
            Path::new("t.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("mirror"), "{err}");
        assert_eq!(
            "horizontal-flip".parse(),
            Ok(TestTimeAugmentation::HorizontalFlip)
        );
        assert!("rotate"
            .parse::<TestTimeAugmentation>()
            .unwrap_err()
            .contains("flips"));
    }

    #[test]
    fn normalises_weights() {
        let mut m = sample();
        let mut second = m.members[0].clone();
        second.weight = 6.0;
        m.members.push(second);
        assert_eq!(m.normalised_weights(), vec![0.25, 0.75]);
    }
}

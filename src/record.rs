//! The result records written to stdout (`--json`) and the journal, and their readable form.

use serde::{Deserialize, Serialize};

use crate::decision::top_k;
use crate::ensemble::{Ensemble, Prediction};
use crate::manifest::EnsembleStatus;
use crate::quality::GateMeasures;

/// Shown with every human-facing result.
pub const DECISION_SUPPORT_NOTICE: &str = "Decision support for a clinician, not a diagnosis: \
every result must be confirmed by clinical examination and, where indicated, histopathology.";

/// Shown with every result of an ensemble whose manifest says it is an untrained fixture.
pub const FIXTURE_WARNING: &str =
    "UNTRAINED FIXTURE ENSEMBLE: its probabilities carry no clinical meaning; for tests only.";

/// How many classes a result lists.
pub const TOP_K: usize = 3;

/// A class and its probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassProbability {
    pub class: String,
    pub probability: f32,
}

/// One member's share of a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberResult {
    pub file: String,
    pub backbone: String,
    pub precision: String,
    pub weight: f32,
    /// Every class, in the manifest's order; the mean over `views`.
    pub probabilities: Vec<ClassProbability>,
    /// Views of the input the member ran on (test-time augmentation; 1 without).
    #[serde(default = "one_view")]
    pub views: usize,
    pub ms: f64,
}

fn one_view() -> usize {
    1
}

/// The referral and uncertainty flags of a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flags {
    pub malignant_probability: f32,
    pub refer: Option<bool>,
    pub uncertain: Option<bool>,
    pub entropy: f32,
    pub members_disagree: bool,
}

/// A classified input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Classified {
    pub input: String,
    pub sha256: String,
    /// `name@version` of the ensemble.
    pub ensemble: String,
    pub top: Vec<ClassProbability>,
    pub flags: Flags,
    pub members: Vec<MemberResult>,
    /// Decode, preprocessing and inference time, in milliseconds.
    pub ms: f64,
    pub notice: String,
}

/// An input that could not be classified.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failed {
    pub input: String,
    pub error: String,
}

/// A frame the quality gate turned away, with what to do instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejected {
    pub input: String,
    pub sha256: String,
    pub reasons: Vec<String>,
    pub measures: GateMeasures,
}

/// The outcome for one input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Outcome {
    Classified(Box<Classified>),
    Rejected(Rejected),
    Failed(Failed),
}

impl Outcome {
    /// The input this outcome is about.
    pub fn input(&self) -> &str {
        match self {
            Outcome::Classified(c) => &c.input,
            Outcome::Rejected(r) => &r.input,
            Outcome::Failed(f) => &f.input,
        }
    }

    /// One readable line: the input and what happened to it.
    pub fn summary(&self) -> String {
        match self {
            Outcome::Classified(c) => format!("{}: classified", c.input),
            Outcome::Rejected(r) => format!("{}: {}", r.input, r.reasons.join("; ")),
            Outcome::Failed(f) => format!("{}: {}", f.input, f.error),
        }
    }
}

fn class_probabilities(codes: &[&str], probabilities: &[f32]) -> Vec<ClassProbability> {
    codes
        .iter()
        .zip(probabilities)
        .map(|(code, p)| ClassProbability {
            class: code.to_string(),
            probability: *p,
        })
        .collect()
}

impl Classified {
    /// Builds the record of `prediction` for `input` (its bytes hashed to `sha256`).
    pub fn new(
        input: String,
        sha256: String,
        ensemble: &Ensemble,
        prediction: &Prediction,
        ms: f64,
    ) -> Classified {
        let manifest = &ensemble.manifest;
        let codes = manifest.class_codes();
        let top = top_k(&prediction.probabilities, TOP_K)
            .into_iter()
            .map(|(i, p)| ClassProbability {
                class: codes[i].to_string(),
                probability: p,
            })
            .collect();
        let weights = ensemble.weights().to_vec();
        let members = ensemble
            .members
            .iter()
            .zip(&prediction.members)
            .zip(weights)
            .map(|((member, result), weight)| MemberResult {
                file: member.spec.file.display().to_string(),
                backbone: member.spec.backbone.clone(),
                precision: member.spec.precision.clone(),
                weight,
                probabilities: class_probabilities(&codes, &result.probabilities),
                views: result.raw.len(),
                ms: result.ms,
            })
            .collect();
        let d = &prediction.decision;
        let mut notice = DECISION_SUPPORT_NOTICE.to_string();
        if manifest.status == EnsembleStatus::UntrainedFixture {
            notice = format!("{FIXTURE_WARNING} {notice}");
        }
        Classified {
            input,
            sha256,
            ensemble: manifest.id(),
            top,
            flags: Flags {
                malignant_probability: d.malignant_probability,
                refer: d.refer,
                uncertain: d.uncertain,
                entropy: d.entropy,
                members_disagree: d.members_disagree,
            },
            members,
            ms,
            notice,
        }
    }

    /// A few lines for a terminal: the top-3 with names, the flags, the trace (hash, timing).
    pub fn to_text(&self, ensemble: &Ensemble) -> String {
        let manifest = &ensemble.manifest;
        let name_of = |code: &str| {
            manifest
                .classes
                .iter()
                .find(|c| c.code == code)
                .map_or(String::new(), |c| c.name.clone())
        };
        let mut out = format!(
            "{}\n  sha256 {}  {:.1} ms\n",
            self.input, self.sha256, self.ms
        );
        for (rank, entry) in self.top.iter().enumerate() {
            out.push_str(&format!(
                "  {}. {:<6} {:>6.1} %  {}\n",
                rank + 1,
                entry.class,
                entry.probability * 100.0,
                name_of(&entry.class)
            ));
        }
        let flag = |f: Option<bool>| match f {
            Some(true) => "YES",
            Some(false) => "no",
            None => "not configured",
        };
        out.push_str(&format!(
            "  malignant (sum) {:.1} %  refer: {}  uncertain: {}\n",
            self.flags.malignant_probability * 100.0,
            flag(self.flags.refer),
            flag(self.flags.uncertain)
        ));
        let members: Vec<String> = self
            .members
            .iter()
            .map(|m| {
                let best = m
                    .probabilities
                    .iter()
                    .max_by(|a, b| a.probability.total_cmp(&b.probability));
                best.map_or(String::new(), |b| {
                    format!("{} {} {:.1} %", m.backbone, b.class, b.probability * 100.0)
                })
            })
            .collect();
        let views = self.members.first().map_or(1, |m| m.views);
        let tta = if views > 1 {
            format!(" (mean over {views} mirrored views)")
        } else {
            String::new()
        };
        out.push_str(&format!("  members{tta}: {}\n", members.join("; ")));
        out
    }
}

/// One compact JSON line for `value` (an error object if it cannot be serialised).
pub fn json_line(value: &impl Serialize) -> String {
    serde_json::to_string(value)
        .unwrap_or_else(|e| format!("{{\"error\":\"cannot serialise: {e}\"}}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_written_before_test_time_augmentation_still_parse() {
        let old = r#"{"input":"a.jpg","sha256":"00","ensemble":"e@1",
            "top":[{"class":"nv","probability":0.9}],
            "flags":{"malignant_probability":0.1,"refer":false,"uncertain":null,"entropy":0.2,"members_disagree":false},
            "members":[{"file":"m.onnx","backbone":"b","precision":"f32","weight":1.0,
                        "probabilities":[{"class":"nv","probability":0.9}],"ms":1.0}],
            "ms":2.0,"notice":"n"}"#;
        let record: Classified = serde_json::from_str(old).unwrap();
        assert_eq!(record.members[0].views, 1);
        let again: Classified = serde_json::from_str(&json_line(&record)).unwrap();
        assert_eq!(again, record);
    }
}

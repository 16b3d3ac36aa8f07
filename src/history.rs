//! Reading back what the journal recorded: filters by time and kind, and the CSV and text forms
//! of a record. Used by `dermedge journal` and by the server's history and export.

use crate::journal::JournalRecord;
use crate::record::Outcome;

/// A kind of record to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlagFilter {
    /// Classified, with the referral flag set.
    Refer,
    /// Classified, with the uncertainty flag set.
    Uncertain,
    Classified,
    /// Turned away by the quality gate.
    Rejected,
    /// Could not be read or classified.
    Failed,
}

/// Which records to keep: a UTC time range (bounds checked by [`time_bound`]) and a kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordFilter {
    /// At or after this time (RFC 3339 or a prefix such as `2026-11-25`).
    pub since: Option<String>,
    /// Before this time (same forms).
    pub until: Option<String>,
    pub flag: Option<FlagFilter>,
}

impl RecordFilter {
    /// The first bound that is not a UTC time, with the fix, if any.
    pub fn check(&self) -> Result<(), String> {
        for t in [&self.since, &self.until].into_iter().flatten() {
            if time_bound(t).is_none() {
                return Err(format!(
                    "`{t}` is not a UTC time. Fix: write e.g. 2026-11-25 or 2026-11-25T14:00:00Z"
                ));
            }
        }
        Ok(())
    }

    /// Whether `record` passes the filter.
    pub fn matches(&self, record: &JournalRecord) -> bool {
        matches(record, self)
    }
}

/// A UTC time bound without its trailing `Z`, or `None` when it is not one: digits first, then
/// only date and time characters, and no offset after the `T`.
pub fn time_bound(t: &str) -> Option<&str> {
    let b = t.as_bytes();
    let date_and_time = b.len() >= 4
        && b[..4].iter().all(u8::is_ascii_digit)
        && t.chars()
            .all(|c| c.is_ascii_digit() || "-:.TZz".contains(c));
    let offset = t
        .split_once('T')
        .is_some_and(|(_, time)| time.contains('-'));
    (date_and_time && !offset).then(|| t.trim_end_matches(['Z', 'z']))
}

/// Journal times are `YYYY-MM-DDTHH:MM:SS.mmmZ`; compared without the `Z`, a bound that is a
/// prefix (a day, an hour, a second) sorts before every time inside it.
fn matches(record: &JournalRecord, args: &RecordFilter) -> bool {
    let time = record.time.trim_end_matches('Z');
    if args
        .since
        .as_deref()
        .and_then(time_bound)
        .is_some_and(|s| time < s)
    {
        return false;
    }
    if args
        .until
        .as_deref()
        .and_then(time_bound)
        .is_some_and(|u| time >= u)
    {
        return false;
    }
    match (args.flag, &record.outcome) {
        (None, _) => true,
        (Some(FlagFilter::Refer), Outcome::Classified(c)) => c.flags.refer == Some(true),
        (Some(FlagFilter::Uncertain), Outcome::Classified(c)) => c.flags.uncertain == Some(true),
        (Some(FlagFilter::Classified), Outcome::Classified(_)) => true,
        (Some(FlagFilter::Rejected), Outcome::Rejected(_)) => true,
        (Some(FlagFilter::Failed), Outcome::Failed(_)) => true,
        _ => false,
    }
}

fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}

/// The header of [`csv_row`]'s table.
pub const CSV_HEADER: &str = "time,source,input,status,sha256,ensemble,top1,p1,top2,p2,top3,p3,malignant_probability,refer,uncertain,detail";

/// One CSV row for a record (quoted where needed).
pub fn csv_row(record: &JournalRecord) -> String {
    let flag = |f: Option<bool>| f.map_or(String::new(), |v| v.to_string());
    let mut fields = vec![
        record.time.clone(),
        record.source.clone(),
        record.outcome.input().to_string(),
    ];
    match &record.outcome {
        Outcome::Classified(c) => {
            fields.extend([
                "classified".to_string(),
                c.sha256.clone(),
                c.ensemble.clone(),
            ]);
            for i in 0..3 {
                match c.top.get(i) {
                    Some(t) => fields.extend([t.class.clone(), format!("{:.6}", t.probability)]),
                    None => fields.extend([String::new(), String::new()]),
                }
            }
            fields.extend([
                format!("{:.6}", c.flags.malignant_probability),
                flag(c.flags.refer),
                flag(c.flags.uncertain),
                String::new(),
            ]);
        }
        Outcome::Rejected(r) => {
            fields.extend(["rejected".to_string(), r.sha256.clone()]);
            fields.extend(std::iter::repeat_n(String::new(), 10));
            fields.push(r.reasons.join("; "));
        }
        Outcome::Failed(f) => {
            fields.push("failed".to_string());
            fields.extend(std::iter::repeat_n(String::new(), 11));
            fields.push(f.error.clone());
        }
    }
    fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",")
}

/// One readable line for a record.
pub fn text_line(record: &JournalRecord) -> String {
    let what = match &record.outcome {
        Outcome::Classified(c) => {
            let top: Vec<String> = c
                .top
                .iter()
                .map(|t| format!("{} {:.1} %", t.class, t.probability * 100.0))
                .collect();
            let flags = [("refer", c.flags.refer), ("uncertain", c.flags.uncertain)]
                .iter()
                .filter(|(_, f)| *f == Some(true))
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(" ");
            format!(
                "{}  [{}] {}  sha256 {:.12}  {}",
                top.join(", "),
                flags,
                c.ensemble,
                c.sha256,
                c.input
            )
        }
        Outcome::Rejected(r) => format!("REJECTED {}: {}", r.input, r.reasons.join("; ")),
        Outcome::Failed(f) => format!("FAILED {}: {}", f.input, f.error),
    };
    format!("{}  {}  {what}", record.time, record.source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(CSV_HEADER.split(',').count(), 16);
    }

    #[test]
    fn time_bounds_are_checked_and_cover_the_whole_second() {
        assert_eq!(time_bound("2026-11-25"), Some("2026-11-25"));
        assert_eq!(
            time_bound("2026-11-25T14:00:00Z"),
            Some("2026-11-25T14:00:00")
        );
        assert_eq!(time_bound("yesterday"), None);
        assert_eq!(time_bound("2026-11-25; rm"), None);
        assert_eq!(time_bound("2026-11-25T14:00:00-05:00"), None);
        let record = |time: &str| JournalRecord {
            time: time.into(),
            source: "file".into(),
            outcome: Outcome::Failed(crate::record::Failed {
                input: "x".into(),
                error: "e".into(),
            }),
        };
        let args = |since: &str, until: &str| RecordFilter {
            since: Some(since.into()),
            until: Some(until.into()),
            flag: None,
        };
        let inside = record("2026-11-25T14:00:00.123Z");
        assert!(matches(
            &inside,
            &args("2026-11-25T14:00:00Z", "2026-11-25T14:00:01Z")
        ));
        assert!(matches(&inside, &args("2026-11-25", "2026-11-26")));
        assert!(!matches(
            &inside,
            &args("2026-11-25T14:00:01Z", "2026-11-26")
        ));
        assert!(!matches(
            &inside,
            &args("2026-11-24", "2026-11-25T14:00:00Z")
        ));
    }
}

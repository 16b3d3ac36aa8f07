//! HAM10000 and ISIC 2018 Task 3 data on disk: reading the metadata, finding the images, and
//! reporting what is wrong with them instead of stopping at the first problem.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::classes::Classes;

/// Image folders searched under a dataset root, in this order.
pub const IMAGE_FOLDERS: [&str; 4] = [
    "images",
    "HAM10000_images_part_1",
    "HAM10000_images_part_2",
    ".",
];

/// One labelled image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub image_id: String,
    /// The lesion it shows; images of one lesion must stay on one side of a split.
    pub lesion_id: String,
    /// Index into the manifest's class list.
    pub class: usize,
    pub path: PathBuf,
}

/// What was wrong with a dataset; the samples that were fine are still returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataReport {
    /// `image_id`s whose file was not found.
    pub missing_images: Vec<String>,
    /// (line, code) of rows with a diagnosis outside the class list.
    pub unknown_dx: Vec<(usize, String)>,
    /// `image_id`s listed more than once (the first row is kept).
    pub duplicate_ids: Vec<String>,
    /// (line, problem) of rows that could not be read.
    pub malformed: Vec<(usize, String)>,
    /// Lesions whose images carry different diagnoses (kept under the first one's class).
    pub mixed_lesions: Vec<String>,
}

impl DataReport {
    /// Whether nothing was wrong.
    pub fn is_clean(&self) -> bool {
        *self == DataReport::default()
    }

    /// A readable summary, a line per kind of problem with a few examples.
    pub fn summary(&self) -> String {
        fn examples<T: std::fmt::Debug>(items: &[T]) -> String {
            let shown: Vec<String> = items.iter().take(5).map(|i| format!("{i:?}")).collect();
            let more = if items.len() > 5 {
                format!(" and {} more", items.len() - 5)
            } else {
                String::new()
            };
            format!("{}{more}", shown.join(", "))
        }
        let mut out = String::new();
        let lines = [
            (
                "images missing (rows skipped)",
                examples(&self.missing_images),
                self.missing_images.len(),
            ),
            (
                "unknown dx codes (rows skipped)",
                examples(&self.unknown_dx),
                self.unknown_dx.len(),
            ),
            (
                "duplicate image_ids (first row kept)",
                examples(&self.duplicate_ids),
                self.duplicate_ids.len(),
            ),
            (
                "malformed rows (skipped)",
                examples(&self.malformed),
                self.malformed.len(),
            ),
            (
                "lesions with mixed diagnoses",
                examples(&self.mixed_lesions),
                self.mixed_lesions.len(),
            ),
        ];
        for (what, list, count) in lines {
            if count > 0 {
                out.push_str(&format!("{count} {what}: {list}\n"));
            }
        }
        out
    }
}

/// Splits one CSV line into fields (double quotes, doubled quotes inside).
pub fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    fields.push(field);
    fields
}

/// Maps image ids (file stems) to files under the dataset's image folders.
fn index_images(root: &Path) -> HashMap<String, PathBuf> {
    let mut index = HashMap::new();
    for folder in IMAGE_FOLDERS {
        let Ok(entries) = std::fs::read_dir(root.join(folder)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let is_image = path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                ["jpg", "jpeg", "png"]
                    .iter()
                    .any(|x| x.eq_ignore_ascii_case(e))
            });
            if let (true, Some(stem)) = (is_image, path.file_stem().and_then(|s| s.to_str())) {
                index.entry(stem.to_string()).or_insert(path);
            }
        }
    }
    index
}

/// A CSV file's header and its rows, each with its 1-based line number.
struct Csv {
    header: Vec<String>,
    rows: Vec<(usize, Vec<String>)>,
}

fn read_csv(path: &Path) -> anyhow::Result<Csv> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read {}. Fix: point --data at the dataset folder",
            path.display()
        )
    })?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        bail!(
            "{} is empty. Fix: use the dataset's metadata CSV",
            path.display()
        );
    };
    let header: Vec<String> = csv_fields(header.trim_start_matches('\u{feff}'))
        .into_iter()
        .map(|h| h.trim().to_string())
        .collect();
    Ok(Csv {
        header,
        rows: lines.map(|(i, l)| (i + 1, csv_fields(l))).collect(),
    })
}

fn column(header: &[String], name: &str, path: &Path) -> anyhow::Result<usize> {
    header.iter().position(|h| h == name).with_context(|| {
        format!(
            "{} has no `{name}` column (columns: {}). Fix: use HAM10000_metadata.csv",
            path.display(),
            header.join(",")
        )
    })
}

/// Reads HAM10000 (`HAM10000_metadata.csv` plus `images/` or `HAM10000_images_part_1/` and `_2/`);
/// each `dx` code is looked up in `classes`.
pub fn load_ham10000(root: &Path, classes: &Classes) -> anyhow::Result<(Vec<Sample>, DataReport)> {
    let csv = root.join("HAM10000_metadata.csv");
    let Csv { header, rows } = read_csv(&csv)?;
    let (lesion, image, dx) = (
        column(&header, "lesion_id", &csv)?,
        column(&header, "image_id", &csv)?,
        column(&header, "dx", &csv)?,
    );
    let index = index_images(root);
    let mut report = DataReport::default();
    let mut seen = HashSet::new();
    let mut lesion_class: HashMap<String, usize> = HashMap::new();
    let mut mixed = HashSet::new();
    let mut samples = Vec::new();
    for (line, fields) in rows {
        let need = lesion.max(image).max(dx);
        if fields.len() <= need {
            report.malformed.push((
                line,
                format!("{} fields, expected at least {}", fields.len(), need + 1),
            ));
            continue;
        }
        let (lesion_id, image_id, code) = (
            fields[lesion].trim(),
            fields[image].trim(),
            fields[dx].trim(),
        );
        if image_id.is_empty() || lesion_id.is_empty() {
            report
                .malformed
                .push((line, "empty image_id or lesion_id".into()));
            continue;
        }
        if !seen.insert(image_id.to_string()) {
            report.duplicate_ids.push(image_id.to_string());
            continue;
        }
        let Some(class) = classes.index_of(code) else {
            report.unknown_dx.push((line, code.to_string()));
            continue;
        };
        let Some(path) = index.get(image_id) else {
            report.missing_images.push(image_id.to_string());
            continue;
        };
        let first = *lesion_class.entry(lesion_id.to_string()).or_insert(class);
        if first != class && mixed.insert(lesion_id.to_string()) {
            report.mixed_lesions.push(lesion_id.to_string());
        }
        samples.push(Sample {
            image_id: image_id.to_string(),
            lesion_id: lesion_id.to_string(),
            class: first,
            path: path.clone(),
        });
    }
    Ok((samples, report))
}

/// Reads the ISIC 2018 Task 3 layout: a ground-truth CSV with columns `image` and one one-hot
/// column per class (its code in capitals), and a folder of images. Each image is its own lesion.
pub fn load_isic2018(
    ground_truth: &Path,
    images: &Path,
    classes: &Classes,
) -> anyhow::Result<(Vec<Sample>, DataReport)> {
    let Csv { header, rows } = read_csv(ground_truth)?;
    let image = column(&header, "image", ground_truth)?;
    let class_columns: Vec<(usize, usize)> = classes
        .codes()
        .enumerate()
        .map(|(class, code)| {
            column(&header, &code.to_uppercase(), ground_truth).map(|c| (class, c))
        })
        .collect::<anyhow::Result<_>>()?;
    let index = index_images(images);
    let mut report = DataReport::default();
    let mut seen = HashSet::new();
    let mut samples = Vec::new();
    for (line, fields) in rows {
        let Some(image_id) = fields.get(image).map(|s| s.trim().to_string()) else {
            report.malformed.push((line, "no image column".into()));
            continue;
        };
        let hot: Vec<usize> = class_columns
            .iter()
            .filter(|(_, c)| {
                fields
                    .get(*c)
                    .and_then(|v| v.trim().parse::<f32>().ok())
                    .is_some_and(|v| v >= 0.5)
            })
            .map(|(class, _)| *class)
            .collect();
        if hot.len() != 1 {
            report.malformed.push((
                line,
                format!("{} classes marked, expected exactly one", hot.len()),
            ));
            continue;
        }
        if !seen.insert(image_id.clone()) {
            report.duplicate_ids.push(image_id);
            continue;
        }
        let Some(path) = index.get(&image_id) else {
            report.missing_images.push(image_id);
            continue;
        };
        samples.push(Sample {
            lesion_id: image_id.clone(),
            image_id,
            class: hot[0],
            path: path.clone(),
        });
    }
    Ok((samples, report))
}

/// Reads an extra training set in the ISIC 2017 copy's layout: `metadata.csv` with columns
/// `image_id` and `dx` (a code of `classes`) plus a folder of images. Each image is its own lesion,
/// and its lesion id is prefixed with `extra:` so it can never share a lesion with HAM10000.
pub fn load_extra_training_set(
    root: &Path,
    classes: &Classes,
) -> anyhow::Result<(Vec<Sample>, DataReport)> {
    let csv = root.join("metadata.csv");
    let Csv { header, rows } = read_csv(&csv)?;
    let (image, dx) = (
        column(&header, "image_id", &csv)?,
        column(&header, "dx", &csv)?,
    );
    let index = index_images(root);
    let mut report = DataReport::default();
    let mut seen = HashSet::new();
    let mut samples = Vec::new();
    for (line, fields) in rows {
        let (Some(image_id), Some(code)) = (fields.get(image), fields.get(dx)) else {
            report.malformed.push((
                line,
                format!("{} fields, expected image_id and dx", fields.len()),
            ));
            continue;
        };
        let (image_id, code) = (image_id.trim().to_string(), code.trim());
        let Some(class) = classes.index_of(code) else {
            report.unknown_dx.push((line, code.to_string()));
            continue;
        };
        if !seen.insert(image_id.clone()) {
            report.duplicate_ids.push(image_id);
            continue;
        }
        let Some(path) = index.get(&image_id) else {
            report.missing_images.push(image_id);
            continue;
        };
        samples.push(Sample {
            lesion_id: format!("extra:{image_id}"),
            image_id,
            class,
            path: path.clone(),
        });
    }
    Ok((samples, report))
}

/// Images per class, for `classes` classes.
pub fn class_counts(samples: &[Sample], classes: usize) -> Vec<usize> {
    let mut counts = vec![0; classes];
    for s in samples {
        counts[s.class] += 1;
    }
    counts
}

/// Class weights `w_c = N / (K * n_c)` (Le et al. 2020, after King and Zeng): a class's weight
/// grows as it gets rarer, and the weighted class sizes are all `N / K`. An absent class gets 0.
pub fn class_weights(counts: &[usize]) -> Vec<f32> {
    let total: usize = counts.iter().sum();
    let k = counts.iter().filter(|n| **n > 0).count().max(1);
    counts
        .iter()
        .map(|n| {
            if *n == 0 {
                0.0
            } else {
                total as f32 / (k as f32 * *n as f32)
            }
        })
        .collect()
}

/// Lesions per class (of `classes` classes), with their images, in a stable order.
pub fn lesions_by_class(samples: &[Sample], classes: usize) -> Vec<Vec<(String, Vec<usize>)>> {
    let mut by_lesion: BTreeMap<&str, (usize, Vec<usize>)> = BTreeMap::new();
    for (i, s) in samples.iter().enumerate() {
        by_lesion
            .entry(&s.lesion_id)
            .or_insert((s.class, Vec::new()))
            .1
            .push(i);
    }
    let mut out = vec![Vec::new(); classes];
    for (lesion, (class, images)) in by_lesion {
        out[class].push((lesion.to_string(), images));
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::classes::tests::shipped;

    /// A small dataset on disk in the HAM10000 layout; returns its root.
    pub(crate) fn write_dataset(
        dir: &Path,
        rows: &[(&str, &str, &str)],
        with_files: bool,
    ) -> PathBuf {
        let root = dir.join("ham");
        std::fs::create_dir_all(root.join("HAM10000_images_part_1")).unwrap();
        let mut csv = String::from("lesion_id,image_id,dx,dx_type,age,sex,localization\n");
        for (lesion, image, dx) in rows {
            csv.push_str(&format!(
                "{lesion},{image},{dx},histo,50.0,male,\"back, upper\"\n"
            ));
            if with_files {
                std::fs::write(
                    root.join("HAM10000_images_part_1")
                        .join(format!("{image}.jpg")),
                    b"x",
                )
                .unwrap();
            }
        }
        std::fs::write(root.join("HAM10000_metadata.csv"), csv).unwrap();
        root
    }

    #[test]
    fn class_weights_by_hand() {
        // N = 100, K = 2: 100 / (2 * 80) = 0.625 and 100 / (2 * 20) = 2.5.
        assert_eq!(class_weights(&[80, 20]), vec![0.625, 2.5]);
        assert_eq!(class_weights(&[10, 0, 10]), vec![1.0, 0.0, 1.0]);
    }

    #[test]
    fn parses_quoted_csv_fields() {
        assert_eq!(
            csv_fields("a,\"b, c\",\"say \"\"hi\"\"\","),
            vec!["a", "b, c", "say \"hi\"", ""]
        );
    }

    #[test]
    fn reports_missing_unknown_duplicate_and_malformed_rows_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let root = write_dataset(
            dir.path(),
            &[
                ("L1", "I1", "mel"),
                ("L1", "I2", "mel"),
                ("L2", "I3", "nv"),
                ("L3", "I4", "xyz"),
                ("L2", "I3", "nv"),
            ],
            true,
        );
        std::fs::remove_file(root.join("HAM10000_images_part_1/I2.jpg")).unwrap();
        let csv = std::fs::read_to_string(root.join("HAM10000_metadata.csv")).unwrap();
        std::fs::write(
            root.join("HAM10000_metadata.csv"),
            format!("{csv}onlyone\n"),
        )
        .unwrap();
        let (samples, report) = load_ham10000(&root, &shipped()).unwrap();
        let ids: Vec<&str> = samples.iter().map(|s| s.image_id.as_str()).collect();
        assert_eq!(ids, vec!["I1", "I3"]);
        assert_eq!(samples[0].class, 4);
        assert_eq!(report.missing_images, vec!["I2"]);
        assert_eq!(report.unknown_dx, vec![(5, "xyz".to_string())]);
        assert_eq!(report.duplicate_ids, vec!["I3"]);
        assert_eq!(report.malformed.len(), 1);
        let summary = report.summary();
        assert!(
            summary.contains("1 images missing") && summary.contains("unknown dx"),
            "{summary}"
        );
    }

    #[test]
    fn a_missing_metadata_file_names_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_ham10000(dir.path(), &shipped())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("HAM10000_metadata.csv") && err.contains("Fix:"),
            "{err}"
        );
    }

    #[test]
    fn reads_an_extra_training_set_and_reports_its_bad_rows() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("images")).unwrap();
        for id in ["ISIC_0000001", "ISIC_0000002", "ISIC_0000004"] {
            image::RgbImage::new(8, 8)
                .save(root.join("images").join(format!("{id}.jpg")))
                .unwrap();
        }
        std::fs::write(
            root.join("metadata.csv"),
            "image_id,dx,isic2017_label,split\nISIC_0000001,mel,melanoma,train\n\
             ISIC_0000002,nv,nevus,validation\nISIC_0000003,nv,nevus,train\n\
             ISIC_0000004,xyz,other,train\nISIC_0000001,mel,melanoma,train\n",
        )
        .unwrap();
        let (samples, report) = load_extra_training_set(root, &shipped()).unwrap();
        let got: Vec<(&str, &str, usize)> = samples
            .iter()
            .map(|s| (s.image_id.as_str(), s.lesion_id.as_str(), s.class))
            .collect();
        assert_eq!(
            got,
            [
                ("ISIC_0000001", "extra:ISIC_0000001", 4),
                ("ISIC_0000002", "extra:ISIC_0000002", 5)
            ]
        );
        assert_eq!(report.missing_images, ["ISIC_0000003"]);
        assert_eq!(report.unknown_dx, [(5, "xyz".to_string())]);
        assert_eq!(report.duplicate_ids, ["ISIC_0000001"]);
    }

    #[test]
    fn reads_the_isic_2018_test_layout() {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("ISIC2018_Task3_Test_Input");
        std::fs::create_dir_all(&images).unwrap();
        for id in ["ISIC_1", "ISIC_2"] {
            std::fs::write(images.join(format!("{id}.jpg")), b"x").unwrap();
        }
        let gt = dir.path().join("gt.csv");
        std::fs::write(
            &gt,
            "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\nISIC_1,0.0,1.0,0.0,0.0,0.0,0.0,0.0\nISIC_2,1.0,0.0,0.0,0.0,0.0,0.0,0.0\nISIC_3,1.0,0.0,0.0,0.0,0.0,0.0,0.0\nISIC_4,1.0,1.0,0.0,0.0,0.0,0.0,0.0\n",
        )
        .unwrap();
        let (samples, report) = load_isic2018(&gt, &images, &shipped()).unwrap();
        assert_eq!(
            samples
                .iter()
                .map(|s| (s.image_id.as_str(), s.class))
                .collect::<Vec<_>>(),
            vec![("ISIC_1", 5), ("ISIC_2", 4)]
        );
        assert_eq!(report.missing_images, vec!["ISIC_3"]);
        assert_eq!(report.malformed.len(), 1);
    }
}

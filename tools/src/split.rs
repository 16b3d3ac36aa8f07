//! Lesion-grouped, class-stratified, seeded splits: every image of a lesion lands on one side.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::classes::Classes;
use crate::data::{class_counts, lesions_by_class, load_ham10000, DataReport, Sample};
use crate::rng::SeededRng;

/// Shuffles in place with the project's seeded generator (Fisher-Yates).
pub fn shuffle<T>(items: &mut [T], rng: &mut SeededRng) {
    for i in (1..items.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// Which side each sample is on: a name per sample, in the samples' order.
pub type Assignment = Vec<String>;

/// Number of classes the samples' labels span.
fn label_count(samples: &[Sample]) -> usize {
    samples.iter().map(|s| s.class + 1).max().unwrap_or(0)
}

/// Assigns whole lesions to `test`, `val` and `train`, class by class, so each side holds about
/// the given fraction of every class's lesions.
pub fn train_val_test(samples: &[Sample], val: f64, test: f64, seed: u64) -> Assignment {
    let mut rng = SeededRng::new(seed);
    let mut side = vec![String::new(); samples.len()];
    for mut lesions in lesions_by_class(samples, label_count(samples)) {
        shuffle(&mut lesions, &mut rng);
        let n = lesions.len() as f64;
        let n_test = (n * test).round() as usize;
        let n_val = (n * val).round() as usize;
        for (rank, (_, images)) in lesions.iter().enumerate() {
            let name = if rank < n_test {
                "test"
            } else if rank < n_test + n_val {
                "val"
            } else {
                "train"
            };
            for i in images {
                side[*i] = name.to_string();
            }
        }
    }
    side
}

/// Deals whole lesions into `folds` folds, class by class (`fold0`, `fold1`, ...).
pub fn k_fold(samples: &[Sample], folds: usize, seed: u64) -> Assignment {
    let mut rng = SeededRng::new(seed);
    let mut side = vec![String::new(); samples.len()];
    let mut next = 0usize;
    for mut lesions in lesions_by_class(samples, label_count(samples)) {
        shuffle(&mut lesions, &mut rng);
        for (_, images) in lesions {
            for i in images {
                side[i] = format!("fold{}", next % folds);
            }
            next += 1;
        }
    }
    side
}

/// The names of the sides, sorted, with their images per class (of `classes` classes).
pub fn counts_by_side(
    samples: &[Sample],
    assignment: &Assignment,
    classes: usize,
) -> Vec<(String, Vec<usize>)> {
    let mut names: Vec<String> = Vec::new();
    for a in assignment {
        if !names.contains(a) {
            names.push(a.clone());
        }
    }
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let picked: Vec<Sample> = samples
                .iter()
                .zip(assignment)
                .filter(|(_, a)| **a == name)
                .map(|(s, _)| s.clone())
                .collect();
            (name, class_counts(&picked, classes))
        })
        .collect()
}

/// A table of images per class and side.
pub fn counts_table(samples: &[Sample], assignment: &Assignment, classes: &Classes) -> String {
    let mut out = format!("{:<7}", "side");
    for c in classes.codes() {
        out.push_str(&format!("{c:>7}"));
    }
    out.push_str(&format!("{:>8}\n", "total"));
    for (name, counts) in counts_by_side(samples, assignment, classes.len()) {
        out.push_str(&format!("{name:<7}"));
        for n in &counts {
            out.push_str(&format!("{n:>7}"));
        }
        out.push_str(&format!("{:>8}\n", counts.iter().sum::<usize>()));
    }
    out
}

/// Writes `image_id,lesion_id,dx,split` rows.
pub fn write_split_csv(
    path: &Path,
    samples: &[Sample],
    assignment: &Assignment,
    classes: &Classes,
) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut text = String::from("image_id,lesion_id,dx,split\n");
    for (s, side) in samples.iter().zip(assignment) {
        text.push_str(&format!(
            "{},{},{},{side}\n",
            s.image_id,
            s.lesion_id,
            classes.code(s.class)
        ));
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Reads a split written by [`write_split_csv`] as an assignment of `samples`; every sample must
/// be listed, and the CSV's lesion and diagnosis must agree with the dataset's.
pub fn read_split_csv(
    path: &Path,
    samples: &[Sample],
    classes: &Classes,
) -> anyhow::Result<Assignment> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read {}. Fix: write it with `dermedge-tools split --out {}`",
            path.display(),
            path.display()
        )
    })?;
    let mut sides = std::collections::HashMap::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let fields = crate::data::csv_fields(line);
        let [image_id, lesion_id, dx, side] = fields.as_slice() else {
            anyhow::bail!(
                "{} line {}: expected image_id,lesion_id,dx,split",
                path.display(),
                n + 1
            );
        };
        sides.insert(
            image_id.clone(),
            (lesion_id.clone(), dx.clone(), side.clone()),
        );
    }
    samples
        .iter()
        .map(|s| {
            let Some((lesion, dx, side)) = sides.get(&s.image_id) else {
                anyhow::bail!(
                    "{}: image {} of the dataset is not in the split. Fix: write a new split for this dataset",
                    path.display(),
                    s.image_id
                );
            };
            if *lesion != s.lesion_id || dx != classes.code(s.class) {
                anyhow::bail!(
                    "{}: image {} is listed as lesion {lesion} ({dx}) but the dataset says {} ({}). Fix: write a new split",
                    path.display(),
                    s.image_id,
                    s.lesion_id,
                    classes.code(s.class)
                );
            }
            Ok(side.clone())
        })
        .collect()
}

/// Options of `dermedge-tools split`.
#[derive(Debug, Clone)]
pub struct SplitRequest {
    /// The HAM10000 folder.
    pub data: PathBuf,
    /// The split CSV to write.
    pub out: PathBuf,
    /// Share of each class's lesions for validation.
    pub val: f64,
    /// Share of each class's lesions for test.
    pub test: f64,
    pub seed: u64,
    /// K folds instead of train/val/test.
    pub folds: Option<usize>,
}

/// A split made and written by [`split_dataset`].
#[derive(Debug, Clone)]
pub struct MadeSplit {
    pub samples: Vec<Sample>,
    pub assignment: Assignment,
    /// What was wrong with the dataset (those rows are left out of the split).
    pub report: DataReport,
}

/// Reads the dataset, assigns its lesions and writes the split CSV.
pub fn split_dataset(request: &SplitRequest, classes: &Classes) -> anyhow::Result<MadeSplit> {
    let (val, test) = (request.val, request.test);
    if !(0.0..1.0).contains(&val) || !(0.0..1.0).contains(&test) || val + test >= 1.0 {
        bail!("--val {val} and --test {test} must be shares in [0, 1) that sum below 1. Fix: e.g. --val 0.15 --test 0.15");
    }
    let (samples, report) = load_ham10000(&request.data, classes)?;
    if samples.is_empty() {
        bail!(
            "no usable images under {}. Fix: point --data at a HAM10000 folder",
            request.data.display()
        );
    }
    let assignment = match request.folds {
        Some(k) => k_fold(&samples, k, request.seed),
        None => train_val_test(&samples, val, test, request.seed),
    };
    write_split_csv(&request.out, &samples, &assignment, classes)?;
    Ok(MadeSplit {
        samples,
        assignment,
        report,
    })
}

/// Indices of the samples on `side`.
pub fn indices_on(assignment: &Assignment, side: &str) -> Vec<usize> {
    assignment
        .iter()
        .enumerate()
        .filter(|(_, a)| *a == side)
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classes::tests::shipped;
    use std::collections::HashMap;

    fn synthetic(lesions_per_class: usize) -> Vec<Sample> {
        let mut out = Vec::new();
        for class in 0..7 {
            for l in 0..lesions_per_class {
                for image in 0..(1 + l % 3) {
                    out.push(Sample {
                        image_id: format!("I{class}_{l}_{image}"),
                        lesion_id: format!("L{class}_{l}"),
                        class,
                        path: "x.jpg".into(),
                    });
                }
            }
        }
        out
    }

    fn sides_per_lesion(
        samples: &[Sample],
        assignment: &Assignment,
    ) -> HashMap<String, Vec<String>> {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for (s, a) in samples.iter().zip(assignment) {
            let sides = map.entry(s.lesion_id.clone()).or_default();
            if !sides.contains(a) {
                sides.push(a.clone());
            }
        }
        map
    }

    #[test]
    fn no_lesion_on_two_sides_and_classes_are_stratified() {
        let samples = synthetic(40);
        let a = train_val_test(&samples, 0.15, 0.15, 3);
        assert!(sides_per_lesion(&samples, &a)
            .values()
            .all(|s| s.len() == 1));
        let lesions = crate::data::lesions_by_class(&samples, 7);
        for (class, lesions) in lesions.iter().enumerate() {
            let in_test = lesions
                .iter()
                .filter(|(_, imgs)| a[imgs[0]] == "test")
                .count();
            assert_eq!(in_test, 6, "class {class}: 15% of 40 lesions");
        }
        assert_eq!(a, train_val_test(&samples, 0.15, 0.15, 3));
        assert_ne!(a, train_val_test(&samples, 0.15, 0.15, 4));
    }

    #[test]
    fn k_fold_keeps_lesions_whole_and_balances_folds() {
        let samples = synthetic(20);
        let a = k_fold(&samples, 5, 1);
        assert!(sides_per_lesion(&samples, &a)
            .values()
            .all(|s| s.len() == 1));
        let counts = counts_by_side(&samples, &a, 7);
        assert_eq!(counts.len(), 5);
        for (_, per_class) in counts {
            assert!(per_class.iter().all(|n| *n >= 4), "{per_class:?}");
        }
    }

    #[test]
    fn the_shared_ham10000_splits_without_leaks_and_every_class_on_every_side() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/ham10000");
        if !root.exists() {
            eprintln!("SKIPPED: {} is absent", root.display());
            return;
        }
        let classes = shipped();
        let (samples, report) = load_ham10000(&root, &classes).unwrap();
        assert_eq!(samples.len(), 8457, "{}", report.summary());
        assert!(report.is_clean(), "{}", report.summary());
        let a = train_val_test(&samples, 0.15, 0.15, 1);
        assert!(sides_per_lesion(&samples, &a)
            .values()
            .all(|s| s.len() == 1));
        for (side, counts) in counts_by_side(&samples, &a, classes.len()) {
            assert!(counts.iter().all(|n| *n > 0), "{side}: {counts:?}");
        }
    }
}

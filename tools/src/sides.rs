//! The dataset's images on each side of a split, as the commands that train, evaluate and
//! quantize read them. Problems with the data are logged as warnings and the usable rows kept.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::bail;

use crate::classes::Classes;
use crate::data::{class_counts, load_extra_training_set, load_ham10000, DataReport, Sample};
use crate::split::{counts_table, indices_on, read_split_csv, train_val_test, write_split_csv};

/// A dataset and the indices of its three sides.
pub struct SplitData {
    pub samples: Vec<Sample>,
    pub train: Vec<usize>,
    pub val: Vec<usize>,
    pub test: Vec<usize>,
}

fn load_dataset(data: &Path, classes: &Classes) -> anyhow::Result<Vec<Sample>> {
    let (samples, report) = load_ham10000(data, classes)?;
    warn_about(data, &report);
    Ok(samples)
}

fn warn_about(data: &Path, report: &DataReport) {
    if !report.is_clean() {
        log::warn!("{}: {}", data.display(), report.summary().trim_end());
    }
}

/// The dataset and its train/val/test assignment (read from `split`, or made with seed 1 and
/// written beside the run in `out`).
pub fn load_split(
    data: &Path,
    split: Option<&Path>,
    out: &Path,
    classes: &Classes,
) -> anyhow::Result<SplitData> {
    let samples = load_dataset(data, classes)?;
    if samples.is_empty() {
        bail!(
            "no usable images under {}. Fix: point --data at a HAM10000 folder",
            data.display()
        );
    }
    let assignment = match split {
        Some(path) => read_split_csv(path, &samples, classes)?,
        None => {
            let assignment = train_val_test(&samples, 0.15, 0.15, 1);
            let path = out.join("split.csv");
            write_split_csv(&path, &samples, &assignment, classes)?;
            log::info!(
                "no --split given: wrote the default split (seed 1) to {}",
                path.display()
            );
            assignment
        }
    };
    log::info!(
        "images per side and class:\n{}",
        counts_table(&samples, &assignment, classes).trim_end()
    );
    Ok(SplitData {
        train: indices_on(&assignment, "train"),
        val: indices_on(&assignment, "val"),
        test: indices_on(&assignment, "test"),
        samples,
    })
}

/// The samples and the indices of those on `side` of the split (`split` CSV, or the default
/// seed-1 split), at most `limit` of them.
pub fn side_samples(
    data: &Path,
    split: Option<&Path>,
    side: &str,
    limit: Option<usize>,
    classes: &Classes,
) -> anyhow::Result<(Vec<Sample>, Vec<usize>)> {
    let samples = load_dataset(data, classes)?;
    let assignment = match split {
        Some(path) => read_split_csv(path, &samples, classes)?,
        None => train_val_test(&samples, 0.15, 0.15, 1),
    };
    let mut indices = indices_on(&assignment, side);
    if indices.is_empty() {
        bail!("the split has no '{side}' images. Fix: --side train, val or test");
    }
    if let Some(limit) = limit {
        indices.truncate(limit);
    }
    Ok((samples, indices))
}

/// Appends the images of each extra training set to `samples` and to the training side; refuses a
/// set that shares an image id with the split's dataset (it could reach validation or test).
pub fn add_extra_training_data(
    folders: &[PathBuf],
    samples: &mut Vec<Sample>,
    train: &mut Vec<usize>,
    classes: &Classes,
) -> anyhow::Result<()> {
    for folder in folders {
        let (extra, report) = load_extra_training_set(folder, classes)?;
        warn_about(folder, &report);
        let known: HashSet<&str> = samples.iter().map(|s| s.image_id.as_str()).collect();
        if let Some(shared) = extra.iter().find(|s| known.contains(s.image_id.as_str())) {
            bail!(
                "{} holds {}, which is also in the split's dataset; extra training data must not overlap it. Fix: remove the shared images from {}",
                folder.display(),
                shared.image_id,
                folder.display()
            );
        }
        if extra.is_empty() {
            bail!(
                "{} holds no usable image. Fix: point --extra-data at a folder with metadata.csv (image_id, dx) and its images",
                folder.display()
            );
        }
        let per_class: Vec<String> = class_counts(&extra, classes.len())
            .iter()
            .zip(classes.codes())
            .filter(|(n, _)| **n > 0)
            .map(|(n, c)| format!("{c} {n}"))
            .collect();
        log::info!(
            "{}: {} extra training images ({})",
            folder.display(),
            extra.len(),
            per_class.join(", ")
        );
        let first = samples.len();
        samples.extend(extra);
        train.extend(first..samples.len());
    }
    Ok(())
}

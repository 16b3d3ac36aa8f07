//! The images named on a command line or in a folder source: files and folders expanded into a
//! sorted list, with unreadable inputs kept as items rather than stopping the listing.

use std::path::{Path, PathBuf};

/// File extensions picked up when a folder is given.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png"];

/// One item to classify: an image path, or an input that could not be listed.
#[derive(Debug, Clone, PartialEq)]
pub enum InputItem {
    Image(PathBuf),
    Unreadable { input: PathBuf, error: String },
}

/// Expands files and folders (recursively, sorted, images by extension) into items. A path that
/// does not exist or cannot be listed becomes an `Unreadable` item instead of stopping the run.
pub fn expand_inputs(inputs: &[PathBuf]) -> Vec<InputItem> {
    let mut items = Vec::new();
    for input in inputs {
        match std::fs::metadata(input) {
            Ok(meta) if meta.is_dir() => collect_folder(input, &mut items),
            Ok(_) => items.push(InputItem::Image(input.clone())),
            Err(e) => items.push(InputItem::Unreadable {
                input: input.clone(),
                error: format!(
                    "cannot open {}: {e}. Fix: check the path of the image or folder",
                    input.display()
                ),
            }),
        }
    }
    items
}

fn collect_folder(folder: &Path, items: &mut Vec<InputItem>) {
    let entries = match std::fs::read_dir(folder) {
        Ok(entries) => entries,
        Err(e) => {
            items.push(InputItem::Unreadable {
                input: folder.to_path_buf(),
                error: format!(
                    "cannot list folder {}: {e}. Fix: check its permissions",
                    folder.display()
                ),
            });
            return;
        }
    };
    let mut entries: Vec<(PathBuf, bool)> = entries
        .filter_map(|e| e.ok())
        .map(|e| {
            let is_real_dir = e.file_type().is_ok_and(|t| t.is_dir());
            (e.path(), is_real_dir)
        })
        .collect();
    entries.sort();
    for (path, is_real_dir) in entries {
        if is_real_dir {
            collect_folder(&path, items);
        } else if path.is_dir() {
            log::warn!("{}: a link to a folder; not followed", path.display());
        } else if has_image_extension(&path) {
            items.push(InputItem::Image(path));
        }
    }
}

fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

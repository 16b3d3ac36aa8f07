//! The output classes (codes, names, malignancy) as an ensemble manifest lists them: the one
//! source of the class list for every command.

use std::path::Path;

use anyhow::{bail, Context};
use dermedge::manifest::{ClassInfo, Manifest};

/// The manifest whose classes the tools use when no other is named.
pub const DEFAULT_MANIFEST: &str = "models/ensemble.toml";

/// The classes in output order.
#[derive(Debug, Clone, PartialEq)]
pub struct Classes {
    list: Vec<ClassInfo>,
}

impl Classes {
    /// The classes of `list`, in its order; at least 2 with distinct codes.
    pub fn new(list: Vec<ClassInfo>) -> anyhow::Result<Classes> {
        if list.len() < 2 {
            bail!("{} class(es) given; at least 2 are needed", list.len());
        }
        for (i, class) in list.iter().enumerate() {
            if list[..i].iter().any(|c| c.code == class.code) {
                bail!("class code `{}` is listed twice", class.code);
            }
        }
        Ok(Classes { list })
    }

    /// The classes of the manifest at `path`.
    pub fn load(path: &Path) -> anyhow::Result<Classes> {
        let manifest = Manifest::load(path).with_context(|| {
            format!(
                "reading the class list. Fix: pass --classes with an ensemble.toml, or run from the repository root ({DEFAULT_MANIFEST})"
            )
        })?;
        Classes::new(manifest.classes)
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Always false: a class list holds at least 2 classes.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The manifest entries, in output order.
    pub fn infos(&self) -> &[ClassInfo] {
        &self.list
    }

    /// The code of class `index`.
    pub fn code(&self, index: usize) -> &str {
        &self.list[index].code
    }

    /// Every code, in output order.
    pub fn codes(&self) -> impl Iterator<Item = &str> {
        self.list.iter().map(|c| c.code.as_str())
    }

    /// The index of the class with `code`.
    pub fn index_of(&self, code: &str) -> Option<usize> {
        self.list.iter().position(|c| c.code == code)
    }

    /// Whether class `index` is marked malignant.
    pub fn is_malignant(&self, index: usize) -> bool {
        self.list[index].malignant
    }

    /// The index of the watched class (`watch = true` in the manifest: melanoma), where one is.
    pub fn melanoma(&self) -> Option<usize> {
        self.list.iter().position(|c| c.watch)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The classes of the shipped manifest.
    pub(crate) fn shipped() -> Classes {
        Classes::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/ensemble.toml"))
            .unwrap()
    }

    #[test]
    fn the_shipped_manifest_lists_melanoma_among_its_malignant_classes() {
        let classes = shipped();
        let melanoma = classes.melanoma().unwrap();
        assert!(classes.is_malignant(melanoma));
        assert_eq!(classes.index_of(classes.code(melanoma)), Some(melanoma));
        assert_eq!(classes.codes().count(), classes.len());
    }

    #[test]
    fn a_list_with_a_repeated_code_is_refused() {
        let class = |code: &str| ClassInfo {
            code: code.into(),
            name: code.into(),
            malignant: false,
            watch: false,
        };
        assert!(Classes::new(vec![class("a"), class("b")]).is_ok());
        let err = Classes::new(vec![class("a"), class("a")]).unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
        assert!(Classes::new(vec![class("a")]).is_err());
    }
}

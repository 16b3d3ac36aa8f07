//! A uniquely named folder under the system's temporary directory, removed with its contents when
//! dropped: all the tests need of a temporary folder. Shared by the library's unit tests and the
//! integration tests (included with `#[path]`); the `tempfile` crate is not a dev-dependency
//! because its `rustix` features would make the aarch64 test build compile tract a second time.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A folder that lives as long as this value.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

static MADE: AtomicUsize = AtomicUsize::new(0);

impl ScratchDir {
    /// Creates a new, empty folder; panics when the temporary directory is not writable.
    pub fn new() -> ScratchDir {
        let base = std::env::temp_dir();
        loop {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |t| t.subsec_nanos());
            let name = format!(
                "dermedge-test-{}-{}-{nanos}",
                std::process::id(),
                MADE.fetch_add(1, Ordering::Relaxed)
            );
            let path = base.join(name);
            match std::fs::create_dir(&path) {
                Ok(()) => return ScratchDir { path },
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("cannot create a test folder in {}: {e}", base.display()),
            }
        }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

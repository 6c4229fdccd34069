//! The pid file: written at start, removed at exit (DSS's CleanPid).

use std::path::{Path, PathBuf};

/// A pid file that is removed when dropped.
#[derive(Debug)]
pub struct PidFile(PathBuf);

impl PidFile {
    /// Writes this process's pid to `path`.
    pub fn create(path: &Path) -> std::io::Result<PidFile> {
        std::fs::write(path, format!("{}\n", std::process::id()))?;
        Ok(PidFile(path.to_owned()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

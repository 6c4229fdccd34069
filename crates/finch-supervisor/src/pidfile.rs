//! The pid file: written at start (once the sockets are bound), removed at exit (DSS's
//! CleanPid), but only if it still holds this process's pid: another instance may have taken
//! it over since.

use std::path::{Path, PathBuf};

/// A pid file that is removed when dropped, if it is still ours.
#[derive(Debug)]
pub struct PidFile(PathBuf);

fn ours() -> String {
    format!("{}\n", std::process::id())
}

impl PidFile {
    /// Writes this process's pid to `path`.
    pub fn create(path: &Path) -> std::io::Result<PidFile> {
        std::fs::write(path, ours())?;
        Ok(PidFile(path.to_owned()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if std::fs::read_to_string(&self.0).is_ok_and(|s| s == ours()) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_only_its_own() {
        let dir = std::env::temp_dir().join(format!("finch-pid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.pid");
        drop(PidFile::create(&path).unwrap());
        assert!(!path.exists());
        let p = PidFile::create(&path).unwrap();
        std::fs::write(&path, "1\n").unwrap(); // someone else's now
        drop(p);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

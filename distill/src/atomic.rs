//! Writes that either complete or leave the previous file untouched.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so
/// a reader (or a crash) never sees a half-written file.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(path, |tmp| {
        let mut f = std::fs::File::create(tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })
}

/// Lets `fill` write the temporary file, then renames it over `path`.
pub fn write_with(path: &Path, fill: impl FnOnce(&Path) -> std::io::Result<()>) -> Result<()> {
    remove_orphans(path);
    let tmp = temp_path(path);
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Io {
            action: "writing",
            path: path.into(),
            source: e,
        });
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::Io {
            action: "renaming into place",
            path: path.into(),
            source: e,
        }
    })
}

/// Creates the output directory `dir` and its parents, saying plainly when a file is in the
/// way (the OS says "File exists" or "Not a directory", which reads as a success or a riddle).
pub fn create_dir(dir: &Path) -> Result<()> {
    if let Some(file) = dir.ancestors().find(|a| a.is_file()) {
        return Err(Error::Io {
            action: "creating directory",
            path: dir.into(),
            source: std::io::Error::other(format!("{} is a file, not a directory", file.display())),
        });
    }
    std::fs::create_dir_all(dir).map_err(Error::io("creating directory", dir))
}

/// Deletes temporary files for `path` left by writers that were killed: `.NAME.PID.tmp`
/// whose process no longer exists (Linux's /proc says; elsewhere nothing is deleted).
fn remove_orphans(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let pid = file
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".tmp"))
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_failed_fill_leaves_the_old_file_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        super::write(&p, b"old").unwrap();
        let err = super::write_with(&p, |tmp| {
            std::fs::write(tmp, b"half")?;
            Err(std::io::Error::other("disk full"))
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn temporaries_of_killed_writers_are_swept_up_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.onnx");
        // PID 4194304 is past Linux's pid_max, so no process has it; PID 1 always exists.
        let dead = dir.path().join(".m.onnx.4194304.tmp");
        let live = dir.path().join(".m.onnx.1.tmp");
        let other = dir.path().join(".n.onnx.4194304.tmp");
        for f in [&dead, &live, &other] {
            std::fs::write(f, b"half").unwrap();
        }
        super::write(&p, b"whole").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"whole");
        assert!(!dead.exists(), "a dead writer's temporary stays");
        assert!(live.exists() && other.exists());
    }
}

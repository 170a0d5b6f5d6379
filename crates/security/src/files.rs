//! The JSON-lines files the user and ACL stores live in: one JSON object per line, so an error names its line and a
//! person can read and diff the file. Writes replace the whole file atomically (a temporary file, fsync, rename,
//! fsync of the directory), so a crash leaves the old file or the new one, never half of one. A running process
//! notices when another one (`weir users`, `weir acls`) replaced the file and reads it again, at most a second later.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::SecurityError;

/// How often a store looks at its file for a change made by another process.
const RECHECK: Duration = Duration::from_secs(1);

/// What identifies one version of a file: every write is a new inode (rename), and the size and time catch an edit
/// in place.
type Stamp = (u64, i64, i64, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.mtime(), m.mtime_nsec(), m.size()))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SecurityError + '_ {
    move |source| SecurityError::Io { path: path.to_path_buf(), source }
}

/// Reads every line of `path` (none if it does not exist). Blank lines and lines starting with `#` are skipped.
pub(crate) fn read_lines<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>, SecurityError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(path)(e)),
    };
    let mut items = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let item = serde_json::from_str(line).map_err(|e| SecurityError::Parse {
            path: path.to_path_buf(),
            line: i + 1,
            message: e.to_string(),
        })?;
        items.push(item);
    }
    Ok(items)
}

/// Replaces `path` with `items`, one per line, readable by its owner only (the user store holds password hashes).
pub(crate) fn write_lines<T: Serialize>(path: &Path, header: &str, items: &[T]) -> Result<(), SecurityError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut text = String::new();
    for line in header.lines() {
        text.push_str("# ");
        text.push_str(line);
        text.push('\n');
    }
    for item in items {
        let line = serde_json::to_string(item).map_err(|e| io(path)(std::io::Error::other(e)))?;
        text.push_str(&line);
        text.push('\n');
    }
    let tmp = path.with_extension("tmp");
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io(&tmp))?;
    file.write_all(text.as_bytes()).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    Ok(())
}

/// A file's lines held in memory, re-read when the file changes.
#[derive(Debug)]
pub(crate) struct Lines<T> {
    /// `None`: held in memory only.
    path: Option<PathBuf>,
    header: &'static str,
    state: Mutex<State<T>>,
}

#[derive(Debug)]
struct State<T> {
    items: Arc<Vec<T>>,
    stamp: Option<Stamp>,
    checked: Instant,
    /// The version of the file last found bad, so a bad edit is logged once rather than every second.
    bad: Option<Stamp>,
}

impl<T: DeserializeOwned + Serialize + Clone> Lines<T> {
    pub(crate) fn open(path: &Path, header: &'static str) -> Result<Self, SecurityError> {
        let stamp = stamp(path);
        let items = read_lines(path)?;
        Ok(Lines {
            path: Some(path.to_path_buf()),
            header,
            state: Mutex::new(State { items: Arc::new(items), stamp, checked: Instant::now(), bad: None }),
        })
    }

    pub(crate) fn in_memory() -> Self {
        Lines {
            path: None,
            header: "",
            state: Mutex::new(State { items: Arc::new(Vec::new()), stamp: None, checked: Instant::now(), bad: None }),
        }
    }

    pub(crate) fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The current lines, re-read first if the file changed since it was last looked at (at most once a second).
    /// A file another process left unparseable keeps the lines read before, with an error logged once.
    pub(crate) fn get(&self) -> Arc<Vec<T>> {
        let mut state = self.state.lock();
        if let Some(path) = &self.path {
            if state.checked.elapsed() >= RECHECK {
                state.checked = Instant::now();
                let now = stamp(path);
                if now != state.stamp && now != state.bad {
                    match read_lines(path) {
                        Ok(items) => {
                            tracing::info!("{} changed: read it again", path.display());
                            state.items = Arc::new(items);
                            state.stamp = now;
                            state.bad = None;
                        }
                        Err(e) => {
                            tracing::error!("{e}; keeping what was read from it before");
                            state.bad = now;
                        }
                    }
                }
            }
        }
        state.items.clone()
    }

    /// Changes the lines and writes them out (read afresh from the file first, so another process's change is not
    /// lost). Nothing changes if `change` fails or the file cannot be written.
    pub(crate) fn modify<R>(
        &self,
        change: impl FnOnce(&mut Vec<T>) -> Result<R, SecurityError>,
    ) -> Result<R, SecurityError> {
        let mut state = self.state.lock();
        let mut items = match &self.path {
            Some(path) => read_lines(path)?,
            None => (*state.items).clone(),
        };
        let out = change(&mut items)?;
        if let Some(path) = &self.path {
            write_lines(path, self.header, &items)?;
            state.stamp = stamp(path);
            state.bad = None;
        }
        state.items = Arc::new(items);
        state.checked = Instant::now();
        Ok(out)
    }
}

/// The file line of the `index`th item of `path` (blank and comment lines skipped), for error messages.
pub(crate) fn line_of(path: &Path, index: usize) -> usize {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim().starts_with('#'))
        .nth(index)
        .map_or(0, |(i, _)| i + 1)
}

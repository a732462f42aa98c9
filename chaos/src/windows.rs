//! Fault windows: the stretches of a storm each fault was on, as the runner
//! records them while a drill runs and as the storm's report shades them (the
//! runner writes them to a file the storm reads when it draws its charts).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One fault's stretch of the storm, in seconds from the storm's start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// The fault in a few words: "kill payments".
    pub label: String,
    pub from: f64,
    /// `None` while the fault is still on.
    pub to: Option<f64>,
}

impl Window {
    /// Its end, or `end` while it is still open.
    pub fn until(&self, end: f64) -> f64 {
        self.to.unwrap_or(end)
    }
}

/// Reads the windows a drill wrote; a missing file is no windows.
pub fn read(path: &Path) -> io::Result<Vec<Window>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            io::Error::other(format!("{}: not a list of windows: {e}", path.display()))
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Writes `windows` whole (a reader never sees half a file).
pub fn write(path: &Path, windows: &[Window]) -> io::Result<()> {
    let next = path.with_extension("json.new");
    std::fs::write(
        &next,
        serde_json::to_vec(windows).map_err(io::Error::other)?,
    )?;
    std::fs::rename(next, path)
}

/// The windows of a drill as its faults begin and end, written to `file` each
/// time one opens or shuts.
#[derive(Clone)]
pub struct WindowLog {
    windows: Arc<Mutex<Vec<Window>>>,
    file: PathBuf,
    zero: DateTime<Utc>,
}

impl WindowLog {
    /// `zero`: the storm's start.
    pub fn new(file: PathBuf, zero: DateTime<Utc>) -> Self {
        Self {
            windows: Arc::default(),
            file,
            zero,
        }
    }

    fn now(&self) -> f64 {
        seconds_since(self.zero, Utc::now())
    }

    /// A window opens now; its number, for [`Self::shut`].
    pub fn open(&self, label: &str) -> usize {
        let mut windows = self.windows.lock().expect("not poisoned");
        windows.push(Window {
            label: label.to_owned(),
            from: self.now(),
            to: None,
        });
        let _ = write(&self.file, &windows);
        windows.len() - 1
    }

    pub fn shut(&self, window: usize) {
        let mut windows = self.windows.lock().expect("not poisoned");
        windows[window].to = Some(self.now());
        let _ = write(&self.file, &windows);
    }

    /// Every window, those still open shut now, in the order they opened.
    pub fn close(&self) -> io::Result<Vec<Window>> {
        let now = self.now();
        let mut windows = std::mem::take(&mut *self.windows.lock().expect("not poisoned"));
        for window in &mut windows {
            window.to.get_or_insert(now);
        }
        write(&self.file, &windows)?;
        Ok(windows)
    }
}

/// Seconds from `zero` to `at` (negative before it).
pub fn seconds_since(zero: DateTime<Utc>, at: DateTime<Utc>) -> f64 {
    (at - zero).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_written_are_the_windows_read_and_open_ones_shut_at_close() {
        let file = std::env::temp_dir().join(format!("windows-{}.json", std::process::id()));
        let recorder = WindowLog::new(file.clone(), Utc::now());
        let kill = recorder.open("kill payments");
        recorder.open("latency postgres");
        recorder.shut(kill);
        let open = read(&file).unwrap();
        assert!(open[0].to.is_some() && open[1].to.is_none(), "{open:?}");
        let closed = recorder.close().unwrap();
        assert!(closed.iter().all(|w| w.to.is_some()));
        assert_eq!(read(&file).unwrap(), closed);
        std::fs::remove_file(&file).unwrap();
        assert!(read(&file).unwrap().is_empty(), "no file, no windows");
    }
}

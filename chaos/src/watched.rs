//! What `flashtix watch --drill DIR` needs to watch a drill's sale while it
//! runs: the processes' URLs, the namespace and the dependencies' URLs,
//! written by the runner to `sale.json` in the drill's directory once the
//! sale is up. The fault windows are beside it, in `windows.json`. The file
//! holds the dependencies' URLs, passwords included, so only its owner may
//! read it.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A drill's sale, as a watcher reaches it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchedSale {
    pub servers: Vec<String>,
    pub namespace: String,
    pub database_url: String,
    pub amqp_url: String,
}

const FILE: &str = "sale.json";

/// The drill's fault windows in `dir`, as its runner writes them.
pub fn windows_file(dir: &Path) -> PathBuf {
    dir.join("windows.json")
}

impl WatchedSale {
    /// Writes it into the drill's `dir`, readable by its owner alone from
    /// its first byte, whole (a reader never sees half a file).
    pub fn write(&self, dir: &Path) -> io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(FILE);
        let partial = dir.join(format!("{FILE}.partial"));
        let _ = std::fs::remove_file(&partial);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)?;
        file.write_all(&serde_json::to_vec_pretty(self).map_err(io::Error::other)?)?;
        std::fs::rename(&partial, &path)
    }

    /// Reads what the runner wrote in `dir`; a clear error when there is
    /// nothing (yet) or it is not such a file.
    pub fn read(dir: &Path) -> io::Result<Self> {
        let path = dir.join(FILE);
        let text = std::fs::read_to_string(&path).map_err(|error| {
            io::Error::new(
                error.kind(),
                format!(
                    "no drill's sale in {}: {error} (a drill writes {FILE} there once its sale is up)",
                    dir.display()
                ),
            )
        })?;
        serde_json::from_str(&text).map_err(|error| {
            io::Error::other(format!("{}: not a drill's sale: {error}", path.display()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn what_is_written_is_read_back_and_only_its_owner_may_read_it() {
        let dir = std::env::temp_dir().join(format!("watched-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sale = WatchedSale {
            servers: vec!["http://127.0.0.1:1".into(), "http://127.0.0.1:2".into()],
            namespace: "drill_1".into(),
            database_url: "postgres://postgres@127.0.0.1:3/postgres".into(),
            amqp_url: "amqp://guest:guest@127.0.0.1:4/%2f".into(),
        };
        let missing = WatchedSale::read(&dir).unwrap_err().to_string();
        assert!(missing.contains("no drill's sale in"), "{missing}");
        sale.write(&dir).unwrap();
        assert_eq!(WatchedSale::read(&dir).unwrap(), sale);
        let mode = std::fs::metadata(dir.join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(dir.join(FILE), "[]").unwrap();
        let wrong = WatchedSale::read(&dir).unwrap_err().to_string();
        assert!(wrong.contains("not a drill's sale"), "{wrong}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

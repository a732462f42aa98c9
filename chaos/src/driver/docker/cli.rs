//! The Docker CLI, run from here.

use std::io;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// Runs `docker ARGS`; its stdout, or an error carrying its stderr.
pub async fn docker(args: &[&str]) -> io::Result<String> {
    output(
        Command::new("docker").args(args),
        &format!("docker {}", args.join(" ")),
    )
    .await
}

pub(super) async fn output(command: &mut Command, what: &str) -> io::Result<String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| io::Error::other(format!("{what}: {e} (is Docker installed?)")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(io::Error::other(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// A Compose failure to fetch an image, with what to do about it: where no
/// registry can be reached, the images can be built on this machine. Only
/// the last lines are read: Compose prints progress (`Pulled`) before the
/// error that stopped it.
pub(super) fn explain_image_fetch(error: io::Error) -> io::Error {
    const SIGNS: [&str; 7] = [
        "pull access denied",
        "failed to resolve",
        "no such host",
        "manifest unknown",
        "toomanyrequests",
        "error pulling image",
        "registry-1.docker.io",
    ];
    let said = error.to_string();
    let last: Vec<&str> = said.lines().rev().take(3).collect();
    let fetching = last.iter().any(|line| {
        let line = line.to_lowercase();
        SIGNS.iter().any(|sign| line.contains(sign))
    });
    if !fetching {
        return error;
    }
    io::Error::other(format!(
        "{said}\n\nDocker could not fetch an image (no registry reachable from here?): build \
         the images on this machine with `scripts/offline-images` (as root, with dockerd \
         running) and use them with `--env-file docker/offline.env`"
    ))
}

/// Whether a Docker engine answers.
pub async fn engine_answers() -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(10), docker(&["info"])).await,
        Ok(Ok(_))
    )
}

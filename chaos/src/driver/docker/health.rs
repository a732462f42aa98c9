//! What Docker says of a container: its state and health, waited for and
//! held against what a fault should have done.

use std::io;
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::process::Command;

use crate::drill::ProcessAction;

use super::cli::docker;

/// How long a container may take to become healthy.
const HEALTHY_WITHIN: Duration = Duration::from_secs(120);

/// The value of variable `name` in container `id`'s environment, if set.
pub async fn variable(id: &str, name: &str) -> io::Result<Option<String>> {
    let env = docker(&[
        "inspect",
        "-f",
        "{{range .Config.Env}}{{println .}}{{end}}",
        id,
    ])
    .await?;
    Ok(env
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
        .map(str::to_owned))
}

/// Waits until container `id` of `service` is healthy as Docker's own
/// healthcheck says (or running, if it has none).
pub async fn wait_healthy(service: &str, id: &str) -> io::Result<()> {
    wait(service, id, "healthy", |state| async move {
        Ok(state.is_healthy())
    })
    .await
}

/// Waits until container `id` of `service` is ready: the command of its
/// healthcheck (from the Compose file), run now by `docker exec`, passes; a
/// container with none is ready once it runs. The drills run the checks
/// themselves, only while they wait: Docker's own every 2 s cost an idle
/// stack over half of one core here (`rabbitmq-diagnostics` boots an Erlang
/// VM each time), which a storm on two cores must not have to share.
pub async fn ready(service: &str, id: &str) -> io::Result<()> {
    let test = docker(&["inspect", "-f", "{{json .Config.Healthcheck}}", id]).await?;
    let probe = probe(test.trim())
        .map_err(|e| io::Error::other(format!("{service}'s healthcheck: {e}")))?;
    wait(service, id, "ready", |state| {
        let probe = probe.clone();
        async move {
            if !state.running || state.paused {
                return Ok(false);
            }
            let Some(probe) = probe else { return Ok(true) };
            let mut args = vec!["exec", id];
            args.extend(probe.iter().map(String::as_str));
            Ok(Command::new("docker")
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await?
                .success())
        }
    })
    .await
}

/// The command a healthcheck runs (`docker inspect`'s `.Config.Healthcheck`
/// as JSON), as `docker exec` arguments; `None` when there is none.
fn probe(healthcheck: &str) -> Result<Option<Vec<String>>, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Healthcheck {
        #[serde(default)]
        test: Vec<String>,
    }
    if healthcheck == "null" {
        return Ok(None);
    }
    let check: Healthcheck = serde_json::from_str(healthcheck).map_err(|e| e.to_string())?;
    match check.test.split_first() {
        None => Ok(None),
        Some((kind, _)) if kind == "NONE" => Ok(None),
        Some((kind, args)) if kind == "CMD" && !args.is_empty() => Ok(Some(args.to_vec())),
        Some((kind, [shell])) if kind == "CMD-SHELL" => {
            Ok(Some(vec!["sh".into(), "-c".into(), shell.clone()]))
        }
        Some(_) => Err(format!("cannot run {:?}", check.test)),
    }
}

/// Polls container `id` until `done` says so, it stops, or
/// [`HEALTHY_WITHIN`] passes.
async fn wait<F, Fut>(service: &str, id: &str, what: &str, done: F) -> io::Result<()>
where
    F: Fn(State) -> Fut,
    Fut: std::future::Future<Output = io::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + HEALTHY_WITHIN;
    loop {
        let state = State::of(id).await?;
        let (running, status, exit_code) = (state.running, state.status.clone(), state.exit_code);
        if done(state).await? {
            return Ok(());
        }
        if !running && status != "created" {
            return Err(io::Error::other(format!(
                "{service} stopped ({status}, exit code {exit_code}) instead of becoming {what} \
                 (docker logs {id})"
            )));
        }
        if tokio::time::Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "{service} not {what} within {HEALTHY_WITHIN:?} (docker logs {id})"
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A container's state as `docker inspect` records it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct State {
    pub status: String,
    pub running: bool,
    pub paused: bool,
    pub exit_code: i64,
    pub started_at: String,
    pub finished_at: String,
    #[serde(default)]
    pub health: Option<Health>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Health {
    pub status: String,
}

impl State {
    pub async fn of(container: &str) -> io::Result<State> {
        let text = docker(&["inspect", "-f", "{{json .State}}", container]).await?;
        serde_json::from_str(text.trim())
            .map_err(|e| io::Error::other(format!("docker inspect {container}: {e}")))
    }

    fn is_healthy(&self) -> bool {
        match &self.health {
            Some(health) => health.status == "healthy",
            None => self.running && !self.paused,
        }
    }
}

/// What Docker's record shows an action did, from the container's state
/// before and after it; an error when the record says it did not take.
pub fn confirm(action: ProcessAction, before: &State, after: &State) -> Result<String, String> {
    let took = match action {
        ProcessAction::Kill => before.running && after.status == "exited" && after.exit_code == 137,
        ProcessAction::Stop => before.running && after.status == "exited",
        ProcessAction::Start => {
            after.running && (before.running || after.started_at != before.started_at)
        }
        ProcessAction::Restart => after.running && after.started_at != before.started_at,
        ProcessAction::Pause => after.paused,
        ProcessAction::Resume => after.running && !after.paused,
    };
    let seen = match after.status.as_str() {
        "exited" => format!(
            "exited, exit code {}, at {}",
            after.exit_code, after.finished_at
        ),
        "running" => format!("running since {}", after.started_at),
        status => status.to_owned(),
    };
    if took {
        Ok(seen)
    } else {
        Err(format!(
            "Docker's record says the {} did not take: {seen} (was {})",
            action.name(),
            before.status
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(status: &str, exit_code: i64, started_at: &str) -> State {
        State {
            status: status.into(),
            running: status == "running" || status == "paused",
            paused: status == "paused",
            exit_code,
            started_at: started_at.into(),
            finished_at: "2026-11-29T10:00:05Z".into(),
            health: None,
        }
    }

    /// The record must show the action took: a kill that left the container
    /// running, or a restart that did not start it anew, fails.
    #[test]
    fn docker_s_record_confirms_an_action_or_says_it_did_not_take() {
        let running = state("running", 0, "2026-11-29T10:00:00Z");
        let killed = state("exited", 137, "2026-11-29T10:00:00Z");
        let stopped = state("exited", 0, "2026-11-29T10:00:00Z");
        let paused = state("paused", 0, "2026-11-29T10:00:00Z");
        let anew = state("running", 0, "2026-11-29T10:00:07Z");

        assert!(confirm(ProcessAction::Kill, &running, &killed).is_ok());
        assert!(confirm(ProcessAction::Kill, &running, &running).is_err());
        assert!(
            confirm(ProcessAction::Kill, &running, &stopped).is_err(),
            "137 or it was no SIGKILL"
        );
        assert!(confirm(ProcessAction::Stop, &running, &stopped).is_ok());
        assert!(confirm(ProcessAction::Pause, &running, &paused).is_ok());
        assert!(confirm(ProcessAction::Pause, &running, &running).is_err());
        assert!(confirm(ProcessAction::Resume, &paused, &running).is_ok());
        assert!(confirm(ProcessAction::Resume, &paused, &paused).is_err());
        assert!(confirm(ProcessAction::Restart, &running, &anew).is_ok());
        assert!(confirm(ProcessAction::Restart, &running, &running).is_err());
        assert!(confirm(ProcessAction::Start, &killed, &anew).is_ok());
        assert!(confirm(ProcessAction::Start, &killed, &killed).is_err());
        let said = confirm(ProcessAction::Kill, &running, &killed).unwrap();
        assert!(said.contains("exit code 137"), "{said}");
    }

    #[test]
    fn a_healthcheck_becomes_the_command_the_driver_runs() {
        let cmd = r#"{"Test":["CMD","curl","-fs","http://127.0.0.1:8080/ready"],"Interval":3600000000000}"#;
        assert_eq!(
            probe(cmd).unwrap(),
            Some(vec![
                "curl".into(),
                "-fs".into(),
                "http://127.0.0.1:8080/ready".into()
            ])
        );
        let shell = r#"{"Test":["CMD-SHELL","pg_isready -h 127.0.0.1"]}"#;
        assert_eq!(
            probe(shell).unwrap(),
            Some(vec![
                "sh".into(),
                "-c".into(),
                "pg_isready -h 127.0.0.1".into()
            ])
        );
        assert_eq!(probe("null").unwrap(), None);
        assert_eq!(probe(r#"{"Test":["NONE"]}"#).unwrap(), None);
        assert!(
            probe(r#"{"Test":["CMD"]}"#).is_err(),
            "a command to run, or an error"
        );
    }

    #[test]
    fn docker_s_state_reads_as_inspect_writes_it() {
        let text = r#"{"Status":"running","Running":true,"Paused":false,"Restarting":false,
            "OOMKilled":false,"Dead":false,"Pid":42,"ExitCode":0,"Error":"",
            "StartedAt":"2026-11-29T10:00:00.1Z","FinishedAt":"0001-01-01T00:00:00Z",
            "Health":{"Status":"healthy","FailingStreak":0,"Log":[]}}"#;
        let state: State = serde_json::from_str(text).unwrap();
        assert!(state.is_healthy());
        let starting = State {
            health: Some(Health {
                status: "starting".into(),
            }),
            ..state
        };
        assert!(!starting.is_healthy());
    }
}

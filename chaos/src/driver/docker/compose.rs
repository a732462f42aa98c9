//! A Compose project, driven from here.

use std::io;
use std::path::PathBuf;
use std::process::Stdio;

use tokio::process::Command;

use super::cli::{docker, explain_image_fetch, output};
use super::health::ready;

/// Docker Compose for one project: `docker compose` (v2) where it exists,
/// else `docker-compose` (v1).
pub struct Compose {
    program: Vec<String>,
    project: String,
    files: Vec<PathBuf>,
    env_file: Option<PathBuf>,
    /// Variables the Compose file reads (published ports).
    env: Vec<(String, String)>,
}

impl Compose {
    pub async fn new(
        project: &str,
        files: Vec<PathBuf>,
        env_file: Option<PathBuf>,
        env: Vec<(String, String)>,
    ) -> io::Result<Self> {
        let answers = |program: &'static [&'static str]| async move {
            Command::new(program[0])
                .args(&program[1..])
                .arg("version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await
                .is_ok_and(|s| s.success())
        };
        let program: &[&str] = if answers(&["docker", "compose"]).await {
            &["docker", "compose"]
        } else if answers(&["docker-compose"]).await {
            &["docker-compose"]
        } else {
            return Err(io::Error::other(
                "Docker Compose is not installed: neither `docker compose` (v2) nor \
                 `docker-compose` (v1) runs here; install one (Debian: apt-get install \
                 docker-compose)",
            ));
        };
        let program = program.iter().map(|part| part.to_string()).collect();
        Ok(Self {
            program,
            project: project.to_owned(),
            files,
            env_file,
            env,
        })
    }

    fn command(&self, args: &[&str]) -> (Command, String) {
        let mut command = Command::new(&self.program[0]);
        command.args(&self.program[1..]);
        if let Some(env_file) = &self.env_file {
            command.arg("--env-file").arg(env_file);
        }
        command.args(["-p", &self.project]);
        for file in &self.files {
            command.arg("-f").arg(file);
        }
        command.args(args).envs(self.env.iter().cloned());
        let what = format!("{} {}", self.program.join(" "), args.join(" "));
        (command, what)
    }

    /// Runs a Compose command; its stdout.
    pub async fn run(&self, args: &[&str]) -> io::Result<String> {
        let (mut command, what) = self.command(args);
        output(&mut command, &what)
            .await
            .map_err(explain_image_fetch)
    }

    /// The container of `service` (there is one per service), running or not.
    pub async fn container(&self, service: &str) -> io::Result<String> {
        let id = self.run(&["ps", "-a", "-q", service]).await?;
        match id.lines().next() {
            Some(id) if !id.trim().is_empty() => Ok(id.trim().to_owned()),
            _ => Err(io::Error::other(format!("no container for {service}"))),
        }
    }

    /// Waits until every service named is ready: its healthcheck's command,
    /// run now, passes (see [`ready`]).
    pub async fn ready(&self, services: &[&str]) -> io::Result<()> {
        for service in services {
            let id = self.container(service).await?;
            ready(service, &id).await?;
        }
        Ok(())
    }

    /// Every container of the project, by service.
    pub async fn services(&self) -> io::Result<Vec<(String, String)>> {
        let mut services = Vec::new();
        for id in self.run(&["ps", "-a", "-q"]).await?.split_whitespace() {
            let service = docker(&[
                "inspect",
                "-f",
                "{{index .Config.Labels \"com.docker.compose.service\"}}",
                id,
            ])
            .await?;
            services.push((service.trim().to_owned(), id.to_owned()));
        }
        Ok(services)
    }

    /// Where `service`'s `port` is published on the host: `127.0.0.1:PORT`.
    pub async fn published(&self, service: &str, port: u16) -> io::Result<String> {
        let address = self.run(&["port", service, &port.to_string()]).await?;
        match address.trim() {
            "" | ":0" => Err(io::Error::other(format!(
                "{service}'s port {port} is not published"
            ))),
            address => Ok(address.to_owned()),
        }
    }
}

//! PostgreSQL, Redis and RabbitMQ of flashtix's own, started from the
//! machine's installed server binaries under a directory of ours, on ports of
//! ours: what `flashtix up --driver local` starts, and what a drill kills and
//! restarts (never the machine's shared services).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flashtix_model::Dependency;

use crate::process::{Ready, Recipe};

/// Where each dependency listens (on 127.0.0.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub postgres: u16,
    pub redis: u16,
    pub rabbitmq: u16,
}

impl Ports {
    /// The machine's usual ports: what `up` reuses when something answers there.
    pub const STANDARD: Ports = Ports {
        postgres: 5432,
        redis: 6379,
        rabbitmq: 5672,
    };

    /// `flashtix up --driver local`: out of the way of the usual ones.
    pub const LOCAL: Ports = Ports {
        postgres: 55432,
        redis: 56379,
        rabbitmq: 55672,
    };

    /// Ports nothing listens on now (for a drill's own services).
    pub fn free() -> io::Result<Ports> {
        Ok(Ports {
            postgres: free_port()?,
            redis: free_port()?,
            rabbitmq: free_port()?,
        })
    }

    pub fn of(&self, dependency: Dependency) -> u16 {
        match dependency {
            Dependency::Postgres => self.postgres,
            Dependency::Redis => self.redis,
            Dependency::Rabbitmq => self.rabbitmq,
        }
    }

    /// The URLs the sale uses to reach services on these ports.
    pub fn urls(&self) -> Urls {
        Urls {
            database: format!("postgres://postgres@127.0.0.1:{}/postgres", self.postgres),
            redis: format!("redis://127.0.0.1:{}", self.redis),
            amqp: format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.rabbitmq),
        }
    }
}

/// How the sale reaches its dependencies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Urls {
    pub database: String,
    pub redis: String,
    pub amqp: String,
}

impl Urls {
    /// As the environment `flashtix` and `flashtix-server` read.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("FLASHTIX_DATABASE_URL".into(), self.database.clone()),
            ("FLASHTIX_REDIS_URL".into(), self.redis.clone()),
            ("FLASHTIX_AMQP_URL".into(), self.amqp.clone()),
        ]
    }
}

/// A port the kernel just handed out and took back: free a moment ago.
pub fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Whether something accepts connections on `port` of 127.0.0.1.
pub async fn answers(port: u16) -> bool {
    tokio::time::timeout(
        Duration::from_secs(1),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    .is_ok_and(|connected| connected.is_ok())
}

/// How to run `dependency` on `port` with its data under `dir` (created, and
/// for Postgres initialised, on first use).
pub async fn recipe(dependency: Dependency, dir: &Path, port: u16) -> io::Result<Recipe> {
    std::fs::create_dir_all(dir)?;
    let log = dir.join(format!("{}.log", dependency.name()));
    match dependency {
        Dependency::Postgres => postgres(dir, port, log).await,
        Dependency::Redis => {
            let data = dir.join("redis");
            std::fs::create_dir_all(&data)?;
            Ok(Recipe {
                program: installed("redis-server", &[])?,
                args: [
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                ]
                .iter()
                .map(|s| s.to_string())
                .chain([data.display().to_string()])
                .collect(),
                env: vec![],
                log,
                ready: Ready::Port(port),
                ready_within: Duration::from_secs(10),
                user: None,
            })
        }
        Dependency::Rabbitmq => rabbitmq(dir, port, log),
    }
}

async fn postgres(dir: &Path, port: u16, log: PathBuf) -> io::Result<Recipe> {
    let bin = postgres_bin()?;
    let data = dir.join("postgres");
    if !data.join("PG_VERSION").exists() {
        std::fs::create_dir_all(&data)?;
        own(&data, "postgres")?;
        let initdb = Recipe {
            program: bin.join("initdb"),
            args: [
                "-D",
                &data.display().to_string(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            env: vec![],
            log: log.clone(),
            ready: Ready::Started,
            ready_within: Duration::ZERO,
            user: Some("postgres".into()),
        };
        let status = crate::process::run_to_end(&initdb).await?;
        if !status.success() {
            return Err(io::Error::other(format!(
                "initdb failed (log: {})",
                log.display()
            )));
        }
    }
    Ok(Recipe {
        program: bin.join("postgres"),
        args: [
            "-D",
            &data.display().to_string(),
            "-p",
            &port.to_string(),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=300",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        env: vec![],
        log,
        ready: Ready::Probe(vec![
            bin.join("pg_isready").display().to_string(),
            "-q".into(),
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
        ]),
        ready_within: Duration::from_secs(60),
        user: Some("postgres".into()),
    })
}

fn rabbitmq(dir: &Path, port: u16, log: PathBuf) -> io::Result<Recipe> {
    let base = dir.join("rabbitmq");
    std::fs::create_dir_all(&base)?;
    let config = base.join("rabbitmq.conf");
    std::fs::write(&config, format!("listeners.tcp.local = 127.0.0.1:{port}\n"))?;
    // No plugins: the management plugin would take the machine's port 15672.
    let plugins = base.join("enabled_plugins");
    std::fs::write(&plugins, "[].\n")?;
    // Our own (empty) env file, so the machine's node name is not read.
    let env_file = base.join("rabbitmq-env.conf");
    std::fs::write(&env_file, "")?;
    let path = |p: &Path| p.display().to_string();
    Ok(Recipe {
        // The script itself: Debian's wrapper would switch to the machine's
        // rabbitmq user and its directories.
        program: installed(
            "rabbitmq-server",
            &["/usr/lib/rabbitmq/bin/rabbitmq-server"],
        )?,
        args: vec![],
        env: vec![
            ("RABBITMQ_CONF_ENV_FILE".into(), path(&env_file)),
            ("RABBITMQ_CONFIG_FILE".into(), path(&config)),
            ("RABBITMQ_ENABLED_PLUGINS_FILE".into(), path(&plugins)),
            (
                "RABBITMQ_NODENAME".into(),
                format!("flashtix-{port}@localhost"),
            ),
            // Erlang's distribution port, by default AMQP's + 20000 (the
            // machine's node may hold that one): one that is free now.
            ("RABBITMQ_DIST_PORT".into(), free_port()?.to_string()),
            ("RABBITMQ_MNESIA_BASE".into(), path(&base.join("mnesia"))),
            ("RABBITMQ_LOG_BASE".into(), path(&base.join("log"))),
            ("RABBITMQ_PID_FILE".into(), path(&base.join("pid"))),
            ("ERL_EPMD_ADDRESS".into(), "127.0.0.1".into()),
            // A node that fails to boot exits at once, without a crash dump.
            ("ERL_CRASH_DUMP_SECONDS".into(), "0".into()),
        ],
        log,
        ready: Ready::Port(port),
        ready_within: Duration::from_secs(90),
        user: None,
    })
}

/// Postgres's server binaries: Debian keeps them out of PATH, one directory
/// per major version (the newest wins).
fn postgres_bin() -> io::Result<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return Ok(bin);
    }
    installed("initdb", &[]).map(|initdb| initdb.parent().unwrap_or(Path::new("/")).into())
}

/// A program: the first of `places` that exists, else found on PATH.
fn installed(program: &str, places: &[&str]) -> io::Result<PathBuf> {
    if let Some(place) = places.iter().map(PathBuf::from).find(|p| p.exists()) {
        return Ok(place);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|p| p.exists())
        .ok_or_else(|| {
            io::Error::other(format!(
                "{program} is not installed (Debian: apt-get install postgresql redis-server rabbitmq-server)"
            ))
        })
}

/// Gives `path` to `user` when we are root, and lets that user reach it.
fn own(path: &Path, user: &str) -> io::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let status = std::process::Command::new("chown")
        .arg("-R")
        .arg(user)
        .arg(path)
        .status()?;
    if !status.success() {
        return Err(io::Error::other(format!("chown {user} {}", path.display())));
    }
    // Every directory above must let the user through.
    use std::os::unix::fs::PermissionsExt;
    for dir in path.ancestors().skip(1) {
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o001 == 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o001))?;
        }
    }
    Ok(())
}

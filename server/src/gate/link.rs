//! The gate's link to Redis: a [`ConnectionManager`] with two guards the
//! manager lacks.
//!
//! - **A timeout retires the connection.** The manager reconnects when its
//!   connection drops, but a timeout is not a drop: a connection that stays
//!   open and never answers (a proxy or balancer still dialling a Redis that
//!   died, a peer gone without a word) would be kept, and every later command
//!   would wait out its own timeout on it.
//! - **An unreachable Redis is skipped.** After a command fails to reach Redis,
//!   commands fail at once, without waiting on sockets, until a probe
//!   ([`PROBE_EVERY`]) gets an answer. Redis is only the fast path: a buyer is
//!   better served by Postgres now than by a dial that times out.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, Value};

/// How often an unreachable Redis is asked whether it is back.
pub const PROBE_EVERY: Duration = Duration::from_millis(100);

/// Cheap to clone; every clone shares the current connection.
#[derive(Clone)]
pub struct Link {
    shared: Arc<Shared>,
}

struct Shared {
    client: Client,
    config: ConnectionManagerConfig,
    /// The connection in use, and how many were retired before it.
    current: RwLock<(u64, ConnectionManager)>,
    /// Redis did not answer; a probe is waiting for it to.
    unreachable: AtomicBool,
}

impl Link {
    /// Dials lazily, on the first command.
    pub fn new(client: Client, config: ConnectionManagerConfig) -> RedisResult<Self> {
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?;
        Ok(Self {
            shared: Arc::new(Shared {
                client,
                config,
                current: RwLock::new((0, manager)),
                unreachable: AtomicBool::new(false),
            }),
        })
    }

    fn current(&self) -> (u64, ConnectionManager) {
        let current = self
            .shared
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner());
        (current.0, current.1.clone())
    }

    /// Refuses at once while Redis is known to be unreachable.
    fn admit(&self) -> RedisResult<()> {
        if self.shared.unreachable.load(Ordering::Acquire) {
            return Err(RedisError::from((
                ErrorKind::Io,
                "Redis is unreachable",
                "skipped until it answers again".to_owned(),
            )));
        }
        Ok(())
    }

    /// After `result` came back on connection `generation`: a failure to
    /// reach Redis starts the probe, and a timeout retires the connection.
    fn judge<T>(&self, generation: u64, result: &RedisResult<T>) {
        let Err(error) = result else { return };
        if error.is_timeout() {
            self.retire(generation);
        }
        if unreachable(error) && !self.shared.unreachable.swap(true, Ordering::AcqRel) {
            tracing::warn!(error = %error, "Redis unreachable; orders go to Postgres alone until it answers");
            tokio::spawn(self.clone().probe());
        }
    }

    /// Replaces connection `generation`, once however many commands timed
    /// out on it.
    fn retire(&self, generation: u64) {
        let mut current = self
            .shared
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if current.0 != generation {
            return;
        }
        match ConnectionManager::new_lazy_with_config(
            self.shared.client.clone(),
            self.shared.config.clone(),
        ) {
            Ok(manager) => *current = (generation + 1, manager),
            Err(error) => tracing::warn!(error = %error, "could not replace the Redis connection"),
        }
    }

    /// Pings until Redis answers, then lets commands through again.
    async fn probe(self) {
        // However the probe ends (its runtime shutting down included),
        // commands are let through again: at worst they find out themselves.
        let _reopen = Reopen(Arc::clone(&self.shared));
        loop {
            tokio::time::sleep(PROBE_EVERY).await;
            let (generation, mut connection) = self.current();
            let answer: RedisResult<String> = redis::cmd("PING").query_async(&mut connection).await;
            match answer {
                // Any answer of the server's (even LOADING) says it is there.
                Ok(_) => break,
                Err(error) if error.is_timeout() => self.retire(generation),
                Err(error) if unreachable(&error) => {}
                Err(_) => break,
            }
        }
        tracing::info!("Redis answers again");
    }

    /// How many connections were retired so far.
    #[cfg(test)]
    fn retired(&self) -> u64 {
        self.current().0
    }
}

/// Whether an error says Redis could not be reached (rather than answered).
fn unreachable(error: &RedisError) -> bool {
    error.is_timeout()
        || error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
}

/// Lets commands through again when dropped.
struct Reopen(Arc<Shared>);

impl Drop for Reopen {
    fn drop(&mut self) {
        self.0.unreachable.store(false, Ordering::Release);
    }
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            self.admit()?;
            let (generation, mut connection) = self.current();
            let result = connection.req_packed_command(cmd).await;
            self.judge(generation, &result);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            self.admit()?;
            let (generation, mut connection) = self.current();
            let result = connection
                .req_packed_commands(pipeline, offset, count)
                .await;
            self.judge(generation, &result);
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.current().1.get_db()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use redis::AsyncCommands;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// Carries bytes one way until `silent`, then swallows them.
    async fn pump(
        mut from: impl AsyncReadExt + Unpin,
        mut to: impl AsyncWriteExt + Unpin,
        silent: Arc<AtomicBool>,
    ) {
        let mut buffer = [0u8; 4096];
        while let Ok(n @ 1..) = from.read(&mut buffer).await {
            if !silent.load(Ordering::Acquire) && to.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    }

    /// A proxy to Redis whose first connection goes silent, open but never
    /// answering, when told; later connections are carried faithfully.
    async fn proxy(upstream: String) -> (String, Arc<AtomicBool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let silence = Arc::new(AtomicBool::new(false));
        let first = Arc::clone(&silence);
        tokio::spawn(async move {
            let mut silent = Some(first);
            while let Ok((client, _)) = listener.accept().await {
                let silent = silent.take().unwrap_or_default();
                let server = TcpStream::connect(&upstream).await.unwrap();
                let (client_reads, client_writes) = client.into_split();
                let (server_reads, server_writes) = server.into_split();
                tokio::spawn(pump(client_reads, server_writes, Arc::clone(&silent)));
                tokio::spawn(pump(server_reads, client_writes, silent));
            }
        });
        (format!("redis://{address}"), silence)
    }

    /// A connection that goes silent is given up after one timeout; while
    /// Redis is unreachable commands fail at once; the probe then dials anew
    /// and commands reach Redis again. Kept, the silent connection would
    /// time out every command and the probe forever.
    #[tokio::test]
    async fn a_connection_that_stops_answering_is_replaced() {
        let redis = std::env::var("FLASHTIX_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let upstream = Client::open(redis.as_str())
            .unwrap()
            .get_connection_info()
            .addr()
            .to_string();
        let (front, silence) = proxy(upstream).await;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_millis(300)))
            .set_number_of_retries(0);
        let mut link = Link::new(Client::open(front).unwrap(), config).unwrap();
        let key = format!("link-test:{}", uuid::Uuid::now_v7());
        let () = link.set_ex(&key, "here", 30).await.unwrap();

        silence.store(true, Ordering::Release);
        let silent: RedisResult<String> = link.get(&key).await;
        assert!(silent.as_ref().is_err_and(|e| e.is_timeout()), "{silent:?}");
        assert_eq!(link.retired(), 1);
        let skipped: RedisResult<String> = link.get(&key).await;
        assert!(
            skipped
                .as_ref()
                .is_err_and(|e| e.to_string().contains("unreachable")),
            "while unreachable, refused at once: {skipped:?}"
        );

        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let value: String = loop {
            match link.get(&key).await {
                Ok(value) => break value,
                Err(error) => assert!(
                    tokio::time::Instant::now() < deadline,
                    "still failing: {error}"
                ),
            }
            tokio::time::sleep(PROBE_EVERY).await;
        };
        assert_eq!(value, "here");
        assert_eq!(link.retired(), 1, "a working connection is kept");
        let () = link.del(&key).await.unwrap();
    }
}

//! The storm's HTTP, the one place it is spoken. A plain `http://` target is
//! sent to over HTTP/1.1 connections driven directly with hyper's connection
//! API: a lane keeps its own idle connections, a send takes one and gives it
//! back once the answer's body is read, and nothing is parsed, resolved or
//! looked up per send (the URL and the address are worked out once). An
//! `https://` target goes through reqwest, with the storm's roots.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use futures_util::stream::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderMap, HeaderValue, HOST};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

use super::Tls;

/// A URL of the target, parsed once.
#[derive(Debug)]
pub struct Endpoint {
    /// The path and query, as an HTTP/1.1 request line names them.
    path: Uri,
    /// The whole URL, for reqwest.
    url: reqwest::Url,
}

impl Endpoint {
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(url).with_context(|| format!("{url:?} is not a URL"))?;
        let mut path = url.path().to_owned();
        if let Some(query) = url.query() {
            path.push('?');
            path.push_str(query);
        }
        let path = path
            .parse()
            .with_context(|| format!("{url}: its path is not one HTTP can send"))?;
        Ok(Self { path, url })
    }
}

/// An answer, its body read whole.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Why a send has no (whole) answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Not answered within the storm's timeout.
    Timeout,
    /// No connection could be opened: the request never left.
    Connect,
    /// The connection broke: the request may have reached the server.
    Broken,
}

/// A failure, and the status if the answer's head had come.
#[derive(Debug, Clone, Copy)]
pub struct Failed {
    pub failure: Failure,
    pub status: Option<StatusCode>,
}

impl From<Failure> for Failed {
    fn from(failure: Failure) -> Self {
        Self {
            failure,
            status: None,
        }
    }
}

type Connection = SendRequest<Full<Bytes>>;

/// How many connections are opened at a time before the storm.
const WARM_AT_ONCE: usize = 128;

/// One lane's way to the target.
pub struct Transport {
    timeout: Duration,
    way: Way,
}

enum Way {
    Plain(Pool),
    Tls(reqwest::Client),
}

/// A plain target's keep-alive connections, driven directly.
struct Pool {
    addresses: Vec<SocketAddr>,
    host: HeaderValue,
    /// Connections between requests, at most `keep` of them.
    idle: Mutex<Vec<Connection>>,
    keep: usize,
}

impl Transport {
    /// The way to `target`'s host, keeping up to `keep` idle connections.
    pub fn new(
        target: &Endpoint,
        tls: &Tls,
        timeout: Duration,
        keep: usize,
    ) -> anyhow::Result<Self> {
        let url = &target.url;
        let way = match url.scheme() {
            "http" => {
                let addresses = url
                    .socket_addrs(|| None)
                    .with_context(|| format!("resolving {url}"))?;
                let host = url.host_str().context("the URL names no host")?;
                let host = match url.port() {
                    Some(port) => format!("{host}:{port}"),
                    None => host.to_owned(),
                };
                Way::Plain(Pool {
                    addresses,
                    host: HeaderValue::from_str(&host).context("the host is not a header value")?,
                    idle: Mutex::new(Vec::with_capacity(keep)),
                    keep,
                })
            }
            "https" => Way::Tls(
                tls.apply(reqwest::Client::builder())
                    .http1_only()
                    .tcp_nodelay(true)
                    .pool_max_idle_per_host(keep)
                    .build()?,
            ),
            other => bail!("{url}: the storm speaks http and https, not {other}"),
        };
        Ok(Self { timeout, way })
    }

    /// Opens up to `connections` connections before the clock starts, each
    /// asked `probe` once (so the server has taken it on too): a spike
    /// measures the sale, not TCP handshakes. Each gets the storm's timeout;
    /// one that does not make it is opened when a send needs it.
    pub async fn warm(&self, connections: usize, probe: &Endpoint) {
        let warming = futures_util::stream::iter(0..connections)
            .map(|_| async move {
                let deadline = Instant::now() + self.timeout;
                let warmed = async {
                    match &self.way {
                        Way::Plain(pool) => pool.warm_one(probe).await,
                        Way::Tls(_) => {
                            let _ = self
                                .send(&Method::GET, probe, HeaderMap::new(), Bytes::new())
                                .await;
                        }
                    }
                };
                let _ = timeout_at(deadline, warmed).await;
            })
            // Not all at once: the server's listen queue would drop some.
            .buffer_unordered(WARM_AT_ONCE);
        warming.for_each(|()| async {}).await;
    }

    /// Sends one request and reads its answer whole, within the timeout.
    pub async fn send(
        &self,
        method: &Method,
        to: &Endpoint,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Reply, Failed> {
        let deadline = Instant::now() + self.timeout;
        match &self.way {
            Way::Plain(pool) => {
                let request = pool.request(method, to, headers, body);
                pool.send(request, deadline).await
            }
            Way::Tls(client) => {
                let sent = client
                    .request(method.clone(), to.url.clone())
                    .headers(headers)
                    .body(body)
                    .send();
                let response = timeout_at(deadline, sent)
                    .await
                    .map_err(|_| Failure::Timeout)?
                    .map_err(|error| Failed::from(failure_of(&error)))?;
                let (status, headers) = (response.status(), response.headers().clone());
                let failed = |failure| Failed {
                    failure,
                    status: Some(status),
                };
                let body = timeout_at(deadline, response.bytes())
                    .await
                    .map_err(|_| failed(Failure::Timeout))?
                    .map_err(|error| failed(failure_of(&error)))?;
                Ok(Reply {
                    status,
                    headers,
                    body,
                })
            }
        }
    }
}

impl Pool {
    /// A request as it goes on one of these connections.
    fn request(
        &self,
        method: &Method,
        to: &Endpoint,
        headers: HeaderMap,
        body: Bytes,
    ) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method.clone();
        *request.uri_mut() = to.path.clone();
        *request.headers_mut() = headers;
        // A `Host` the user gave (`--header`) wins, as reqwest has it.
        request
            .headers_mut()
            .entry(HOST)
            .or_insert_with(|| self.host.clone());
        request
    }

    /// Sends `request` and reads its answer whole, by `deadline`; the
    /// connection comes back to the idle ones once the body is read.
    async fn send(
        &self,
        request: Request<Full<Bytes>>,
        deadline: Instant,
    ) -> Result<Reply, Failed> {
        let (connection, response) = timeout_at(deadline, self.exchange(request))
            .await
            .map_err(|_| Failure::Timeout)??;
        let (head, body) = response.into_parts();
        let failed = |failure| Failed {
            failure,
            status: Some(head.status),
        };
        let body = timeout_at(deadline, body.collect())
            .await
            .map_err(|_| failed(Failure::Timeout))?
            .map_err(|_| failed(Failure::Broken))?
            .to_bytes();
        self.give_back(connection);
        Ok(Reply {
            status: head.status,
            headers: head.headers,
            body,
        })
    }

    /// Opens one more connection and asks `probe` on it, so that the server
    /// has taken it on; kept if the answer came whole.
    async fn warm_one(&self, probe: &Endpoint) {
        let Ok(mut connection) = self.connect().await else {
            return;
        };
        let request = self.request(&Method::GET, probe, HeaderMap::new(), Bytes::new());
        if let Ok(response) = connection.send_request(request).await {
            if response.into_body().collect().await.is_ok() {
                self.give_back(connection);
            }
        }
    }

    /// Sends on an idle connection, or a new one; a request an idle
    /// connection could not take (closed by the server meanwhile) is sent
    /// once more, on a new connection: it never left.
    async fn exchange(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<(Connection, hyper::Response<hyper::body::Incoming>), Failed> {
        let mut request = request;
        if let Some(mut connection) = self.ready_idle().await {
            match connection.try_send_request(request).await {
                Ok(response) => return Ok((connection, response)),
                Err(mut error) => match error.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(Failure::Broken.into()),
                },
            }
        }
        let mut connection = self.connect().await?;
        let response = connection
            .send_request(request)
            .await
            .map_err(|_| Failure::Broken)?;
        Ok((connection, response))
    }

    /// An idle connection ready for a request, if one is still open. (One
    /// whose last answer was just read may take a moment to be ready.)
    async fn ready_idle(&self) -> Option<Connection> {
        loop {
            let mut connection = self.idle.lock().expect("never poisoned").pop()?;
            if connection.ready().await.is_ok() {
                return Some(connection);
            }
        }
    }

    fn give_back(&self, connection: Connection) {
        let mut idle = self.idle.lock().expect("never poisoned");
        if idle.len() < self.keep && !connection.is_closed() {
            idle.push(connection);
        }
    }

    async fn connect(&self) -> Result<Connection, Failure> {
        let stream = TcpStream::connect(&self.addresses[..])
            .await
            .map_err(|_| Failure::Connect)?;
        stream.set_nodelay(true).map_err(|_| Failure::Connect)?;
        let (connection, driver) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| Failure::Connect)?;
        // It ends with the connection; what went wrong, the sender sees.
        tokio::spawn(async move {
            let _ = driver.await;
        });
        Ok(connection)
    }
}

fn failure_of(error: &reqwest::Error) -> Failure {
    if error.is_timeout() {
        Failure::Timeout
    } else if error.is_connect() {
        Failure::Connect
    } else {
        Failure::Broken
    }
}

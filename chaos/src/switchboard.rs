//! Fault proxies in another process, switched from this one: the docker
//! driver runs them in the stack's `faults` container, between the roles and
//! their dependencies and in front of the API, and switches them through a
//! control port published on 127.0.0.1.
//!
//! The control protocol is one JSON line each way per switch:
//! `{"route":"postgres","fault":{"kind":"latency",…}}` (or `"fault":null` to
//! heal), answered `{"ok":true}` or `{"ok":false,"error":"…"}`.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::proxy::{Proxy, Toxic};

/// One proxy of the switchboard: `NAME=LISTEN_PORT=HOST:PORT[,HOST:PORT…]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub name: String,
    pub listen: u16,
    /// Several: balanced, as [`Proxy::balance`] does.
    pub upstreams: Vec<String>,
}

impl std::str::FromStr for Route {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let wrong = || format!("{text:?}: a route is NAME=LISTEN_PORT=HOST:PORT[,HOST:PORT…]");
        let mut parts = text.splitn(3, '=');
        let (Some(name), Some(listen), Some(upstreams)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(wrong());
        };
        let listen = listen.parse().map_err(|_| wrong())?;
        let upstreams: Vec<String> = upstreams.split(',').map(str::to_owned).collect();
        if name.is_empty() || upstreams.iter().any(|u| !u.contains(':')) {
            return Err(wrong());
        }
        Ok(Route {
            name: name.to_owned(),
            listen,
            upstreams,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct Switch {
    route: String,
    fault: Option<Toxic>,
}

#[derive(Serialize, Deserialize)]
struct Answer {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The proxies of every route, and the control port that switches them.
pub struct Switchboard {
    proxies: Arc<HashMap<String, Proxy>>,
    control: TcpListener,
}

impl Switchboard {
    /// Starts a proxy per route on `host` and listens for switches on
    /// `control` (port 0: any free port).
    pub async fn bind(
        host: std::net::IpAddr,
        routes: &[Route],
        control: SocketAddr,
    ) -> io::Result<Self> {
        let mut proxies = HashMap::new();
        for route in routes {
            let listen = SocketAddr::new(host, route.listen);
            let proxy = Proxy::balance(listen, route.upstreams.clone()).await?;
            proxies.insert(route.name.clone(), proxy);
        }
        Ok(Self {
            proxies: Arc::new(proxies),
            control: TcpListener::bind(control).await?,
        })
    }

    pub fn control(&self) -> io::Result<SocketAddr> {
        self.control.local_addr()
    }

    /// Answers switches until the process ends.
    pub async fn serve(self) -> io::Result<()> {
        loop {
            let (stream, _) = self.control.accept().await?;
            tokio::spawn(answer(stream, self.proxies.clone()));
        }
    }
}

async fn answer(stream: TcpStream, proxies: Arc<HashMap<String, Proxy>>) {
    let (reads, mut writes) = stream.into_split();
    let mut lines = BufReader::new(reads).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let answer = match serde_json::from_str::<Switch>(&line) {
            Ok(switch) => match proxies.get(&switch.route) {
                Some(proxy) => {
                    proxy.set(switch.fault);
                    Answer {
                        ok: true,
                        error: None,
                    }
                }
                None => Answer {
                    ok: false,
                    error: Some(format!("no route {:?}", switch.route)),
                },
            },
            Err(e) => Answer {
                ok: false,
                error: Some(format!("not a switch: {e}")),
            },
        };
        let mut reply = serde_json::to_vec(&answer).expect("serializable");
        reply.push(b'\n');
        if writes.write_all(&reply).await.is_err() {
            return;
        }
    }
}

/// Switches the fault of `route` on the switchboard at `control` (`None`:
/// forward faithfully).
pub async fn switch(control: SocketAddr, route: &str, fault: Option<Toxic>) -> io::Result<()> {
    let stream = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        TcpStream::connect(control),
    )
    .await
    .map_err(|_| io::Error::other(format!("the switchboard at {control} did not answer")))??;
    let (reads, mut writes) = stream.into_split();
    let mut line = serde_json::to_vec(&Switch {
        route: route.to_owned(),
        fault,
    })
    .expect("serializable");
    line.push(b'\n');
    writes.write_all(&line).await?;
    let mut reply = String::new();
    BufReader::new(reads).read_line(&mut reply).await?;
    let answer: Answer = serde_json::from_str(&reply)
        .map_err(|e| io::Error::other(format!("the switchboard answered {reply:?}: {e}")))?;
    match answer.ok {
        true => Ok(()),
        false => Err(io::Error::other(answer.error.unwrap_or_default())),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncReadExt;

    use super::*;

    #[test]
    fn a_route_names_its_port_and_upstreams() {
        let route: Route = "front=8080=api1:8080,api2:8080".parse().unwrap();
        assert_eq!(route.name, "front");
        assert_eq!(route.listen, 8080);
        assert_eq!(route.upstreams, ["api1:8080", "api2:8080"]);
        for wrong in ["front", "front=x=api1:8080", "front=8080=api1", "=1=a:1"] {
            assert!(wrong.parse::<Route>().is_err(), "{wrong}");
        }
    }

    /// A switch sent to the control port reaches the proxy: a reset switched
    /// on from outside resets the next connection; switched off, traffic
    /// flows again. An unknown route is an error, not silence.
    #[tokio::test]
    async fn a_switch_from_outside_breaks_and_heals_the_route() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = echo.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 16];
                    while let Ok(n @ 1..) = stream.read(&mut buffer).await {
                        let _ = stream.write_all(&buffer[..n]).await;
                    }
                });
            }
        });
        let listen = crate::services::free_port().unwrap();
        let route = Route {
            name: "echo".into(),
            listen,
            upstreams: vec![upstream.to_string()],
        };
        let board = Switchboard::bind(
            [127, 0, 0, 1].into(),
            &[route],
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let control = board.control().unwrap();
        tokio::spawn(board.serve());
        let answered = |_| async move {
            let mut stream = TcpStream::connect(("127.0.0.1", listen)).await.ok()?;
            stream.write_all(b"ping").await.ok()?;
            let mut reply = [0u8; 4];
            tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut reply))
                .await
                .ok()?
                .ok()?;
            Some(reply)
        };
        assert_eq!(answered(()).await, Some(*b"ping"));
        switch(control, "echo", Some(Toxic::Reset)).await.unwrap();
        assert_eq!(answered(()).await, None, "reset: no answer");
        switch(control, "echo", None).await.unwrap();
        assert_eq!(answered(()).await, Some(*b"ping"));
        let unknown = switch(control, "nowhere", None).await.unwrap_err();
        assert!(unknown.to_string().contains("no route"), "{unknown}");
    }
}

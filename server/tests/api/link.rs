//! A TCP link a test can cut: it stands between a process under test and one
//! service, so the test can take the service away from that process alone
//! (the service itself, shared by every test, stays up).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

pub struct Link {
    address: SocketAddr,
    state: Arc<Mutex<State>>,
}

struct State {
    up: bool,
    /// The connections carried now, to drop at a cut.
    carried: Vec<AbortHandle>,
}

impl Link {
    /// Starts forwarding a local port to `target` (`host:port`).
    pub async fn to(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let address = listener.local_addr().expect("local address");
        let state = Arc::new(Mutex::new(State {
            up: true,
            carried: Vec::new(),
        }));
        let (target, shared) = (target.to_owned(), Arc::clone(&state));
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut state = shared.lock().unwrap();
                if !state.up {
                    // Accepted and dropped at once: the connection is refused.
                    continue;
                }
                let target = target.clone();
                let carried = tokio::spawn(async move {
                    if let Ok(mut service) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut service).await;
                    }
                });
                state.carried.retain(|task| !task.is_finished());
                state.carried.push(carried.abort_handle());
            }
        });
        Self { address, state }
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Drops every connection through the link and refuses new ones.
    pub fn cut(&self) {
        let mut state = self.state.lock().unwrap();
        state.up = false;
        for task in state.carried.drain(..) {
            task.abort();
        }
    }

    pub fn restore(&self) {
        self.state.lock().unwrap().up = true;
    }
}

//! One address in front of several nodes, as an L4 load balancer or a Kubernetes Service gives a
//! client configured with one host: each connection goes to the first backend, in the order
//! given, that accepts it, and is piped byte for byte until either side closes. A backend that
//! dies takes its connections with it; the client's reconnect then lands on the next one.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A running balancer; stops (and drops its connections) when dropped.
pub struct Balancer {
    port: u16,
    task: JoinHandle<()>,
}

impl Balancer {
    /// Listens on a loopback port from [`crate::free_port`] and forwards to `backends`
    /// (`host:port`), first first.
    pub async fn start(backends: Vec<String>) -> Balancer {
        let port = crate::free_port();
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await.expect("bind the balancer");
        let task = tokio::spawn(async move {
            let mut pipes = tokio::task::JoinSet::new();
            loop {
                while pipes.try_join_next().is_some() {}
                let mut client = match listener.accept().await {
                    Ok((client, _)) => client,
                    // A connection that failed before it was taken (reset, out of descriptors):
                    // the others go on.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let backends = backends.clone();
                pipes.spawn(async move {
                    for backend in &backends {
                        let connect = tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(backend));
                        if let Ok(Ok(mut upstream)) = connect.await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                            return;
                        }
                    }
                });
            }
        });
        Balancer { port, task }
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

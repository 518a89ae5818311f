//! A TCP proxy that delivers the API server's bytes late: a slow watch on
//! demand, for tests of what a speaker does when it learns of changes a
//! little after its peers.
//!
//! It listens on loopback inside one namespace (the node whose speaker it
//! slows) and connects to the API server from inside that namespace too, so
//! the node's own firewall rules still apply to the proxied traffic. Every
//! chunk read from the API server is written to the speaker `delay` after it
//! arrived; bytes towards the API server pass at once. Order and throughput
//! are kept: only latency is added. It never listens or connects outside the
//! lab's namespaces.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::net::{NetError, in_namespace};

/// A running delaying proxy; it stops, with every connection it carries,
/// when dropped.
#[derive(Debug)]
pub struct DelayProxy {
    /// Where the speaker connects (loopback inside the namespace).
    addr: SocketAddr,
    /// Stops the accept loop and every connection.
    stop: CancellationToken,
}

impl DelayProxy {
    /// Starts a proxy in namespace `ns` that forwards to `upstream` and
    /// delays what `upstream` sends by `delay`.
    pub async fn start(
        ns: &str,
        upstream: SocketAddr,
        delay: Duration,
    ) -> Result<DelayProxy, NetError> {
        let namespace_error = |source| NetError::Namespace {
            ns: ns.to_string(),
            source,
        };
        let listener = in_namespace(ns, || {
            let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
            l.set_nonblocking(true)?;
            Ok(l)
        })?
        .and_then(TcpListener::from_std)
        .map_err(namespace_error)?;
        let addr = listener.local_addr().map_err(namespace_error)?;
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(
            listener,
            ns.to_string(),
            upstream,
            delay,
            stop.clone(),
        ));
        Ok(DelayProxy { addr, stop })
    }

    /// The proxy's URL for `--server` (plain HTTP, like the lab's API server).
    pub fn url(&self) -> url::Url {
        let text = format!("http://{}", self.addr);
        url::Url::parse(&text).unwrap_or_else(|e| unreachable!("{text} is a URL: {e}"))
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept_loop(
    listener: TcpListener,
    ns: String,
    upstream: SocketAddr,
    delay: Duration,
    stop: CancellationToken,
) {
    loop {
        let downstream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "delay proxy: accept failed");
                    continue;
                }
            },
        };
        let ns = ns.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            // The connect blocks a thread that has entered the namespace.
            let connected = tokio::task::spawn_blocking(move || {
                in_namespace(&ns, move || {
                    let s =
                        std::net::TcpStream::connect_timeout(&upstream, Duration::from_secs(3))?;
                    s.set_nonblocking(true)?;
                    Ok::<_, std::io::Error>(s)
                })
            })
            .await;
            let Ok(Ok(Ok(up))) = connected else {
                tracing::debug!("delay proxy: cannot reach the API server");
                return;
            };
            let Ok(up) = TcpStream::from_std(up) else {
                return;
            };
            let _ = up.set_nodelay(true);
            let _ = downstream.set_nodelay(true);
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = carry(downstream, up, delay) => {}
            }
        });
    }
}

/// Copies both ways until either side closes; what `up` sends reaches
/// `down` `delay` late.
async fn carry(down: TcpStream, up: TcpStream, delay: Duration) {
    let (mut down_rx, down_tx) = down.into_split();
    let (up_rx, mut up_tx) = up.into_split();
    let requests = async {
        let _ = tokio::io::copy(&mut down_rx, &mut up_tx).await;
        let _ = up_tx.shutdown().await;
    };
    tokio::join!(requests, delayed_copy(up_rx, down_tx, delay));
}

/// Reads chunks as they come and writes each one `delay` after it arrived.
async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Bytes)>();
    let read = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let chunk = Bytes::copy_from_slice(&buf[..n]);
                    if tx.send((Instant::now() + delay, chunk)).is_err() {
                        break;
                    }
                }
            }
        }
    };
    let write = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}

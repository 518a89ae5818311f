//! Watch streams: newline-delimited JSON `WatchEvent`s over a chunked
//! response, fed from the store's initial events and live feed.
//!
//! Owns event filtering (type, namespace, selectors), bookmarks, timeouts and
//! ending streams on fault injection. A stream never blocks the store: a
//! watch that falls behind the live feed is closed and the client resumes.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::StreamBody;
use http_body_util::combinators::BoxBody;
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, watch as tokio_watch};
use tokio::time::Instant;

use super::error::ApiError;
use super::faults::WatchKill;
use super::resources::ResourceType;
use super::selectors::ListParams;
use super::store::WatchStart;

/// Turns each event's object into what the client asked for (a Table row
/// for `kubectl get -w`).
pub type Transform = Arc<dyn Fn(&Value) -> Value + Send + Sync>;

/// Everything a stream needs besides its start.
pub struct WatchContext {
    /// The type watched.
    pub res: Arc<ResourceType>,
    /// Namespace filter (None: all namespaces or cluster-scoped).
    pub ns: Option<String>,
    /// Selectors, bookmarks, timeout.
    pub params: ListParams,
    /// The client's address, to end the stream when it gets blocked.
    pub peer: IpAddr,
    /// Fault signal: close-all generation and blocked addresses.
    pub kill: tokio_watch::Receiver<WatchKill>,
    /// How often BOOKMARK events are sent when the client allows them.
    pub bookmark_interval: Duration,
    /// Applied to every ADDED/MODIFIED/DELETED object; `None` sends objects as stored.
    pub transform: Option<Transform>,
}

impl WatchContext {
    fn out(&self, obj: &Value) -> Value {
        match &self.transform {
            Some(t) => t(obj),
            None => obj.clone(),
        }
    }
}

fn line(etype: &str, object: &Value) -> Bytes {
    let mut s = json!({"type": etype, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

fn bookmark(res: &ResourceType, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(
        "BOOKMARK",
        &json!({"kind": res.kind, "apiVersion": res.api_version(), "metadata": meta}),
    )
}

/// A single ERROR event carrying `err` as a Status, as real servers report a
/// watch from a compacted resourceVersion.
pub fn error_body(err: &ApiError) -> BoxBody<Bytes, Infallible> {
    let (tx, rx) = mpsc::channel(1);
    // The channel has room for exactly this one chunk.
    let _ = tx.try_send(line("ERROR", &err.to_status()));
    drop(tx);
    body_from(rx)
}

fn body_from(rx: mpsc::Receiver<Bytes>) -> BoxBody<Bytes, Infallible> {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    BoxBody::new(StreamBody::new(stream))
}

/// Starts streaming `start` to the client; returns the response body.
pub fn stream(start: WatchStart, ctx: WatchContext) -> BoxBody<Bytes, Infallible> {
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(run(start, ctx, tx));
    body_from(rx)
}

async fn run(start: WatchStart, mut ctx: WatchContext, tx: mpsc::Sender<Bytes>) {
    let WatchStart {
        initial,
        start_rv,
        mut live,
    } = start;
    let generation = ctx.kill.borrow_and_update().generation;
    for (etype, obj) in &initial {
        if tx.send(line(etype.as_str(), &ctx.out(obj))).await.is_err() {
            return;
        }
    }
    if ctx.params.send_initial_events && tx.send(bookmark(&ctx.res, start_rv, true)).await.is_err()
    {
        return;
    }
    let id = ctx.res.storage_id();
    let mut last_rv = start_rv;
    let deadline = ctx
        .params
        .timeout_seconds
        .map(|s| Instant::now() + Duration::from_secs(s));
    let timeout = tokio::time::sleep_until(
        deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(365 * 24 * 3600)),
    );
    tokio::pin!(timeout);
    let period = ctx.bookmark_interval.max(Duration::from_millis(10));
    let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
    loop {
        tokio::select! {
            rec = live.recv() => match rec {
                Ok(rec) => {
                    if rec.rv <= last_rv {
                        continue;
                    }
                    last_rv = rec.rv;
                    let ns_ok = ctx.ns.as_deref().is_none_or(|n| {
                        rec.object.pointer("/metadata/namespace").and_then(Value::as_str) == Some(n)
                    });
                    if rec.res != id || !ns_ok {
                        continue;
                    }
                    let object = ctx.res.from_storage(&rec.object);
                    if ctx.params.matches(&object)
                        && tx.send(line(rec.etype.as_str(), &ctx.out(&object))).await.is_err()
                    {
                        return;
                    }
                }
                // Lagged: the client resumes from its last version, replayed from history.
                Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = ticks.tick() => {
                if tx.is_closed() {
                    return;
                }
                if ctx.params.bookmarks && tx.send(bookmark(&ctx.res, last_rv, false)).await.is_err() {
                    return;
                }
            }
            _ = &mut timeout => return,
            changed = ctx.kill.changed() => {
                if changed.is_err() {
                    return;
                }
                let k = ctx.kill.borrow_and_update();
                if k.generation != generation || k.blocked.contains(&ctx.peer) {
                    return;
                }
            }
        }
    }
}

//! Embedded test Kubernetes API server: a **test fixture**, never a
//! production component.
//!
//! Speaks enough of the Kubernetes REST API over plain HTTP (no TLS, no
//! authentication) that unmodified kube-rs clients, kube-runtime watchers,
//! reflectors and controllers, kube-leader-election and kubectl cannot tell it
//! from a real API server for the kinds l2lb uses: core/v1 Namespaces,
//! Services, Nodes, Pods, Events, ConfigMaps; discovery.k8s.io/v1
//! EndpointSlices; coordination.k8s.io/v1 Leases; events.k8s.io/v1 Events;
//! apiextensions.k8s.io/v1 CustomResourceDefinitions, and every custom
//! resource a posted CRD defines.
//!
//! Layout: [`store`] holds objects, the global resourceVersion and the
//! change history; [`watch`] streams events; `http` routes requests;
//! [`discovery`] builds discovery documents; [`openapi`] the OpenAPI v2/v3
//! documents; [`printing`] server-side Tables (with [`jsonpath`] for CRD
//! printer columns); [`selectors`] parses label and field selectors;
//! [`patch`] applies patches; [`faults`] injects failures; [`resources`]
//! knows the served kinds; [`events`] serves core/v1 Events as
//! events.k8s.io/v1; [`services`] defaults, allocates and validates
//! Services; [`schema`] validates custom resources against their CRD schema.
//!
//! Simplifications, by design:
//! - One version per kind is stored; custom resources with several served
//!   versions are returned in the storage version (no conversion).
//! - `limit`/`continue` are ignored: a list is always one page.
//! - Strategic merge patch has no per-type merge keys: lists merge by key
//!   only where the patch carries `$setElementOrder` (kubectl apply's
//!   patches do) and are replaced otherwise. Server-side apply = merge of the
//!   applied configuration, creating the object if missing; the field manager
//!   is recorded once in `managedFields` (operation `Apply`, empty
//!   `fieldsV1`), with no ownership tracking or conflicts.
//! - Bodies are JSON (or YAML); protobuf bodies are decoded for Namespaces,
//!   Services and ConfigMaps only (what kubectl's typed client creates),
//!   other protobuf and CBOR bodies get 415. Responses are always JSON.
//! - `fieldValidation=Strict` rejects unknown fields; `Warn` behaves as
//!   `Ignore` (custom resources are pruned, no warning headers are sent).
//!   Built-in kinds are checked for decodability only, not for semantic
//!   validity (except Services, which are defaulted and validated).
//! - `/openapi/v2` is served as JSON only (no protobuf).
//! - Deleting a Namespace removes it and its objects at once (no
//!   Terminating phase); deleting a CRD removes its objects.
//! - An object that stops matching a watch's selector is not sent as DELETED.
//! - `dryRun` is not honoured; field selectors accept any dotted path.
//! - Blocked client addresses get their connections closed (not left
//!   hanging).

pub mod discovery;
pub mod error;
pub mod events;
pub mod faults;
mod http;
pub mod jsonpath;
pub mod openapi;
pub mod patch;
pub mod printing;
pub mod protobuf;
pub mod resources;
pub mod schema;
pub mod selectors;
pub mod services;
pub mod store;
pub mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub use error::ApiError;
pub use faults::Faults;
use store::Store;

/// The install namespace l2lb's own objects live in.
pub const L2LB_NAMESPACE: &str = "l2lb-system";

/// Request counts by (verb, resource), e.g. `("patch", "services/status")`.
///
/// Verbs: get, list, watch, create, update, patch, delete, deletecollection;
/// discovery requests count as `("get", "discovery")`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// Count per (verb, resource).
    pub by_key: BTreeMap<(String, String), u64>,
}

impl RequestCounts {
    /// All requests.
    pub fn total(&self) -> u64 {
        self.by_key.values().sum()
    }

    /// Requests with this verb and resource.
    pub fn get(&self, verb: &str, resource: &str) -> u64 {
        self.by_key
            .get(&(verb.to_string(), resource.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Write requests (create, update, patch, delete, deletecollection).
    pub fn writes(&self) -> u64 {
        self.by_key
            .iter()
            .filter(|((v, _), _)| {
                matches!(
                    v.as_str(),
                    "create" | "update" | "patch" | "delete" | "deletecollection"
                )
            })
            .map(|(_, n)| n)
            .sum()
    }
}

/// One kind of request, as RBAC sees it: verb on a group's resource, in a
/// namespace or cluster-wide.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Access {
    /// get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    /// API group; "" is the core group.
    pub group: String,
    /// Resource, with `/subresource` where there is one.
    pub resource: String,
    /// The namespace in the path; `None` for cluster-wide requests and
    /// cluster-scoped kinds.
    pub namespace: Option<String>,
}

struct Inner {
    /// Every object and the change history; one lock makes check-then-write atomic.
    store: Mutex<Store>,
    /// Requests seen, for tests and benches that measure API load.
    counts: Mutex<BTreeMap<(String, String), u64>>,
    /// Kinds of request seen per User-Agent, for the RBAC coverage test.
    accesses: Mutex<BTreeMap<String, BTreeSet<Access>>>,
    /// Injected failures.
    faults: Faults,
    /// Period of BOOKMARK events on watches that allow them.
    bookmark_interval: Mutex<Duration>,
}

/// The embedded API server's state: store, request counters and faults.
/// Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct ApiServer {
    inner: Arc<Inner>,
}

impl Default for ApiServer {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("resource_version", &self.resource_version())
            .finish_non_exhaustive()
    }
}

impl ApiServer {
    /// A server with the built-in kinds and the default namespaces
    /// (`default`, `kube-system`, `kube-public`, `kube-node-lease`); no CRDs.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                store: Mutex::new(Store::new()),
                counts: Mutex::new(BTreeMap::new()),
                accesses: Mutex::new(BTreeMap::new()),
                faults: Faults::default(),
                bookmark_interval: Mutex::new(Duration::from_secs(5)),
            }),
        }
    }

    /// [`ApiServer::new`] plus l2lb's CRDs and the `l2lb-system` namespace.
    pub fn with_l2lb_crds() -> Self {
        let s = Self::new();
        for crd in crate::api::crds::all() {
            // The CRDs are generated from our own types; failing to install
            // them is a bug that every test using this server would show.
            if let Err(e) = s.install_crd(&crd) {
                tracing::error!(error = %e, "installing an l2lb CRD failed");
            }
        }
        s.lock().ensure_namespace(L2LB_NAMESPACE);
        s
    }

    /// Stores a CRD as if it had been posted, registering its kind.
    pub fn install_crd(
        &self,
        crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    ) -> Result<Value, ApiError> {
        let body = serde_json::to_value(crd).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let mut store = self.lock();
        let res = store
            .registry
            .lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
            .ok_or_else(|| ApiError::no_route("customresourcedefinitions"))?;
        store.create(&res, None, body)
    }

    /// Creates namespace `name` unless it exists.
    pub fn ensure_namespace(&self, name: &str) {
        self.lock().ensure_namespace(name);
    }

    /// Makes the cluster single- or dual-stack for Services created or
    /// updated from now on (tests replaying a single-stack cluster's cases).
    pub fn set_stack(&self, stack: services::Stack) {
        self.lock().stack = stack;
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock leaves a consistent store (every
        // write is one insert at the end), so poisoning is ignored.
        self.inner.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, key: (String, String)) {
        *self
            .inner
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default() += 1;
    }

    /// Serves HTTP on `listener` until `shutdown` fires. May run for several
    /// listeners on one state (loopback for in-process clients, an address
    /// inside a network namespace for node processes).
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        loop {
            let (stream, peer) = tokio::select! {
                r = listener.accept() => r?,
                _ = shutdown.cancelled() => return Ok(()),
            };
            if self.inner.faults.is_blocked(peer.ip()) {
                drop(stream);
                continue;
            }
            // Latency matters for watch events and small requests.
            let _ = stream.set_nodelay(true);
            tokio::spawn(http::connection(
                self.clone(),
                stream,
                peer,
                shutdown.clone(),
            ));
        }
    }

    /// For tests: binds `127.0.0.1:0`, serves on the current runtime until
    /// the returned token is cancelled, and returns the base URL.
    pub async fn start_local(&self) -> std::io::Result<(url::Url, CancellationToken)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let token = CancellationToken::new();
        let me = self.clone();
        let t = token.clone();
        tokio::spawn(async move {
            if let Err(e) = me.serve(listener, t).await {
                tracing::warn!(error = %e, "embedded apiserver stopped");
            }
        });
        let url = url::Url::parse(&format!("http://{addr}/"))
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        Ok((url, token))
    }

    /// Snapshot of the request counts.
    pub fn requests(&self) -> RequestCounts {
        RequestCounts {
            by_key: self
                .inner
                .counts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    fn record_access(&self, agent: &str, access: Access) {
        self.inner
            .accesses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(agent.to_string())
            .or_default()
            .insert(access);
    }

    /// Every kind of object request seen, by the client's User-Agent (l2lb
    /// components send `l2lb-<component>/<version>`). Discovery is left out:
    /// RBAC lets every authenticated client read it.
    pub fn accesses(&self) -> BTreeMap<String, BTreeSet<Access>> {
        self.inner
            .accesses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Zeroes the request counts.
    pub fn reset_requests(&self) {
        self.inner
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Fault injection controls.
    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    /// The last resourceVersion handed out.
    pub fn resource_version(&self) -> u64 {
        self.lock().resource_version()
    }

    /// Forgets the change history: watches from any older resourceVersion get 410 Gone.
    pub fn compact(&self) {
        self.lock().compact();
    }

    /// How many changes are kept for watch resumption (default 10 000).
    pub fn set_history_limit(&self, limit: usize) {
        self.lock().set_history_limit(limit);
    }

    /// Period of BOOKMARK events on watches that allow them (default 5 s).
    pub fn set_bookmark_interval(&self, interval: Duration) {
        *self
            .inner
            .bookmark_interval
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = interval;
    }

    fn bookmark_interval(&self) -> Duration {
        *self
            .inner
            .bookmark_interval
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

/// A kube `Client` talking plain HTTP to `url` (no auth, no TLS), default
/// namespace `default`. For tests, the lab and `--server` flags.
pub fn client_for(url: &url::Url) -> Result<kube::Client, crate::cluster::ClusterError> {
    crate::cluster::client_for_url(url, crate::api::rbac::Component::Cli)
}

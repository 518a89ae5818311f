//! The object store: every object of every served kind, one global
//! monotonically increasing resourceVersion, and the history of recent
//! changes that watches replay from.
//!
//! Owns the write semantics (create, replace, patch, delete with
//! finalizers, status subresource, generation, optimistic concurrency) and
//! the order of watch events. Callers hold one lock around every call, so a
//! check and its write are atomic and events leave in resourceVersion order.
//! It must never do network I/O or wait: a call returns at once.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::error::ApiError;
use super::patch::{self, PatchKind};
use super::resources::{self, Registry, ResourceType, Validation};
use super::schema;
use super::selectors::ListParams;
use super::services;

/// How a write treats fields the kind's schema does not know
/// (`?fieldValidation=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FieldValidation {
    /// Drop them silently (custom resources are pruned).
    #[default]
    Ignore,
    /// Reject the write with 400, as `kubectl apply` asks by default.
    Strict,
}

impl FieldValidation {
    /// Reads `Strict`; `Warn`, `Ignore` and absence behave as Ignore (no warning headers are sent).
    pub fn from_query(v: Option<&str>) -> Self {
        match v {
            Some("Strict") => Self::Strict,
            _ => Self::Ignore,
        }
    }
}

/// Kind of a watch event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Object created.
    Added,
    /// Object changed (including a deletionTimestamp being set).
    Modified,
    /// Object removed.
    Deleted,
}

impl EventType {
    /// The wire name (`ADDED`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One committed change, as kept in the history and sent to live watches.
#[derive(Clone, Debug)]
pub struct Record {
    /// The resourceVersion this change created.
    pub rv: u64,
    /// [`ResourceType::id`] of the object's type.
    pub res: String,
    /// What happened.
    pub etype: EventType,
    /// The object after the change (before removal, for deletes).
    pub object: Value,
}

/// What a watch starts from: events to send first, then live records after `start_rv`.
pub struct WatchStart {
    /// Synthetic ADDED events or replayed history, in order.
    pub initial: Vec<(EventType, Value)>,
    /// The global resourceVersion at the moment the watch subscribed.
    pub start_rv: u64,
    /// Live records committed after `start_rv`.
    pub live: broadcast::Receiver<Arc<Record>>,
}

/// Namespaces a fresh server has, as a real cluster does.
const DEFAULT_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// How many changes are kept for watch resumption before older versions answer 410.
pub const DEFAULT_HISTORY: usize = 10_000;

/// Capacity of the live fan-out; a watch that falls this far behind is closed
/// and the client resumes from history.
const LIVE_CAPACITY: usize = 4096;

type Key = (String, String, String);

/// The store. See the module doc for its contract.
pub struct Store {
    /// Served kinds; grows when CRDs are posted.
    pub registry: Registry,
    /// Objects by (type id, namespace or "", name); ordered so lists come out sorted.
    objects: BTreeMap<Key, Value>,
    /// The last resourceVersion handed out.
    rv: u64,
    /// Recent changes, oldest first, for watches resuming from a version.
    history: VecDeque<Arc<Record>>,
    /// How many records `history` may hold.
    history_limit: usize,
    /// Changes at or below this version are no longer in `history`.
    compacted_rv: u64,
    /// Fan-out of every committed change to live watches.
    tx: broadcast::Sender<Arc<Record>>,
    /// The service IP families Services are defaulted to.
    pub stack: services::Stack,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn new_uid() -> String {
    let n: u128 = rand::random();
    let h = format!("{n:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn meta(obj: &Value) -> &Value {
    obj.get("metadata").unwrap_or(&Value::Null)
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj).get(field).and_then(Value::as_str)
}

fn meta_mut(obj: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    match obj.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        // Just made sure metadata is an object.
        _ => unreachable!("metadata was set to an object above"),
    }
}

/// The object without metadata and status: what `generation` tracks.
fn spec_part(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        for k in ["metadata", "status", "kind", "apiVersion"] {
            m.remove(k);
        }
    }
    v
}

fn has_finalizers(obj: &Value) -> bool {
    meta(obj)
        .get("finalizers")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
}

const CRD_ID: &str = "apiextensions.k8s.io/customresourcedefinitions";

impl Store {
    /// A store with the built-in kinds and the default namespaces.
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(LIVE_CAPACITY);
        let mut s = Self {
            registry: Registry::with_builtins(),
            objects: BTreeMap::new(),
            rv: 0,
            history: VecDeque::new(),
            history_limit: DEFAULT_HISTORY,
            compacted_rv: 0,
            tx,
            stack: services::Stack::Dual,
        };
        for ns in DEFAULT_NAMESPACES {
            s.ensure_namespace(ns);
        }
        s
    }

    /// Creates namespace `name` unless it exists.
    pub fn ensure_namespace(&mut self, name: &str) {
        let Some(res) = self.registry.lookup("", "v1", "namespaces") else {
            return;
        };
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        // AlreadyExists is the only expected failure and means there is nothing to do.
        let _ = self.create(&res, None, body);
    }

    /// The last resourceVersion handed out.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// Forgets the change history, so watches from any older version get 410 (like etcd compaction).
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted_rv = self.rv;
    }

    /// Limits how many changes are kept for watch resumption.
    pub fn set_history_limit(&mut self, limit: usize) {
        self.history_limit = limit.max(1);
        self.trim_history();
    }

    fn trim_history(&mut self) {
        while self.history.len() > self.history_limit {
            if let Some(r) = self.history.pop_front() {
                self.compacted_rv = r.rv;
            }
        }
    }

    fn key(res: &ResourceType, ns: Option<&str>, name: &str) -> Key {
        (
            res.storage_id(),
            ns.unwrap_or("").to_string(),
            name.to_string(),
        )
    }

    /// Commits an object given in `res`'s served form; returns the served form.
    fn commit_as(&mut self, res: &ResourceType, etype: EventType, obj: Value) -> Value {
        let stored = self.commit(&res.storage_id(), etype, res.to_storage(obj));
        res.from_storage(&stored)
    }

    fn commit(&mut self, id: &str, etype: EventType, mut obj: Value) -> Value {
        self.rv += 1;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let key = (
            id.to_string(),
            meta_str(&obj, "namespace").unwrap_or("").to_string(),
            meta_str(&obj, "name").unwrap_or("").to_string(),
        );
        if etype == EventType::Deleted {
            self.objects.remove(&key);
        } else {
            self.objects.insert(key, obj.clone());
        }
        let rec = Arc::new(Record {
            rv: self.rv,
            res: id.to_string(),
            etype,
            object: obj.clone(),
        });
        self.history.push_back(rec.clone());
        self.trim_history();
        // No receivers is normal (no watch open).
        let _ = self.tx.send(rec);
        obj
    }

    /// GET one object.
    pub fn get(&self, res: &ResourceType, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&Self::key(res, ns, name))
            .map(|o| res.from_storage(o))
            .ok_or_else(|| ApiError::not_found(&res.plural, &res.group, name))
    }

    /// Objects of `res` (in its served form), sorted by namespace and name.
    fn iter_type<'a>(
        &'a self,
        res: &'a ResourceType,
        ns: Option<&'a str>,
    ) -> impl Iterator<Item = Value> + 'a {
        let id = res.storage_id();
        let start = (id.clone(), ns.unwrap_or("").to_string(), String::new());
        self.objects
            .range(start..)
            .take_while(move |(k, _)| k.0 == id && ns.is_none_or(|n| k.1 == n))
            .map(|(_, v)| res.from_storage(v))
    }

    /// LIST: the current resourceVersion and the matching objects sorted by namespace and name.
    pub fn list(
        &self,
        res: &ResourceType,
        ns: Option<&str>,
        params: &ListParams,
    ) -> (u64, Vec<Value>) {
        let items = self
            .iter_type(res, ns)
            .filter(|o| params.matches(o))
            .collect();
        (self.rv, items)
    }

    /// Subscribes a watch: initial events and the live feed, atomically.
    pub fn watch(
        &self,
        res: &ResourceType,
        ns: Option<&str>,
        params: &ListParams,
    ) -> Result<WatchStart, ApiError> {
        let rv = params.resource_version.as_str();
        let initial = if params.send_initial_events || rv.is_empty() || rv == "0" {
            self.iter_type(res, ns)
                .filter(|o| params.matches(o))
                .map(|o| (EventType::Added, o))
                .collect()
        } else {
            let from: u64 = rv
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?;
            if from < self.compacted_rv {
                return Err(ApiError::gone(from, self.compacted_rv + 1));
            }
            let id = res.storage_id();
            self.history
                .iter()
                .filter(|r| r.rv > from && r.res == id)
                .filter(|r| ns.is_none_or(|n| meta_str(&r.object, "namespace") == Some(n)))
                .map(|r| (r.etype, res.from_storage(&r.object)))
                .filter(|(_, o)| params.matches(o))
                .collect()
        };
        Ok(WatchStart {
            initial,
            start_rv: self.rv,
            live: self.tx.subscribe(),
        })
    }

    /// Checks and completes a body for `res`: kind/apiVersion, namespace and name.
    fn normalize(
        &self,
        res: &ResourceType,
        ns: Option<&str>,
        mut body: Value,
    ) -> Result<Value, ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        if let Some(kind) = body.get("kind").and_then(Value::as_str)
            && kind != res.kind
        {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({kind}) does not match the expected kind ({})",
                res.kind
            )));
        }
        if let Some(av) = body.get("apiVersion").and_then(Value::as_str) {
            let served = res.versions.iter().any(|v| {
                av == if res.group.is_empty() {
                    v.clone()
                } else {
                    format!("{}/{v}", res.group)
                }
            });
            if !served {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({av}) does not match the expected API version ({})",
                    res.api_version()
                )));
            }
        }
        body["kind"] = json!(res.kind);
        body["apiVersion"] = json!(res.api_version());
        let m = meta_mut(&mut body);
        if res.namespaced {
            let path_ns = ns.unwrap_or("default");
            match m.get("namespace").and_then(Value::as_str) {
                Some(n) if !n.is_empty() && n != path_ns => {
                    return Err(ApiError::bad_request(format!(
                        "the namespace of the provided object ({n}) does not match the namespace sent on the request ({path_ns})"
                    )));
                }
                _ => {
                    m.insert("namespace".into(), json!(path_ns));
                }
            }
        } else {
            m.remove("namespace");
        }
        Ok(body)
    }

    /// Runs the kind's validation; returns the object with schema defaults applied.
    fn validate(
        &self,
        res: &ResourceType,
        mut obj: Value,
        old: Option<&Value>,
        fv: FieldValidation,
    ) -> Result<Value, ApiError> {
        let name = meta_str(&obj, "name").unwrap_or("").to_string();
        let undecodable = |why: String| {
            ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: {why}",
                res.kind, res.version, res.kind
            ))
        };
        let strict = |unknown: &[String]| {
            if fv == FieldValidation::Strict && !unknown.is_empty() {
                let list = unknown
                    .iter()
                    .map(|u| format!("unknown field {u:?}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(undecodable(format!("strict decoding error: {list}")));
            }
            Ok(())
        };
        match &res.validation {
            Validation::Builtin(check) => {
                check(&obj).map_err(|e| undecodable(e.to_string()))?;
                Ok(obj)
            }
            Validation::Custom { schema: None } => Ok(obj),
            Validation::Custom {
                schema: Some(schema),
            } => {
                let found = schema::check(schema, None, &mut obj, true);
                strict(&found.unknown)?;
                let mut causes = found.causes;
                let obj = kube::core::cel::apply_defaults(schema, &obj);
                let old = old.map(|o| kube::core::cel::apply_defaults(schema, o));
                if let Err(errs) =
                    kube::core::cel::Validator::new().validate(schema, &obj, old.as_ref())
                {
                    causes.extend(errs.as_slice().iter().map(|e| cel_cause(&obj, e)));
                }
                if !causes.is_empty() {
                    return Err(ApiError::invalid_causes(
                        &res.kind, &res.group, &name, causes,
                    ));
                }
                Ok(obj)
            }
        }
    }

    /// `fieldValidation=Strict` for built-in kinds: unknown fields are
    /// refused before anything else looks at the object, as decoding comes
    /// first in kube-apiserver. (Custom resources are checked with their schema.)
    fn strict_builtin(
        res: &ResourceType,
        obj: &Value,
        fv: FieldValidation,
    ) -> Result<(), ApiError> {
        if fv != FieldValidation::Strict || !matches!(res.validation, Validation::Builtin(_)) {
            return Ok(());
        }
        let Some(schema) = super::openapi::builtin_schema(res) else {
            return Ok(());
        };
        let mut probe = obj.clone();
        let found = schema::check(
            schema,
            Some(super::openapi::builtin_definitions()),
            &mut probe,
            false,
        );
        if found.unknown.is_empty() {
            return Ok(());
        }
        let list = found
            .unknown
            .iter()
            .map(|u| format!("unknown field {u:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {list}",
            res.kind, res.version, res.kind
        )))
    }

    /// Defaults, allocates and validates a Service (other kinds pass unchanged).
    fn service_hook(
        &self,
        res: &ResourceType,
        obj: Value,
        old: Option<&Value>,
    ) -> Result<Value, ApiError> {
        if res.id() != "/services" {
            return Ok(obj);
        }
        // A body that does not decode is a 400 before any defaulting, as on a real server.
        if let Validation::Builtin(check) = &res.validation {
            check(&obj).map_err(|e| {
                ApiError::bad_request(format!(
                    "{} in version \"{}\" cannot be handled as a {}: {e}",
                    res.kind, res.version, res.kind
                ))
            })?;
        }
        let name = meta_str(&obj, "name").unwrap_or("").to_string();
        let ns = meta_str(&obj, "namespace").unwrap_or("").to_string();
        let mut used = services::Allocated::default();
        let start = ("/services".to_string(), String::new(), String::new());
        for ((_, kns, kname), o) in self
            .objects
            .range(start..)
            .take_while(|(k, _)| k.0 == "/services")
        {
            if !(*kns == ns && *kname == name) {
                used.add(o);
            }
        }
        services::prepare(obj, old, &used, self.stack)
            .map_err(|causes| ApiError::invalid_causes("Service", "", &name, causes))
    }

    /// Registers (or re-registers) the kind a stored CRD defines and fills its status.
    fn crd_hook(&mut self, obj: &mut Value) -> Result<(), ApiError> {
        let crd: CustomResourceDefinition = serde_json::from_value(obj.clone())
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let name = crd.metadata.name.clone().unwrap_or_default();
        let t = resources::from_crd(&crd).map_err(|why| {
            ApiError::invalid(
                "CustomResourceDefinition",
                "apiextensions.k8s.io",
                &name,
                &why,
            )
        })?;
        let expected = format!("{}.{}", t.plural, t.group);
        if name != expected {
            return Err(ApiError::invalid(
                "CustomResourceDefinition",
                "apiextensions.k8s.io",
                &name,
                &format!(
                    "metadata.name: Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group ({expected})"
                ),
            ));
        }
        obj["status"] = json!({
            "acceptedNames": obj["spec"]["names"].clone(),
            "storedVersions": [t.version.clone()],
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                 "message": "no conflicts found", "lastTransitionTime": now()},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted", "lastTransitionTime": now()},
            ],
        });
        self.registry.insert(t);
        Ok(())
    }

    /// CREATE, dropping unknown fields.
    pub fn create(
        &mut self,
        res: &ResourceType,
        ns: Option<&str>,
        body: Value,
    ) -> Result<Value, ApiError> {
        self.create_with(res, ns, body, FieldValidation::Ignore)
    }

    /// CREATE with the request's field validation.
    pub fn create_with(
        &mut self,
        res: &ResourceType,
        ns: Option<&str>,
        body: Value,
        fv: FieldValidation,
    ) -> Result<Value, ApiError> {
        let mut obj = self.normalize(res, ns, body)?;
        let ns = meta_str(&obj, "namespace").map(str::to_string);
        if let Some(n) = &ns
            && !self
                .objects
                .contains_key(&(String::from("/namespaces"), String::new(), n.clone()))
        {
            return Err(ApiError::not_found("namespaces", "", n));
        }
        let name = match meta_str(&obj, "name").filter(|n| !n.is_empty()) {
            Some(n) => n.to_string(),
            None => {
                let Some(prefix) = meta_str(&obj, "generateName").map(str::to_string) else {
                    return Err(ApiError::invalid(
                        &res.kind,
                        &res.group,
                        "",
                        "metadata.name: Required value: name or generateName is required",
                    ));
                };
                let mut name = format!("{prefix}{}", random_suffix());
                while self
                    .objects
                    .contains_key(&Self::key(res, ns.as_deref(), &name))
                {
                    name = format!("{prefix}{}", random_suffix());
                }
                name
            }
        };
        if self
            .objects
            .contains_key(&Self::key(res, ns.as_deref(), &name))
        {
            return Err(ApiError::already_exists(&res.plural, &res.group, &name));
        }
        let m = meta_mut(&mut obj);
        m.insert("name".into(), json!(name));
        m.insert("uid".into(), json!(new_uid()));
        m.insert("creationTimestamp".into(), json!(now()));
        m.insert("generation".into(), json!(1));
        for k in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            m.remove(k);
        }
        if res.reset_status_on_create
            && let Some(o) = obj.as_object_mut()
        {
            o.remove("status");
        }
        if res.id() == "/namespaces" && obj.pointer("/status/phase").is_none() {
            obj["status"] = json!({"phase": "Active"});
        }
        Self::strict_builtin(res, &obj, fv)?;
        let obj = self.service_hook(res, obj, None)?;
        let mut obj = self.validate(res, obj, None, fv)?;
        if res.id() == CRD_ID {
            self.crd_hook(&mut obj)?;
        }
        Ok(self.commit_as(res, EventType::Added, obj))
    }

    fn check_rv(res: &ResourceType, old: &Value, new: &Value) -> Result<(), ApiError> {
        match meta_str(new, "resourceVersion") {
            Some(rv) if !rv.is_empty() && Some(rv) != meta_str(old, "resourceVersion") => Err(
                ApiError::conflict(&res.plural, &res.group, meta_str(old, "name").unwrap_or("")),
            ),
            _ => Ok(()),
        }
    }

    /// The common tail of replace and patch: status rules, system metadata,
    /// validation, generation, no-op detection, finalizer-completed deletion.
    fn update(
        &mut self,
        res: &ResourceType,
        old: Value,
        new: Value,
        status_only: bool,
        apply_manager: Option<&str>,
        fv: FieldValidation,
    ) -> Result<Value, ApiError> {
        let mut new = if status_only {
            let mut o = old.clone();
            match (new.get("status"), o.as_object_mut()) {
                (Some(s), Some(m)) => {
                    m.insert("status".into(), s.clone());
                }
                (None, Some(m)) => {
                    m.remove("status");
                }
                _ => {}
            }
            o
        } else {
            let mut n = new;
            if res.status_subresource
                && let Some(m) = n.as_object_mut()
            {
                match old.get("status") {
                    Some(s) => m.insert("status".into(), s.clone()),
                    None => m.remove("status"),
                };
            }
            n
        };
        if !new.is_object() {
            return Err(ApiError::bad_request("the object must be a JSON object"));
        }
        new["kind"] = old["kind"].clone();
        new["apiVersion"] = old["apiVersion"].clone();
        let old_meta = meta(&old).clone();
        let m = meta_mut(&mut new);
        for k in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "resourceVersion",
            "managedFields",
        ] {
            match old_meta.get(k) {
                Some(v) => m.insert(k.into(), v.clone()),
                None => m.remove(k),
            };
        }
        if let Some(manager) = apply_manager {
            let mut fields = old_meta
                .get("managedFields")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if !fields
                .iter()
                .any(|f| f["manager"] == manager && f["operation"] == "Apply")
            {
                fields.push(json!({
                    "manager": manager, "operation": "Apply", "apiVersion": res.api_version(),
                    "time": now(), "fieldsType": "FieldsV1", "fieldsV1": {},
                }));
                m.insert("managedFields".into(), json!(fields));
            }
        }
        if !status_only {
            Self::strict_builtin(res, &new, fv)?;
            new = self.service_hook(res, new, Some(&old))?;
        }
        let mut new = self.validate(res, new, Some(&old), fv)?;
        if spec_part(&new) != spec_part(&old) {
            let g = old_meta
                .get("generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            meta_mut(&mut new).insert("generation".into(), json!(g + 1));
        }
        if res.id() == CRD_ID {
            self.crd_hook(&mut new)?;
        }
        if new == old {
            return Ok(old);
        }
        if meta(&new).get("deletionTimestamp").is_some() && !has_finalizers(&new) {
            return Ok(self.remove(res, new));
        }
        Ok(self.commit_as(res, EventType::Modified, new))
    }

    /// REPLACE (PUT), on the object or its status.
    pub fn replace(
        &mut self,
        res: &ResourceType,
        ns: Option<&str>,
        name: &str,
        body: Value,
        status_only: bool,
        fv: FieldValidation,
    ) -> Result<Value, ApiError> {
        let old = self.get(res, ns, name)?;
        let body = self.normalize(res, ns, body)?;
        if meta_str(&body, "name") != Some(name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta_str(&body, "name").unwrap_or("")
            )));
        }
        Self::check_rv(res, &old, &body)?;
        self.update(res, old, body, status_only, None, fv)
    }

    /// PATCH, on the object or its status. Apply patches create missing objects.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        res: &ResourceType,
        ns: Option<&str>,
        name: &str,
        kind: PatchKind,
        body: &Value,
        status_only: bool,
        field_manager: Option<&str>,
        fv: FieldValidation,
    ) -> Result<(Value, bool), ApiError> {
        let apply_manager = (kind == PatchKind::Apply).then(|| field_manager.unwrap_or("unknown"));
        let old = match self.get(res, ns, name) {
            Ok(o) => o,
            Err(e) if kind == PatchKind::Apply && !status_only => {
                let mut obj = body.clone();
                if !obj.is_object() {
                    return Err(e);
                }
                meta_mut(&mut obj).insert("name".into(), json!(name));
                if let Some(manager) = apply_manager {
                    meta_mut(&mut obj).insert(
                        "managedFields".into(),
                        json!([{"manager": manager, "operation": "Apply",
                                "apiVersion": res.api_version(), "time": now(),
                                "fieldsType": "FieldsV1", "fieldsV1": {}}]),
                    );
                }
                return Ok((self.create_with(res, ns, obj, fv)?, true));
            }
            Err(e) => return Err(e),
        };
        let new = patch::apply(&old, kind, body)?;
        Self::check_rv(res, &old, &new)?;
        Ok((
            self.update(res, old, new, status_only, apply_manager, fv)?,
            false,
        ))
    }

    /// Removes an object (and what it owns: a namespace's objects, a CRD's
    /// custom resources), emitting DELETED events.
    fn remove(&mut self, res: &ResourceType, obj: Value) -> Value {
        let name = meta_str(&obj, "name").unwrap_or("").to_string();
        if res.id() == "/namespaces" {
            let doomed: Vec<Key> = self
                .objects
                .keys()
                .filter(|k| k.1 == name)
                .cloned()
                .collect();
            self.remove_keys(doomed);
        }
        if res.id() == CRD_ID {
            let ids = self.registry.remove_crd(&name);
            let doomed: Vec<Key> = self
                .objects
                .keys()
                .filter(|k| ids.contains(&k.0))
                .cloned()
                .collect();
            self.remove_keys(doomed);
        }
        self.commit_as(res, EventType::Deleted, obj)
    }

    fn remove_keys(&mut self, keys: Vec<Key>) {
        for k in keys {
            if let Some(o) = self.objects.get(&k).cloned() {
                self.commit(&k.0, EventType::Deleted, o);
            }
        }
    }

    /// DELETE: removes the object, or only marks it (deletionTimestamp) while finalizers remain.
    pub fn delete(
        &mut self,
        res: &ResourceType,
        ns: Option<&str>,
        name: &str,
        options: &Value,
    ) -> Result<Value, ApiError> {
        let old = self.get(res, ns, name)?;
        if let Some(pre) = options.get("preconditions") {
            let rv_ok = pre
                .get("resourceVersion")
                .and_then(Value::as_str)
                .is_none_or(|rv| Some(rv) == meta_str(&old, "resourceVersion"));
            let uid_ok = pre
                .get("uid")
                .and_then(Value::as_str)
                .is_none_or(|u| Some(u) == meta_str(&old, "uid"));
            if !rv_ok || !uid_ok {
                return Err(ApiError::conflict(&res.plural, &res.group, name));
            }
        }
        if has_finalizers(&old) {
            if meta(&old).get("deletionTimestamp").is_some() {
                return Ok(old);
            }
            let mut new = old;
            let m = meta_mut(&mut new);
            m.insert("deletionTimestamp".into(), json!(now()));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
            return Ok(self.commit_as(res, EventType::Modified, new));
        }
        Ok(self.remove(res, old))
    }

    /// DELETE on a collection: deletes every matching object.
    pub fn delete_collection(
        &mut self,
        res: &ResourceType,
        ns: Option<&str>,
        params: &ListParams,
    ) -> Result<Vec<Value>, ApiError> {
        let (_, items) = self.list(res, ns, params);
        let mut out = Vec::new();
        for o in items {
            let name = meta_str(&o, "name").unwrap_or("").to_string();
            let ns = meta_str(&o, "namespace").map(str::to_string);
            out.push(self.delete(res, ns.as_deref(), &name, &Value::Null)?);
        }
        Ok(out)
    }
}

/// A CEL rule failure as kube-apiserver reports it: the field, the type of
/// the value (`Invalid value: "string"`), the rule's message.
fn cel_cause(obj: &Value, e: &kube::core::cel::ValidationError) -> super::error::Cause {
    let expr = if e.field_path.is_empty() {
        String::new()
    } else {
        format!(".{}", e.field_path)
    };
    let ty = if expr.is_empty() {
        "object"
    } else {
        super::jsonpath::find_first(&expr, obj).map_or("object", schema::type_name)
    };
    super::error::Cause {
        reason: "FieldValueInvalid",
        field: e.field_path.clone(),
        message: format!("Invalid value: {ty:?}: {}", e.message),
    }
}

//! The kinds the embedded API server serves: built-in ones with their
//! k8s-openapi type as validator, and custom resources registered by posting
//! a CustomResourceDefinition.
//!
//! Owns the mapping between URL (group, version, plural) and kind, scope,
//! subresources and validation. It must never touch stored objects.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Event as CoreEvent, Namespace, Node, Pod, Secret, Service,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event as EventsEvent;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Checks that a body is a well-formed object of a built-in kind.
pub type BuiltinCheck = fn(&Value) -> Result<(), String>;

/// How objects of a kind are validated before they are stored.
#[derive(Clone, Debug)]
pub enum Validation {
    /// Must deserialize into this k8s-openapi type (400 otherwise).
    Builtin(BuiltinCheck),
    /// A custom resource: schema defaults applied, then its CEL rules (422).
    Custom {
        /// The storage version's `openAPIV3Schema`, if the CRD has one.
        schema: Option<Value>,
    },
}

/// How a kind's objects are kept in the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// Under the kind's own id, in the served form.
    Own,
    /// As core/v1 Events, converted on the way in and out: events.k8s.io/v1
    /// Events and core/v1 Events are one store, as in kube-apiserver.
    CoreEvents,
}

/// One `additionalPrinterColumns` entry of a CRD version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrinterColumn {
    /// Column header (kubectl upper-cases it).
    pub name: String,
    /// `string`, `integer`, `number`, `boolean` or `date`.
    pub type_: String,
    /// OpenAPI format hint, passed through.
    pub format: String,
    /// Column description, passed through.
    pub description: String,
    /// 0: always shown; 1 and above: only with `-o wide`.
    pub priority: i64,
    /// JSONPath of the cell's value.
    pub json_path: String,
}

/// One resource type the server serves.
#[derive(Clone, Debug)]
pub struct ResourceType {
    /// API group; empty for core/v1.
    pub group: String,
    /// The version objects are stored and returned in.
    pub version: String,
    /// Every served version (custom resources may list several; no conversion is done).
    pub versions: Vec<String>,
    /// Kind, e.g. `Service`.
    pub kind: String,
    /// URL plural, e.g. `services`.
    pub plural: String,
    /// Singular name for discovery.
    pub singular: String,
    /// Short names for discovery (`svc`).
    pub short_names: Vec<String>,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Has a `/status` subresource: main writes keep status, status writes keep the rest.
    pub status_subresource: bool,
    /// Whether create drops a client-supplied status (Services, custom resources) or keeps it (Nodes).
    pub reset_status_on_create: bool,
    /// How bodies are validated.
    pub validation: Validation,
    /// Name of the CRD that registered this type, for unregistering on CRD delete.
    pub crd_name: Option<String>,
    /// Where and in which form objects are stored.
    pub storage: Storage,
    /// A custom resource's printer columns (storage version), for Tables.
    pub printer_columns: Vec<PrinterColumn>,
}

impl ResourceType {
    /// Key under which objects of this type are stored: `group/plural`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.group, self.plural)
    }

    /// Key under which objects are stored: `/events` for both Event APIs,
    /// [`ResourceType::id`] otherwise.
    pub fn storage_id(&self) -> String {
        match self.storage {
            Storage::Own => self.id(),
            Storage::CoreEvents => "/events".into(),
        }
    }

    /// The stored form of a served object.
    pub fn to_storage(&self, obj: Value) -> Value {
        match self.storage {
            Storage::Own => obj,
            Storage::CoreEvents => super::events::to_core(&obj),
        }
    }

    /// The served form of a stored object.
    pub fn from_storage(&self, obj: &Value) -> Value {
        match self.storage {
            Storage::Own => obj.clone(),
            Storage::CoreEvents => super::events::to_events(obj),
        }
    }

    /// A field-selector path as it applies to this kind's served form:
    /// Event paths of either API are accepted by both.
    pub fn field_path(&self, path: &str) -> String {
        match (self.group.as_str(), self.kind.as_str()) {
            ("", "Event") => super::events::field_path_for(path, false),
            ("events.k8s.io", "Event") => super::events::field_path_for(path, true),
            _ => path.to_string(),
        }
    }

    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

fn check<T: DeserializeOwned>(v: &Value) -> Result<(), String> {
    serde_json::from_value::<T>(v.clone())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[allow(clippy::too_many_arguments)]
fn builtin(
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    short: &[&str],
    namespaced: bool,
    status: bool,
    reset_status: bool,
    check: BuiltinCheck,
) -> ResourceType {
    ResourceType {
        group: group.into(),
        version: version.into(),
        versions: vec![version.into()],
        kind: kind.into(),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        short_names: short.iter().map(|s| s.to_string()).collect(),
        namespaced,
        status_subresource: status,
        reset_status_on_create: reset_status,
        validation: Validation::Builtin(check),
        crd_name: None,
        storage: if group == "events.k8s.io" {
            Storage::CoreEvents
        } else {
            Storage::Own
        },
        printer_columns: Vec::new(),
    }
}

/// The built-in kinds l2lb and its tests use.
pub fn builtins() -> Vec<ResourceType> {
    vec![
        builtin(
            "",
            "v1",
            "Namespace",
            "namespaces",
            &["ns"],
            false,
            true,
            false,
            check::<Namespace>,
        ),
        builtin(
            "",
            "v1",
            "Service",
            "services",
            &["svc"],
            true,
            true,
            true,
            check::<Service>,
        ),
        builtin(
            "",
            "v1",
            "Node",
            "nodes",
            &["no"],
            false,
            true,
            false,
            check::<Node>,
        ),
        builtin(
            "",
            "v1",
            "Pod",
            "pods",
            &["po"],
            true,
            true,
            false,
            check::<Pod>,
        ),
        builtin(
            "",
            "v1",
            "Event",
            "events",
            &["ev"],
            true,
            false,
            false,
            check::<CoreEvent>,
        ),
        builtin(
            "",
            "v1",
            "ConfigMap",
            "configmaps",
            &["cm"],
            true,
            false,
            false,
            check::<ConfigMap>,
        ),
        builtin(
            "",
            "v1",
            "Secret",
            "secrets",
            &[],
            true,
            false,
            false,
            check::<Secret>,
        ),
        builtin(
            "discovery.k8s.io",
            "v1",
            "EndpointSlice",
            "endpointslices",
            &[],
            true,
            false,
            false,
            check::<EndpointSlice>,
        ),
        builtin(
            "coordination.k8s.io",
            "v1",
            "Lease",
            "leases",
            &[],
            true,
            false,
            false,
            check::<Lease>,
        ),
        builtin(
            "events.k8s.io",
            "v1",
            "Event",
            "events",
            &["ev"],
            true,
            false,
            false,
            check::<EventsEvent>,
        ),
        builtin(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            &["crd", "crds"],
            false,
            true,
            false,
            check::<CustomResourceDefinition>,
        ),
    ]
}

/// The resource type a CRD defines, or why it cannot be served.
pub fn from_crd(crd: &CustomResourceDefinition) -> Result<ResourceType, String> {
    let spec = &crd.spec;
    let served: Vec<_> = spec.versions.iter().filter(|v| v.served).collect();
    let storage = spec
        .versions
        .iter()
        .find(|v| v.storage)
        .or(served.first().copied())
        .ok_or("spec.versions: at least one version must be served")?;
    let schema = storage
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .map(serde_json::to_value)
        .transpose()
        .map_err(|e| e.to_string())?;
    let status_subresource = storage
        .subresources
        .as_ref()
        .is_some_and(|s| s.status.is_some());
    let names = &spec.names;
    Ok(ResourceType {
        group: spec.group.clone(),
        version: storage.name.clone(),
        versions: served.iter().map(|v| v.name.clone()).collect(),
        kind: names.kind.clone(),
        plural: names.plural.clone(),
        singular: names
            .singular
            .clone()
            .unwrap_or_else(|| names.kind.to_lowercase()),
        short_names: names.short_names.clone().unwrap_or_default(),
        namespaced: spec.scope == "Namespaced",
        status_subresource,
        reset_status_on_create: status_subresource,
        validation: Validation::Custom { schema },
        crd_name: crd.metadata.name.clone(),
        storage: Storage::Own,
        printer_columns: storage
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| PrinterColumn {
                name: c.name.clone(),
                type_: c.type_.clone(),
                format: c.format.clone().unwrap_or_default(),
                description: c.description.clone().unwrap_or_default(),
                priority: i64::from(c.priority.unwrap_or(0)),
                json_path: c.json_path.clone(),
            })
            .collect(),
    })
}

/// Every served type, looked up by group and plural.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    /// By `group/plural` ([`ResourceType::id`]).
    types: BTreeMap<String, Arc<ResourceType>>,
}

impl Registry {
    /// A registry holding the built-in kinds.
    pub fn with_builtins() -> Self {
        let mut r = Self::default();
        for t in builtins() {
            r.insert(t);
        }
        r
    }

    /// Adds or replaces a type.
    pub fn insert(&mut self, t: ResourceType) {
        self.types.insert(t.id(), Arc::new(t));
    }

    /// Removes the types a CRD registered; returns their ids.
    pub fn remove_crd(&mut self, crd_name: &str) -> Vec<String> {
        let ids: Vec<String> = self
            .types
            .iter()
            .filter(|(_, t)| t.crd_name.as_deref() == Some(crd_name))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &ids {
            self.types.remove(id);
        }
        ids
    }

    /// The type served at `group/version/plural`.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types
            .get(&format!("{group}/{plural}"))
            .filter(|t| t.versions.iter().any(|v| v == version))
            .cloned()
    }

    /// All types, ordered by group then plural.
    pub fn all(&self) -> impl Iterator<Item = &Arc<ResourceType>> {
        self.types.values()
    }
}

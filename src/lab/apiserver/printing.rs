//! Server-side printing: the `meta.k8s.io/v1` `Table` kube-apiserver returns
//! when a client sends `Accept: application/json;as=Table;g=meta.k8s.io;v=v1`,
//! which is how `kubectl get` learns its columns.
//!
//! Owns the columns and cells of each served kind, worded as kube-apiserver's
//! printers (`pkg/printers/internalversion`) word them, and the CRD
//! `additionalPrinterColumns` evaluation. Like the real server it always
//! fills every column (the `-o wide` ones have priority 1 and kubectl hides
//! them). Pure: objects and the current time in, a Table out.

use serde_json::{Value, json};

use super::jsonpath;
use super::resources::{PrinterColumn, ResourceType};

/// What each row carries besides its cells (`?includeObject=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IncludeObject {
    /// No object.
    None,
    /// `PartialObjectMetadata` (the default): kubectl reads namespace and labels from it.
    #[default]
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    /// Reads `includeObject=None|Metadata|Object`.
    pub fn from_query(v: Option<&str>) -> Self {
        match v {
            Some("None") => Self::None,
            Some("Object") => Self::Object,
            _ => Self::Metadata,
        }
    }
}

/// Whether an `Accept` header asks for a Table, and in which meta.k8s.io
/// version (`v1` or `v1beta1`). The first acceptable entry wins, as on the
/// real server; kubectl lists the Table forms before plain JSON.
pub fn wants_table(accept: &str) -> Option<&'static str> {
    for entry in accept.split(',') {
        let mut parts = entry.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        if media != "application/json" && media != "*/*" {
            continue;
        }
        let params: Vec<(&str, &str)> = parts.filter_map(|p| p.split_once('=')).collect();
        let get = |k: &str| params.iter().find(|(pk, _)| *pk == k).map(|(_, v)| *v);
        match (get("as"), get("g"), get("v")) {
            (None, _, _) => return None,
            (Some("Table"), Some("meta.k8s.io"), Some("v1")) => return Some("v1"),
            (Some("Table"), Some("meta.k8s.io"), Some("v1beta1")) => return Some("v1beta1"),
            _ => continue,
        }
    }
    None
}

/// kube's `duration.HumanDuration`: `45s`, `3m20s`, `5h`, `2d3h`, ...
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let d = (hours / 24) % 365;
        return if d == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{d}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// Age of an RFC 3339 timestamp, or `<unknown>` when absent or unparsable.
fn since(ts: Option<&str>, now: jiff::Timestamp) -> String {
    match ts.and_then(|t| t.parse::<jiff::Timestamp>().ok()) {
        Some(t) => human_duration(now.duration_since(t).as_secs()),
        None => "<unknown>".into(),
    }
}

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn arr<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn or_none(s: String) -> String {
    if s.is_empty() { "<none>".into() } else { s }
}

/// A column: name, type, description, priority (1 = `-o wide` only).
fn col(name: &str, ty: &str, priority: u32, description: &str) -> Value {
    let mut c = json!({"name": name, "type": ty, "format": "", "description": description, "priority": priority});
    if name == "Name" {
        c["format"] = json!("name");
    }
    c
}

const NAME_DOC: &str = "Name must be unique within a namespace. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DOC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// Columns and a row function for a built-in kind, or `None` for kinds
/// printed by the default convertor.
type RowFn = fn(&Value, jiff::Timestamp) -> Vec<Value>;

fn builtin_printer(res: &ResourceType) -> Option<(Vec<Value>, RowFn)> {
    let name = col("Name", "string", 0, NAME_DOC);
    let age = col("Age", "string", 0, AGE_DOC);
    Some(match (res.group.as_str(), res.kind.as_str()) {
        ("", "Service") => (
            vec![
                name,
                col(
                    "Type",
                    "string",
                    0,
                    "type determines how the Service is exposed.",
                ),
                col(
                    "Cluster-IP",
                    "string",
                    0,
                    "clusterIP is the IP address of the service.",
                ),
                col(
                    "External-IP",
                    "string",
                    0,
                    "externalIPs and the load balancer's ingress points.",
                ),
                col(
                    "Port(s)",
                    "string",
                    0,
                    "The list of ports that are exposed by this service.",
                ),
                age,
                col(
                    "Selector",
                    "string",
                    1,
                    "Route service traffic to pods with label keys and values matching this selector.",
                ),
            ],
            service_row,
        ),
        ("", "Namespace") => (
            vec![
                name,
                col("Status", "string", 0, "The status of the namespace"),
                age,
            ],
            |o, now| {
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(s(o, "/status/phase")),
                    json!(since(
                        o.pointer("/metadata/creationTimestamp")
                            .and_then(Value::as_str),
                        now
                    )),
                ]
            },
        ),
        ("", "Node") => (
            vec![
                name,
                col("Status", "string", 0, "The status of the node"),
                col("Roles", "string", 0, "The roles of the node"),
                age,
                col(
                    "Version",
                    "string",
                    0,
                    "Kubelet Version reported by the node.",
                ),
                col(
                    "Internal-IP",
                    "string",
                    1,
                    "List of addresses reachable to the node.",
                ),
                col(
                    "External-IP",
                    "string",
                    1,
                    "List of addresses reachable to the node.",
                ),
                col("OS-Image", "string", 1, "OS Image reported by the node."),
                col(
                    "Kernel-Version",
                    "string",
                    1,
                    "Kernel Version reported by the node.",
                ),
                col(
                    "Container-Runtime",
                    "string",
                    1,
                    "Container Runtime Version reported by the node.",
                ),
            ],
            node_row,
        ),
        ("", "Pod") => (
            vec![
                name,
                col(
                    "Ready",
                    "string",
                    0,
                    "The aggregate readiness state of this pod for accepting traffic.",
                ),
                col(
                    "Status",
                    "string",
                    0,
                    "The aggregate status of the containers in this pod.",
                ),
                col(
                    "Restarts",
                    "string",
                    0,
                    "The number of times the containers in this pod have been restarted.",
                ),
                age,
                col("IP", "string", 1, "IP address allocated to the pod."),
                col(
                    "Node",
                    "string",
                    1,
                    "Name of the Node this pod is running on.",
                ),
            ],
            pod_row,
        ),
        ("", "Event") | ("events.k8s.io", "Event") => (
            vec![
                col(
                    "Last Seen",
                    "string",
                    0,
                    "The time the event was last seen.",
                ),
                col(
                    "Type",
                    "string",
                    0,
                    "Type of this event (Normal, Warning), new types could be added in the future.",
                ),
                col("Reason", "string", 0, "The reason the event was generated."),
                col("Object", "string", 0, "The object the event is about."),
                col(
                    "Subobject",
                    "string",
                    1,
                    "The subobject (fieldPath) the event is about.",
                ),
                col("Source", "string", 1, "The component reporting this event."),
                col(
                    "Message",
                    "string",
                    0,
                    "A human-readable description of the status of this operation.",
                ),
                col(
                    "First Seen",
                    "string",
                    1,
                    "The time the event was first seen.",
                ),
                col(
                    "Count",
                    "string",
                    1,
                    "The number of times this event has occurred.",
                ),
                col("Name", "string", 1, NAME_DOC),
            ],
            event_row,
        ),
        ("", "ConfigMap") => (
            vec![
                name,
                col(
                    "Data",
                    "string",
                    0,
                    "Number of keys in the data and binaryData maps.",
                ),
                age,
            ],
            |o, now| {
                let n = ["/data", "/binaryData"]
                    .iter()
                    .filter_map(|p| o.pointer(p).and_then(Value::as_object))
                    .map(|m| m.len())
                    .sum::<usize>();
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(n),
                    json!(since(
                        o.pointer("/metadata/creationTimestamp")
                            .and_then(Value::as_str),
                        now
                    )),
                ]
            },
        ),
        ("discovery.k8s.io", "EndpointSlice") => (
            vec![
                name,
                col(
                    "AddressType",
                    "string",
                    0,
                    "The type of addresses carried by this EndpointSlice.",
                ),
                col("Ports", "string", 0, "Ports exposed by the endpoints."),
                col("Endpoints", "string", 0, "Addresses of the endpoints."),
                age,
            ],
            endpointslice_row,
        ),
        ("coordination.k8s.io", "Lease") => (
            vec![
                name,
                col("Holder", "string", 0, "The holder of the lease."),
                age,
            ],
            |o, now| {
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(s(o, "/spec/holderIdentity")),
                    json!(since(
                        o.pointer("/metadata/creationTimestamp")
                            .and_then(Value::as_str),
                        now
                    )),
                ]
            },
        ),
        _ => return None,
    })
}

fn service_row(o: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let ty = s(o, "/spec/type");
    let cluster_ip = arr(o, "/spec/clusterIPs")
        .first()
        .and_then(Value::as_str)
        .unwrap_or("<none>");
    let external: Vec<&str> = arr(o, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let external_ip = match ty {
        "ClusterIP" | "NodePort" => or_none(external.join(",")),
        "LoadBalancer" => {
            // A sorted set of ingress IPs (or hostnames), then spec.externalIPs.
            let mut lb: Vec<&str> = arr(o, "/status/loadBalancer/ingress")
                .iter()
                .filter_map(|i| {
                    i.get("ip")
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                        .or_else(|| i.get("hostname").and_then(Value::as_str))
                })
                .filter(|s| !s.is_empty())
                .collect();
            lb.sort_unstable();
            lb.dedup();
            lb.extend(external);
            if lb.is_empty() {
                "<pending>".into()
            } else {
                lb.join(",")
            }
        }
        "ExternalName" => s(o, "/spec/externalName").to_string(),
        _ => "<unknown>".into(),
    };
    let ports: Vec<String> = arr(o, "/spec/ports")
        .iter()
        .map(|p| {
            let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            match p.get("nodePort").and_then(Value::as_i64) {
                Some(np) if np > 0 => format!("{port}:{np}/{proto}"),
                _ => format!("{port}/{proto}"),
            }
        })
        .collect();
    let mut selector: Vec<String> = o
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    selector.sort();
    vec![
        json!(s(o, "/metadata/name")),
        json!(ty),
        json!(cluster_ip),
        json!(external_ip),
        json!(or_none(ports.join(","))),
        json!(since(
            o.pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str),
            now
        )),
        json!(or_none(selector.join(","))),
    ]
}

fn node_row(o: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let ready = arr(o, "/status/conditions")
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"));
    let mut status = match ready.and_then(|c| c.get("status")).and_then(Value::as_str) {
        Some("True") => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if o.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<String> = o
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| {
                    if let Some(r) = k.strip_prefix("node-role.kubernetes.io/") {
                        Some(r.to_string())
                    } else if k == "kubernetes.io/role" {
                        v.as_str().map(str::to_string)
                    } else {
                        None
                    }
                })
                .filter(|r| !r.is_empty())
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    let address = |ty: &str| {
        or_none(
            arr(o, "/status/addresses")
                .iter()
                .find(|a| a.get("type").and_then(Value::as_str) == Some(ty))
                .and_then(|a| a.get("address"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        )
    };
    let info = |k: &str| {
        let v = s(o, &format!("/status/nodeInfo/{k}"));
        if v.is_empty() {
            "<unknown>".to_string()
        } else {
            v.to_string()
        }
    };
    vec![
        json!(s(o, "/metadata/name")),
        json!(status),
        json!(or_none(roles.join(","))),
        json!(since(
            o.pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str),
            now
        )),
        json!(s(o, "/status/nodeInfo/kubeletVersion")),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(info("osImage")),
        json!(info("kernelVersion")),
        json!(info("containerRuntimeVersion")),
    ]
}

fn pod_row(o: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let containers = arr(o, "/spec/containers").len();
    let statuses = arr(o, "/status/containerStatuses");
    let ready = statuses
        .iter()
        .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
        .count();
    let restarts: i64 = statuses
        .iter()
        .filter_map(|c| c.get("restartCount").and_then(Value::as_i64))
        .sum();
    // The first waiting or terminated container reason wins over the phase, as in kubectl.
    let reason = statuses.iter().find_map(|c| {
        c.pointer("/state/waiting/reason")
            .or_else(|| c.pointer("/state/terminated/reason"))
            .and_then(Value::as_str)
    });
    let mut status = reason
        .or_else(|| o.pointer("/status/reason").and_then(Value::as_str))
        .unwrap_or_else(|| s(o, "/status/phase"))
        .to_string();
    if status.is_empty() {
        status = "Pending".into();
    }
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        status = "Terminating".into();
    }
    vec![
        json!(s(o, "/metadata/name")),
        json!(format!("{ready}/{containers}")),
        json!(status),
        json!(restarts.to_string()),
        json!(since(
            o.pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str),
            now
        )),
        json!(or_none(s(o, "/status/podIP").to_string())),
        json!(or_none(s(o, "/spec/nodeName").to_string())),
    ]
}

/// Rows of core/v1 Events (events.k8s.io Events are printed after conversion to core form).
fn event_row(o: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let ts = |p: &str| {
        o.pointer(p)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let first = ts("/firstTimestamp").or_else(|| ts("/eventTime"));
    let first_seen = since(first, now);
    let mut last_seen = match ts("/lastTimestamp") {
        Some(t) => since(Some(t), now),
        None => first_seen.clone(),
    };
    let mut count = o.get("count").and_then(Value::as_i64).unwrap_or(0);
    if o.get("series").is_some_and(Value::is_object) {
        last_seen = since(ts("/series/lastObservedTime"), now);
        count = o
            .pointer("/series/count")
            .and_then(Value::as_i64)
            .unwrap_or(0);
    } else if count == 0 {
        // Singleton events of the new API carry no count.
        count = 1;
    }
    let kind = s(o, "/involvedObject/kind").to_lowercase();
    let target = match s(o, "/involvedObject/name") {
        "" => kind,
        name => format!("{kind}/{name}"),
    };
    let component = match s(o, "/source/component") {
        "" => s(o, "/reportingComponent"),
        c => c,
    };
    let host = s(o, "/source/host");
    let source = match (component, host) {
        ("", _) => "<none>".to_string(),
        (c, "") => c.to_string(),
        (c, h) => format!("{c}, {h}"),
    };
    vec![
        json!(last_seen),
        json!(s(o, "/type")),
        json!(s(o, "/reason")),
        json!(target),
        json!(s(o, "/involvedObject/fieldPath")),
        json!(source),
        json!(s(o, "/message").trim()),
        json!(first_seen),
        json!(count),
        json!(s(o, "/metadata/name")),
    ]
}

fn endpointslice_row(o: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let ports: Vec<String> = arr(o, "/ports")
        .iter()
        .filter_map(|p| p.get("port").and_then(Value::as_i64))
        .map(|p| p.to_string())
        .collect();
    let addrs: Vec<&str> = arr(o, "/endpoints")
        .iter()
        .flat_map(|e| arr(e, "/addresses").iter().filter_map(Value::as_str))
        .collect();
    let endpoints = match addrs.len() {
        0 => "<unset>".to_string(),
        n if n > 3 => format!("{} + {} more...", addrs[..3].join(","), n - 3),
        _ => addrs.join(","),
    };
    vec![
        json!(s(o, "/metadata/name")),
        json!(s(o, "/addressType")),
        json!(if ports.is_empty() {
            "<unset>".to_string()
        } else {
            ports.join(",")
        }),
        json!(endpoints),
        json!(since(
            o.pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str),
            now
        )),
    ]
}

/// The cell of one `additionalPrinterColumns` entry, as apiextensions'
/// table convertor computes it: strings print through JSONPath (lists and
/// maps as compact JSON), other types are typed values, dates are ages.
fn crd_cell(column: &PrinterColumn, obj: &Value, now: jiff::Timestamp) -> Value {
    let Some(value) = jsonpath::find_first(&column.json_path, obj) else {
        return Value::Null;
    };
    match column.type_.as_str() {
        "string" => match value {
            Value::String(s) => json!(s),
            Value::Array(_) | Value::Object(_) => json!(value.to_string()),
            Value::Null => Value::Null,
            other => json!(other.to_string()),
        },
        "integer" => value
            .as_i64()
            .or_else(|| value.as_f64().map(|f| f as i64))
            .map_or(Value::Null, |i| json!(i)),
        "number" => value.as_f64().map_or(Value::Null, |f| json!(f)),
        "boolean" => value.as_bool().map_or(Value::Null, |b| json!(b)),
        "date" => match value.as_str() {
            Some(t) => match t.parse::<jiff::Timestamp>() {
                Ok(t) => json!(human_duration(now.duration_since(t).as_secs())),
                Err(_) => json!("<invalid>"),
            },
            None => Value::Null,
        },
        _ => Value::Null,
    }
}

/// Columns and cells for a kind without a dedicated printer: a custom
/// resource by its printer columns (Name and Age when it has none), a CRD
/// by name and creation time (the default table convertor).
fn generic(
    res: &ResourceType,
    objects: &[&Value],
    now: jiff::Timestamp,
) -> (Vec<Value>, Vec<Vec<Value>>) {
    if res.crd_name.is_none() {
        let cols = vec![
            col("Name", "string", 0, NAME_DOC),
            json!({"name": "Created At", "type": "date", "format": "", "description": AGE_DOC, "priority": 0}),
        ];
        let rows = objects
            .iter()
            .map(|o| {
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(s(o, "/metadata/creationTimestamp")),
                ]
            })
            .collect();
        return (cols, rows);
    }
    let default_age = [PrinterColumn {
        name: "Age".into(),
        type_: "date".into(),
        format: String::new(),
        description: AGE_DOC.into(),
        priority: 0,
        json_path: ".metadata.creationTimestamp".into(),
    }];
    let columns: &[PrinterColumn] = if res.printer_columns.is_empty() {
        &default_age
    } else {
        &res.printer_columns
    };
    let mut cols = vec![col("Name", "string", 0, NAME_DOC)];
    cols.extend(columns.iter().map(|c| {
        json!({"name": c.name, "type": c.type_, "format": c.format,
               "description": c.description, "priority": c.priority})
    }));
    let rows = objects
        .iter()
        .map(|o| {
            let mut cells = vec![json!(s(o, "/metadata/name"))];
            cells.extend(columns.iter().map(|c| crd_cell(c, o, now)));
            cells
        })
        .collect();
    (cols, rows)
}

/// The Table of `objects` (already in the kind's served form).
pub fn table(
    res: &ResourceType,
    objects: &[&Value],
    rv: Option<u64>,
    table_version: &str,
    include: IncludeObject,
    now: jiff::Timestamp,
) -> Value {
    let (columns, cells): (Vec<Value>, Vec<Vec<Value>>) = match builtin_printer(res) {
        Some((cols, row)) => {
            let rows = objects
                .iter()
                .map(|o| {
                    // The events.k8s.io form is printed as its core/v1 equivalent.
                    if res.group == "events.k8s.io" {
                        row(&super::events::to_core(o), now)
                    } else {
                        row(o, now)
                    }
                })
                .collect();
            (cols, rows)
        }
        None => generic(res, objects, now),
    };
    let rows: Vec<Value> = objects
        .iter()
        .zip(cells)
        .map(|(o, cells)| {
            let mut row = json!({"cells": cells});
            match include {
                IncludeObject::None => {}
                IncludeObject::Object => row["object"] = (*o).clone(),
                IncludeObject::Metadata => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": format!("meta.k8s.io/{table_version}"),
                        "metadata": o.get("metadata").cloned().unwrap_or(json!({})),
                    });
                }
            }
            row
        })
        .collect();
    let mut meta = json!({});
    if let Some(rv) = rv {
        meta["resourceVersion"] = json!(rv.to_string());
    }
    json!({
        "kind": "Table",
        "apiVersion": format!("meta.k8s.io/{table_version}"),
        "metadata": meta,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::apiserver::resources::builtins;

    fn now() -> jiff::Timestamp {
        "2026-01-01T01:00:00Z".parse().unwrap()
    }

    fn builtin(kind: &str) -> ResourceType {
        builtins()
            .into_iter()
            .find(|t| t.kind == kind && t.group.is_empty())
            .unwrap()
    }

    #[test]
    fn human_durations_match_kubernetes() {
        assert_eq!(human_duration(45), "45s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(200), "3m20s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 600), "3h10m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(3 * 86400 + 3600), "3d1h");
        assert_eq!(human_duration(-5), "<invalid>");
    }

    #[test]
    fn accept_header_selects_table() {
        assert_eq!(
            wants_table(
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
            ),
            Some("v1")
        );
        assert_eq!(wants_table("application/json"), None);
        assert_eq!(
            wants_table("application/json;as=Table;v=v1beta1;g=meta.k8s.io"),
            Some("v1beta1")
        );
    }

    #[test]
    fn load_balancer_service_row_shows_ingress_and_node_ports() {
        let svc = json!({"metadata": {"name": "demo", "creationTimestamp": "2026-01-01T00:59:00Z"},
            "spec": {"type": "LoadBalancer", "clusterIPs": ["198.19.128.10"],
                     "ports": [{"port": 80, "protocol": "TCP", "nodePort": 31000}],
                     "selector": {"app": "demo"}},
            "status": {"loadBalancer": {"ingress": [{"ip": "198.18.0.100"}]}}});
        let t = table(
            &builtin("Service"),
            &[&svc],
            Some(7),
            "v1",
            IncludeObject::Metadata,
            now(),
        );
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "demo",
                "LoadBalancer",
                "198.19.128.10",
                "198.18.0.100",
                "80:31000/TCP",
                "60s",
                "app=demo"
            ])
        );
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        let pending =
            json!({"metadata": {"name": "p"}, "spec": {"type": "LoadBalancer", "ports": []}});
        let t = table(
            &builtin("Service"),
            &[&pending],
            None,
            "v1",
            IncludeObject::None,
            now(),
        );
        assert_eq!(t["rows"][0]["cells"][3], "<pending>");
        assert_eq!(t["rows"][0]["cells"][4], "<none>");
    }

    #[test]
    fn event_row_names_the_object() {
        let ev = json!({"metadata": {"name": "demo.1"}, "involvedObject": {"kind": "Service", "name": "demo"},
            "reason": "IPAllocated", "type": "Normal", "message": "Assigned IP ",
            "eventTime": "2026-01-01T00:58:00.000000Z", "reportingComponent": "l2lb-controller"});
        let t = table(
            &builtin("Event"),
            &[&ev],
            None,
            "v1",
            IncludeObject::None,
            now(),
        );
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "2m",
                "Normal",
                "IPAllocated",
                "service/demo",
                "",
                "l2lb-controller",
                "Assigned IP",
                "2m",
                1,
                "demo.1"
            ])
        );
    }
}

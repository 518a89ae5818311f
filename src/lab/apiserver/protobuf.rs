//! Decoding of Kubernetes protobuf request bodies for the kinds kubectl
//! creates with its typed client (`kubectl create namespace`, `create
//! service`, `create configmap`): kubectl sends these as
//! `application/vnd.kubernetes.protobuf` and, unlike for CBOR, does not
//! retry in JSON when refused.
//!
//! Owns the wire decoding (the `k8s\0` envelope, `runtime.Unknown`, the
//! protobuf wire format) and field tables for Namespace, Service and
//! ConfigMap, with field numbers from kubernetes/api's and apimachinery's
//! `generated.proto`. Fields not in the tables (managedFields, status) are
//! skipped, which is what the server would drop or reset on create anyway.
//! Zero values of non-pointer Go fields (sent by gogo-protobuf) are left out,
//! as JSON's `omitempty` would. Pure.

use serde_json::{Map, Value, json};

/// How one field's bytes become JSON.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Bool,
    Msg(&'static [Field]),
    /// `metav1.Time`: seconds and nanos, to RFC 3339.
    Time,
    /// `intstr.IntOrString`: type, intVal, strVal.
    IntOrStr,
    /// `map<string, string>` (repeated key/value entries).
    MapStr,
}

/// One field of a message table.
struct Field {
    num: u64,
    name: &'static str,
    kind: Kind,
    repeated: bool,
    /// A pointer field in Go: present means set, even at its zero value.
    pointer: bool,
}

const fn f(num: u64, name: &'static str, kind: Kind) -> Field {
    Field {
        num,
        name,
        kind,
        repeated: false,
        pointer: false,
    }
}

const fn rep(num: u64, name: &'static str, kind: Kind) -> Field {
    Field {
        num,
        name,
        kind,
        repeated: true,
        pointer: false,
    }
}

const fn ptr(num: u64, name: &'static str, kind: Kind) -> Field {
    Field {
        num,
        name,
        kind,
        repeated: false,
        pointer: true,
    }
}

const OWNER_REFERENCE: &[Field] = &[
    f(5, "apiVersion", Kind::Str),
    f(1, "kind", Kind::Str),
    f(3, "name", Kind::Str),
    f(4, "uid", Kind::Str),
    ptr(6, "controller", Kind::Bool),
    ptr(7, "blockOwnerDeletion", Kind::Bool),
];

const OBJECT_META: &[Field] = &[
    f(1, "name", Kind::Str),
    f(2, "generateName", Kind::Str),
    f(3, "namespace", Kind::Str),
    f(5, "uid", Kind::Str),
    f(6, "resourceVersion", Kind::Str),
    f(7, "generation", Kind::Int),
    f(8, "creationTimestamp", Kind::Time),
    f(9, "deletionTimestamp", Kind::Time),
    ptr(10, "deletionGracePeriodSeconds", Kind::Int),
    f(11, "labels", Kind::MapStr),
    f(12, "annotations", Kind::MapStr),
    rep(13, "ownerReferences", Kind::Msg(OWNER_REFERENCE)),
    rep(14, "finalizers", Kind::Str),
];

const NAMESPACE_SPEC: &[Field] = &[rep(1, "finalizers", Kind::Str)];

const NAMESPACE: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "spec", Kind::Msg(NAMESPACE_SPEC)),
];

const SERVICE_PORT: &[Field] = &[
    f(1, "name", Kind::Str),
    f(2, "protocol", Kind::Str),
    ptr(6, "appProtocol", Kind::Str),
    f(3, "port", Kind::Int),
    f(4, "targetPort", Kind::IntOrStr),
    f(5, "nodePort", Kind::Int),
];

const CLIENT_IP_CONFIG: &[Field] = &[ptr(1, "timeoutSeconds", Kind::Int)];
const SESSION_AFFINITY_CONFIG: &[Field] = &[ptr(1, "clientIP", Kind::Msg(CLIENT_IP_CONFIG))];

const SERVICE_SPEC: &[Field] = &[
    rep(1, "ports", Kind::Msg(SERVICE_PORT)),
    f(2, "selector", Kind::MapStr),
    f(3, "clusterIP", Kind::Str),
    rep(18, "clusterIPs", Kind::Str),
    f(4, "type", Kind::Str),
    rep(5, "externalIPs", Kind::Str),
    f(7, "sessionAffinity", Kind::Str),
    f(8, "loadBalancerIP", Kind::Str),
    rep(9, "loadBalancerSourceRanges", Kind::Str),
    f(10, "externalName", Kind::Str),
    f(11, "externalTrafficPolicy", Kind::Str),
    f(12, "healthCheckNodePort", Kind::Int),
    f(13, "publishNotReadyAddresses", Kind::Bool),
    ptr(
        14,
        "sessionAffinityConfig",
        Kind::Msg(SESSION_AFFINITY_CONFIG),
    ),
    rep(19, "ipFamilies", Kind::Str),
    ptr(17, "ipFamilyPolicy", Kind::Str),
    ptr(20, "allocateLoadBalancerNodePorts", Kind::Bool),
    ptr(21, "loadBalancerClass", Kind::Str),
    ptr(22, "internalTrafficPolicy", Kind::Str),
    ptr(23, "trafficDistribution", Kind::Str),
];

const SERVICE: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "spec", Kind::Msg(SERVICE_SPEC)),
];

const CONFIG_MAP: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    ptr(4, "immutable", Kind::Bool),
    f(2, "data", Kind::MapStr),
];

const TYPE_META: &[Field] = &[f(1, "apiVersion", Kind::Str), f(2, "kind", Kind::Str)];

/// Why a body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// Not a `k8s\0`-prefixed envelope, or truncated bytes.
    #[error("malformed protobuf body")]
    Malformed,
    /// A kind this decoder has no field table for.
    #[error("no protobuf decoding for {0}")]
    Unsupported(String),
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.buf.split_first().ok_or(ProtoError::Malformed)?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ProtoError::Malformed)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        if self.buf.len() < n {
            return Err(ProtoError::Malformed);
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
}

/// One decoded wire value.
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn fields(buf: &[u8]) -> Result<Vec<(u64, Wire<'_>)>, ProtoError> {
    let mut r = Reader { buf };
    let mut out = Vec::new();
    while !r.buf.is_empty() {
        let key = r.varint()?;
        let value = match key & 7 {
            0 => Wire::Varint(r.varint()?),
            1 => {
                r.take(8)?;
                Wire::Fixed
            }
            2 => {
                let n = usize::try_from(r.varint()?).map_err(|_| ProtoError::Malformed)?;
                Wire::Bytes(r.take(n)?)
            }
            5 => {
                r.take(4)?;
                Wire::Fixed
            }
            _ => return Err(ProtoError::Malformed),
        };
        out.push((key >> 3, value));
    }
    Ok(out)
}

fn text(b: &[u8]) -> Result<String, ProtoError> {
    String::from_utf8(b.to_vec()).map_err(|_| ProtoError::Malformed)
}

/// Decodes one field value; `None` for a zero value to leave out.
fn value(kind: Kind, wire: &Wire<'_>, pointer: bool) -> Result<Option<Value>, ProtoError> {
    Ok(match (kind, wire) {
        (Kind::Str, Wire::Bytes(b)) => {
            let s = text(b)?;
            (pointer || !s.is_empty()).then(|| json!(s))
        }
        // Go's int32/int64 travel as two's-complement varints.
        (Kind::Int, Wire::Varint(v)) => (pointer || *v != 0).then(|| json!(*v as i64)),
        (Kind::Bool, Wire::Varint(v)) => (pointer || *v != 0).then(|| json!(*v != 0)),
        (Kind::Msg(table), Wire::Bytes(b)) => Some(message(table, b)?),
        (Kind::Time, Wire::Bytes(b)) => {
            let (mut secs, mut nanos) = (0i64, 0i64);
            for (n, w) in fields(b)? {
                match (n, w) {
                    (1, Wire::Varint(v)) => secs = v as i64,
                    (2, Wire::Varint(v)) => nanos = v as i64,
                    _ => {}
                }
            }
            if secs == 0 && nanos == 0 {
                None
            } else {
                let t = jiff::Timestamp::from_second(secs).map_err(|_| ProtoError::Malformed)?;
                Some(json!(t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()))
            }
        }
        (Kind::IntOrStr, Wire::Bytes(b)) => {
            let (mut ty, mut int, mut s) = (0u64, 0i64, String::new());
            for (n, w) in fields(b)? {
                match (n, w) {
                    (1, Wire::Varint(v)) => ty = v,
                    (2, Wire::Varint(v)) => int = v as i64,
                    (3, Wire::Bytes(b)) => s = text(b)?,
                    _ => {}
                }
            }
            Some(if ty == 1 { json!(s) } else { json!(int) })
        }
        _ => return Err(ProtoError::Malformed),
    })
}

fn message(table: &[Field], buf: &[u8]) -> Result<Value, ProtoError> {
    let mut out = Map::new();
    for (num, wire) in fields(buf)? {
        let Some(field) = table.iter().find(|f| f.num == num) else {
            continue;
        };
        if let Kind::MapStr = field.kind {
            let Wire::Bytes(entry) = wire else {
                return Err(ProtoError::Malformed);
            };
            let (mut k, mut v) = (String::new(), String::new());
            for (n, w) in fields(entry)? {
                match (n, w) {
                    (1, Wire::Bytes(b)) => k = text(b)?,
                    (2, Wire::Bytes(b)) => v = text(b)?,
                    _ => {}
                }
            }
            let map = out
                .entry(field.name)
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(m) = map.as_object_mut() {
                m.insert(k, json!(v));
            }
            continue;
        }
        if field.repeated {
            // Repeated values are never dropped, even when zero.
            let v = value(field.kind, &wire, true)?.unwrap_or(Value::Null);
            let list = out.entry(field.name).or_insert_with(|| json!([]));
            if let Some(a) = list.as_array_mut() {
                a.push(v);
            }
            continue;
        }
        match value(field.kind, &wire, field.pointer)? {
            Some(v) => {
                out.insert(field.name.to_string(), v);
            }
            None => {
                out.remove(field.name);
            }
        }
    }
    Ok(Value::Object(out))
}

/// Decodes a `k8s\0`-prefixed protobuf body of a Namespace, Service or
/// ConfigMap into its JSON form.
pub fn decode(body: &[u8]) -> Result<Value, ProtoError> {
    let unknown = body.strip_prefix(b"k8s\0").ok_or(ProtoError::Malformed)?;
    let (mut type_meta, mut raw) = (json!({}), &[][..]);
    for (n, w) in fields(unknown)? {
        match (n, w) {
            (1, Wire::Bytes(b)) => type_meta = message(TYPE_META, b)?,
            (2, Wire::Bytes(b)) => raw = b,
            _ => {}
        }
    }
    let api_version = type_meta["apiVersion"].as_str().unwrap_or("").to_string();
    let kind = type_meta["kind"].as_str().unwrap_or("").to_string();
    let table = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => NAMESPACE,
        ("v1", "Service") => SERVICE,
        ("v1", "ConfigMap") => CONFIG_MAP,
        _ => {
            return Err(ProtoError::Unsupported(format!(
                "{api_version}, Kind={kind}"
            )));
        }
    };
    let mut obj = message(table, raw)?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body kubectl 1.33 sends for `kubectl create namespace foo`
    /// (captured with `-v=8`).
    const CREATE_NAMESPACE_FOO: &[u8] = &[
        0x6b, 0x38, 0x73, 0x00, 0x0a, 0x0f, 0x0a, 0x02, 0x76, 0x31, 0x12, 0x09, 0x4e, 0x61, 0x6d,
        0x65, 0x73, 0x70, 0x61, 0x63, 0x65, 0x12, 0x1b, 0x0a, 0x13, 0x0a, 0x03, 0x66, 0x6f, 0x6f,
        0x12, 0x00, 0x1a, 0x00, 0x22, 0x00, 0x2a, 0x00, 0x32, 0x00, 0x38, 0x00, 0x42, 0x00, 0x12,
        0x00, 0x1a, 0x02, 0x0a, 0x00, 0x1a, 0x00, 0x22, 0x00,
    ];

    #[test]
    fn kubectl_create_namespace_body() {
        let v = decode(CREATE_NAMESPACE_FOO).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "foo"}, "spec": {}})
        );
    }

    fn field_bytes(num: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![((num << 3) | 2) as u8, payload.len() as u8];
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn service_with_ports_selector_and_pointer_false() {
        let mut port = field_bytes(1, b"80-80");
        port.extend(field_bytes(2, b"TCP"));
        port.extend([3 << 3, 80]);
        port.extend(field_bytes(4, &[1 << 3, 0, 2 << 3, 80]));
        let mut spec = field_bytes(1, &port);
        let mut entry = field_bytes(1, b"app");
        entry.extend(field_bytes(2, b"demo"));
        spec.extend(field_bytes(2, &entry));
        spec.extend(field_bytes(4, b"LoadBalancer"));
        // Field 20 needs a two-byte key.
        spec.extend([0xa0, 0x01, 0]);
        let mut raw = field_bytes(1, &field_bytes(1, b"demo"));
        raw.extend(field_bytes(2, &spec));
        let mut tm = field_bytes(1, b"v1");
        tm.extend(field_bytes(2, b"Service"));
        let mut body = b"k8s\0".to_vec();
        body.extend(field_bytes(1, &tm));
        body.extend(field_bytes(2, &raw));
        let v = decode(&body).unwrap();
        assert_eq!(
            v["spec"],
            json!({"ports": [{"name": "80-80", "protocol": "TCP", "port": 80, "targetPort": 80}],
                   "selector": {"app": "demo"}, "type": "LoadBalancer",
                   "allocateLoadBalancerNodePorts": false})
        );
        assert!(matches!(
            decode(b"k8s\0\x0a\x06\x0a\x04apps"),
            Err(ProtoError::Unsupported(_))
        ));
        assert!(matches!(decode(b"{}"), Err(ProtoError::Malformed)));
    }
}

//! Errors of the embedded API server as Kubernetes `Status` objects.
//!
//! Owns the mapping from a failed request to the HTTP code, `reason` and
//! `message` that a real API server would send, so kube-rs surfaces them as
//! `kube::Error::Api` with the same fields. It must never decide *whether* a
//! request fails; the store and the router do.

use serde_json::{Value, json};

/// A request the server refuses, rendered as a `Status` body.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code, repeated in the body's `code`.
    pub code: u16,
    /// Machine-readable reason (`NotFound`, `Conflict`, ...).
    pub reason: &'static str,
    /// Human-readable message, worded like the real API server's.
    pub message: String,
    /// `details.name`, `details.kind` and `details.group` where known
    /// (boxed: errors travel in every `Result` of the store).
    pub details: Option<Box<(String, String, String)>>,
    /// `details.causes`: the field errors of a 422, which kubectl prints one per line.
    pub causes: Vec<Cause>,
}

/// One field error of an invalid object, as in `details.causes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueNotSupported`, ...
    pub reason: &'static str,
    /// Path of the field, e.g. `spec.ports[0].port`.
    pub field: String,
    /// What is wrong, without the field: `Invalid value: 0: must be ...`.
    pub message: String,
}

impl Cause {
    /// `Invalid value: <value>: <detail>`; `value` is already rendered (quoted strings, bare numbers).
    pub fn invalid(field: impl Into<String>, value: impl std::fmt::Display, detail: &str) -> Self {
        Self {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: {value}: {detail}"),
        }
    }

    /// `Required value`, optionally with a detail.
    pub fn required(field: impl Into<String>, detail: &str) -> Self {
        Self {
            reason: "FieldValueRequired",
            field: field.into(),
            message: if detail.is_empty() {
                "Required value".to_string()
            } else {
                format!("Required value: {detail}")
            },
        }
    }

    /// `Unsupported value: "x": supported values: "a", "b"`.
    pub fn not_supported(field: impl Into<String>, value: &str, supported: &[&str]) -> Self {
        let list = supported
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        Self {
            reason: "FieldValueNotSupported",
            field: field.into(),
            message: format!("Unsupported value: {value:?}: supported values: {list}"),
        }
    }

    /// `Forbidden: <detail>`.
    pub fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        Self {
            reason: "FieldValueForbidden",
            field: field.into(),
            message: format!("Forbidden: {detail}"),
        }
    }

    /// `Duplicate value: <value>`.
    pub fn duplicate(field: impl Into<String>, value: impl std::fmt::Display) -> Self {
        Self {
            reason: "FieldValueDuplicate",
            field: field.into(),
            message: format!("Duplicate value: {value}"),
        }
    }

    /// `Too many: <n>: must have at most <max> items`.
    pub fn too_many(field: impl Into<String>, n: usize, max: u64) -> Self {
        Self {
            reason: "FieldValueTooMany",
            field: field.into(),
            message: format!("Too many: {n}: must have at most {max} items"),
        }
    }

    /// `Too long: may not be more than <max> bytes`.
    pub fn too_long(field: impl Into<String>, max: u64) -> Self {
        Self {
            reason: "FieldValueTooLong",
            field: field.into(),
            message: format!("Too long: may not be more than {max} bytes"),
        }
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
            causes: Vec::new(),
        }
    }

    fn with_details(mut self, name: &str, plural: &str, group: &str) -> Self {
        self.details = Some(Box::new((
            name.to_string(),
            plural.to_string(),
            group.to_string(),
        )));
        self
    }

    /// 404: `<plural>.<group> "<name>" not found`.
    pub fn not_found(plural: &str, group: &str, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(plural, group)),
        )
        .with_details(name, plural, group)
    }

    /// 404 for a path the server does not serve at all.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    /// 409 on create of an existing object.
    pub fn already_exists(plural: &str, group: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(plural, group)),
        )
        .with_details(name, plural, group)
    }

    /// 409 on a write with a stale `metadata.resourceVersion` or precondition.
    pub fn conflict(plural: &str, group: &str, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                qualified(plural, group)
            ),
        )
        .with_details(name, plural, group)
    }

    /// 422: the object fails validation (schema, CEL rules, immutable fields).
    pub fn invalid(kind: &str, group: &str, name: &str, why: &str) -> Self {
        let kind_q = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        Self::new(
            422,
            "Invalid",
            format!("{kind_q} \"{name}\" is invalid: {why}"),
        )
        .with_details(name, kind, group)
    }

    /// 422 listing every field error, worded as kube-apiserver does: one
    /// cause inline, several in brackets; kubectl prints the causes.
    pub fn invalid_causes(kind: &str, group: &str, name: &str, causes: Vec<Cause>) -> Self {
        let why = match causes.as_slice() {
            [one] => one.to_string(),
            many => format!(
                "[{}]",
                many.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let mut e = Self::invalid(kind, group, name, &why);
        e.causes = causes;
        e
    }

    /// 400: the request body or parameters cannot be understood.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 405: the verb is not supported on this path.
    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!(
                "the server does not allow this method ({method}) on the requested resource ({path})"
            ),
        )
    }

    /// 410: a watch asked for a resourceVersion older than the kept history.
    pub fn gone(rv: u64, oldest: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {rv} ({oldest})"),
        )
    }

    /// 415 for a body encoding the server cannot decode (protobuf, CBOR):
    /// what kube-apiserver sends for an unregistered media type, and what
    /// client-go answers by retrying the request in JSON.
    pub fn unsupported_body(ct: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml; got {ct}"
            ),
        )
    }

    /// 406: no representation the client accepts.
    pub fn not_acceptable(accept: &str) -> Self {
        Self::new(
            406,
            "NotAcceptable",
            format!(
                "only the following media types are accepted: application/json (asked for {accept})"
            ),
        )
    }

    /// 415: a patch content type the server does not know.
    pub fn unsupported_media_type(ct: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format: {ct}"),
        )
    }

    /// An injected failure with an arbitrary code (fault injection).
    pub fn injected(code: u16) -> Self {
        let reason = match code {
            500 => "InternalError",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            429 => "TooManyRequests",
            _ => "Unknown",
        };
        Self::new(code, reason, format!("injected failure (code {code})"))
    }

    /// The `Status` object a real API server would send.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            let (name, kind, group) = &**details;
            let mut d = json!({ "name": name, "kind": kind });
            if !group.is_empty() {
                d["group"] = json!(group);
            }
            if !self.causes.is_empty() {
                d["causes"] = self
                    .causes
                    .iter()
                    .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                    .collect();
            }
            s["details"] = d;
        }
        s
    }
}

/// `services` or `ipaddresspools.l2lb.io`, as the API server names resources in messages.
fn qualified(plural: &str, group: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

//! Patch bodies: JSON merge patch, JSON patch, strategic merge and
//! server-side apply, all reduced to functions `(old, body) -> new`.
//!
//! Simplifications (documented in the module, relied on by no production
//! path): strategic merge is a JSON merge patch after dropping `$`-directives
//! (so lists are replaced, not merged by key); server-side apply is also a
//! merge of the applied configuration into the live object, with no field
//! ownership or conflict detection. Pure: no I/O.

use serde_json::Value;

use super::error::ApiError;

/// The patch flavours, keyed by request `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/strategic-merge-patch+json`, treated as merge.
    Strategic,
    /// `application/apply-patch+yaml`, treated as merge; creates missing objects.
    Apply,
}

impl PatchKind {
    /// The flavour for a `Content-Type` header value.
    pub fn from_content_type(ct: &str) -> Result<Self, ApiError> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/json-patch+json" => Ok(Self::Json),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(Self::Apply),
            other => Err(ApiError::unsupported_media_type(other)),
        }
    }
}

/// Parses a patch body: YAML for apply (JSON is YAML), JSON otherwise.
pub fn parse_body(kind: PatchKind, body: &[u8]) -> Result<Value, ApiError> {
    if kind == PatchKind::Apply {
        serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid apply configuration: {e}")))
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid patch body: {e}")))
    }
}

/// Applies `patch` to `old`.
pub fn apply(old: &Value, kind: PatchKind, patch: &Value) -> Result<Value, ApiError> {
    let mut new = old.clone();
    match kind {
        PatchKind::Merge | PatchKind::Apply => json_patch::merge(&mut new, patch),
        PatchKind::Strategic => {
            let mut p = patch.clone();
            strip_directives(&mut p);
            json_patch::merge(&mut new, &p);
        }
        PatchKind::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(&mut new, &ops).map_err(|e| ApiError {
                code: 422,
                reason: "Invalid",
                message: format!("the JSON patch could not be applied: {e}"),
                details: None,
            })?;
        }
    }
    Ok(new)
}

/// Drops strategic-merge directives (`$patch`, `$setElementOrder/...`,
/// `$retainKeys`, `$deleteFromPrimitiveList/...`) that a merge patch would
/// otherwise store as fields.
fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            m.values_mut().for_each(strip_directives);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_removes_nulls_and_replaces_lists() {
        let old = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
        let new = apply(&old, PatchKind::Merge, &json!({"a": {"b": null}, "l": [3]})).unwrap();
        assert_eq!(new, json!({"a": {"c": 2}, "l": [3]}));
    }

    #[test]
    fn strategic_drops_directives() {
        let old = json!({"spec": {"ports": [{"port": 80}]}});
        let p =
            json!({"spec": {"$setElementOrder/ports": [{"port": 81}], "ports": [{"port": 81}]}});
        let new = apply(&old, PatchKind::Strategic, &p).unwrap();
        assert_eq!(new, json!({"spec": {"ports": [{"port": 81}]}}));
    }

    #[test]
    fn json_patch_test_failure_is_invalid() {
        let old = json!({"a": 1});
        let p = json!([{"op": "test", "path": "/a", "value": 2}]);
        assert_eq!(apply(&old, PatchKind::Json, &p).unwrap_err().code, 422);
    }

    #[test]
    fn content_types() {
        assert_eq!(
            PatchKind::from_content_type("application/apply-patch+yaml").unwrap(),
            PatchKind::Apply
        );
        assert_eq!(
            PatchKind::from_content_type("text/plain").unwrap_err().code,
            415
        );
    }
}

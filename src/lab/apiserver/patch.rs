//! Patch bodies: JSON merge patch, JSON patch, strategic merge and
//! server-side apply, all reduced to functions `(old, body) -> new`.
//!
//! Simplifications (documented in the module, relied on by no production
//! path): strategic merge knows no per-type merge keys: lists merge by key
//! only where the patch carries `$setElementOrder` (as kubectl apply's
//! patches do) and are replaced otherwise; server-side apply is also a
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
        PatchKind::Strategic => strategic_merge(&mut new, patch),
        PatchKind::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(&mut new, &ops).map_err(|e| ApiError {
                code: 422,
                reason: "Invalid",
                message: format!("the JSON patch could not be applied: {e}"),
                details: None,
                causes: Vec::new(),
            })?;
        }
    }
    Ok(new)
}

/// Whether list element `e` is the one an order entry names: every field
/// of the entry (the list's merge keys, e.g. `port` and `protocol`) equal.
fn same_element(entry: &Value, e: &Value) -> bool {
    entry
        .as_object()
        .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| e.get(k) == Some(v)))
}

fn is_delete(e: &Value) -> bool {
    e.get("$patch").and_then(Value::as_str) == Some("delete")
}

/// A strategic merge patch in the form kubectl sends: objects merge
/// recursively; a list with a `$setElementOrder/<list>` directive merges
/// element by element on the keys the order entries carry, keeping old
/// elements the patch does not mention and dropping `$patch: delete` ones;
/// other lists are replaced; `$deleteFromPrimitiveList/<list>` removes
/// values. Without per-type merge-key tables this is exact for what
/// kubectl's three-way diff produces, and a merge patch otherwise.
fn strategic_merge(target: &mut Value, patch: &Value) {
    let Some(pm) = patch.as_object() else {
        *target = strip(patch);
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    let Some(tm) = target.as_object_mut() else {
        return;
    };
    for (k, pv) in pm {
        if let Some(list) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(old)), Some(gone)) = (tm.get_mut(list), pv.as_array()) {
                old.retain(|v| !gone.contains(v));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        if pv.is_null() {
            tm.remove(k);
            continue;
        }
        let order = pm
            .get(&format!("$setElementOrder/{k}"))
            .and_then(Value::as_array)
            .filter(|o| o.iter().all(Value::is_object));
        match (pv, order, tm.get(k)) {
            (Value::Array(items), Some(order), Some(Value::Array(old))) => {
                let merged: Vec<Value> = order
                    .iter()
                    .filter_map(|entry| {
                        let base = old.iter().find(|e| same_element(entry, e)).cloned();
                        match items
                            .iter()
                            .find(|e| same_element(entry, e) && !is_delete(e))
                        {
                            Some(p) => {
                                let mut b = base.unwrap_or(Value::Null);
                                strategic_merge(&mut b, p);
                                Some(b)
                            }
                            None => base,
                        }
                    })
                    .collect();
                tm.insert(k.clone(), Value::Array(merged));
            }
            (Value::Array(items), _, _) => {
                let kept = items.iter().filter(|e| !is_delete(e)).map(strip).collect();
                tm.insert(k.clone(), Value::Array(kept));
            }
            (Value::Object(_), _, Some(Value::Object(_))) => {
                if let Some(t) = tm.get_mut(k) {
                    strategic_merge(t, pv);
                }
            }
            _ => {
                tm.insert(k.clone(), strip(pv));
            }
        }
    }
}

fn strip(v: &Value) -> Value {
    let mut v = v.clone();
    strip_directives(&mut v);
    v
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
    fn strategic_merges_lists_by_key_as_kubectl_apply_sends_them() {
        // kubectl apply after changing a Service's port from 80 to 8080.
        let old = json!({"spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30000}],
                                  "selector": {"app": "web"}}});
        let p = json!({"spec": {"$setElementOrder/ports": [{"port": 8080}],
            "ports": [{"port": 8080, "protocol": "TCP"}, {"$patch": "delete", "port": 80}]}});
        let new = apply(&old, PatchKind::Strategic, &p).unwrap();
        assert_eq!(
            new,
            json!({"spec": {"ports": [{"port": 8080, "protocol": "TCP"}], "selector": {"app": "web"}}})
        );
        // Changing one field of one element keeps the element's other fields.
        let p = json!({"spec": {"$setElementOrder/ports": [{"port": 80}], "ports": [{"port": 80, "name": "web"}]}});
        let new = apply(&old, PatchKind::Strategic, &p).unwrap();
        assert_eq!(
            new["spec"]["ports"],
            json!([{"name": "web", "port": 80, "protocol": "TCP", "nodePort": 30000}])
        );
        let old = json!({"metadata": {"finalizers": ["a", "b"]}});
        let p = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}});
        assert_eq!(
            apply(&old, PatchKind::Strategic, &p).unwrap(),
            json!({"metadata": {"finalizers": ["b"]}})
        );
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

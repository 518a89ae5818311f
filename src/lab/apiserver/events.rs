//! One Event store, two APIs: Events are kept in their core/v1 form and
//! served as `events.k8s.io/v1` through this conversion, as kube-apiserver
//! does, so an Event recorded by kube-rs (events.k8s.io) shows in
//! `kubectl describe` and `kubectl get events` (core/v1) and the other way
//! round.
//!
//! Owns the field mapping (kube's `pkg/apis/events/v1` conversion) and the
//! field-selector aliases each form accepts. Pure.

use serde_json::{Map, Value, json};

/// (events.k8s.io/v1 field, core/v1 field); every other field has one name in both.
const RENAMES: [(&str, &str); 7] = [
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn rename(obj: &Value, from_events: bool, api_version: &str) -> Value {
    let Some(m) = obj.as_object() else {
        return obj.clone();
    };
    let mut out = Map::new();
    for (k, v) in m {
        let renamed = RENAMES.iter().find_map(|(ev, core)| {
            if from_events {
                (k == ev).then_some(*core)
            } else {
                (k == core).then_some(*ev)
            }
        });
        out.insert(renamed.unwrap_or(k).to_string(), v.clone());
    }
    out.insert("apiVersion".into(), json!(api_version));
    out.insert("kind".into(), json!("Event"));
    Value::Object(out)
}

/// An events.k8s.io/v1 Event in its core/v1 (storage) form.
pub fn to_core(ev: &Value) -> Value {
    let mut core = rename(ev, true, "v1");
    // core/v1 requires an involvedObject; an events.k8s.io Event may lack `regarding`.
    if core.get("involvedObject").is_none_or(Value::is_null) {
        core["involvedObject"] = json!({});
    }
    core
}

/// A stored core/v1 Event in its events.k8s.io/v1 form.
pub fn to_events(core: &Value) -> Value {
    rename(core, false, "events.k8s.io/v1")
}

/// Field-selector paths of one form rewritten to the other's: both APIs
/// accept the core/v1 labels kubectl sends (`involvedObject.name`,
/// `source`, ...) and the events.k8s.io names (`regarding.name`, ...).
pub fn field_path_for(path: &str, events_form: bool) -> String {
    if path == "source" {
        return if events_form {
            "deprecatedSource.component".into()
        } else {
            "source.component".into()
        };
    }
    for (ev, core) in RENAMES {
        let (from, to) = if events_form { (core, ev) } else { (ev, core) };
        if path == from {
            return to.to_string();
        }
        if let Some(rest) = path.strip_prefix(from).and_then(|r| r.strip_prefix('.')) {
            return format!("{to}.{rest}");
        }
    }
    path.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_every_field() {
        let ev = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "a.1", "namespace": "default"},
            "regarding": {"kind": "Service", "name": "a"}, "note": "hi", "reason": "IPAllocated",
            "type": "Normal", "reportingController": "l2lb.io/controller", "eventTime": "2026-01-01T00:00:00.000000Z"});
        let core = to_core(&ev);
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "a");
        assert_eq!(core["message"], "hi");
        assert_eq!(core["reportingComponent"], "l2lb.io/controller");
        assert_eq!(to_events(&core), ev);
    }

    #[test]
    fn selectors_accept_both_spellings() {
        assert_eq!(
            field_path_for("involvedObject.name", true),
            "regarding.name"
        );
        assert_eq!(
            field_path_for("regarding.name", false),
            "involvedObject.name"
        );
        assert_eq!(
            field_path_for("involvedObject.name", false),
            "involvedObject.name"
        );
        assert_eq!(field_path_for("source", false), "source.component");
        assert_eq!(field_path_for("reason", true), "reason");
    }
}

//! Query parameters of list/watch requests and object filtering by label and
//! field selectors.
//!
//! Owns parsing `?labelSelector=` (through [`crate::labels::Selector`], so
//! the rules match the rest of l2lb) and `?fieldSelector=`. Pure: no I/O.

use serde_json::Value;

use super::error::ApiError;
use crate::labels::{Labels, Selector};

/// One `path=value` or `path!=value` term of a field selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldTerm {
    /// Dotted path, e.g. `metadata.name` or `spec.nodeName`.
    pub path: String,
    /// The value compared against the field's string form.
    pub value: String,
    /// `!=` rather than `=`/`==`.
    pub negated: bool,
}

/// A field selector: the conjunction of its terms.
///
/// Any dotted path is accepted (a superset of what real API servers allow
/// per kind); a missing field compares as the empty string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    /// Terms that must all hold.
    pub terms: Vec<FieldTerm>,
}

impl FieldSelector {
    /// Parses `a.b=c,d!=e` (already URL-decoded).
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut terms = Vec::new();
        for clause in s.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            let (path, value, negated) = if let Some((p, v)) = clause.split_once("!=") {
                (p, v, true)
            } else if let Some((p, v)) = clause.split_once("==") {
                (p, v, false)
            } else if let Some((p, v)) = clause.split_once('=') {
                (p, v, false)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid field selector clause {clause:?}"
                )));
            };
            terms.push(FieldTerm {
                path: path.trim().to_string(),
                value: value.trim().to_string(),
                negated,
            });
        }
        Ok(Self { terms })
    }

    /// Rewrites every term's path (field-label conversion per kind).
    pub fn rewrite_paths(&mut self, f: impl Fn(&str) -> String) {
        for t in &mut self.terms {
            t.path = f(&t.path);
        }
    }

    /// Whether `obj` satisfies every term.
    pub fn matches(&self, obj: &Value) -> bool {
        self.terms.iter().all(|t| {
            let mut cur = obj;
            for part in t.path.split('.') {
                cur = cur.get(part).unwrap_or(&Value::Null);
            }
            let actual = match cur {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (actual == t.value) != t.negated
        })
    }
}

/// The list/watch parameters the server honours.
#[derive(Clone, Debug, Default)]
pub struct ListParams {
    /// `labelSelector`.
    pub labels: Selector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// `watch=true|1`.
    pub watch: bool,
    /// `resourceVersion` as sent (empty when absent).
    pub resource_version: String,
    /// `allowWatchBookmarks=true`.
    pub bookmarks: bool,
    /// `timeoutSeconds`.
    pub timeout_seconds: Option<u64>,
    /// `sendInitialEvents=true` (streaming lists).
    pub send_initial_events: bool,
}

fn truthy(v: &str) -> bool {
    matches!(v, "true" | "1" | "True")
}

impl ListParams {
    /// Reads the parameters from a raw query string (decodes `%xx` and `+`).
    pub fn from_query(query: &str) -> Result<Self, ApiError> {
        let mut p = Self::default();
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "labelSelector" => {
                    p.labels =
                        Selector::parse(&v).map_err(|e| ApiError::bad_request(e.to_string()))?;
                }
                "fieldSelector" => p.fields = FieldSelector::parse(&v)?,
                "watch" => p.watch = truthy(&v),
                "resourceVersion" => p.resource_version = v.into_owned(),
                "allowWatchBookmarks" => p.bookmarks = truthy(&v),
                "sendInitialEvents" => p.send_initial_events = truthy(&v),
                "timeoutSeconds" => {
                    p.timeout_seconds = Some(v.parse().map_err(|_| {
                        ApiError::bad_request(format!("invalid timeoutSeconds {v:?}"))
                    })?);
                }
                _ => {}
            }
        }
        Ok(p)
    }

    /// Whether `obj` passes both selectors.
    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(&labels_of(obj)) && self.fields.matches(obj)
    }
}

/// `metadata.labels` of a stored object.
pub fn labels_of(obj: &Value) -> Labels {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Reads one query parameter (decoded).
pub fn query_param(query: &str, key: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plus_decodes_to_space_for_set_based_selectors() {
        let p = ListParams::from_query("labelSelector=tier+in+%28a%2Cb%29,app&watch=1").unwrap();
        assert!(p.watch);
        let obj = json!({"metadata": {"labels": {"tier": "a", "app": "x"}}});
        assert!(p.matches(&obj));
        let obj = json!({"metadata": {"labels": {"tier": "c", "app": "x"}}});
        assert!(!p.matches(&obj));
    }

    #[test]
    fn field_selector_equality_and_negation() {
        let f = FieldSelector::parse("metadata.name=a,metadata.namespace!=kube-system").unwrap();
        assert!(f.matches(&json!({"metadata": {"name": "a", "namespace": "default"}})));
        assert!(!f.matches(&json!({"metadata": {"name": "a", "namespace": "kube-system"}})));
        assert!(!f.matches(&json!({"metadata": {"name": "b"}})));
        assert!(FieldSelector::parse("nonsense").is_err());
    }
}

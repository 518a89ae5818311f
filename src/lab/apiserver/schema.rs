//! Structural-schema validation of objects against an OpenAPI v3 schema, as
//! kube-apiserver validates custom resources: types, `required`, `enum`,
//! item/length/number bounds, and unknown fields (pruned, or reported for
//! `fieldValidation=Strict`). CEL rules are evaluated elsewhere (kube-cel).
//!
//! Owns the field paths and messages of the resulting causes, worded as
//! kube-apiserver words them (`spec.addresses: Required value`, ...). Pure.

use serde_json::{Map, Value};

use super::error::Cause;

/// What a walk found.
#[derive(Debug, Default)]
pub struct Findings {
    /// Field errors.
    pub causes: Vec<Cause>,
    /// Paths of fields the schema does not know (removed when pruning).
    pub unknown: Vec<String>,
}

/// JSON type name as the API server reports it in messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn resolve<'a>(schema: &'a Value, defs: Option<&'a Map<String, Value>>) -> &'a Value {
    let mut s = schema;
    // Bounded: definitions refer to each other, never to themselves directly.
    for _ in 0..16 {
        let Some(r) = s.get("$ref").and_then(Value::as_str) else {
            break;
        };
        let name = r.rsplit('/').next().unwrap_or("");
        match defs.and_then(|d| d.get(name)) {
            Some(t) => s = t,
            None => break,
        }
    }
    // schemars wraps a referenced schema with a description in allOf: [ {$ref} ].
    if s.get("properties").is_none()
        && s.get("type").is_none()
        && let Some(first) = s
            .get("allOf")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
    {
        return resolve(first, defs);
    }
    s
}

fn number(v: &Value) -> String {
    v.to_string()
}

/// Validates `obj` (a whole object: `metadata`, `apiVersion` and `kind` at
/// the root are left to the server) against `schema`; removes unknown
/// fields when `prune`.
pub fn check(
    schema: &Value,
    defs: Option<&Map<String, Value>>,
    obj: &mut Value,
    prune: bool,
) -> Findings {
    let mut f = Findings::default();
    walk(schema, defs, obj, "", prune, &mut f);
    f.unknown.sort();
    f
}

fn walk(
    schema: &Value,
    defs: Option<&Map<String, Value>>,
    v: &mut Value,
    path: &str,
    prune: bool,
    f: &mut Findings,
) {
    let schema = resolve(schema, defs);
    if v.is_null() {
        // Absent and null are the same for optional fields; nullable allows explicit null.
        return;
    }
    let int_or_string = schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true);
    let ty = schema.get("type").and_then(Value::as_str);
    let actual = type_name(v);
    let type_ok = match ty {
        _ if int_or_string => matches!(actual, "integer" | "string"),
        None => true,
        Some("number") => matches!(actual, "integer" | "number"),
        Some(t) => t == actual,
    };
    if !type_ok {
        let t = ty.unwrap_or("integer or string");
        f.causes.push(Cause::invalid(
            path,
            format!("{actual:?}"),
            &format!("{path} in body must be of type {t}: {actual:?}"),
        ));
        return;
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(v)
    {
        let shown: Vec<String> = options
            .iter()
            .map(|o| o.as_str().map_or(o.to_string(), str::to_string))
            .collect();
        let shown: Vec<&str> = shown.iter().map(String::as_str).collect();
        let value = v.as_str().map_or(v.to_string(), str::to_string);
        f.causes.push(Cause::not_supported(path, &value, &shown));
    }
    match v {
        Value::String(s) => {
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && s.len() as u64 > max
            {
                f.causes.push(Cause::too_long(path, max));
            }
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && (s.chars().count() as u64) < min
            {
                f.causes.push(Cause::invalid(
                    path,
                    format!("{s:?}"),
                    &format!("{path} in body should be at least {min} chars long"),
                ));
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if let Some(min) = schema.get("minimum")
                && x < min.as_f64().unwrap_or(f64::MIN)
            {
                f.causes.push(Cause::invalid(
                    path,
                    number(v),
                    &format!(
                        "{path} in body should be greater than or equal to {}",
                        number(min)
                    ),
                ));
            }
            if let Some(max) = schema.get("maximum")
                && x > max.as_f64().unwrap_or(f64::MAX)
            {
                f.causes.push(Cause::invalid(
                    path,
                    number(v),
                    &format!(
                        "{path} in body should be less than or equal to {}",
                        number(max)
                    ),
                ));
            }
        }
        Value::Array(items) => {
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && items.len() as u64 > max
            {
                f.causes.push(Cause::too_many(path, items.len(), max));
            }
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && (items.len() as u64) < min
            {
                f.causes.push(Cause::invalid(
                    path,
                    items.len(),
                    &format!("{path} in body should have at least {min} items"),
                ));
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    walk(item_schema, defs, item, &format!("{path}[{i}]"), prune, f);
                }
            }
        }
        Value::Object(m) => {
            for r in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if m.get(r).is_none_or(Value::is_null) {
                    f.causes.push(Cause::required(join(path, r), ""));
                }
            }
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let preserve = schema
                .get("x-kubernetes-preserve-unknown-fields")
                .and_then(Value::as_bool)
                == Some(true);
            let mut doomed = Vec::new();
            for (k, child) in m.iter_mut() {
                if path.is_empty() && matches!(k.as_str(), "metadata" | "apiVersion" | "kind") {
                    continue;
                }
                let child_path = join(path, k);
                match (props.and_then(|p| p.get(k)), additional) {
                    (Some(s), _) => walk(s, defs, child, &child_path, prune, f),
                    (None, Some(a)) if a.is_object() => walk(a, defs, child, &child_path, prune, f),
                    (None, Some(Value::Bool(true))) => {}
                    // A schema without properties describes a free-form object.
                    _ if preserve || props.is_none() => {}
                    _ => {
                        f.unknown.push(child_path);
                        doomed.push(k.clone());
                    }
                }
            }
            if prune {
                for k in doomed {
                    m.remove(&k);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["addresses"], "properties": {
                "addresses": {"type": "array", "maxItems": 2, "items": {"type": "string"}},
                "autoAssign": {"type": "boolean"},
                "priority": {"type": "integer", "minimum": 0},
                "interfaces": {"type": "array", "items": {"type": "string", "maxLength": 3}}}}}})
    }

    #[test]
    fn messages_match_kube_apiserver() {
        let mut o = json!({"metadata": {"name": "x"}, "spec": {"autoAssign": "yes", "priority": -1,
            "interfaces": ["eth0"]}});
        let f = check(&schema(), None, &mut o, false);
        let mut text: Vec<String> = f.causes.iter().map(ToString::to_string).collect();
        text.sort();
        assert_eq!(
            text,
            vec![
                "spec.addresses: Required value",
                "spec.autoAssign: Invalid value: \"string\": spec.autoAssign in body must be of type boolean: \"string\"",
                "spec.interfaces[0]: Too long: may not be more than 3 bytes",
                "spec.priority: Invalid value: -1: spec.priority in body should be greater than or equal to 0",
            ]
        );
        let mut o = json!({"spec": {"addresses": ["a", "b", "c"]}});
        let f = check(&schema(), None, &mut o, false);
        assert_eq!(
            f.causes[0].to_string(),
            "spec.addresses: Too many: 3: must have at most 2 items"
        );
    }

    #[test]
    fn unknown_fields_are_reported_and_pruned() {
        let mut o = json!({"spec": {"addresses": [], "adresses": ["x"]}, "extra": 1});
        let f = check(&schema(), None, &mut o, true);
        assert_eq!(f.unknown, vec!["extra", "spec.adresses"]);
        assert_eq!(o, json!({"spec": {"addresses": []}}));
    }
}

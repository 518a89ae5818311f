//! The subset of kubectl's JSONPath that CRD `additionalPrinterColumns`
//! use: `.a.b`, `[n]`, `[*]` and `[?(@.x=="y")]` filters with `==`/`!=`.
//!
//! Owns only evaluation against JSON values. Pure. An expression outside
//! the subset evaluates to nothing (the column prints `<none>`), never to a
//! wrong value.

use serde_json::Value;

#[derive(Debug, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    All,
    Filter {
        path: Vec<String>,
        value: String,
        negated: bool,
    },
}

fn parse(expr: &str) -> Option<Vec<Step>> {
    let e = expr.trim().trim_start_matches('{').trim_end_matches('}');
    let mut steps = Vec::new();
    let mut rest = e.strip_prefix('$').unwrap_or(e);
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let name = &r[..end];
            if name.is_empty() {
                return None;
            }
            steps.push(Step::Field(name.to_string()));
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            // A filter may hold `]` only inside quotes, which our columns never do.
            let inner = &r[..end];
            rest = &r[end + 1..];
            if inner == "*" {
                steps.push(Step::All);
            } else if let Ok(i) = inner.parse::<usize>() {
                steps.push(Step::Index(i));
            } else if let Some(f) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let (path, value, negated) = if let Some((p, v)) = f.split_once("!=") {
                    (p, v, true)
                } else {
                    let (p, v) = f.split_once("==")?;
                    (p, v, false)
                };
                let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
                steps.push(Step::Filter {
                    path: path.trim().split('.').map(str::to_string).collect(),
                    value: value.to_string(),
                    negated,
                });
            } else if let Some(name) = inner.strip_prefix('\'').and_then(|n| n.strip_suffix('\'')) {
                steps.push(Step::Field(name.to_string()));
            } else {
                return None;
            }
        } else {
            return None;
        }
    }
    Some(steps)
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Every value `expr` selects in `obj`, in document order.
pub fn find<'a>(expr: &str, obj: &'a Value) -> Vec<&'a Value> {
    let Some(steps) = parse(expr) else {
        return Vec::new();
    };
    let mut cur = vec![obj];
    for step in &steps {
        let mut next = Vec::new();
        for v in cur {
            match step {
                Step::Field(name) => next.extend(v.get(name.as_str())),
                Step::Index(i) => next.extend(v.get(*i)),
                Step::All => match v {
                    Value::Array(a) => next.extend(a.iter()),
                    Value::Object(m) => next.extend(m.values()),
                    _ => {}
                },
                Step::Filter {
                    path,
                    value,
                    negated,
                } => {
                    for item in v.as_array().into_iter().flatten() {
                        let mut f = Some(item);
                        for p in path {
                            f = f.and_then(|x| x.get(p.as_str()));
                        }
                        let hit = f.is_some_and(|x| as_text(x) == *value);
                        if hit != *negated && (f.is_some() || *negated) {
                            next.push(item);
                        }
                    }
                }
            }
        }
        cur = next;
    }
    cur
}

/// The first value `expr` selects, as printer columns use it.
pub fn find_first<'a>(expr: &str, obj: &'a Value) -> Option<&'a Value> {
    find(expr, obj).into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn printer_column_paths() {
        let o = json!({"spec": {"addresses": ["a", "b"]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Advertised", "status": "False"}]}});
        assert_eq!(find_first(".spec.addresses", &o), Some(&json!(["a", "b"])));
        assert_eq!(find_first(".spec.addresses[1]", &o), Some(&json!("b")));
        assert_eq!(
            find_first(r#".status.conditions[?(@.type=="Advertised")].status"#, &o),
            Some(&json!("False"))
        );
        assert_eq!(find(".spec.addresses[*]", &o).len(), 2);
        assert_eq!(find_first(".status.missing", &o), None);
        assert_eq!(find_first(".spec..bad", &o), None);
    }
}

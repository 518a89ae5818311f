//! Kubernetes label selectors as a pure value type.
//!
//! Owns matching of `matchLabels` / `matchExpressions` selectors and the
//! string form used in `?labelSelector=` queries. IPAM (`serviceSelectors`,
//! `namespaceSelectors`), speaker eligibility (`nodeSelectors`) and the
//! embedded API server all match labels through this one module, so the rules
//! cannot drift between them. It must never depend on kube or do I/O;
//! conversion from k8s-openapi's `LabelSelector` lives in `api`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A set of labels, as on an object's `metadata.labels`.
pub type Labels = BTreeMap<String, String>;

/// One requirement of a selector. All requirements of a [`Selector`] must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// `key in (v1, v2)` or `key=value`: the label is present with one of the values.
    In(String, BTreeSet<String>),
    /// `key notin (v1, v2)` or `key!=value`: the label is absent or has none of the values.
    NotIn(String, BTreeSet<String>),
    /// `key`: the label is present with any value.
    Exists(String),
    /// `!key`: the label is absent.
    DoesNotExist(String),
}

impl Requirement {
    /// Whether `labels` satisfy this requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        match self {
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        }
    }
}

/// A label selector: the conjunction of its requirements. The empty selector
/// matches everything, as in Kubernetes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    /// Requirements that must all hold.
    pub requirements: Vec<Requirement>,
}

/// Why a selector string or object could not be understood.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The `?labelSelector=` string has a clause we cannot read.
    #[error("invalid label selector clause {clause:?}: {reason}")]
    Syntax {
        /// The offending clause, as written.
        clause: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A `matchExpressions` entry has an unknown operator or wrong values.
    #[error("invalid matchExpressions entry for key {key:?}: {reason}")]
    Expression {
        /// The expression's key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl Selector {
    /// A selector that matches every label set.
    pub fn everything() -> Self {
        Self::default()
    }

    /// A selector requiring each `key=value` of `labels` (a `matchLabels` map).
    pub fn from_match_labels(labels: &Labels) -> Self {
        let requirements = labels
            .iter()
            .map(|(k, v)| Requirement::In(k.clone(), BTreeSet::from([v.clone()])))
            .collect();
        Self { requirements }
    }

    /// Builds a selector from `matchLabels` plus `matchExpressions` given as
    /// `(key, operator, values)`, validating operators as the API server does.
    pub fn from_parts<'a>(
        match_labels: &Labels,
        expressions: impl IntoIterator<Item = (&'a str, &'a str, &'a [String])>,
    ) -> Result<Self, SelectorError> {
        let mut sel = Self::from_match_labels(match_labels);
        for (key, op, values) in expressions {
            let set: BTreeSet<String> = values.iter().cloned().collect();
            let err = |reason: &str| SelectorError::Expression {
                key: key.to_string(),
                reason: reason.to_string(),
            };
            let req = match op {
                "In" | "NotIn" if set.is_empty() => {
                    return Err(err("operator In/NotIn needs at least one value"));
                }
                "In" => Requirement::In(key.to_string(), set),
                "NotIn" => Requirement::NotIn(key.to_string(), set),
                "Exists" | "DoesNotExist" if !set.is_empty() => {
                    return Err(err("operator Exists/DoesNotExist takes no values"));
                }
                "Exists" => Requirement::Exists(key.to_string()),
                "DoesNotExist" => Requirement::DoesNotExist(key.to_string()),
                other => {
                    return Err(SelectorError::Expression {
                        key: key.to_string(),
                        reason: format!(
                            "unknown operator {other:?} (want In, NotIn, Exists or DoesNotExist)"
                        ),
                    });
                }
            };
            sel.requirements.push(req);
        }
        Ok(sel)
    }

    /// Parses the string form of `?labelSelector=` (already URL-decoded):
    /// `a=b,c!=d,e in (f,g),h notin (i),j,!k`. Empty means everything.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for clause in split_clauses(s) {
            let clause = clause.trim();
            if clause.is_empty() {
                continue;
            }
            requirements.push(parse_clause(clause)?);
        }
        Ok(Self { requirements })
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// True for the selector that matches everything.
    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }
}

/// Splits on commas that are not inside a `(...)` value list.
fn split_clauses(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn parse_clause(clause: &str) -> Result<Requirement, SelectorError> {
    let syntax = |reason| SelectorError::Syntax {
        clause: clause.to_string(),
        reason,
    };
    if let Some(key) = clause.strip_prefix('!') {
        let key = key.trim();
        return valid_key(key)
            .then(|| Requirement::DoesNotExist(key.to_string()))
            .ok_or_else(|| syntax("bad key after '!'"));
    }
    if let Some((k, v)) = clause.split_once("!=") {
        return single(k, v, false).ok_or_else(|| syntax("bad key or value around '!='"));
    }
    if let Some((k, v)) = clause.split_once("==").or_else(|| clause.split_once('=')) {
        return single(k, v, true).ok_or_else(|| syntax("bad key or value around '='"));
    }
    let words: Vec<&str> = clause.splitn(2, char::is_whitespace).collect();
    if words.len() == 1 {
        return valid_key(words[0])
            .then(|| Requirement::Exists(words[0].to_string()))
            .ok_or_else(|| syntax("bad key"));
    }
    let key = words[0];
    let rest = words[1].trim_start();
    let (negate, list) = if let Some(l) = rest.strip_prefix("notin") {
        (true, l)
    } else if let Some(l) = rest.strip_prefix("in") {
        (false, l)
    } else {
        return Err(syntax("expected 'in' or 'notin'"));
    };
    let list = list
        .trim()
        .strip_prefix('(')
        .and_then(|l| l.strip_suffix(')'))
        .ok_or_else(|| syntax("value list must be in parentheses"))?;
    let values: BTreeSet<String> = list
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    if !valid_key(key) || values.is_empty() || !values.iter().all(|v| valid_value(v)) {
        return Err(syntax("bad key or empty/invalid value list"));
    }
    Ok(if negate {
        Requirement::NotIn(key.to_string(), values)
    } else {
        Requirement::In(key.to_string(), values)
    })
}

fn single(k: &str, v: &str, eq: bool) -> Option<Requirement> {
    let (k, v) = (k.trim(), v.trim());
    if !valid_key(k) || !valid_value(v) {
        return None;
    }
    let set = BTreeSet::from([v.to_string()]);
    Some(if eq {
        Requirement::In(k.to_string(), set)
    } else {
        Requirement::NotIn(k.to_string(), set)
    })
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn valid_value(v: &str) -> bool {
    v.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl fmt::Display for Selector {
    /// Renders the `?labelSelector=` string form; `parse(to_string())` round-trips.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |vs: &BTreeSet<String>| vs.iter().cloned().collect::<Vec<_>>().join(",");
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match r {
                Requirement::In(k, vs) => write!(f, "{k} in ({})", join(vs))?,
                Requirement::NotIn(k, vs) => write!(f, "{k} notin ({})", join(vs))?,
                Requirement::Exists(k) => write!(f, "{k}")?,
                Requirement::DoesNotExist(k) => write!(f, "!{k}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn string_form_covers_every_operator() {
        let sel = Selector::parse("a=b,c!=d,e in (f, g),h notin (i),j,!k").unwrap();
        assert_eq!(sel.requirements.len(), 6);
        let ok = labels(&[("a", "b"), ("c", "x"), ("e", "g"), ("h", "z"), ("j", "")]);
        assert!(sel.matches(&ok));
        for broken in [
            labels(&[("a", "x"), ("e", "g"), ("j", "")]),
            labels(&[("a", "b"), ("c", "d"), ("e", "g"), ("j", "")]),
            labels(&[("a", "b"), ("e", "q"), ("j", "")]),
            labels(&[("a", "b"), ("e", "g"), ("h", "i"), ("j", "")]),
            labels(&[("a", "b"), ("e", "g")]),
            labels(&[("a", "b"), ("e", "g"), ("j", ""), ("k", "1")]),
        ] {
            assert!(!sel.matches(&broken), "{broken:?} must not match");
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(Selector::parse("").unwrap().matches(&labels(&[("x", "y")])));
        assert!(Selector::everything().matches(&Labels::new()));
    }

    #[test]
    fn garbage_is_a_typed_error() {
        for bad in ["a in b", "a in ()", "=b", "a b c", "!", "a in (b", "a=b c"] {
            assert!(Selector::parse(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn expressions_validate_operators() {
        let vals = ["x".to_string()];
        assert!(Selector::from_parts(&Labels::new(), [("k", "Bogus", &vals[..])]).is_err());
        assert!(Selector::from_parts(&Labels::new(), [("k", "Exists", &vals[..])]).is_err());
        assert!(Selector::from_parts(&Labels::new(), [("k", "In", &[][..])]).is_err());
        let s = Selector::from_parts(&labels(&[("a", "b")]), [("k", "NotIn", &vals[..])]).unwrap();
        assert!(s.matches(&labels(&[("a", "b")])));
        assert!(!s.matches(&labels(&[("a", "b"), ("k", "x")])));
    }

    fn arb_req() -> impl Strategy<Value = Requirement> {
        let key = "[a-c]";
        let vals = prop::collection::btree_set("[x-z]", 1..3);
        prop_oneof![
            (key, vals.clone()).prop_map(|(k, v)| Requirement::In(k, v)),
            (key, vals).prop_map(|(k, v)| Requirement::NotIn(k, v)),
            key.prop_map(Requirement::Exists),
            key.prop_map(Requirement::DoesNotExist),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]
        #[test]
        fn display_parse_round_trips(reqs in prop::collection::vec(arb_req(), 0..5),
                                     l in prop::collection::btree_map("[a-c]", "[x-z]", 0..3)) {
            let sel = Selector { requirements: reqs };
            let back = Selector::parse(&sel.to_string()).unwrap();
            prop_assert_eq!(&back, &sel);
            prop_assert_eq!(back.matches(&l), sel.matches(&l));
        }
    }
}

//! Architecture test: dependencies inside `src/` run one way (DESIGN.md,
//! "Layering"). `main.rs`/`bench` → `lab` → `controller`, `speaker` → `l2`,
//! `election`, `ipam`, `model`, `api` → `labels`, `telemetry`.
//!
//! It reads the source as text, so it catches an edge the moment it is
//! written, names file and line, and needs no build of anything else. Set
//! `L2LB_LAYERING_ROOT` to check another checkout's `src/` (that is how the
//! edges this test was written against were shown to fail it).

use std::path::{Path, PathBuf};

/// One rule: files it applies to, names they must not mention, and why.
struct Rule {
    /// Whether the rule applies to a path relative to `src/`.
    applies: fn(&str) -> bool,
    /// Paths or crates that must not appear in code (comments are skipped).
    forbidden: &'static [&'static str],
    /// What the rule protects, printed with every violation.
    why: &'static str,
}

fn under(path: &str, dir: &str) -> bool {
    path.starts_with(&format!("{dir}/"))
}

/// Pure modules: decisions only, testable without a cluster or a socket.
fn pure(path: &str) -> bool {
    under(path, "ipam")
        || under(path, "election")
        || path == "labels.rs"
        || path == "l2/wire.rs"
        || path == "l2/decide.rs"
        || under(path, "fastpath")
}

const RULES: &[Rule] = &[
    Rule {
        applies: |p| !under(p, "lab") && !under(p, "bench") && p != "main.rs",
        forbidden: &["crate::lab", "l2lb::lab"],
        why: "production code never imports the lab (a test fixture)",
    },
    Rule {
        applies: |p| under(p, "controller"),
        forbidden: &["crate::speaker"],
        why: "controller and speaker never import each other; shared facts live in `model`",
    },
    Rule {
        applies: |p| under(p, "speaker"),
        forbidden: &["crate::controller"],
        why: "controller and speaker never import each other; shared facts live in `model`",
    },
    Rule {
        applies: |p| under(p, "model") || under(p, "l2") || under(p, "api"),
        forbidden: &["crate::controller", "crate::speaker"],
        why: "the shared layers import no component",
    },
    Rule {
        applies: pure,
        forbidden: &[
            "kube",
            "k8s_openapi",
            "tokio",
            "libc",
            "crate::controller",
            "crate::speaker",
            "crate::lab",
        ],
        why: "pure modules do no I/O and import no component",
    },
];

/// Whether `line` mentions `name` as a whole path segment (so `crate::lab`
/// does not match `crate::labels`, nor `kube` match `kubelet`).
fn mentions(line: &str, name: &str) -> bool {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    line.match_indices(name).any(|(at, _)| {
        let before = line[..at].chars().next_back();
        let after = line[at + name.len()..].chars().next();
        !before.is_some_and(|c| is_ident(c) || c == ':') && !after.is_some_and(is_ident)
    })
}

/// The code part of a line: nothing after `//` (doc comments included).
fn code(line: &str) -> &str {
    match line.find("//") {
        Some(at) => &line[..at],
        None => line,
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every violation under `src` as `file:line: text (why)`.
fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let rel = file
            .strip_prefix(src)
            .expect("under src")
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(&file).expect("read source");
        for rule in RULES.iter().filter(|r| (r.applies)(&rel)) {
            for (n, line) in text.lines().enumerate() {
                let code = code(line);
                for name in rule.forbidden.iter().filter(|f| mentions(code, f)) {
                    found.push(format!(
                        "src/{rel}:{}: mentions `{name}`: {} ({})",
                        n + 1,
                        line.trim(),
                        rule.why
                    ));
                }
            }
        }
    }
    found
}

#[test]
fn dependencies_inside_src_run_one_way() {
    let root = std::env::var_os("L2LB_LAYERING_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let found = violations(&root.join("src"));
    assert!(
        found.is_empty(),
        "{} layering violation(s):\n{}",
        found.len(),
        found.join("\n")
    );
}

#[test]
fn the_checker_sees_what_it_must() {
    assert!(mentions("use crate::lab::net;", "crate::lab"));
    assert!(!mentions("use crate::labels::Labels;", "crate::lab"));
    assert!(mentions("let c: kube::Client;", "kube"));
    assert!(!mentions("kubelet", "kube"));
    assert!(!mentions("use crate::x::kube_thing;", "kube"));
    assert!(
        !mentions("foo::kube::x", "kube"),
        "a path segment, not a crate"
    );
    assert_eq!(code("let x = 1; // crate::lab"), "let x = 1; ");

    let dir = std::env::temp_dir().join(format!("l2lb-layering-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src/ipam")).unwrap();
    std::fs::create_dir_all(dir.join("src/speaker")).unwrap();
    std::fs::write(
        dir.join("src/ipam/mod.rs"),
        "//! no kube here\nuse tokio::x;\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("src/speaker/core.rs"),
        "use crate::controller::convert;\n",
    )
    .unwrap();
    let found = violations(&dir.join("src"));
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].starts_with("src/ipam/mod.rs:2: mentions `tokio`"));
    assert!(found[1].starts_with("src/speaker/core.rs:1: mentions `crate::controller`"));
}

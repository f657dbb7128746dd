//! The import rules of `docs/architecture.md`, checked by scanning `src/` for
//! `use` trees and `crate::`/`super::` paths (comments are skipped).
//!
//! * Layers: the pure core, shared edges, the network contract, the roles,
//!   tools. A module imports only layers below its own and, within the core
//!   and the edges, its own layer; roles never import one another.
//! * The pure core names no tokio, sockets, processes or files.
//! * No cycles: neither among top-level modules nor among the sibling modules
//!   of any folder (a child naming its own parent's items is not a cycle).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layer of each top-level module. Lower layers never import higher ones.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "pure core",
        &[
            "protocol",
            "hosts",
            "args",
            "canonical",
            "verify",
            "trust",
            "fingerprint",
            "exitcode",
            "metrics",
            "jobstate",
        ],
    ),
    (
        "shared edges",
        &[
            "job_call",
            "logging",
            "probe",
            "result_store",
            "runtime",
            "shared_dir",
            "transport",
        ],
    ),
    ("network contract", &["network"]),
    ("roles", &["client", "server", "coordinator", "member"]),
    ("tools", &["tools", "monitor"]),
];

/// Tokens the pure core must not contain outside comments.
const CORE_FORBIDDEN: &[&str] = &[
    "tokio",
    "hyper",
    "rusqlite",
    "std::net::Tcp",
    "std::net::Udp",
    "std::process",
    "std::fs",
    "File::",
    "Command::new",
];

/// Index in [`LAYERS`] of the roles: from here up, a layer's modules are
/// independent of one another.
const ROLES_LAYER: usize = 3;

fn layer_of(top: &str) -> Option<(usize, &'static str)> {
    LAYERS
        .iter()
        .enumerate()
        .find(|(_, (_, mods))| mods.contains(&top))
        .map(|(i, (name, _))| (i, *name))
}

/// A source file and the module path it defines (`["server", "sandbox"]` for
/// `src/server/sandbox.rs` and `src/server/sandbox/mod.rs`).
struct SourceFile {
    path: PathBuf,
    module: Vec<String>,
    code: String,
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_owned());
    }
    parts
}

/// The code without `//` comments and string literals' contents (a string
/// that mentions `crate::x` is not an import).
fn strip_comments_and_strings(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'/' && bytes.get(i + 1) == Some(&b'/') {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c == b'"' {
            // Raw strings are rare here and never hold paths we care about;
            // a plain scan to the next unescaped quote is enough.
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                if bytes[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
            continue;
        }
        if c == b'\'' {
            // A char literal ('x', '\n', '"') or a lifetime ('a): skip only the former.
            let end = if bytes.get(i + 1) == Some(&b'\\') {
                text[i + 2..].find('\'').map(|p| i + 2 + p)
            } else if bytes.get(i + 2) == Some(&b'\'') {
                Some(i + 2)
            } else {
                None
            };
            if let Some(end) = end {
                out.push_str("' '");
                i = end + 1;
                continue;
            }
        }
        out.push(c as char);
        i += 1;
    }
    out
}

/// Expand a `use` tree (`crate::{a, b::{c, d}}`) into its paths.
fn expand_use_tree(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let mut out = Vec::new();
    expand(&tree, "", &mut out);
    out
}

fn expand(tree: &str, prefix: &str, out: &mut Vec<String>) {
    let Some(open) = tree.find('{') else {
        out.push(format!("{prefix}{tree}"));
        return;
    };
    let head = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').expect("balanced use tree")];
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                expand(&inner[start..i], &format!("{prefix}{head}"), out);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < inner.len() {
        expand(&inner[start..], &format!("{prefix}{head}"), out);
    }
}

/// Every module path a file names, resolved to absolute `crate` paths.
fn referenced_modules(file: &SourceFile) -> BTreeSet<Vec<String>> {
    let code = &file.code;
    let mut paths: Vec<String> = Vec::new();
    // `use` statements, with their trees.
    let mut rest = code.as_str();
    while let Some(pos) = rest.find("use ") {
        let before = rest[..pos].chars().last();
        rest = &rest[pos + 4..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(end) = rest.find(';') {
            let tree = &rest[..end];
            if tree.starts_with("crate::")
                || tree.starts_with("super::")
                || tree.starts_with("self::")
            {
                paths.extend(expand_use_tree(tree));
            }
        }
    }
    // Paths written inline.
    for anchor in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(pos) = code[from..].find(anchor) {
            let at = from + pos;
            let before = code[..at].chars().last();
            from = at + anchor.len();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let tail: String = code[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            paths.push(tail);
        }
    }
    let mut out = BTreeSet::new();
    for path in paths {
        let mut segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
        let mut abs: Vec<String> = match segs.first() {
            Some(&"crate") => {
                segs.remove(0);
                Vec::new()
            }
            Some(&"super") | Some(&"self") => {
                let mut base = file.module.clone();
                while let Some(&s) = segs.first() {
                    match s {
                        "super" => {
                            base.pop();
                        }
                        "self" => {}
                        _ => break,
                    }
                    segs.remove(0);
                }
                base
            }
            _ => continue,
        };
        abs.extend(segs.iter().map(|s| s.to_string()));
        if !abs.is_empty() {
            out.insert(abs);
        }
    }
    out
}

fn load() -> Vec<SourceFile> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    files
        .into_iter()
        // main.rs dispatches to every role by design.
        .filter(|p| p.file_name().is_some_and(|n| n != "main.rs"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("read source");
            SourceFile {
                module: module_of(&src, &path),
                code: strip_comments_and_strings(&text),
                path,
            }
        })
        .collect()
}

/// Finds a cycle in `graph`, if any, as the list of nodes on it.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_owned(), 1);
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let from = stack.iter().position(|n| n == next).expect("on stack");
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(next, graph, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if state.get(node.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(node, graph, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn layers_point_down_and_roles_do_not_import_each_other() {
    let mut broken = Vec::new();
    for file in load() {
        let Some(top) = file.module.first() else {
            continue; // lib.rs: the module tree itself
        };
        let (layer, layer_name) = layer_of(top).unwrap_or_else(|| {
            panic!(
                "{}: top-level module `{top}` has no layer; add it to LAYERS here and to \
                 docs/architecture.md",
                file.path.display()
            )
        });
        for target in referenced_modules(&file) {
            let to = &target[0];
            if to == top {
                continue;
            }
            let Some((to_layer, to_name)) = layer_of(to) else {
                continue; // an item of lib.rs or a macro, not a module
            };
            // Within the core and the edges, modules build on one another
            // (acyclically, checked below); roles never import each other.
            let sideways_ok = layer < ROLES_LAYER;
            if to_layer > layer || (to_layer == layer && !sideways_ok) {
                broken.push(format!(
                    "{} ({layer_name}) imports crate::{} ({to_name})",
                    file.path.display(),
                    target.join("::")
                ));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "imports that point up or sideways:\n  {}",
        broken.join("\n  ")
    );
}

#[test]
fn the_pure_core_has_no_io() {
    let core = LAYERS[0].1;
    let mut broken = Vec::new();
    for file in load() {
        if !file
            .module
            .first()
            .is_some_and(|m| core.contains(&m.as_str()))
        {
            continue;
        }
        for token in CORE_FORBIDDEN {
            if file.code.contains(token) {
                broken.push(format!("{} names {token}", file.path.display()));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "the pure core must not touch I/O:\n  {}",
        broken.join("\n  ")
    );
}

#[test]
fn no_cycles_between_top_level_modules_or_siblings() {
    let files = load();
    // Top level.
    let mut top: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // Siblings, per parent folder.
    let mut siblings: BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for file in &files {
        let Some(first) = file.module.first() else {
            continue;
        };
        let refs = referenced_modules(file);
        let node = top.entry(first.clone()).or_default();
        for r in &refs {
            if &r[0] != first && layer_of(&r[0]).is_some() {
                node.insert(r[0].clone());
            }
        }
        // For each ancestor folder of this file, the child module it belongs to
        // depends on the sibling children it names.
        for depth in 0..file.module.len() {
            let parent = &file.module[..depth];
            let child = &file.module[depth];
            for r in &refs {
                if r.len() > depth && r[..depth] == *parent && &r[depth] != child {
                    siblings
                        .entry(parent.to_vec())
                        .or_default()
                        .entry(child.clone())
                        .or_default()
                        .insert(r[depth].clone());
                }
            }
        }
    }
    if let Some(cycle) = find_cycle(&top) {
        panic!("top-level modules form a cycle: {}", cycle.join(" -> "));
    }
    let mut cycles = Vec::new();
    for (parent, graph) in &siblings {
        if let Some(cycle) = find_cycle(graph) {
            let prefix = if parent.is_empty() {
                "crate".to_owned()
            } else {
                format!("crate::{}", parent.join("::"))
            };
            cycles.push(format!("{prefix}: {}", cycle.join(" -> ")));
        }
    }
    assert!(
        cycles.is_empty(),
        "sibling modules form cycles:\n  {}",
        cycles.join("\n  ")
    );
}

#[test]
fn the_scanner_sees_use_trees_and_inline_paths() {
    // The checks above are only as good as this scanner: prove it finds what it must.
    let file = SourceFile {
        path: PathBuf::from("src/server/sandbox/zygote.rs"),
        module: vec!["server".into(), "sandbox".into(), "zygote".into()],
        code: strip_comments_and_strings(
            "use crate::{protocol::{Reply, lzo}, network::caller};\n\
             use super::{confine, SandboxSpec};\n\
             // use crate::coordinator::pool;\n\
             fn f() { let _ = \"crate::member::x\"; crate::client::dual::go(); }\n",
        ),
    };
    let refs: Vec<String> = referenced_modules(&file)
        .into_iter()
        .map(|p| p.join("::"))
        .collect();
    for want in [
        "protocol::Reply",
        "protocol::lzo",
        "network::caller",
        "server::sandbox::confine",
        "server::sandbox::SandboxSpec",
        "client::dual::go",
    ] {
        assert!(refs.iter().any(|r| r == want), "missing {want} in {refs:?}");
    }
    assert!(
        !refs
            .iter()
            .any(|r| r.starts_with("coordinator") || r.starts_with("member")),
        "comments and strings are not imports: {refs:?}"
    );
    let mut graph = BTreeMap::new();
    graph.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    graph.insert("b".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert!(find_cycle(&graph).is_some());
    graph.insert("b".to_owned(), BTreeSet::new());
    assert!(find_cycle(&graph).is_none());
}

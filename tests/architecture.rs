//! The framework's module graph stays layered: no import cycles between its modules, and the
//! lower layers never reach up (the engine layer imports nothing from handlers, channels or
//! the hub; the protocol only knows errors; a connection never reaches back into the builder).
//!
//! A module here is a file of `framework/src`, taken at the depth of `channel::route` (deeper
//! files count as their depth-2 ancestor: `engine::redis::conn` is `engine::redis`). An edge is
//! a `crate::…` or `super::…` path in the file's code (not its comments or unit tests); a parent's `pub use child::X`
//! re-exports are its public face, not dependencies, and paths through them are followed to the
//! child that defines the item.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `channel/route.rs` → `channel::route`; `channel/mod.rs` → `channel`; `lib.rs` → ``.
fn module_of(root: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(root).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts.join("::")
}

fn depth2(module: &str) -> String {
    module.split("::").take(2).collect::<Vec<_>>().join("::")
}

fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_owned()
    } else {
        format!("{parent}::{child}")
    }
}

/// The code without its unit tests (kept at the end of a file, after `#[cfg(test)]`).
fn without_tests(src: &str) -> &str {
    match src.find("#[cfg(test)]\nmod tests") {
        Some(i) => &src[..i],
        None => src,
    }
}

/// `pub use child::{A, B as C};` lines: (name, child) pairs, and the text without them.
fn reexports(src: &str) -> (Vec<(String, String)>, String) {
    let mut found = Vec::new();
    let mut rest = String::new();
    for line in src.lines() {
        let t = line.trim_start();
        if t.starts_with("//") {
            continue; // docs link anywhere; only code is a dependency
        }
        let body = t
            .strip_prefix("pub use ")
            .or_else(|| t.strip_prefix("pub(crate) use "));
        let child_reexport = body.and_then(|b| {
            let (child, items) = b.split_once("::")?;
            let is_child = child.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                && !["crate", "super", "self", "std"].contains(&child);
            is_child.then_some((child, items))
        });
        match child_reexport {
            Some((child, items)) => {
                let items = items
                    .trim_end_matches(';')
                    .trim_matches(|c| c == '{' || c == '}');
                for item in items.split(',') {
                    let name = item.split(" as ").last().unwrap().trim();
                    if !name.is_empty() {
                        found.push((name.to_owned(), child.to_owned()));
                    }
                }
            }
            None => {
                rest.push_str(line);
                rest.push('\n');
            }
        }
    }
    (found, rest)
}

/// Every path after `prefix` (`crate::` or `super::`), with `{a, b::c}` groups expanded.
fn paths_after(src: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = src.as_bytes();
    let mut from = 0;
    while let Some(i) = src[from..].find(prefix) {
        let start = from + i;
        from = start + prefix.len();
        let before = start.checked_sub(1).map(|b| bytes[b]);
        if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':') {
            continue; // `$crate::`, `foo::super::`
        }
        let mut end = from;
        while end < bytes.len()
            && (bytes[end].is_ascii_alphanumeric() || b"_:".contains(&bytes[end]))
        {
            end += 1;
        }
        let base = src[from..end].trim_end_matches(':').to_owned();
        if src[end..].starts_with('{') && src[from..end].ends_with("::") {
            let mut depth = 0;
            let mut close = end;
            for (k, c) in src[end..].char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            close = end + k;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let group = &src[end + 1..close];
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars().chain(std::iter::once(',')) {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        let head = item.split("::{").next().unwrap();
                        let head = head.split(" as ").next().unwrap().trim();
                        if head == "self" {
                            out.push(base.clone());
                        } else if !head.is_empty() {
                            out.push(format!("{base}::{head}"));
                        }
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
        } else if !base.is_empty() {
            out.push(base);
        }
    }
    out
}

fn graph() -> Graph {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("framework/src");
    let mut files = Vec::new();
    source_files(&root, &mut files);
    let modules: BTreeMap<String, String> = files
        .iter()
        .map(|f| {
            let src = std::fs::read_to_string(f).unwrap();
            (module_of(&root, f), without_tests(&src).to_owned())
        })
        .collect();
    let mut via_reexport = BTreeMap::new();
    let mut code = BTreeMap::new();
    for (module, src) in &modules {
        let (found, rest) = reexports(src);
        for (name, child) in found {
            via_reexport.insert(join(module, &name), join(module, &child));
        }
        code.insert(module.clone(), rest);
    }
    let resolve = |path: &str| -> Option<String> {
        if let Some(child) = via_reexport.get(path) {
            return Some(depth2(child));
        }
        let parts: Vec<&str> = path.split("::").collect();
        (1..=parts.len())
            .rev()
            .map(|n| parts[..n].join("::"))
            .find(|p| modules.contains_key(p))
            .map(|p| depth2(&p))
    };
    let mut graph = Graph::new();
    for (module, src) in &code {
        let node = depth2(module);
        let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
        let mut targets: Vec<String> = paths_after(src, "crate::")
            .iter()
            .filter_map(|p| resolve(p))
            .collect();
        targets.extend(
            paths_after(src, "super::")
                .iter()
                .filter_map(|p| resolve(&join(parent, p))),
        );
        let edges = graph.entry(node.clone()).or_default();
        edges.extend(targets.into_iter().filter(|t| *t != node && !t.is_empty()));
    }
    graph
}

/// A cycle through `from`, if any (depth-first search).
fn cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        graph: &Graph,
        node: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|n| n == node) {
            let mut c = path[i..].to_vec();
            c.push(node.to_owned());
            return Some(c);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(graph, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(graph, n, &mut Vec::new(), &mut done))
}

#[test]
fn no_import_cycles_between_modules() {
    let graph = graph();
    assert!(graph.contains_key("channel::router"), "{graph:#?}");
    if let Some(c) = cycle(&graph) {
        panic!("import cycle: {}", c.join(" -> "));
    }
}

#[test]
fn lower_layers_never_reach_up() {
    let graph = graph();
    let uses = |from: &str| -> BTreeSet<String> {
        graph
            .iter()
            .filter(|(m, _)| *m == from || m.starts_with(&format!("{from}::")))
            .flat_map(|(_, t)| t.iter().cloned())
            .collect()
    };
    let top = |m: &String| m.split("::").next().unwrap().to_owned();
    let engine: BTreeSet<String> = uses("engine").iter().map(top).collect();
    for up in [
        "channel",
        "handler",
        "hub",
        "session",
        "serverless",
        "topics",
    ] {
        assert!(
            !engine.contains(up),
            "the engine layer imports `{up}`: {engine:?}"
        );
    }
    let protocol: BTreeSet<String> = uses("protocol").iter().map(top).collect();
    assert!(
        protocol.iter().all(|m| m == "error" || m == "protocol"),
        "the protocol imports {protocol:?}"
    );
    for m in ["channel::connection", "channel::upgrade", "channel::handle"] {
        assert!(
            !uses(m).contains("channel::route"),
            "`{m}` reaches back into the builder"
        );
    }
}

#[test]
fn the_checker_sees_what_it_checks() {
    // A parser that found no edges would pass the tests above vacuously.
    let graph = graph();
    let route = &graph["channel::route"];
    assert!(route.contains("handler"), "{route:?}");
    assert!(route.contains("channel::router"), "{route:?}");
    let mut g = Graph::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("a".into());
    assert!(cycle(&g).is_some());
}

//! reach-server's top-level modules import each other in one direction
//! only: each layer below may import the layers under it, never one above
//! or beside it (ARCHITECTURE.md, "Layers"). This test reads the sources,
//! finds every `crate::` path of each module (its file and folder), and
//! fails on an import that goes sideways or up, and on a module that no
//! layer names, so that a new module has to be placed on purpose.

// Helpers here panic on what a test cannot go on without.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom first. A module may import the modules of the layers before its
/// own, and nothing else of the crate (the crate root, which composes
/// everything into `AppState`, is not a layer).
const LAYERS: &[&[&str]] = &[
    // Leaves: no import of the crate.
    &["time", "net", "data_dir", "process", "bandwidth"],
    &["odata", "files", "tls"],
    &["config"],
    // Durable state and the error every handler returns.
    &["store"],
    &["error", "ratelimit", "connections"],
    // Who did what, who may.
    &["audit", "metrics"],
    &["auth"],
    // Shared pieces of the HTTP layer and of agent connections.
    &["http", "hub", "followers"],
    &["cluster"],
    &["retention"],
    &["sweeper"],
    // The three HTTP areas: never each other.
    &["api", "agents", "console"],
    &["router"],
    // Operators' commands, the development mode, test helpers.
    &["admin"],
    &["dev", "testing"],
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level modules `lib.rs` declares.
fn modules() -> Vec<String> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    lib.lines()
        .filter_map(|line| line.trim().strip_prefix("pub mod "))
        .chain(
            lib.lines()
                .filter_map(|line| line.trim().strip_prefix("mod ")),
        )
        .map(|rest| rest.trim_end_matches(';').trim().to_string())
        .collect()
}

fn files_of(module: &str) -> Vec<PathBuf> {
    let mut files = vec![src().join(format!("{module}.rs"))];
    let mut folders = vec![src().join(module)];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files
}

/// The code of a file without its comments (line comments and docs).
fn code(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn identifier(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The first segment of every path after `prefix` (`crate::`): `a` of
/// `crate::a::b`, and `a`, `b` of `crate::{a::x, b}`.
fn first_segments(code: &str, prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        rest = &rest[at + prefix.len()..];
        let after = rest.trim_start();
        if let Some(group) = after.strip_prefix('{') {
            let mut depth = 1;
            let mut element_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => element_start = true,
                    c if element_start && depth == 1 && !c.is_whitespace() => {
                        element_start = false;
                        found.push(identifier(&group[i..]).to_string());
                    }
                    _ => {}
                }
            }
        } else {
            found.push(identifier(after).to_string());
        }
    }
    found
}

/// Each module's imports of other top-level modules.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules();
    let mut graph = BTreeMap::new();
    for module in &modules {
        let mut imports = BTreeSet::new();
        for file in files_of(module) {
            let Ok(text) = std::fs::read_to_string(&file) else {
                continue;
            };
            let code = code(&text);
            let mut names = first_segments(&code, "crate::");
            // In a top-level file, `super::` is the crate root.
            if file.parent() == Some(src().as_path()) {
                names.extend(first_segments(&code, "super::"));
            }
            for name in names {
                if name != *module && modules.contains(&name) {
                    imports.insert(name);
                }
            }
        }
        graph.insert(module.clone(), imports);
    }
    graph
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

#[test]
fn modules_import_only_the_layers_below_them() {
    let graph = graph();
    let mut wrong = Vec::new();
    for (module, imports) in &graph {
        let Some(layer) = layer_of(module) else {
            wrong.push(format!("{module} is in no layer: place it in LAYERS"));
            continue;
        };
        for import in imports {
            match layer_of(import) {
                Some(below) if below < layer => {}
                _ => wrong.push(format!("{module} imports {import}")),
            }
        }
    }
    let listing: Vec<String> = graph
        .iter()
        .map(|(m, i)| {
            format!(
                "  {m} -> {}",
                i.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "imports against the layers (ARCHITECTURE.md):\n  {}\nthe graph:\n{}",
        wrong.join("\n  "),
        listing.join("\n")
    );
}

#[test]
fn every_layer_names_a_module_that_exists() {
    let modules = modules();
    for layer in LAYERS {
        for module in *layer {
            assert!(
                modules.iter().any(|m| m == module),
                "{module} is not a module"
            );
        }
    }
}

#[test]
fn the_reader_finds_grouped_and_nested_paths() {
    let code = code(
        "use crate::{a::{x, y}, b, self as c};\nlet _ = crate::d::f(); // crate::e\nuse crate :: g;",
    );
    assert_eq!(
        first_segments(&code, "crate::"),
        vec!["a", "b", "self", "d"],
        "`crate :: g` is not a path rustfmt would leave"
    );
}

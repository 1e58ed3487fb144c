//! Keeps the crate's layering: reads every `crate::…` path under `src/` and
//! fails on an import from a lower layer to a higher one, or on a cycle
//! between top-level modules. ARCHITECTURE.md draws the same layers.

// Tests and benches stop at the first surprise: unwrapping is how they say so.
#![allow(clippy::unwrap_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// The top-level modules, bottom layer first. A module may use its own
/// layer and the ones below it, never one above.
const LAYERS: &[&[&str]] = &[
    // the vocabulary, and what everything may use
    &["domain", "proto", "shutdown", "telemetry"],
    // PostgreSQL and Redis
    &["store"],
    &["admission", "recorder"],
    // the Router and the route cache
    &["routing"],
    // the edges: gRPC, the change feed, the admin endpoints
    &["api", "invalidation", "admin"],
    // the command line (every setting), the CLI client, and the wiring
    &["config", "client", "app"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// `src/store/redis.rs` → `store`; the crate roots have no module.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "main.rs" => None,
        name => Some(name.trim_end_matches(".rs").to_string()),
    }
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The code of a file without its comments and its unit tests (a test
/// module may reach anywhere).
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod ") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules a piece of code names: `crate::a::…`, and each
/// path in `crate::{a::…, b, …}`.
fn named_modules(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            let mut items = Vec::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        items.push(std::mem::take(&mut item));
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            items.push(item);
            names.extend(items.iter().filter_map(|i| first_ident(i)));
        } else if let Some(name) = first_ident(rest) {
            names.insert(name);
        }
    }
    names
}

fn first_ident(text: &str) -> Option<String> {
    let ident: String = text
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!ident.is_empty()).then_some(ident)
}

/// module → the modules it uses, and the files behind each edge.
fn edges() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for file in files {
        let Some(module) = module_of(&src, &file) else {
            continue;
        };
        let text = fs::read_to_string(&file).expect("read a source file");
        let uses = edges.entry(module.clone()).or_default();
        for used in named_modules(&code(&text)) {
            if used != module {
                let shown = file.strip_prefix(&src).unwrap().display().to_string();
                uses.entry(used).or_default().insert(shown);
            }
        }
    }
    edges
}

#[test]
fn every_module_has_a_layer() {
    let unplaced: Vec<String> = edges()
        .into_keys()
        .filter(|m| layer_of(m).is_none())
        .collect();
    assert!(
        unplaced.is_empty(),
        "place these modules in LAYERS: {unplaced:?}"
    );
}

#[test]
fn no_module_uses_a_higher_layer() {
    let mut upward = Vec::new();
    for (module, uses) in edges() {
        let Some(own) = layer_of(&module) else {
            continue;
        };
        for (used, files) in uses {
            if layer_of(&used).is_some_and(|layer| layer > own) {
                upward.push(format!("{module} uses {used} (in {files:?})"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that run up:\n{}",
        upward.join("\n")
    );
}

#[test]
fn no_modules_use_each_other_in_a_circle() {
    let edges = edges();
    let mut circles = Vec::new();
    for start in edges.keys() {
        // depth-first from `start`, looking for a way back to it
        let mut stack = vec![vec![start.clone()]];
        let mut seen = BTreeSet::new();
        while let Some(path) = stack.pop() {
            let last = path.last().unwrap();
            for next in edges.get(last).into_iter().flat_map(|uses| uses.keys()) {
                if next == start {
                    circles.push(format!("{} -> {start}", path.join(" -> ")));
                } else if seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push(longer);
                }
            }
        }
    }
    assert!(circles.is_empty(), "circles:\n{}", circles.join("\n"));
}

#[test]
fn the_reader_sees_grouped_and_plain_paths() {
    let code = code(
        "use crate::{a::B, c, d::{e, f}};\nlet x = crate::g::h();\n// crate::comment\n\
         #[cfg(test)]\nmod tests { use crate::z; }",
    );
    let names: Vec<String> = named_modules(&code).into_iter().collect();
    assert_eq!(names, ["a", "c", "d", "g"]);
}

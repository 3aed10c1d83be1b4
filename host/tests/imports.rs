//! The host's modules import each other one way: no circle of files. Read from the source
//! (every `crate::` and `super::` path outside the tests at the end of a file), file by
//! file; a module's `mod.rs` and the files below it are one room from outside, so a facade
//! that re-exports its children is not a circle.
//!
//! `cargo test -p charm-host --test imports -- --nocapture` prints the graph as floors: a
//! file stands above every file it imports (floor 1 imports nothing of the crate).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path: `["leadership", "sqlite"]` for `leadership/sqlite/mod.rs`.
type Module = Vec<String>;

fn source_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("read src").map(|e| e.expect("entry").path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            source_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The module a file is (`lib.rs`, `main.rs` and `bin/` are the crate roots: `[]`).
fn module_of(src: &Path, file: &Path) -> Module {
    let relative = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap_or_default();
    if parts.first().is_some_and(|p| p == "bin") || last == "lib.rs" || last == "main.rs" {
        return Vec::new();
    }
    if last != "mod.rs" {
        parts.push(last.trim_end_matches(".rs").to_owned());
    }
    parts
}

/// The code of a file without its comments and its test module.
fn code(text: &str) -> String {
    let body = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    body.lines().map(|line| line.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n")
}

/// Every path the code names from `crate::` or `super::` (groups `{a, b::c}` expanded),
/// made absolute from `module`.
fn named_paths(code: &str, module: &Module) -> Vec<Module> {
    let mut found = Vec::new();
    for start in ["crate::", "super::"] {
        let mut rest = code;
        while let Some(at) = rest.find(start) {
            let preceded_by_ident =
                rest[..at].chars().last().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
            rest = &rest[at + start.len()..];
            if preceded_by_ident {
                continue;
            }
            let base: Module = if start == "crate::" {
                Vec::new()
            } else {
                // The module above this one (for `a/mod.rs` and `a.rs` alike: the crate root).
                let mut base = module.clone();
                base.pop();
                base
            };
            for tail in expand(rest) {
                let mut path = base.clone();
                path.extend(tail);
                found.push(path);
            }
        }
    }
    found
}

/// The paths at the start of `text`: `a::b::C` or a group `{a::B, c::{D, E}}`.
fn expand(text: &str) -> Vec<Module> {
    let text = text.trim_start();
    if let Some(group) = text.strip_prefix('{') {
        let mut depth = 1;
        let mut end = 0;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let inner = &group[..end];
        let mut items = Vec::new();
        let (mut depth, mut from) = (0, 0);
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(&inner[from..i]);
                    from = i + 1;
                }
                _ => {}
            }
        }
        items.push(&inner[from..]);
        return items.into_iter().filter(|item| !item.trim().is_empty()).flat_map(expand).collect();
    }
    let mut path = Vec::new();
    let mut rest = text;
    loop {
        let ident: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        if ident.is_empty() {
            break;
        }
        rest = &rest[ident.len()..];
        path.push(ident);
        match rest.strip_prefix("::") {
            Some(after) if after.starts_with('{') => {
                return expand(after).into_iter().map(|tail| [path.clone(), tail].concat()).collect();
            }
            Some(after) => rest = after,
            None => break,
        }
    }
    vec![path]
}

/// The file-level import graph of the crate whose sources are in `src`.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    source_files(src, &mut files);
    let modules: BTreeMap<Module, String> = files
        .iter()
        .filter(|f| !f.starts_with(src.join("bin")) && !f.ends_with("main.rs"))
        .map(|f| (module_of(src, f), f.strip_prefix(src).expect("under src").display().to_string()))
        .collect();
    let mut graph = BTreeMap::new();
    for (module, name) in &modules {
        let text = std::fs::read_to_string(src.join(name)).expect("read source");
        let mut targets = BTreeSet::new();
        for path in named_paths(&code(&text), module) {
            // The longest prefix of the path that is a module of its own file.
            let Some(target) = (0..=path.len()).rev().find_map(|n| modules.get(&path[..n])) else { continue };
            let target_module = module_of(src, &src.join(target));
            // A module and the modules below it are one room from outside.
            let related = target_module.starts_with(module) || module.starts_with(&target_module);
            if target != name && !related {
                targets.insert(target.clone());
            }
        }
        graph.insert(name.clone(), targets);
    }
    graph
}

/// The circles of `graph`: strongly connected sets of more than one file (Tarjan).
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        found: Vec<Vec<String>>,
    }
    impl<'g> Walk<'g> {
        fn visit(&mut self, node: &'g str) {
            let n = self.index.len();
            self.index.insert(node, n);
            self.low.insert(node, n);
            self.stack.push(node);
            self.on_stack.insert(node);
            for next in self.graph.get(node).into_iter().flatten() {
                let next = next.as_str();
                if !self.index.contains_key(next) {
                    self.visit(next);
                    let low = self.low[node].min(self.low[next]);
                    self.low.insert(node, low);
                } else if self.on_stack.contains(next) {
                    let low = self.low[node].min(self.index[next]);
                    self.low.insert(node, low);
                }
            }
            if self.low[node] == self.index[node] {
                let mut set = Vec::new();
                while let Some(top) = self.stack.pop() {
                    self.on_stack.remove(top);
                    set.push(top.to_owned());
                    if top == node {
                        break;
                    }
                }
                if set.len() > 1 {
                    set.sort();
                    self.found.push(set);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for node in graph.keys() {
        if !walk.index.contains_key(node.as_str()) {
            walk.visit(node);
        }
    }
    walk.found
}

/// Each file's floor: 1 + the highest floor of what it imports (a graph without circles).
fn floors(graph: &BTreeMap<String, BTreeSet<String>>) -> BTreeMap<String, usize> {
    fn floor(node: &str, graph: &BTreeMap<String, BTreeSet<String>>, known: &mut BTreeMap<String, usize>) -> usize {
        if let Some(f) = known.get(node) {
            return *f;
        }
        known.insert(node.to_owned(), 0); // a circle would stop here
        let f = 1 + graph.get(node).into_iter().flatten().map(|n| floor(n, graph, known)).max().unwrap_or(0);
        known.insert(node.to_owned(), f);
        f
    }
    let mut known = BTreeMap::new();
    for node in graph.keys() {
        floor(node, graph, &mut known);
    }
    known
}

#[test]
fn the_host_modules_import_each_other_without_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = graph(&src);
    assert!(graph.len() > 40, "the crate's files were found ({})", graph.len());
    assert!(graph["tracker.rs"].contains("leadership/mod.rs"), "imports are read: {:?}", graph["tracker.rs"]);
    let circles = circles(&graph);
    let floors = floors(&graph);
    let mut by_floor: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    for (file, floor) in &floors {
        by_floor.entry(*floor).or_default().push(file);
    }
    for (floor, files) in by_floor.iter().rev() {
        println!("floor {floor:>2}: {}", files.join("  "));
    }
    for (file, targets) in &graph {
        let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
        println!("{file} -> {}", targets.join(", "));
    }
    assert!(circles.is_empty(), "files that import each other in a circle: {circles:?}");
}

#[test]
fn a_circle_is_found() {
    let graph: BTreeMap<String, BTreeSet<String>> =
        [("a.rs", vec!["b.rs"]), ("b.rs", vec!["c.rs"]), ("c.rs", vec!["a.rs", "d.rs"]), ("d.rs", vec![])]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
            .collect();
    assert_eq!(circles(&graph), vec![vec!["a.rs".to_owned(), "b.rs".to_owned(), "c.rs".to_owned()]]);
    assert_eq!(
        expand("{a::B, c::{D, e::F}}"),
        vec![
            vec!["a".to_owned(), "B".to_owned()],
            vec!["c".to_owned(), "D".to_owned()],
            vec!["c".to_owned(), "e".to_owned(), "F".to_owned()],
        ]
    );
}

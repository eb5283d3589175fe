//! The shape of the code: within each crate, modules import one another without cycles (a
//! module's vocabulary lives in a leaf others depend on, never in a file that also needs its
//! users), and no source file grows past what one concept needs.
//!
//! Modules are files; an edge A -> B is a `crate::`, `super::` or `self::` path in A's code
//! (test modules excluded) that names an item of B, with the crate root's `pub use`
//! re-exports followed to where the item lives.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates' source roots, relative to the workspace.
const CRATES: [&str; 6] = [
    "src",
    "distill/src",
    "export/src",
    "runtime/src",
    "capi/src",
    "benches/src",
];

/// Lines of code (tests and comments excluded) a file may hold.
const MAX_LINES: usize = 520;

/// The workspace checked: this one, or another checkout named by EDGEKD_STRUCTURE_ROOT (to
/// list what an older tree had).
fn workspace() -> PathBuf {
    std::env::var_os("EDGEKD_STRUCTURE_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `a/b.rs` and `a/b/mod.rs` are module `a::b`; `lib.rs` and `main.rs` the root, "".
fn module_of(root: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(root).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

/// The code of a file without its test module, comments and string literals.
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim();
        if t == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|n| n.trim_start().starts_with("mod ") || n.contains("mod tests"))
        {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        let mut in_string = false;
        let mut prev = ' ';
        let mut kept = String::new();
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if !in_string && c == '/' && chars.get(i + 1) == Some(&'/') {
                break;
            }
            if c == '"' && prev != '\\' {
                in_string = !in_string;
            } else if !in_string {
                kept.push(c);
            }
            prev = if prev == '\\' && c == '\\' { ' ' } else { c };
            i += 1;
        }
        out.push_str(&kept);
        out.push('\n');
    }
    out
}

/// The code split where inline modules (`mod x86 { ... }`) begin and end, each piece with
/// the inline modules around it, so `super::` inside one resolves from there.
fn regions(code: &str) -> Vec<(Vec<String>, String)> {
    let mut out: Vec<(Vec<String>, String)> = vec![(vec![], String::new())];
    let mut stack: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    for c in code.chars() {
        match c {
            '{' => {
                let text = &out.last().unwrap().1;
                let words: Vec<String> = text
                    .split_whitespace()
                    .rev()
                    .take(2)
                    .map(String::from)
                    .collect();
                depth += 1;
                out.last_mut().unwrap().1.push(c);
                if let [name, m] = &words[..] {
                    if m != "mod" {
                        continue;
                    }
                    stack.push((name.to_string(), depth));
                    let prefix = stack.iter().map(|(n, _)| n.clone()).collect();
                    out.push((prefix, String::new()));
                }
            }
            '}' => {
                if stack.last().is_some_and(|(_, d)| *d == depth) {
                    stack.pop();
                    let prefix = stack.iter().map(|(n, _)| n.clone()).collect();
                    out.push((prefix, String::new()));
                }
                depth = depth.saturating_sub(1);
                out.last_mut().unwrap().1.push(c);
            }
            _ => out.last_mut().unwrap().1.push(c),
        }
    }
    out
}

/// Every path a `use` tree names, e.g. `crate::{a, b::{c, d}}` -> crate::a, crate::b::c, ...
fn expand_use(tree: &str) -> Vec<String> {
    // `a as b` keeps `a`: mark renames before whitespace goes.
    let tree = tree.replace(" as ", "@");
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    fn walk(prefix: &str, t: &str, out: &mut Vec<String>) {
        if let Some(open) = t.find('{') {
            let head = &t[..open];
            let inner = &t[open + 1..t.rfind('}').unwrap_or(t.len())];
            let base = format!("{prefix}{head}");
            let mut depth = 0;
            let mut start = 0;
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        walk(&base, &inner[start..i], out);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            walk(&base, &inner[start..], out);
        } else if !t.is_empty() {
            let t = t.split('@').next().unwrap_or(t);
            out.push(format!("{prefix}{t}"));
        }
    }
    let mut out = Vec::new();
    walk("", &tree, &mut out);
    out
}

/// Paths starting with `crate`, `super` or `self` in `code`.
fn paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("use ") {
        let before = rest[..i].chars().last();
        let after = &rest[i + 4..];
        if before.is_none_or(|c| !c.is_alphanumeric() && c != '_') {
            if let Some(end) = after.find(';') {
                out.extend(expand_use(&after[..end]));
            }
        }
        rest = after;
    }
    let text = code;
    for start in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(i) = text[from..].find(start) {
            let at = from + i;
            let ok = at == 0 || {
                let c = text[..at].chars().last().unwrap();
                !c.is_alphanumeric() && c != '_'
            };
            if ok {
                let end = text[at..]
                    .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .map_or(text.len(), |e| at + e);
                let path = text[at..end].trim_end_matches(':');
                if path.contains("::") {
                    out.push(path.to_string());
                }
            }
            from = at + start.len();
        }
    }
    out
}

/// The module a path from `module` refers to: the longest module prefix of it. A path not
/// starting with `crate`, `super` or `self` refers to a child module when its first segment
/// names one (`pub use measure::Plan` in `bench/mod.rs`), else to another crate.
fn resolve(
    path: &str,
    module: &str,
    modules: &BTreeSet<String>,
    reexports: &BTreeMap<String, String>,
) -> Option<String> {
    let mut parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
    let mut base: Vec<String> = if module.is_empty() {
        vec![]
    } else {
        module.split("::").map(String::from).collect()
    };
    match parts.first() {
        Some(&"crate") => {
            base.clear();
            parts.remove(0);
        }
        Some(&"self") => {
            parts.remove(0);
        }
        Some(&"super") => {
            // `super` in `a/b.rs` and in `a/b/mod.rs` alike is `a`.
            while parts.first() == Some(&"super") {
                parts.remove(0);
                base.pop();
            }
        }
        Some(first) => {
            let child = base
                .iter()
                .map(String::as_str)
                .chain([*first])
                .collect::<Vec<_>>()
                .join("::");
            if !modules.contains(&child) {
                return None;
            }
        }
        None => return None,
    }
    let full: Vec<String> = base
        .into_iter()
        .chain(parts.iter().map(|s| s.to_string()))
        .collect();
    for n in (0..=full.len()).rev() {
        let candidate = full[..n].join("::");
        if modules.contains(&candidate) {
            if candidate.is_empty() {
                // An item of the crate root: follow its re-export, if any.
                return full.first().and_then(|name| reexports.get(name).cloned());
            }
            return Some(candidate);
        }
    }
    None
}

struct Crate {
    files: BTreeMap<String, PathBuf>,
}

fn crate_of(dir: &str) -> Crate {
    let root = workspace().join(dir);
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    Crate {
        files: files
            .into_iter()
            .filter(|f| !f.components().any(|c| c.as_os_str() == "bin"))
            .map(|f| (module_of(&root, &f), f))
            .collect(),
    }
}

/// Module -> the modules it imports.
fn import_graph(c: &Crate) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<String> = c.files.keys().cloned().collect();
    // Names the crate root re-exports: `pub use a::b::{C, D}` sends C and D to a::b.
    let mut reexports = BTreeMap::new();
    if let Some(root) = c.files.get("") {
        let text = code(&std::fs::read_to_string(root).unwrap());
        for line in text.split(';') {
            let line = line.trim();
            if let Some(tree) = line.strip_prefix("pub use ") {
                for p in expand_use(tree) {
                    let parts: Vec<&str> = p.split("::").collect();
                    if let Some((name, path)) = parts.split_last() {
                        let mut module = path.join("::");
                        while !module.is_empty() && !modules.contains(&module) {
                            module = module.rsplit_once("::").map_or("", |(a, _)| a).to_string();
                        }
                        if !module.is_empty() {
                            reexports.insert(name.to_string(), module);
                        }
                    }
                }
            }
        }
    }
    let mut graph = BTreeMap::new();
    for (module, file) in &c.files {
        let text = code(&std::fs::read_to_string(file).unwrap());
        let mut deps = BTreeSet::new();
        for (inline, piece) in regions(&text) {
            // Paths inside `mod x86 { ... }` resolve from `module::x86`, a module of its own
            // file: an edge back to the file's module is no edge.
            let here = std::iter::once(module.clone())
                .chain(inline)
                .filter(|m| !m.is_empty())
                .collect::<Vec<_>>()
                .join("::");
            for p in paths(&piece) {
                if let Some(target) = resolve(&p, &here, &modules, &reexports) {
                    if &target != module {
                        deps.insert(target);
                    }
                }
            }
        }
        graph.insert(module.clone(), deps);
    }
    graph
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.graph.contains_key(w) {
                continue;
            }
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

#[test]
fn no_crate_has_an_import_cycle() {
    let mut found = Vec::new();
    for dir in CRATES {
        let graph = import_graph(&crate_of(dir));
        for c in cycles(&graph) {
            found.push(format!("{dir}: {}", c.join(" <-> ")));
        }
    }
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.into(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(cycles(&g), vec![vec!["a", "b", "c"]]);
    let paths = paths(&code(
        "use crate::{dataset::Dataset, input::{InputShape, Normalization}};\n\
         fn f() { super::x::y(); } // crate::comment\n let s = \"crate::string\";",
    ));
    assert_eq!(
        paths,
        vec![
            "crate::dataset::Dataset",
            "crate::input::InputShape",
            "crate::input::Normalization",
            "super::x::y"
        ]
    );
}

#[test]
fn no_source_file_outgrows_one_concept() {
    let mut long = Vec::new();
    for dir in CRATES {
        for file in crate_of(dir).files.values() {
            let text = std::fs::read_to_string(file).unwrap();
            let lines = code(&text).lines().filter(|l| !l.trim().is_empty()).count();
            if lines > MAX_LINES {
                long.push(format!(
                    "{} ({lines} lines of code)",
                    file.strip_prefix(workspace()).unwrap().display()
                ));
            }
        }
    }
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines of code; split them by concept:\n{}",
        long.join("\n")
    );
}

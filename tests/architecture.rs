//! The parts of ARCHITECTURE.md a machine can check: which layer may import
//! which, no import cycles between modules, no reference to a design file
//! outside the repository, and every test the law table names exists.
//!
//! The sources are read as text: imports are the `crate::…` and `super::…`
//! paths in them (comments skipped), resolved to module files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What each top-level module may use (besides itself). From the table in
/// ARCHITECTURE.md, "Layers".
const MAY_USE: &[(&str, &[&str])] = &[
    ("category", &[]),
    ("mode", &[]),
    ("error", &["category"]),
    ("sys", &[]),
    ("per_process", &["sys"]),
    ("blocking", &["error"]),
    (
        "backend",
        &["blocking", "per_process", "sys", "error", "mode"],
    ),
    (
        "lock",
        &[
            "backend",
            "blocking",
            "per_process",
            "sys",
            "error",
            "category",
            "mode",
        ],
    ),
    (
        "write",
        &["lock", "blocking", "sys", "error", "category", "mode"],
    ),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `src/`, keyed by its module path
/// (`["lock", "acquire"]`; `[]` for lib.rs).
fn modules() -> BTreeMap<Vec<String>, PathBuf> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<Vec<String>, PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
            if path.is_dir() {
                let mut p = prefix.to_vec();
                p.push(path.file_name().unwrap().to_str().unwrap().to_owned());
                walk(&path, &p, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let mut p = prefix.to_vec();
                if name != "mod" && name != "lib" {
                    p.push(name);
                }
                out.insert(p, path);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&root().join("src"), &[], &mut out);
    out
}

/// The code of a file without comments (line comments and doc comments;
/// the crate uses no block comments).
fn code(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether a line only declares or re-exports (a facade), which does not
/// count as a dependency of the declaring module.
fn is_facade(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with("pub use ")
        || t.starts_with("pub(crate) use ")
        || t.starts_with("mod ")
        || t.starts_with("pub mod ")
        || t.starts_with("pub(crate) mod ")
}

/// The module paths a file refers to: `crate::a::b…` and `super::…`
/// (including the names in a `{…}` group right after them).
fn references(module: &[String], text: &str) -> Vec<(Vec<String>, String)> {
    let mut out = Vec::new();
    let mut statement = String::new();
    for line in text.lines() {
        statement.push_str(line);
        statement.push(' ');
        // A `use` may span lines: look at whole statements.
        let head = statement.trim_start();
        let in_use = ["use ", "pub use ", "pub(crate) use "]
            .iter()
            .any(|u| head.starts_with(u));
        if in_use && !line.contains(';') {
            continue;
        }
        let stmt = std::mem::take(&mut statement);
        if is_facade(&stmt) {
            continue;
        }
        for (start, anchor) in [("crate::", 0usize), ("super::", 1usize)] {
            let mut rest = stmt.as_str();
            while let Some(i) = rest.find(start) {
                let before = rest[..i].chars().last();
                rest = &rest[i..];
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    rest = &rest[start.len()..];
                    continue;
                }
                let mut base: Vec<String> = if anchor == 0 {
                    Vec::new()
                } else {
                    // `super` is the parent module.
                    let mut b = module.to_vec();
                    b.pop();
                    b
                };
                let mut tail = &rest[start.len()..];
                while let Some(more) = tail.strip_prefix("super::") {
                    base.pop();
                    tail = more;
                }
                let path: String = tail
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':' || *c == '{')
                    .collect();
                let mut segments: Vec<String> = base;
                let mut group = false;
                for seg in path.split("::") {
                    if seg.starts_with('{') {
                        group = true;
                        break;
                    }
                    if seg.is_empty() {
                        break;
                    }
                    segments.push(seg.to_owned());
                }
                if group {
                    let inside = &tail[tail.find('{').unwrap() + 1..];
                    let inside = &inside[..inside.find('}').unwrap_or(inside.len())];
                    for name in inside.split(',') {
                        let name = name.trim().split("::").next().unwrap_or("").trim();
                        if !name.is_empty() {
                            let mut s = segments.clone();
                            s.push(name.to_owned());
                            out.push((s, stmt.trim().chars().take(120).collect()));
                        }
                    }
                } else {
                    out.push((segments, stmt.trim().chars().take(120).collect()));
                }
                rest = &rest[start.len()..];
            }
        }
    }
    out
}

/// The module file a path names: its longest prefix that is a module.
fn resolve(path: &[String], modules: &BTreeMap<Vec<String>, PathBuf>) -> Option<Vec<String>> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| modules.contains_key(p))
}

/// Module path to its file.
type Modules = BTreeMap<Vec<String>, PathBuf>;
/// Module path to the modules it uses, each with the line that does.
type Edges = BTreeMap<Vec<String>, BTreeSet<(Vec<String>, String)>>;

fn graph() -> (Modules, Edges) {
    let modules = modules();
    let mut edges = BTreeMap::new();
    for (module, path) in &modules {
        let set: &mut BTreeSet<_> = edges.entry(module.clone()).or_default();
        for (target, line) in references(module, &code(path)) {
            if let Some(to) = resolve(&target, &modules)
                && &to != module
            {
                set.insert((to, line));
            }
        }
    }
    (modules, edges)
}

#[test]
fn layers_import_only_what_architecture_md_allows() {
    let (modules, edges) = graph();
    let allowed: BTreeMap<&str, &[&str]> = MAY_USE.iter().copied().collect();
    let mut violations = Vec::new();
    for (from, tos) in &edges {
        let Some(layer) = from.first() else {
            continue; // lib.rs may use everything
        };
        let may = allowed
            .get(layer.as_str())
            .unwrap_or_else(|| panic!("src/{layer}: add its layer to MAY_USE and ARCHITECTURE.md"));
        for (to, line) in tos {
            let target = to.first().map(String::as_str).unwrap_or("crate root");
            if target != layer && !may.contains(&target) {
                violations.push(format!("{} uses {target}: {line}", modules[from].display()));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "layering:\n{}",
        violations.join("\n")
    );
}

#[test]
fn no_module_imports_through_the_crate_roots_re_exports() {
    let mut found = Vec::new();
    for (module, path) in modules() {
        if module.is_empty() {
            continue;
        }
        for (n, line) in code(&path).lines().enumerate() {
            let mut rest = line;
            while let Some(i) = rest.find("crate::") {
                let after = &rest[i + "crate::".len()..];
                if after.starts_with(|c: char| c.is_ascii_uppercase() || c == '{') {
                    found.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                }
                rest = after;
            }
        }
    }
    assert!(
        found.is_empty(),
        "name the defining module instead:\n{}",
        found.join("\n")
    );
}

#[test]
fn no_import_cycles_between_modules() {
    let (modules, edges) = graph();
    // Depth-first search for a back edge; report the cycle it closes.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut mark: BTreeMap<&Vec<String>, Mark> = modules.keys().map(|m| (m, Mark::New)).collect();
    fn visit<'a>(
        m: &'a Vec<String>,
        edges: &'a Edges,
        mark: &mut BTreeMap<&'a Vec<String>, Mark>,
        stack: &mut Vec<&'a Vec<String>>,
        cycles: &mut Vec<String>,
    ) {
        mark.insert(m, Mark::Open);
        stack.push(m);
        for (to, _) in edges.get(m).into_iter().flatten() {
            match mark.get(to).copied() {
                Some(Mark::New) => visit(to, edges, mark, stack, cycles),
                Some(Mark::Open) => {
                    let at = stack.iter().position(|s| *s == to).unwrap_or(0);
                    let names: Vec<String> = stack[at..]
                        .iter()
                        .chain([&to])
                        .map(|s| format!("crate::{}", s.join("::")))
                        .collect();
                    cycles.push(names.join(" -> "));
                }
                _ => {}
            }
        }
        stack.pop();
        mark.insert(m, Mark::Done);
    }
    let mut cycles = Vec::new();
    for m in modules.keys() {
        if mark[m] == Mark::New {
            visit(m, &edges, &mut mark, &mut Vec::new(), &mut cycles);
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_sources_cite_no_design_file_outside_the_repository() {
    for path in modules().values() {
        let text = std::fs::read_to_string(path).unwrap();
        for bad in ["DESIGN.md", "../shared", "shared/"] {
            assert!(
                !text.contains(bad),
                "{} cites {bad}; point to ARCHITECTURE.md",
                path.display()
            );
        }
    }
}

#[test]
fn every_law_has_a_test_that_exists_or_names_its_open_issue() {
    let doc = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let mut laws = BTreeSet::new();
    for row in doc.lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let Ok(law) = cells[1].parse::<u32>() else {
            continue;
        };
        laws.insert(law);
        let proved_by = cells[cells.len() - 2];
        let named: Vec<&str> = proved_by
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|s| s.contains("::"))
            .collect();
        assert!(
            !named.is_empty() || proved_by.starts_with("open:"),
            "law {law} names no test and no open issue"
        );
        for test in named {
            let (file, name) = test.split_once("::").unwrap();
            let text = std::fs::read_to_string(root().join(file))
                .unwrap_or_else(|e| panic!("law {law}: {file}: {e}"));
            assert!(
                text.contains(&format!("fn {name}(")),
                "law {law}: no test {name} in {file}"
            );
            if !name.starts_with(&format!("law{law}_")) {
                // Tests named for another purpose may prove a law too, but
                // each law has at least one named after it.
                continue;
            }
        }
        assert!(
            proved_by.contains(&format!("law{law}_")) || proved_by.starts_with("open:"),
            "law {law} has no test named after it (law{law}_…)"
        );
    }
    assert_eq!(laws, (1..=12).collect(), "the law table lists laws 1 to 12");
    // Every "law N" the sources mention is one of them.
    for path in modules().values() {
        let text = std::fs::read_to_string(path).unwrap();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("law ") {
            rest = &rest[i + 4..];
            let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if let Ok(n) = n.parse::<u32>() {
                assert!(laws.contains(&n), "{} cites law {n}", path.display());
            }
        }
    }
}

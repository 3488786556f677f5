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
    ("fencing", &[]),
    ("error", &["category", "sys"]),
    ("sys", &[]),
    ("per_process", &["sys"]),
    ("path_key", &[]),
    ("mounts", &["per_process", "sys"]),
    ("blocking", &["error"]),
    (
        "backend",
        &[
            "blocking",
            "mounts",
            "per_process",
            "path_key",
            "sys",
            "error",
            "mode",
            "fencing",
        ],
    ),
    (
        "lock",
        &[
            "backend",
            "blocking",
            "mounts",
            "per_process",
            "path_key",
            "sys",
            "error",
            "category",
            "mode",
            "fencing",
        ],
    ),
    (
        "write",
        &[
            "lock", "blocking", "mounts", "sys", "error", "category", "mode", "fencing",
        ],
    ),
    // Helpers for users' test suites (feature `test-util`): the lock layer
    // and what it speaks; no writer.
    (
        "test_util",
        &[
            "lock", "backend", "sys", "error", "category", "mode", "fencing",
        ],
    ),
    // Tools (`lock-doctor`): every layer below.
    (
        "doctor",
        &[
            "write",
            "lock",
            "backend",
            "blocking",
            "mounts",
            "per_process",
            "path_key",
            "sys",
            "error",
            "category",
            "mode",
            "fencing",
        ],
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
    // `src/bin/`: programs, each a crate of its own that sees only the
    // library's public API (see `programs_keep_their_logic_in_the_library`).
    out.retain(|module, _| module.first().is_none_or(|m| m != "bin"));
    out
}

/// The code of a file without comments (line and doc comments; the crate
/// uses no block comments) and without its unit tests (everything from the
/// first `#[cfg(test)]`), which are not part of the layering.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    text.lines()
        .map(|line| match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The modules a file declares with `mod name;` (its children).
fn children(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| {
            let t = line.trim();
            let rest = t
                .strip_prefix("pub(crate) mod ")
                .or_else(|| t.strip_prefix("pub(super) mod "))
                .or_else(|| t.strip_prefix("pub mod "))
                .or_else(|| t.strip_prefix("mod "))?;
            rest.strip_suffix(';').map(|n| n.trim().to_owned())
        })
        .collect()
}

/// The paths of a use tree: `a::{b, c::{d, e as f}, self}` gives `a::b`,
/// `a::c::d`, `a::c::e` and `a`.
fn flatten_use(tree: &str, prefix: &[String], out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    if let Some(inner) = tree.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    flatten_use(&inner[start..i], prefix, out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        flatten_use(&inner[start..], prefix, out);
        return;
    }
    if tree.is_empty() {
        return;
    }
    match tree.split_once("::") {
        Some((head, rest)) => {
            let mut p = prefix.to_vec();
            p.push(head.trim().to_owned());
            flatten_use(rest, &p, out);
        }
        None => {
            let name = tree.split(" as ").next().unwrap_or("").trim();
            let mut p = prefix.to_vec();
            if name != "self" && name != "*" {
                p.push(name.to_owned());
            }
            out.push(p);
        }
    }
}

/// A path as written in `module`, made absolute: `crate::`, `super::`,
/// `self::` or a child module's name first; `None` for other crates.
fn absolute(module: &[String], kids: &BTreeSet<String>, path: &[String]) -> Option<Vec<String>> {
    let (first, rest) = path.split_first()?;
    let mut base = match first.as_str() {
        "crate" => Vec::new(),
        "self" => module.to_vec(),
        "super" => {
            let mut b = module.to_vec();
            b.pop();
            b
        }
        name if kids.contains(name) => {
            let mut b = module.to_vec();
            b.push(name.to_owned());
            b
        }
        _ => return None,
    };
    let mut rest = rest;
    while let Some(("super", more)) = rest.split_first().map(|(a, b)| (a.as_str(), b)) {
        base.pop();
        rest = more;
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// One file's references: each absolute path it uses, with the statement
/// that does. Also the names a folder's `mod.rs` (or `lib.rs`) re-exports
/// from its own children, which are its facade, not its dependencies.
struct FileRefs {
    uses: Vec<(Vec<String>, String)>,
    reexports: BTreeMap<String, Vec<String>>,
}

fn references(module: &[String], is_folder: bool, text: &str) -> FileRefs {
    let kids = children(text);
    let mut uses = Vec::new();
    let mut reexports = BTreeMap::new();
    let mut statement = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        let starts_use = statement.is_empty()
            && (t.starts_with("use ") || (t.starts_with("pub") && t.contains(" use ")));
        if starts_use || !statement.is_empty() {
            statement.push_str(line);
            statement.push(' ');
            if !line.contains(';') {
                continue;
            }
            let stmt = std::mem::take(&mut statement);
            let public = stmt.trim_start().starts_with("pub");
            let tree = stmt[stmt.find("use ").unwrap() + 4..]
                .trim()
                .trim_end_matches(';')
                .to_owned();
            let mut paths = Vec::new();
            flatten_use(&tree, &[], &mut paths);
            for p in paths {
                let Some(abs) = absolute(module, &kids, &p) else {
                    continue;
                };
                let own_child = abs.len() > module.len()
                    && abs.starts_with(module)
                    && kids.contains(&abs[module.len()]);
                if is_folder && public && own_child {
                    if let Some(name) = abs.last() {
                        reexports.insert(name.clone(), abs[..=module.len()].to_vec());
                    }
                    continue;
                }
                uses.push((abs, stmt.trim().chars().take(120).collect()));
            }
            continue;
        }
        // Paths in code: `crate::a::b`, `super::x`, `self::y`, `child::z`.
        let bytes: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < bytes.len() {
            let boundary = i == 0
                || !(bytes[i - 1].is_alphanumeric() || bytes[i - 1] == '_' || bytes[i - 1] == ':');
            if boundary && (bytes[i].is_alphabetic() || bytes[i] == '_') {
                let path: String = bytes[i..]
                    .iter()
                    .take_while(|c| c.is_alphanumeric() || **c == '_' || **c == ':')
                    .collect();
                let segments: Vec<String> = path
                    .split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                if path.contains("::")
                    && let Some(abs) = absolute(module, &kids, &segments)
                {
                    uses.push((abs, line.trim().chars().take(120).collect()));
                }
                i += path.chars().count().max(1);
            } else {
                i += 1;
            }
        }
    }
    FileRefs { uses, reexports }
}

/// The module file a path names: its longest prefix that is a module, and
/// through a folder's re-exports to the child that defines the name.
fn resolve(
    path: &[String],
    modules: &Modules,
    reexports: &BTreeMap<Vec<String>, BTreeMap<String, Vec<String>>>,
) -> Option<Vec<String>> {
    let mut module = (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| modules.contains_key(p))?;
    while let Some(name) = path.get(module.len())
        && let Some(child) = reexports.get(&module).and_then(|r| r.get(name))
    {
        module = child.clone();
    }
    Some(module)
}

/// Module path to its file.
type Modules = BTreeMap<Vec<String>, PathBuf>;
/// Module path to the modules it uses, each with the line that does.
type Edges = BTreeMap<Vec<String>, BTreeSet<(Vec<String>, String)>>;

fn graph() -> (Modules, Edges) {
    let modules = modules();
    let mut refs = BTreeMap::new();
    let mut reexports = BTreeMap::new();
    for (module, path) in &modules {
        let is_folder = path
            .file_name()
            .is_some_and(|n| n == "mod.rs" || n == "lib.rs");
        let r = references(module, is_folder, &code(path));
        reexports.insert(module.clone(), r.reexports);
        refs.insert(module.clone(), r.uses);
    }
    let mut edges = BTreeMap::new();
    for (module, uses) in refs {
        let set: &mut BTreeSet<_> = edges.entry(module.clone()).or_default();
        for (target, line) in uses {
            if let Some(to) = resolve(&target, &modules, &reexports)
                && to != module
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

/// A program in `src/bin/` parses arguments and prints; what it decides is
/// the library's (`lock-doctor`: the `doctor` module, layer "tools"), where
/// it is tested and documented. So each program uses the library's `doctor`
/// module and declares no modules of its own.
#[test]
fn programs_keep_their_logic_in_the_library() {
    let bin = root().join("src/bin");
    let programs: Vec<PathBuf> = std::fs::read_dir(&bin)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!programs.is_empty(), "no program in {}", bin.display());
    for path in programs {
        assert!(
            path.extension().is_some_and(|e| e == "rs"),
            "{}: a program is one file",
            path.display()
        );
        let text = code(&path);
        assert!(
            text.contains("async_filelock::doctor"),
            "{} does not use the library's doctor module",
            path.display()
        );
        assert!(
            children(&text).is_empty(),
            "{} declares modules: put the logic in src/doctor/",
            path.display()
        );
    }
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
fn no_module_hides_its_imports_behind_an_alias_or_a_path_attribute() {
    for path in modules().values() {
        let text = code(path);
        for hidden in ["crate as ", "super as ", "#[path"] {
            assert!(
                !text.contains(hidden),
                "{} uses `{hidden}`, which this check cannot follow",
                path.display()
            );
        }
    }
}

#[test]
fn the_sources_cite_no_design_file_outside_the_repository() {
    let tests = std::fs::read_dir(root().join("tests"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs") && !p.ends_with("architecture.rs"));
    for path in modules().into_values().chain(tests) {
        let text = std::fs::read_to_string(&path).unwrap();
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

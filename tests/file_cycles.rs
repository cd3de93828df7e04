//! No two files of the workspace import each other. Each crate's
//! `src/*.rs` files are modules of one crate; a file imports another when
//! it names it through `crate::`, `super::` (from a top-level module, the
//! crate root's siblings), or, in the crate root, by its module name.
//! `make lint` runs this check, and so does `make test`.
//!
//! Written here rather than taken from crates.io: the tools there
//! (cargo-modules, cargo-depgraph) draw module or crate graphs for people
//! to read, and none fails a build on a cycle between two files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use unibeam_e2e::workspace_root;

/// Module name of each `.rs` file in `src`: its stem, or `crate` for the
/// crate root.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(src).expect("src/ reads") {
        let path = entry.expect("an entry").path();
        if path.extension().is_some_and(|e| e == "rs") {
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            let module = if stem == "lib" || stem == "main" {
                "crate".to_string()
            } else {
                stem
            };
            files.insert(
                module,
                std::fs::read_to_string(&path).expect("a source file reads"),
            );
        }
    }
    files
}

/// The code of `text` without comments and string literals, which may
/// mention `crate::x` without importing it.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if !escaped && c == '"' {
                        break;
                    }
                    escaped = !escaped && c == '\\';
                }
                out.push_str("\"\"");
            }
            _ => out.push(c),
        }
    }
    out
}

/// The identifiers that follow `prefix` in `code`, with `{a, b::c}`
/// groups opened: `crate::{x, y}` gives x and y.
fn names_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in code.match_indices(prefix) {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &code[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                names.insert(ident(item.trim()));
            }
        } else {
            names.insert(ident(rest));
        }
    }
    names.remove("");
    names
}

fn ident(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// Names the crate root re-exports (`pub use m::{a, b as c}`), with the
/// module each comes from: `crate::a` in another file imports `m`.
fn re_exports(root: &str, files: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut from = BTreeMap::new();
    for statement in root.split(';') {
        let Some(path) = statement.trim().strip_prefix("pub use ") else {
            continue;
        };
        let module = ident(path);
        if !files.contains_key(&module) {
            continue;
        }
        let items = path
            .split_once('{')
            .map_or(path, |(_, group)| group.trim_end_matches('}'));
        for item in items.split(',') {
            let name = item.rsplit([' ', ':']).next().unwrap_or_default().trim();
            from.insert(name.to_string(), module.clone());
        }
    }
    from
}

/// Which modules each module imports.
fn imports(files: &BTreeMap<String, String>) -> BTreeMap<&str, BTreeSet<&str>> {
    let root = files.get("crate").map(|t| code_only(t)).unwrap_or_default();
    let aliases = re_exports(&root, files);
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (module, text) in files {
        let code = code_only(text);
        let mut named = names_after(&code, "crate::");
        // `super::x` is a sibling module from a top-level module; any other
        // name is the crate root's item or, from a `mod tests`, the file's own.
        named.extend(
            names_after(&code, "super::")
                .into_iter()
                .filter(|n| files.contains_key(n)),
        );
        if module == "crate" {
            named.extend(files.keys().filter(|m| code.contains(&format!("{m}::"))).cloned());
        }
        let targets = edges.entry(module).or_default();
        for name in named {
            // A name that is no module is an item of the crate root, or
            // one the root re-exports from a module.
            let name = aliases.get(&name).unwrap_or(&name);
            let target = files.get_key_value(name).map_or("crate", |(k, _)| k.as_str());
            if target != module {
                targets.insert(target);
            }
        }
    }
    edges
}

fn pairs_importing_each_other(crate_dir: &Path) -> Vec<String> {
    let files = modules(&crate_dir.join("src"));
    let edges = imports(&files);
    let mut pairs = Vec::new();
    for (a, targets) in &edges {
        for b in targets {
            if a < b && edges.get(b).is_some_and(|t| t.contains(a)) {
                pairs.push(format!("{}: {a}.rs <-> {b}.rs", crate_dir.display()));
            }
        }
    }
    pairs
}

#[test]
fn no_two_files_import_each_other() {
    let crates = workspace_root().join("crates");
    let mut cycles = Vec::new();
    let mut checked = 0;
    for entry in std::fs::read_dir(&crates).unwrap() {
        let dir = entry.unwrap().path();
        if dir.join("src").is_dir() {
            checked += 1;
            cycles.extend(pairs_importing_each_other(&dir));
        }
    }
    assert!(
        checked >= 6,
        "only {checked} crates found under {}",
        crates.display()
    );
    assert!(
        cycles.is_empty(),
        "files that import each other:\n{}",
        cycles.join("\n")
    );
}

#[test]
fn the_check_sees_every_kind_of_import() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let write = |file: &str, text: &str| std::fs::write(src.join(file), text).unwrap();
    write("lib.rs", "mod a;\nmod b;\nmod c;\nmod d;\npub fn helper() {}\n");
    write(
        "a.rs",
        "use crate::{c, b::Thing};\n// crate::d only in a comment\n",
    );
    write("b.rs", "use super::a::X;\npub struct Thing;\n");
    write("c.rs", "fn f() { let s = \"crate::a\"; d::g(); }\n");
    write("d.rs", "fn g() { crate::helper() }\n");
    let pairs = pairs_importing_each_other(dir.path());
    assert_eq!(pairs.len(), 1, "{pairs:?}");
    assert!(pairs[0].ends_with("a.rs <-> b.rs"), "{pairs:?}");
    write("c.rs", "use crate::a;\n");
    write("a.rs", "use crate::{c, b::Thing};\n");
    write(
        "lib.rs",
        "mod a;\nmod b;\nmod c;\nmod d;\nfn f() { d::g() }\npub fn helper() {}\n",
    );
    let pairs = pairs_importing_each_other(dir.path());
    assert_eq!(pairs.len(), 3, "a<->b, a<->c and crate<->d: {pairs:?}");
    // A re-exported name imports the module it comes from, not the root.
    write(
        "lib.rs",
        "mod a;\nmod b;\nmod c;\nmod d;\npub use c::{Helper, Other as O};\n",
    );
    write("d.rs", "use crate::{Helper, O};\n");
    write("c.rs", "use crate::d;\n");
    let pairs = pairs_importing_each_other(dir.path());
    assert!(pairs.iter().any(|p| p.ends_with("c.rs <-> d.rs")), "{pairs:?}");
    assert!(!pairs.iter().any(|p| p.contains("crate.rs")), "{pairs:?}");
}

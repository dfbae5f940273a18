//! `cargo xtask tidy`: the house rules a compiler does not check, over every tracked file.
//!
//! - Source files: each Rust module opens with a `//!` doc, each `unsafe` has a `SAFETY:`
//!   comment (or a `# Safety` section) in the comment block right above it or on its line, and
//!   no hand-written file (`.rs`, `.cu`, `.cuh`, `.py`) is longer than [`MAX_LINES`] lines (the
//!   generated `kernels/ptx/` is exempt).
//! - Paths in the docs ([`check_doc_paths`]): every backticked path into the tree in the docs
//!   (`docs/*.md`, and `README.md`: see [`doc_checked`]) names a tracked file or folder. A backticked span is a path
//!   when it has no white space and contains a `/` or ends in a known extension
//!   ([`PATH_EXTENSIONS`]); it points into the tree when its first segment is a top-level
//!   entry of the repository (`tests/…`, `docs/…`, `Cargo.toml`) or a crate's folder name,
//!   short for `crates/<name>/…` (`lucir-tensor/src/gemm.rs`). Everything else is read in its
//!   context and not checked: bare file names (`gemm.rs` in a crate's table row, `results.json`
//!   of a run), paths relative to a section's subject (`conv2d/direct/`), a run's or the
//!   system's paths, benchmark ids. Templates are skipped: spans with `<`, `>`, `*`, `…`, `{`,
//!   `}`, `$` or `~`, and those with a one-letter capital piece (`model-phase-P.safetensors`)
//!   or an all-capital folder (`RUN/checkpoints/`). Fenced code blocks are not read.
//!   `docs/perf.md` is a dated log whose entries name the files as they were when measured, so
//!   it is not checked.
//! - Manifests ([`check_manifest`]): the workspace sets `rust-version` and every package
//!   inherits it (`rust-version.workspace = true`).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Longest a hand-written source file may be.
pub const MAX_LINES: usize = 600;

/// Every rule `text` (the contents of `path`, relative to the root) breaks, one line each.
pub fn check_file(path: &str, text: &str) -> Vec<String> {
    let mut faults = Vec::new();
    let generated = path.starts_with("kernels/ptx/");
    let hand_written = [".rs", ".cu", ".cuh", ".py"]
        .iter()
        .any(|ext| path.ends_with(ext));
    let lines: Vec<&str> = text.lines().collect();
    if hand_written && !generated && lines.len() > MAX_LINES {
        faults.push(format!(
            "{path}: {} lines (at most {MAX_LINES}); split it",
            lines.len()
        ));
    }
    if !path.ends_with(".rs") {
        return faults;
    }
    if !lines
        .iter()
        .find(|l| !l.trim().is_empty())
        .is_some_and(|l| l.starts_with("//!"))
    {
        faults.push(format!("{path}: no `//!` module doc at the top"));
    }
    for (i, line) in lines.iter().enumerate() {
        if !has_unsafe_code(line) {
            continue;
        }
        let justified = line.contains("SAFETY:")
            || lines[..i]
                .iter()
                .rev()
                .take_while(|l| {
                    let t = l.trim_start();
                    t.starts_with("//") || t.starts_with("#[")
                })
                .any(|l| l.contains("SAFETY:") || l.contains("# Safety"));
        if !justified {
            faults.push(format!(
                "{path}:{}: `unsafe` without a `// SAFETY:` comment right above it",
                i + 1
            ));
        }
    }
    faults
}

/// The endings that make a backticked span without a `/` a path (see the module doc).
pub const PATH_EXTENSIONS: [&str; 10] = [
    ".rs",
    ".md",
    ".py",
    ".cu",
    ".cuh",
    ".toml",
    ".ptx",
    ".json",
    ".safetensors",
    ".lock",
];

/// The Markdown files whose paths are checked: `README.md` and `docs/*.md` but the dated log
/// `docs/perf.md` (whose entries name the tree as it was).
fn doc_checked(path: &str) -> bool {
    path == "README.md"
        || path
            .strip_prefix("docs/")
            .is_some_and(|name| !name.contains('/') && name.ends_with(".md") && name != "perf.md")
}

/// The tracked files and the folders that hold them, for the path rule.
#[derive(Debug, Default)]
pub struct Tree {
    files: BTreeSet<String>,
    dirs: BTreeSet<String>,
    /// First segments of every tracked path: the top-level files and folders.
    top: BTreeSet<String>,
    /// The folders under `crates/`.
    crates: BTreeSet<String>,
}

impl Tree {
    /// The tree of these tracked paths (relative to the root, `/`-separated).
    pub fn new<'a>(paths: impl IntoIterator<Item = &'a str>) -> Self {
        let mut tree = Tree::default();
        for path in paths.into_iter().filter(|p| !p.is_empty()) {
            let segments: Vec<&str> = path.split('/').collect();
            tree.top.insert(segments[0].to_string());
            if segments.len() > 2 && segments[0] == "crates" {
                tree.crates.insert(segments[1].to_string());
            }
            for i in 1..segments.len() {
                tree.dirs.insert(segments[..i].join("/"));
            }
            tree.files.insert(path.to_string());
        }
        tree
    }

    /// Whether `path` is a tracked file or folder (a folder when it ends in `/`).
    fn has(&self, path: &str) -> bool {
        match path.strip_suffix('/') {
            Some(dir) => self.dirs.contains(dir),
            None => self.files.contains(path) || self.dirs.contains(path),
        }
    }

    /// The root-relative path a doc's path stands for, if it points into the tree (see the
    /// module doc): as written when it starts at a top-level entry, under `crates/` when it
    /// starts at a crate's folder name.
    fn anchor(&self, path: &str) -> Option<String> {
        let first = path.split('/').next().unwrap_or(path);
        if self.top.contains(first) {
            Some(path.to_string())
        } else if path.contains('/') && self.crates.contains(first) {
            Some(format!("crates/{path}"))
        } else {
            None
        }
    }
}

/// Whether a backticked span is a path (see the module doc), templates included.
fn looks_like_path(span: &str) -> bool {
    !span.is_empty()
        && !span.contains(char::is_whitespace)
        && (span.contains('/') || PATH_EXTENSIONS.iter().any(|e| span.ends_with(e)))
}

/// Whether a path is a template: a placeholder character, a one-letter capital piece, or an
/// all-capital folder.
fn is_template(path: &str) -> bool {
    let capitals = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_uppercase());
    path.contains(['<', '>', '*', '…', '{', '}', '$', '~'])
        || path
            .split(['/', '-', '_', '.'])
            .any(|piece| piece.len() == 1 && capitals(piece))
        || path
            .split('/')
            .rev()
            .skip(1)
            .any(|folder| folder.len() > 1 && capitals(folder))
}

/// Every backticked path into the tree in `text` (the Markdown file `path`) that names no
/// tracked file or folder, one line each (see the module doc for what counts).
pub fn check_doc_paths(path: &str, text: &str, tree: &Tree) -> Vec<String> {
    let mut faults = Vec::new();
    let mut fenced = false;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // The odd pieces between backticks are the code spans.
        for span in line.split('`').skip(1).step_by(2) {
            if !looks_like_path(span) || is_template(span) {
                continue;
            }
            if let Some(full) = tree.anchor(span) {
                if !tree.has(&full) {
                    faults.push(format!(
                        "{path}:{}: `{span}` names no tracked file or folder",
                        i + 1
                    ));
                }
            }
        }
    }
    faults
}

/// The rust-version rule for one manifest (`path`, its `text`): a workspace's sets
/// `workspace.package.rust-version`, a package inherits it with `rust-version.workspace =
/// true`. One line per fault.
pub fn check_manifest(path: &str, text: &str) -> Vec<String> {
    let table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => return vec![format!("{path}: not valid TOML: {e}")],
    };
    let mut faults = Vec::new();
    if let Some(ws) = table.get("workspace") {
        let version = ws.get("package").and_then(|p| p.get("rust-version"));
        if !version.is_some_and(toml::Value::is_str) {
            faults.push(format!(
                "{path}: the workspace sets no `[workspace.package] rust-version`"
            ));
        }
    }
    if let Some(package) = table.get("package") {
        let inherits = package
            .get("rust-version")
            .and_then(|v| v.get("workspace"))
            .and_then(toml::Value::as_bool)
            == Some(true);
        if !inherits {
            faults.push(format!(
                "{path}: the package does not inherit the workspace's rust-version \
                 (`rust-version.workspace = true`)"
            ));
        }
    }
    faults
}

/// Whether `line` uses the `unsafe` keyword in code (not in a comment or a string).
fn has_unsafe_code(line: &str) -> bool {
    let code = line.split("//").next().unwrap_or("");
    let mut in_string = false;
    let mut rest = String::new();
    for c in code.chars() {
        if c == '"' {
            in_string = !in_string;
        } else if !in_string {
            rest.push(c);
        }
    }
    rest.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .any(|w| w == "unsafe")
}

/// Runs the task over the files git tracks.
pub fn run(args: &[String]) -> Result<()> {
    if !args.is_empty() {
        bail!("usage: cargo xtask tidy");
    }
    let root = crate::root();
    let out = Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["ls-files", "-z"])
        .output()
        .context("running `git ls-files` (tidy checks the files git tracks)")?;
    if !out.status.success() {
        bail!(
            "`git ls-files` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let listing = String::from_utf8_lossy(&out.stdout);
    let paths: Vec<&str> = listing.split('\0').filter(|p| !p.is_empty()).collect();
    let tree = Tree::new(paths.iter().copied());
    let mut faults = Vec::new();
    let mut checked = 0usize;
    for &path in &paths {
        let source = Path::new(path)
            .extension()
            .is_some_and(|e| ["rs", "cu", "cuh", "py"].iter().any(|x| e == *x));
        let manifest = path == "Cargo.toml" || path.ends_with("/Cargo.toml");
        if !(source || manifest || doc_checked(path)) {
            continue;
        }
        // A tracked file deleted in the work tree is not this task's business.
        let Ok(text) = std::fs::read_to_string(root.join(path)) else {
            continue;
        };
        checked += 1;
        if source {
            faults.extend(check_file(path, &text));
        } else if manifest {
            faults.extend(check_manifest(path, &text));
        } else {
            faults.extend(check_doc_paths(path, &text, &tree));
        }
    }
    if !faults.is_empty() {
        bail!("tidy: {} fault(s):\n{}", faults.len(), faults.join("\n"));
    }
    println!("tidy: {checked} files, no fault");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{check_doc_paths, check_file, check_manifest, Tree, MAX_LINES};

    #[test]
    fn each_rule_catches_its_fault() {
        let ok = "//! Doc.\n\nfn f() {\n    // SAFETY: nothing to uphold.\n    unsafe { g() }\n}\n";
        assert!(check_file("a.rs", ok).is_empty());
        let no_doc = "fn f() {}\n";
        assert!(check_file("a.rs", no_doc)[0].contains("no `//!` module doc"));
        let bare = "//! Doc.\nfn f() {\n    unsafe { g() }\n}\n";
        assert!(check_file("a.rs", bare)[0].contains("a.rs:3: `unsafe` without"));
        let far = "//! Doc.\n// SAFETY: too far away.\n\nunsafe fn f() {}\n";
        assert_eq!(check_file("a.rs", far).len(), 1);
        let doc = "//! Doc.\n/// # Safety\n/// Callers uphold x.\n#[inline]\nunsafe fn f() {}\n";
        assert!(check_file("a.rs", doc).is_empty());
        let words = "//! Doc.\n// unsafe in a comment\nlet s = \"unsafe\"; let unsafe_ok = 1;\n";
        assert!(check_file("a.rs", words).is_empty());
        let long = "x\n".repeat(MAX_LINES + 1);
        assert!(check_file("k.cu", &long)[0].contains("601 lines"));
        assert!(check_file("kernels/ptx/k.ptx", &long).is_empty());
        assert!(check_file("kernels/ptx/k.cu", &long).is_empty());
    }

    #[test]
    fn the_path_rule_checks_paths_into_the_tree_only() {
        let tree = Tree::new([
            "README.md",
            "docs/design.md",
            "tests/pytorch_parity/main.rs",
            "crates/lucir-tensor/src/gemm.rs",
        ]);
        let ok = "See `docs/design.md`, `tests/pytorch_parity/main.rs`, `tests/`, `docs/` and \
                  `lucir-tensor/src/gemm.rs` (`gemm.rs`), `crates/lucir-tensor/src/`.\n";
        assert_eq!(check_doc_paths("d.md", ok, &tree), Vec::<String>::new());
        let bad = "Run `tests/pytorch_parity.rs`; see\n`lucir-tensor/src/gone.rs` and `docs/x/`.\n";
        let faults = check_doc_paths("d.md", bad, &tree);
        assert_eq!(faults.len(), 3, "{faults:?}");
        assert!(faults[0].starts_with("d.md:1: `tests/pytorch_parity.rs`"));
        assert!(faults[1].starts_with("d.md:2: `lucir-tensor/src/gone.rs`"));
        // Not paths into the tree, or templates: none is checked.
        let skipped = "`results.json` `config.toml` `conv2d/direct/` `/usr/share/x/` \
                       `cpu/op/b128` `tests/<name>.rs` `kernels/*.cu` `crates/…` \
                       `docs/{a,b}.md` `tests/seed-N.json` `RUN/docs/x.md` `a / b`\n\
                       ```\ncat `tests/gone.rs`\n```\n";
        assert_eq!(
            check_doc_paths("d.md", skipped, &tree),
            Vec::<String>::new()
        );
    }

    #[test]
    fn the_rust_version_rule_wants_every_package_to_inherit() {
        let ws = "[workspace]\n[workspace.package]\nrust-version = \"1.89\"\n\
                  [package]\nname = \"a\"\nrust-version.workspace = true\n";
        assert!(check_manifest("Cargo.toml", ws).is_empty());
        let inline = "[package]\nname = \"b\"\nrust-version = { workspace = true }\n";
        assert!(check_manifest("b/Cargo.toml", inline).is_empty());
        let own = "[package]\nname = \"c\"\nrust-version = \"1.80\"\n";
        assert!(check_manifest("c/Cargo.toml", own)[0].contains("does not inherit"));
        let none = "[package]\nname = \"d\"\nversion.workspace = true\n";
        assert!(check_manifest("d/Cargo.toml", none)[0].contains("does not inherit"));
        let unset = "[workspace]\nmembers = []\n";
        assert!(check_manifest("Cargo.toml", unset)[0].contains("sets no"));
    }

    /// The repository itself passes (what CI runs as `cargo xtask tidy`).
    #[test]
    fn the_repository_is_tidy() {
        super::run(&[]).unwrap();
    }
}

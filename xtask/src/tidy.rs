//! `cargo xtask tidy`: the house rules a compiler does not check, over every tracked source
//! file — each Rust module opens with a `//!` doc, each `unsafe` has a `SAFETY:` comment (or a
//! `# Safety` section) in the comment block right above it or on its line, and no hand-written
//! file (`.rs`, `.cu`, `.cuh`, `.py`) is longer than [`MAX_LINES`] lines (the generated
//! `kernels/ptx/` is exempt).

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
    let mut faults = Vec::new();
    let mut checked = 0usize;
    for path in String::from_utf8_lossy(&out.stdout).split('\0') {
        if path.is_empty()
            || !Path::new(path)
                .extension()
                .is_some_and(|e| ["rs", "cu", "cuh", "py"].iter().any(|x| e == *x))
        {
            continue;
        }
        let full = root.join(path);
        // A tracked file deleted in the work tree is not this task's business.
        let Ok(text) = std::fs::read_to_string(&full) else {
            continue;
        };
        checked += 1;
        faults.extend(check_file(path, &text));
    }
    if !faults.is_empty() {
        bail!("tidy: {} fault(s):\n{}", faults.len(), faults.join("\n"));
    }
    println!("tidy: {checked} files, no fault");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{check_file, MAX_LINES};

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

    /// The repository itself passes (what CI runs as `cargo xtask tidy`).
    #[test]
    fn the_repository_is_tidy() {
        super::run(&[]).unwrap();
    }
}

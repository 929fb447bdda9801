//! `cargo xtask <command>`: the project's tooling, in Rust so it runs wherever `cargo` does.
//!
//! ```text
//! cargo xtask exercises [NAME…]   prove every exercise: unsolved it fails, with its patch it passes
//! cargo xtask diffs [--check]     write (or check) book/src/generated/diff-*.md from steps/
//! cargo xtask schedule [--check]  write (or check) book/src/generated/schedule.md
//! cargo xtask book-check          code blocks, includes, times, generated pages, exercise pages
//! ```
//!
//! Each command prints what is wrong, one line per problem, and exits 1 if anything is.
#![forbid(unsafe_code)]

mod book;
mod diffs;
mod exercises;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Human-readable problems; empty means all is well.
pub type Problems = Vec<String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // XTASK_ROOT checks another copy of the workspace (e.g. a deliberately broken one).
    let root = std::env::var_os("XTASK_ROOT")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".."), PathBuf::from);
    let check = args.iter().any(|a| a == "--check");
    let command = args.first().map_or("", String::as_str);
    let problems = match command {
        "exercises" => exercises::run(&root, &args[1..]),
        "diffs" => diffs::run(&root, check),
        "schedule" => book::schedule(&root, check),
        "book-check" => book::check(&root),
        _ => {
            eprintln!(
                "usage: cargo xtask <exercises [NAME…] | diffs [--check] | schedule [--check] | book-check>"
            );
            return ExitCode::from(2);
        }
    };
    for problem in &problems {
        eprintln!("  {problem}");
    }
    if problems.is_empty() {
        return ExitCode::SUCCESS;
    }
    eprintln!("xtask {command}: {} problem(s)", problems.len());
    ExitCode::FAILURE
}

/// The entries of `dir`, sorted by name.
pub fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> =
        fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).collect();
    paths.sort();
    paths
}

/// Every file under `dir` whose name ends with `suffix`, sorted.
pub fn files_with_suffix(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for path in entries(dir) {
        if path.is_dir() {
            found.extend(files_with_suffix(&path, suffix));
        } else if path.to_string_lossy().ends_with(suffix) {
            found.push(path);
        }
    }
    found
}

/// The step directories (`steps/*` with a `Cargo.toml`), sorted by name.
pub fn step_dirs(root: &Path) -> Vec<PathBuf> {
    entries(&root.join("steps")).into_iter().filter(|d| d.join("Cargo.toml").is_file()).collect()
}

/// `path` relative to `base`, with `/` separators, for messages and generated text.
pub fn relative(path: &Path, base: &Path) -> String {
    path.strip_prefix(base).unwrap_or(path).to_string_lossy().replace('\\', "/")
}

/// `key = "value"` under `[table]` in a step's `Cargo.toml`, e.g. the package `name`, or
/// `grows-from` and `health` under `[package.metadata.workshop]`.
pub fn manifest_value(step_dir: &Path, table: &str, key: &str) -> Option<String> {
    let text = fs::read_to_string(step_dir.join("Cargo.toml")).ok()?;
    let mut current = String::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            current = line.trim_matches(['[', ']']).to_owned();
        } else if let Some((k, v)) = line.split_once('=')
            && current == table
            && k.trim() == key
        {
            return Some(v.trim().trim_matches('"').to_owned());
        }
    }
    None
}

/// Writes a generated file, or with `check` reports it missing or stale instead.
pub fn write_or_check(
    root: &Path,
    rel: &str,
    content: &str,
    check: bool,
    command: &str,
) -> Problems {
    let path = root.join(rel);
    let current = fs::read_to_string(&path).ok();
    if current.as_deref() == Some(content) {
        return Vec::new();
    }
    if check {
        let state = if current.is_some() { "out of date" } else { "missing" };
        return vec![format!("{rel} is {state}: run `cargo xtask {command}`")];
    }
    match path.parent().map_or(Ok(()), fs::create_dir_all).and_then(|()| fs::write(&path, content))
    {
        Ok(()) => {
            eprintln!("wrote {rel}");
            Vec::new()
        }
        Err(error) => vec![format!("{rel}: cannot write: {error}")],
    }
}

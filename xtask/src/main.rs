//! `cargo xtask <command>`: the project's tooling, in Rust so it runs wherever `cargo` does.
//!
//! ```text
//! cargo xtask exercises [NAME…]   prove every exercise: unsolved it fails, with its patch it passes
//! cargo xtask diffs [--check]     write (or check) book/src/generated/diff-*.md from steps/
//! cargo xtask schedule [--check]  write (or check) book/src/generated/schedule.md from the chapters
//! cargo xtask book-check          every check on book/src (code blocks, includes, links, times,
//!                                 generated files up to date, exercise pages)
//! ```
//!
//! Each command prints what is wrong, one line per problem, and exits 1 if anything is.
#![forbid(unsafe_code)]

mod book;
mod diffs;
mod exercises;
mod fsutil;

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str =
    "usage: cargo xtask <exercises [NAME…] | diffs [--check] | schedule [--check] | book-check>";

/// A list of human-readable problems; empty means all is well.
pub type Problems = Vec<String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    let Some(command) = args.first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let rest = &args[1..];
    let check = rest.iter().any(|a| a == "--check");
    let result = match command.as_str() {
        "exercises" => exercises::run(&root, rest),
        "diffs" => diffs::run(&root, check),
        "schedule" => book::run_schedule(&root, check),
        "book-check" => book::run_check(&root),
        other => {
            eprintln!("xtask: unknown command {other:?}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(problems) => {
            for problem in &problems {
                eprintln!("  {problem}");
            }
            eprintln!("xtask {command}: {} problem(s)", problems.len());
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: `XTASK_ROOT` if set (to check a copy, e.g. a deliberately broken
/// one), else the parent of this package's directory.
fn workspace_root() -> PathBuf {
    if let Some(root) = std::env::var_os("XTASK_ROOT") {
        return PathBuf::from(root);
    }
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(PathBuf::from)
        .unwrap_or(manifest_dir)
}

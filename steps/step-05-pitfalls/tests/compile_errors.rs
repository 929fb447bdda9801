//! The programs of `compile_fail/` must not compile, for the reason the chapter gives.
//!
//! The doctests in `pitfalls::shared_state` already check that they fail to compile, but on
//! stable Rust a `compile_fail` doctest passes for *any* error, a typo included. This test runs
//! the compiler on each file and records the lines of its verdict that the chapter explains.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `rustc` next to the `cargo` running the tests (same toolchain), or the one on `PATH`.
fn rustc() -> PathBuf {
    let beside_cargo = Path::new(env!("CARGO")).with_file_name("rustc");
    if beside_cargo.exists() {
        beside_cargo
    } else {
        PathBuf::from("rustc")
    }
}

/// Compiles `compile_fail/<name>.rs` as a library and returns the error's key lines: the
/// `error` headline and the `help:` / `note:` lines that explain it (file locations left out).
fn verdict(name: &str) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("compile_fail");
    let out = std::env::temp_dir().join(format!("step05-{name}-{}.rmeta", std::process::id()));
    let output = Command::new(rustc())
        .current_dir(&dir)
        .args([
            "--edition",
            "2024",
            "--crate-type",
            "lib",
            "--emit=metadata",
            "--color=never",
            "-o",
        ])
        .arg(&out)
        .arg(format!("{name}.rs"))
        .output()
        .expect("run rustc");
    let _ = std::fs::remove_file(&out);
    assert!(
        !output.status.success(),
        "compile_fail/{name}.rs COMPILED: the lesson is gone"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut lines = Vec::new();
    for line in stderr.lines() {
        let line = line.trim_start_matches([' ', '|']).trim_end();
        let keep = (line.starts_with("error") && !line.starts_with("error: aborting"))
            || line.starts_with("= help:")
            || line.starts_with("= note:")
            || line.starts_with("note: future is not `Send`");
        if keep {
            lines.push(line.to_owned());
        }
    }
    format!(
        "$ rustc --edition 2024 --crate-type lib {name}.rs   # the key lines\n{}\n",
        lines.join("\n")
    )
}

/// The book shows the compiler's words as this toolchain prints them. Other versions may word
/// the help lines differently, so with them only the error itself is checked.
const RECORDED_WITH: &str = "rustc 1.95.";

fn rustc_version() -> String {
    let output = Command::new(rustc())
        .arg("--version")
        .output()
        .expect("run rustc");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

macro_rules! assert_verdict {
    ($name:literal, $headline:literal) => {
        let verdict = verdict($name);
        assert!(
            verdict.contains($headline),
            "compile_fail/{}.rs fails for another reason:\n{verdict}",
            $name
        );
        if rustc_version().starts_with(RECORDED_WITH) {
            testkit::assert_transcript!(concat!("step05_rustc_", $name), verdict);
        }
    };
}

#[test]
fn a_map_written_through_an_arc_is_rejected() {
    assert_verdict!(
        "race_map",
        "error[E0596]: cannot borrow data in an `Arc` as mutable"
    );
}

#[test]
fn a_refcell_shared_between_threads_is_rejected() {
    assert_verdict!("race_refcell", "cannot be shared between threads safely");
}

#[test]
fn a_std_mutex_guard_held_across_await_is_rejected() {
    assert_verdict!(
        "lock_across_await",
        "error: future cannot be sent between threads safely"
    );
}

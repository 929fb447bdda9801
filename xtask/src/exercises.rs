//! `cargo xtask exercises`: proves both halves of every exercise.
//!
//! An exercise is an `#[ignore = "exercise: …"]` test in `steps/<step>/tests/exercises.rs`, so a
//! plain `cargo test` skips it, plus its reference solution `steps/<step>/exercises/<name>.patch`
//! (a unified diff against the step, to apply from the repository root with `git apply` or
//! `patch -p1`). For each one this command checks, in order:
//!
//! 1. **unsolved, it fails for the right reason**: the step's exercise tests compile, and the
//!    exercise's test runs and fails (a failure to compile is reported as such, not counted);
//! 2. **solved, it passes**: in a copy of the workspace (without `target/`) with the patch
//!    applied, the exercise's test passes, and so does the step's whole normal test suite (a
//!    solution must not break what the step already does).
//!
//! The copy lives in `<target>/xtask-exercises/workspace` and builds into its own
//! `<target>/xtask-exercises/target`, kept between runs so only the patched step is rebuilt.
//! It must not share the real target directory: cargo hashes path packages relative to their
//! workspace root, so the copy's artifacts would carry the same names as the real ones, and
//! the older real sources would then look up to date against the patched build.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::Problems;
use crate::diffs::short_name;
use crate::fsutil::{copy_tree, file_name, files_with_suffix, relative, step_dirs};

/// One exercise: the test that checks it and the patch that solves it.
#[derive(Debug, Clone)]
pub struct Exercise {
    /// The step directory, e.g. `steps/step-01-hello`.
    pub step_dir: PathBuf,
    /// The step's package, e.g. `step-01`.
    pub package: String,
    /// The test function's name.
    pub name: String,
    pub patch: PathBuf,
}

/// Test functions marked `#[ignore = "exercise…"]` in an `exercises.rs` source.
pub fn exercise_tests(source: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut marked = false;
    for line in source.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("#[ignore = \"exercise") {
            marked = true;
        } else if marked {
            let after_fn = trimmed
                .strip_prefix("async fn ")
                .or_else(|| trimmed.strip_prefix("fn "))
                .or_else(|| trimmed.strip_prefix("pub async fn "))
                .or_else(|| trimmed.strip_prefix("pub fn "));
            if let Some(rest) = after_fn {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                names.push(name);
                marked = false;
            }
        }
    }
    names
}

fn package_name(step_dir: &Path) -> String {
    let manifest = fs::read_to_string(step_dir.join("Cargo.toml")).unwrap_or_default();
    manifest
        .lines()
        .find_map(|line| {
            let value = line.trim().strip_prefix("name")?.trim().strip_prefix('=')?;
            Some(value.trim().trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| short_name(step_dir))
}

/// Every exercise in the workspace, and every mismatch between tests and patches.
pub fn discover(root: &Path) -> (Vec<Exercise>, Problems) {
    let mut exercises = Vec::new();
    let mut problems = Vec::new();
    for step_dir in step_dirs(root) {
        let tests = step_dir.join("tests/exercises.rs");
        let names = fs::read_to_string(&tests)
            .map(|s| exercise_tests(&s))
            .unwrap_or_default();
        let patches = files_with_suffix(&step_dir.join("exercises"), ".patch");
        for patch in &patches {
            let stem = file_name(patch).trim_end_matches(".patch").to_owned();
            if !names.contains(&stem) {
                problems.push(format!(
                    "{}: no `#[ignore = \"exercise…\"]` test named `{stem}` in {}",
                    relative(patch, root),
                    relative(&tests, root)
                ));
            }
        }
        for name in names {
            let patch = step_dir.join("exercises").join(format!("{name}.patch"));
            if !patch.is_file() {
                problems.push(format!(
                    "{}: exercise `{name}` has no solution {}",
                    relative(&tests, root),
                    relative(&patch, root)
                ));
                continue;
            }
            exercises.push(Exercise {
                package: package_name(&step_dir),
                step_dir: step_dir.clone(),
                name,
                patch,
            });
        }
    }
    (exercises, problems)
}

/// The command a learner runs (and the book prints).
pub fn check_command(exercise: &Exercise) -> String {
    format!(
        "cargo test -p {} --test exercises -- --ignored {}",
        exercise.package, exercise.name
    )
}

/// Static checks (no build): each exercise page shows the check command and the solution.
pub fn check_pages(root: &Path) -> Problems {
    let (exercises, mut problems) = discover(root);
    for exercise in &exercises {
        let page = root
            .join("book/src/exercises")
            .join(format!("{}.md", short_name(&exercise.step_dir)));
        let rel_page = relative(&page, root);
        let Ok(text) = fs::read_to_string(&page) else {
            problems.push(format!(
                "{rel_page}: missing, but {} has exercises",
                relative(&exercise.step_dir, root)
            ));
            continue;
        };
        if !text.contains(&check_command(exercise)) {
            problems.push(format!(
                "{rel_page}: does not show the check `{}`",
                check_command(exercise)
            ));
        }
        let patch_path = relative(&exercise.patch, root);
        if !text.contains(&format!("{{{{#include ../../../{patch_path}}}}}")) {
            problems.push(format!(
                "{rel_page}: does not reveal the solution `{{{{#include ../../../{patch_path}}}}}`"
            ));
        }
    }
    problems
}

pub fn run(root: &Path, filter: &[String]) -> Result<(), Problems> {
    let (exercises, mut problems) = discover(root);
    let selected: Vec<&Exercise> = exercises
        .iter()
        .filter(|e| filter.is_empty() || filter.iter().any(|f| *f == e.name || *f == e.package))
        .collect();
    if selected.is_empty() {
        problems.push("no exercise found (or none matches the names given)".to_owned());
        return Err(problems);
    }
    let target_dir = target_dir(root);
    let copy = target_dir.join("xtask-exercises/workspace");
    let copy_target = target_dir.join("xtask-exercises/target");
    for exercise in selected {
        let label = format!("{}/{}", exercise.package, exercise.name);
        match check_unsolved(root, exercise)
            .and_then(|()| check_solved(root, &copy, &copy_target, exercise))
        {
            Ok(()) => eprintln!("exercise {label}: unsolved it fails, solved it passes"),
            Err(problem) => {
                eprintln!("exercise {label}: FAILED");
                problems.push(format!("{label}: {problem}"));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir), // join keeps an absolute path as it is
        None => root.join("target"),
    }
}

fn cargo(dir: &Path, target_dir: &Path, args: &[&str]) -> Result<Output, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    Command::new(cargo)
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target_dir)
        .env("CARGO_TERM_COLOR", "never")
        // A failing snapshot must never write files into the workspace.
        .env("INSTA_UPDATE", "no")
        // insta finds snapshots from the workspace root; say which one, or a test run in the
        // copy can end up comparing against the real workspace's snapshots.
        .env("INSTA_WORKSPACE_ROOT", dir)
        .env("RUST_BACKTRACE", "0")
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))
}

/// The last lines of a command's output, for a failure message.
fn tail(output: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if std::env::var_os("XTASK_VERBOSE").is_some() {
        return format!("\n{text}");
    }
    let lines: Vec<&str> = text.lines().collect();
    // The first panic says why a test failed; otherwise the end says why cargo stopped.
    let (start, end) = match lines.iter().position(|l| l.contains("panicked at")) {
        Some(panic) => (panic, (panic + 20).min(lines.len())),
        None => (lines.len().saturating_sub(25), lines.len()),
    };
    format!("\n    | {}", lines[start..end].join("\n    | "))
}

fn test_args(exercise: &Exercise) -> Vec<&str> {
    vec![
        "test",
        "-p",
        &exercise.package,
        "--test",
        "exercises",
        "--",
        "--ignored",
        "--exact",
        &exercise.name,
    ]
}

fn check_unsolved(root: &Path, exercise: &Exercise) -> Result<(), String> {
    let target = target_dir(root);
    let build = cargo(
        root,
        &target,
        &[
            "test",
            "-p",
            &exercise.package,
            "--test",
            "exercises",
            "--no-run",
        ],
    )?;
    if !build.status.success() {
        return Err(format!(
            "the unsolved exercise tests do not compile{}",
            tail(&build)
        ));
    }
    let run = cargo(root, &target, &test_args(exercise))?;
    let stdout = String::from_utf8_lossy(&run.stdout);
    if run.status.success() {
        return Err(format!(
            "passes before it is solved: the check proves nothing{}",
            tail(&run)
        ));
    }
    if !stdout.contains(&format!("test {} ... FAILED", exercise.name)) {
        return Err(format!(
            "unsolved, it did not run and fail as a test{}",
            tail(&run)
        ));
    }
    Ok(())
}

fn check_solved(
    root: &Path,
    copy: &Path,
    target: &Path,
    exercise: &Exercise,
) -> Result<(), String> {
    if copy.exists() {
        fs::remove_dir_all(copy).map_err(|e| format!("cannot clear {}: {e}", copy.display()))?;
    }
    copy_tree(
        root,
        copy,
        &["target", ".git", "node_modules"],
        &["book/book", "book/browser-test/out"],
    )
    .map_err(|e| format!("cannot copy the workspace: {e}"))?;
    let patch = fs::canonicalize(&exercise.patch)
        .map_err(|e| format!("{}: {e}", exercise.patch.display()))?;
    let apply = Command::new("patch")
        .args(["-p1", "--forward", "--batch", "--input"])
        .arg(&patch)
        .current_dir(copy)
        .output()
        .map_err(|e| format!("cannot run patch: {e}"))?;
    if !apply.status.success() {
        return Err(format!(
            "the solution no longer applies to the step: refresh {}{}",
            relative(&exercise.patch, root),
            tail(&apply)
        ));
    }
    let run = cargo(copy, target, &test_args(exercise))?;
    let stdout = String::from_utf8_lossy(&run.stdout);
    if !run.status.success() || !stdout.contains("test result: ok. 1 passed") {
        return Err(format!("solved, its test does not pass{}", tail(&run)));
    }
    let suite = cargo(copy, target, &["test", "-p", &exercise.package])?;
    if !suite.status.success() {
        return Err(format!(
            "the solution breaks the step's own tests{}",
            tail(&suite)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_only_tests_marked_as_exercises() {
        let source = "#[tokio::test]\n#[ignore = \"exercise: see the book\"]\nasync fn healthz_answers_ok() {}\n\n#[test]\n#[ignore = \"slow\"]\nfn slow() {}\n#[test]\nfn plain() {}\n";
        assert_eq!(exercise_tests(source), ["healthz_answers_ok"]);
    }
}

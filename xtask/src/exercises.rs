//! `cargo xtask exercises [NAME…]`: an exercise is an `#[ignore = "exercise: …"]` test in
//! `steps/<step>/tests/exercises.rs` plus its solution `steps/<step>/exercises/<name>.patch`.
//! Unsolved, its test must run and fail; in a copy of the workspace with the patch applied, it
//! must pass, and so must the step's own tests. The copy builds into a target dir of its own
//! (`<target>/xtask-exercises/`, kept between runs): cargo hashes path packages relative to the
//! workspace root, so a shared one would make the real sources look up to date.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::diffs::short_name;
use crate::{Problems, relative, step_dirs};

/// One exercise: the step's package (`step-NN`), the test that checks it, the patch that solves it.
#[derive(Debug)]
pub struct Exercise {
    pub package: String,
    pub name: String,
    pub patch: PathBuf,
}

/// Test functions marked `#[ignore = "exercise…"]` in an `exercises.rs` source.
pub fn exercise_tests(source: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut marked = false;
    for line in source.lines().map(str::trim) {
        if line.starts_with("#[ignore = \"exercise") {
            marked = true;
        } else if let Some((_, rest)) = line.split_once("fn ").filter(|_| marked) {
            names.push(rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect());
            marked = false;
        }
    }
    names
}

/// Every exercise in the workspace, and every test without a patch or patch without a test.
pub fn discover(root: &Path) -> (Vec<Exercise>, Problems) {
    let (mut exercises, mut problems) = (Vec::new(), Vec::new());
    for step_dir in step_dirs(root) {
        let tests = step_dir.join("tests/exercises.rs");
        let names = exercise_tests(&fs::read_to_string(&tests).unwrap_or_default());
        for patch in crate::files_with_suffix(&step_dir.join("exercises"), ".patch") {
            let stem = patch.file_stem().unwrap_or_default().to_string_lossy().into_owned();
            if !names.contains(&stem) {
                let (patch, tests) = (relative(&patch, root), relative(&tests, root));
                problems.push(format!(
                    "{patch}: no `#[ignore = \"exercise…\"]` test `{stem}` in {tests}"
                ));
            }
        }
        for name in names {
            let patch = step_dir.join("exercises").join(format!("{name}.patch"));
            if !patch.is_file() {
                problems
                    .push(format!("{}: exercise `{name}` has no solution", relative(&tests, root)));
                continue;
            }
            exercises.push(Exercise { package: short_name(&step_dir), name, patch });
        }
    }
    (exercises, problems)
}

/// The command a learner runs (and the book prints).
pub fn check_command(exercise: &Exercise) -> String {
    format!("cargo test -p {} --test exercises -- --ignored {}", exercise.package, exercise.name)
}

/// Static checks (no build): each exercise's page shows its check command and its solution.
pub fn check_pages(root: &Path) -> Problems {
    let (exercises, mut problems) = discover(root);
    for exercise in &exercises {
        let page = format!("book/src/exercises/{}.md", exercise.package);
        let text = fs::read_to_string(root.join(&page)).unwrap_or_default();
        let solution = format!("{{{{#include ../../../{}}}}}", relative(&exercise.patch, root));
        for wanted in [check_command(exercise), solution] {
            if !text.contains(&wanted) {
                problems.push(format!("{page}: does not show `{wanted}`"));
            }
        }
    }
    problems
}

pub fn run(root: &Path, filter: &[String]) -> Problems {
    let (exercises, mut problems) = discover(root);
    let selected: Vec<&Exercise> = exercises
        .iter()
        .filter(|e| filter.is_empty() || filter.iter().any(|f| *f == e.name || *f == e.package))
        .collect();
    if selected.is_empty() {
        problems.push("no exercise found (or none matches the names given)".to_owned());
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), |dir| root.join(dir));
    let copy = target.join("xtask-exercises");
    for exercise in selected {
        let label = format!("{}/{}", exercise.package, exercise.name);
        match unsolved_fails(root, &target, exercise)
            .and_then(|()| solved_passes(root, &copy, exercise))
        {
            Ok(()) => eprintln!("exercise {label}: unsolved it fails, solved it passes"),
            Err(problem) => problems.push(format!("{label}: {problem}")),
        }
    }
    problems
}

fn cargo(dir: &Path, target: &Path, args: &[&str]) -> Result<Output, String> {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        .env("CARGO_TERM_COLOR", "never")
        // A failing snapshot must never write files, and in the copy must compare against the
        // copy's snapshots, not the real workspace's.
        .env("INSTA_UPDATE", "no")
        .env("INSTA_WORKSPACE_ROOT", dir)
        .env("RUST_BACKTRACE", "0")
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))
}

/// Why a command failed: 25 lines from its first panic, or its last 25.
fn tail(output: &Output) -> String {
    let text = String::from_utf8_lossy(&output.stdout) + String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = text.lines().collect();
    let panic = lines.iter().position(|l| l.contains("panicked at"));
    let start = panic.unwrap_or(lines.len().saturating_sub(25));
    format!("\n    | {}", lines[start..(start + 25).min(lines.len())].join("\n    | "))
}

fn test_args(exercise: &Exercise) -> [&str; 9] {
    let (package, name) = (exercise.package.as_str(), exercise.name.as_str());
    ["test", "-p", package, "--test", "exercises", "--", "--ignored", "--exact", name]
}

fn unsolved_fails(root: &Path, target: &Path, exercise: &Exercise) -> Result<(), String> {
    let run = cargo(root, target, &test_args(exercise))?;
    let failed = format!("test {} ... FAILED", exercise.name);
    match String::from_utf8_lossy(&run.stdout).contains(&failed) {
        _ if run.status.success() => {
            Err(format!("passes unsolved: the check proves nothing{}", tail(&run)))
        }
        false => Err(format!("unsolved, it did not compile, run and fail{}", tail(&run))),
        true => Ok(()),
    }
}

fn solved_passes(root: &Path, dir: &Path, exercise: &Exercise) -> Result<(), String> {
    let copy = dir.join("workspace");
    let _ = fs::remove_dir_all(&copy);
    fs::create_dir_all(&copy).map_err(|e| format!("cannot create {}: {e}", copy.display()))?;
    // The working tree as it is (uncommitted edits too), without build output or the built book.
    // `-m`: every file gets the time of the copy, not its original one, so cargo's mtime check
    // rebuilds what an earlier exercise's patch changed in the shared target dir.
    let script = "tar -C \"$1\" --exclude=./target --exclude=./.git --exclude=node_modules --exclude=./book/book \
                  --exclude=./book/browser-test/out -cf - . | tar -C \"$2\" -xmf - && patch -d \"$2\" -p1 --forward --batch --fuzz=0 --input \"$3\"";
    let patch = fs::canonicalize(&exercise.patch)
        .map_err(|e| format!("{}: {e}", exercise.patch.display()))?;
    let apply = Command::new("sh")
        .args(["-c", script, "sh"])
        .arg(root)
        .arg(&copy)
        .arg(&patch)
        .output()
        .map_err(|e| format!("cannot run sh: {e}"))?;
    if !apply.status.success() {
        let patch = relative(&exercise.patch, root);
        return Err(format!(
            "the solution no longer applies to the step: refresh {patch}{}",
            tail(&apply)
        ));
    }
    let target = dir.join("target");
    let run = cargo(&copy, &target, &test_args(exercise))?;
    if !run.status.success()
        || !String::from_utf8_lossy(&run.stdout).contains("test result: ok. 1 passed")
    {
        return Err(format!("solved, its test does not pass{}", tail(&run)));
    }
    let suite = cargo(&copy, &target, &["test", "-p", &exercise.package])?;
    if !suite.status.success() {
        return Err(format!("the solution breaks the step's own tests{}", tail(&suite)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_only_tests_marked_as_exercises() {
        let source = "#[tokio::test]\n#[ignore = \"exercise: see the book\"]\nasync fn healthz_answers_ok() {}\n\n#[test]\n#[ignore = \"slow\"]\nfn slow() {}\n#[test]\nfn plain() {}\n";
        assert_eq!(super::exercise_tests(source), ["healthz_answers_ok"]);
    }
}

//! `cargo xtask diffs`: what changed from one step to the next, as book pages.
//!
//! For each consecutive pair of steps (by directory name) it compares `Cargo.toml` and every
//! `src/**/*.rs`, file by file, and writes `book/src/generated/diff-step-NN-step-MM.md`: a
//! one-line summary, then one unified diff per file. `ANCHOR` marker lines are left out (they
//! exist for the book's includes and mean nothing to a reader). `--check` writes nothing and
//! fails if any page is missing, stale or left over from a step that no longer exists.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use similar::TextDiff;

use crate::Problems;
use crate::fsutil::{file_name, files_with_suffix, relative, step_dirs, write_if_changed};

/// Diffs longer than this many lines start collapsed, so a chapter stays readable.
const OPEN_UP_TO_LINES: usize = 60;

pub fn run(root: &Path, check: bool) -> Result<(), Problems> {
    let generated = root.join("book/src/generated");
    let expected = expected_pages(root);
    let mut problems = Vec::new();
    for (path, content) in &expected {
        let rel = relative(path, root);
        if check {
            match fs::read_to_string(path) {
                Ok(current) if current == *content => {}
                Ok(_) => problems.push(format!("{rel} is out of date: run `cargo xtask diffs`")),
                Err(_) => problems.push(format!("{rel} is missing: run `cargo xtask diffs`")),
            }
        } else {
            match write_if_changed(path, content) {
                Ok(true) => eprintln!("wrote {rel}"),
                Ok(false) => {}
                Err(error) => problems.push(format!("{rel}: cannot write: {error}")),
            }
        }
    }
    // Pages for step pairs that no longer exist.
    let wanted: BTreeSet<&PathBuf> = expected.iter().map(|(path, _)| path).collect();
    for page in files_with_suffix(&generated, ".md") {
        let name = file_name(&page);
        if name.starts_with("diff-") && !wanted.contains(&page) {
            let rel = relative(&page, root);
            if check {
                problems.push(format!(
                    "{rel} belongs to no consecutive pair of steps: run `cargo xtask diffs`"
                ));
            } else if let Err(error) = fs::remove_file(&page) {
                problems.push(format!("{rel}: cannot remove: {error}"));
            } else {
                eprintln!("removed {rel}");
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Every diff page the steps call for, with its content: each step against the one it grows
/// from (see [`grows_from`]).
pub fn expected_pages(root: &Path) -> Vec<(PathBuf, String)> {
    let steps = step_dirs(root);
    steps
        .windows(2)
        .map(|pair| {
            let to = &pair[1];
            let from = grows_from(to)
                .and_then(|name| steps.iter().find(|dir| short_name(dir) == name))
                .unwrap_or(&pair[0]);
            let name = format!("diff-{}-{}.md", short_name(from), short_name(to));
            (root.join("book/src/generated").join(name), render(from, to))
        })
        .collect()
}

/// The step this one grows from, when it is not the previous folder: a step's Cargo.toml says
/// so with `grows-from = "step-04"` under `[package.metadata.workshop]` (step 06 grows from
/// the item API of step 04, not from the pitfalls lab of step 05).
fn grows_from(step_dir: &Path) -> Option<String> {
    let manifest = fs::read_to_string(step_dir.join("Cargo.toml")).ok()?;
    manifest.lines().find_map(|line| {
        let value = line
            .trim()
            .strip_prefix("grows-from")?
            .trim()
            .strip_prefix('=')?;
        Some(value.trim().trim_matches('"').to_owned())
    })
}

/// `steps/step-02-greeting` → `step-02`.
pub fn short_name(step_dir: &Path) -> String {
    let name = file_name(step_dir);
    name.split('-').take(2).collect::<Vec<_>>().join("-")
}

/// The files a step diff compares, relative to the step directory.
fn compared_files(step_dir: &Path) -> BTreeSet<String> {
    let mut files: BTreeSet<String> = files_with_suffix(&step_dir.join("src"), ".rs")
        .iter()
        .map(|path| relative(path, step_dir))
        .collect();
    if step_dir.join("Cargo.toml").is_file() {
        files.insert("Cargo.toml".to_owned());
    }
    files
}

/// The file's text without mdBook's `ANCHOR:` / `ANCHOR_END:` marker lines.
fn reader_text(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|line| !line.contains("ANCHOR:") && !line.contains("ANCHOR_END:"))
        .map(|line| format!("{line}\n"))
        .collect()
}

/// A fence that no backtick run inside `body` can close early.
fn fence_for(body: &str) -> String {
    let mut longest = 0;
    let mut current = 0;
    for c in body.chars() {
        if c == '`' {
            current += 1;
            longest = longest.max(current);
        } else {
            current = 0;
        }
    }
    "`".repeat((longest + 1).max(3))
}

fn render(from: &Path, to: &Path) -> String {
    let (from_name, to_name) = (file_name(from), file_name(to));
    let (before, after) = (compared_files(from), compared_files(to));
    let mut added = Vec::new();
    let mut removed = Vec::new();
    let mut changed = Vec::new();
    let mut unchanged = Vec::new();
    let mut sections = String::new();
    for file in before.union(&after) {
        let old = if before.contains(file) {
            reader_text(&from.join(file))
        } else {
            String::new()
        };
        let new = if after.contains(file) {
            reader_text(&to.join(file))
        } else {
            String::new()
        };
        if old == new {
            unchanged.push(file.clone());
            continue;
        }
        let diff = TextDiff::from_lines(&old, &new);
        let (mut plus, mut minus) = (0, 0);
        for change in diff.iter_all_changes() {
            match change.tag() {
                similar::ChangeTag::Insert => plus += 1,
                similar::ChangeTag::Delete => minus += 1,
                similar::ChangeTag::Equal => {}
            }
        }
        let old_label = if before.contains(file) {
            format!("{from_name}/{file}")
        } else {
            "/dev/null".to_owned()
        };
        let new_label = if after.contains(file) {
            format!("{to_name}/{file}")
        } else {
            "/dev/null".to_owned()
        };
        let body = diff
            .unified_diff()
            .context_radius(3)
            .header(&old_label, &new_label)
            .to_string();
        let status = match (before.contains(file), after.contains(file)) {
            (false, true) => {
                added.push(file.clone());
                "new file"
            }
            (true, false) => {
                removed.push(file.clone());
                "removed"
            }
            _ => {
                changed.push(file.clone());
                "changed"
            }
        };
        let open = if body.lines().count() <= OPEN_UP_TO_LINES {
            " open"
        } else {
            ""
        };
        let fence = fence_for(&body);
        sections.push_str(&format!(
            "<details{open}>\n<summary><code>{file}</code>: {status}, +{plus} −{minus} lines</summary>\n\n{fence}diff\n{body}{fence}\n\n</details>\n\n"
        ));
    }
    let list = |files: &[String]| {
        files
            .iter()
            .map(|f| format!("`{f}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut summary = Vec::new();
    for (label, files) in [
        ("changed", &changed),
        ("added", &added),
        ("removed", &removed),
        ("unchanged", &unchanged),
    ] {
        if !files.is_empty() {
            summary.push(format!("{label}: {}", list(files)));
        }
    }
    if summary.is_empty() {
        summary.push("no differences".to_owned());
    }
    format!(
        "<!-- Generated by `cargo xtask diffs` from steps/; do not edit by hand. -->\n\n\
         **What changed from `{from_name}` to `{to_name}`** ({}).\n\n{sections}",
        summary.join("; ")
    )
    .trim_end()
    .to_owned()
        + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_is_longer_than_any_backtick_run_inside() {
        assert_eq!(fence_for("plain"), "```");
        assert_eq!(fence_for("/// ```ignore\n"), "````");
    }

    #[test]
    fn short_names_keep_the_number() {
        assert_eq!(short_name(Path::new("steps/step-02-greeting")), "step-02");
    }

    #[test]
    fn renders_changes_and_drops_anchor_lines() {
        let dir = std::env::temp_dir().join(format!("xtask-diffs-{}", std::process::id()));
        let (a, b) = (dir.join("step-01-a"), dir.join("step-02-b"));
        for (step, body) in [
            (&a, "fn one() {}\n// ANCHOR: x\n"),
            (&b, "fn one() {}\nfn two() {}\n// ANCHOR_END: x\n"),
        ] {
            fs::create_dir_all(step.join("src")).unwrap();
            fs::write(step.join("Cargo.toml"), "[package]\n").unwrap();
            fs::write(step.join("src/lib.rs"), body).unwrap();
        }
        let page = render(&a, &b);
        fs::remove_dir_all(&dir).unwrap();
        assert!(
            page.contains("changed: `src/lib.rs`; unchanged: `Cargo.toml`"),
            "{page}"
        );
        assert!(page.contains("+fn two() {}"), "{page}");
        assert!(!page.contains("ANCHOR"), "{page}");
    }
}

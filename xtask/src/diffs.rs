//! `cargo xtask diffs [--check]`: `book/src/generated/diff-step-NN-step-MM.md`, what each step
//! adds to the one it grows from (the previous folder, or `grows-from` in its Cargo.toml).
//! A step that copies (01 to 03) gets a diff per file. A step that reuses (it depends on the
//! earlier step's library, from 04 on) gets its new files in full, then the diffs of the files
//! both have. The code that teaches comes first, `Cargo.toml` last; a new file is included from
//! the step itself (mdBook shows its `ANCHOR` lines), a diff leaves `ANCHOR` lines out.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use similar::{ChangeTag, TextDiff};

use crate::{Problems, files_with_suffix, manifest_value, relative, step_dirs, write_or_check};

/// Sections longer than this many lines start folded, so a chapter stays readable.
const OPEN_UP_TO_LINES: usize = 60;
const WORKSHOP: &str = "package.metadata.workshop";

pub fn run(root: &Path, check: bool) -> Problems {
    let steps = step_dirs(root);
    let mut wanted = Vec::new();
    let mut problems = Vec::new();
    for pair in steps.windows(2) {
        let to = &pair[1];
        let from = manifest_value(to, WORKSHOP, "grows-from")
            .and_then(|name| steps.iter().find(|dir| short_name(dir) == name))
            .unwrap_or(&pair[0]);
        let rel = format!("book/src/generated/diff-{}-{}.md", short_name(from), short_name(to));
        problems.extend(write_or_check(root, &rel, &render(from, to), check, "diffs"));
        wanted.push(root.join(rel));
    }
    for page in files_with_suffix(&root.join("book/src/generated"), ".md") {
        let name = page.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with("diff-") && !wanted.contains(&page) {
            problems.push(format!("{}: no such pair of steps: remove it", relative(&page, root)));
        }
    }
    problems
}

/// `steps/step-02-greeting` → `step-02`.
pub fn short_name(step_dir: &Path) -> String {
    let name = step_dir.file_name().unwrap_or_default().to_string_lossy();
    name.split('-').take(2).collect::<Vec<_>>().join("-")
}

/// The files a page compares: `src/**/*.rs` and `Cargo.toml`.
fn files(step_dir: &Path) -> BTreeSet<String> {
    let sources = files_with_suffix(&step_dir.join("src"), ".rs");
    sources.iter().map(|p| relative(p, step_dir)).chain(["Cargo.toml".to_owned()]).collect()
}

/// The file's text without mdBook's `ANCHOR:` / `ANCHOR_END:` marker lines ("" if absent).
fn reader_text(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.contains("ANCHOR:") && !l.contains("ANCHOR_END:"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// A folded (if long) section holding `body` in a fence no backtick run inside it can close.
fn section(title: &str, lang: &str, body: &str) -> String {
    let longest = body.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat((longest + 1).max(3));
    let open = if body.lines().count() <= OPEN_UP_TO_LINES { " open" } else { "" };
    format!(
        "<details{open}>\n<summary>{title}</summary>\n\n{fence}{lang}\n{body}{fence}\n\n</details>\n\n"
    )
}

pub fn render(from: &Path, to: &Path) -> String {
    let (from_name, to_name) = (short_name(from), short_name(to));
    let (before, after) = (files(from), files(to));
    // By reuse: the step depends on the earlier step's package (`step-04 = { path = … }`).
    let package = manifest_value(from, "package", "name").unwrap_or_default();
    let reuses = manifest_value(to, "dependencies", &package).is_some();
    // Sources by name (new ones first when reusing), `Cargo.toml` last: it teaches least.
    let mut order: Vec<&String> = before.union(&after).filter(|f| *f != "Cargo.toml").collect();
    if reuses {
        order.sort_by_key(|f| before.contains(*f));
    }
    order.extend(before.get("Cargo.toml"));
    let (mut sections, mut lists) = (String::new(), <[Vec<String>; 5]>::default());
    for file in order {
        let (had, has) = (before.contains(file), after.contains(file));
        let (old, new) = (reader_text(&from.join(file)), reader_text(&to.join(file)));
        let kind = match (had, has) {
            (true, false) if reuses => 4, // used through the dependency
            (false, _) => 0,
            (_, false) => 2,
            _ if old == new => 3,
            _ => 1,
        };
        lists[kind].push(format!("`{file}`"));
        if reuses && kind == 0 {
            // Included from the step itself (this page lives in book/src/generated/), so the
            // book shows compiled code, never a copy of it.
            let title = format!("<code>{file}</code>: new, {} lines", new.lines().count());
            let step = to.file_name().map_or(String::new(), |n| n.to_string_lossy().into_owned());
            let lang = match file.rsplit('.').next() {
                Some("rs") => "rust",
                Some("sql") => "sql",
                _ => "text",
            };
            sections +=
                &section(&title, lang, &format!("{{{{#include ../../../steps/{step}/{file}}}}}\n"));
        } else if kind < 3 {
            let diff = TextDiff::from_lines(&old, &new);
            let count = |tag| diff.iter_all_changes().filter(|c| c.tag() == tag).count();
            let (plus, minus) = (count(ChangeTag::Insert), count(ChangeTag::Delete));
            let label = |has, step| if has { format!("{step}/{file}") } else { "/dev/null".into() };
            let (old_label, new_label) = (label(had, &from_name), label(has, &to_name));
            let body = diff.unified_diff().header(&old_label, &new_label).to_string();
            let status = ["new file", "changed", "removed"][kind];
            sections += &section(
                &format!("<code>{file}</code>: {status}, +{plus} −{minus} lines"),
                "diff",
                &body,
            );
        }
    }
    let reused = format!("used from `{from_name}`'s library as they are");
    let kinds = ["new", "changed", "removed", "unchanged", &reused];
    let summary: Vec<String> = (lists.iter().zip(kinds).filter(|(files, _)| !files.is_empty()))
        .map(|(files, kind)| format!("{kind}: {}", files.join(", ")))
        .collect();
    let how = if reuses { "depends on" } else { "copies" };
    let adds = if reuses { "adds" } else { "changes" };
    let page = format!(
        "<!-- Generated by `cargo xtask diffs` from steps/; do not edit by hand. -->\n\n\
         **What changed from `{from_name}` to `{to_name}`**: `{to_name}` {how} `{from_name}` and {adds} ({}).\n\n{sections}",
        summary.join("; ")
    );
    page.trim_end().to_owned() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_show_diffs_and_reuses_show_new_files_first_then_diffs_then_cargo_toml() {
        let dir = std::env::temp_dir().join(format!("xtask-diffs-{}", std::process::id()));
        let files = [
            ("a/Cargo.toml", "[package]\nname = \"step-01\"\n"),
            ("a/src/lib.rs", "pub fn one() {}\n// ANCHOR: x\n"),
            ("a/src/store.rs", "pub struct Store;\n"),
            ("b/Cargo.toml", "[package]\nname = \"step-02\"\n"),
            ("b/src/lib.rs", "pub fn one() {}\npub fn two() {}\n"),
            ("c/Cargo.toml", "[dependencies]\nstep-01 = { path = \"../a\" }\n"),
            ("c/src/lib.rs", "pub use step_01::one;\n"),
            ("c/src/probes.rs", "pub fn ready() {}\n"),
        ];
        for (path, text) in files {
            fs::create_dir_all(dir.join(path).parent().unwrap()).unwrap();
            fs::write(dir.join(path), text).unwrap();
        }
        let (copy, reuse) =
            (render(&dir.join("a"), &dir.join("b")), render(&dir.join("a"), &dir.join("c")));
        fs::remove_dir_all(&dir).unwrap();
        let changes = "changed: `src/lib.rs`, `Cargo.toml`; removed: `src/store.rs`";
        assert!(copy.contains(&format!("copies `a` and changes ({changes})")), "{copy}");
        assert!(copy.contains("+pub fn two() {}") && !copy.contains("ANCHOR"), "{copy}");
        let adds = "depends on `a` and adds (new: `src/probes.rs`; changed: `src/lib.rs`, `Cargo.toml`; \
                    used from `a`'s library as they are: `src/store.rs`)";
        assert!(reuse.contains(adds), "{reuse}");
        assert!(
            reuse.contains("```rust\n{{#include ../../../steps/c/src/probes.rs}}\n```"),
            "a new file is included whole: {reuse}"
        );
        for page in [&copy, &reuse] {
            let at = |needle: &str| page.find(needle).unwrap();
            assert!(at("src/lib.rs</code>") < at("Cargo.toml</code>"), "{page}");
        }
        assert!(
            reuse.find("probes.rs</code>").unwrap() < reuse.find("lib.rs</code>").unwrap(),
            "{reuse}"
        );
    }
}

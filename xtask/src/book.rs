//! `cargo xtask book-check` and `cargo xtask schedule`.
//!
//! The book may show only what the project verifies. In every Markdown file under `book/src`:
//! a fenced `rust` block holds only `{{#include …}}` lines or is marked `rust,ignore`; no block
//! shows a `$ command` followed by typed output (transcripts are snapshots tests check); an
//! include names a file, anchor or line range that exists (resolved against the directory of
//! the file it is in, as mdBook does), and a `.snap` is included from line 4, after insta's
//! header (a generated page, checked by regenerating it, may show a source file whole).
//! Every top-level numbered chapter that is workshop time (not its nested parts) has a
//! `**Time:** N min (A min talk and demo, B min exercises)` line. Generated pages (step diffs,
//! schedule) must be up to date, and exercise pages complete. Links are lychee's job.

use std::fs;
use std::path::Path;

use pulldown_cmark::{CodeBlockKind, Event, Parser, Tag, TagEnd};

use crate::{Problems, diffs, exercises, files_with_suffix, relative, write_or_check};

/// Chapters that are reference pages, not workshop time.
const UNTIMED: [&str; 3] = ["exercises/", "generated/", "schedule.md"];

pub fn check(root: &Path) -> Problems {
    let src = root.join("book/src");
    let mut problems = Vec::new();
    for page in files_with_suffix(&src, ".md") {
        let text = fs::read_to_string(&page).unwrap_or_default();
        let here = format!("book/src/{}", relative(&page, &src));
        problems.extend(check_page(&here, page.parent().unwrap_or(&src), &text));
    }
    for (path, _, needs_time) in summary(&src) {
        if needs_time && time_of(&fs::read_to_string(src.join(&path)).unwrap_or_default()).is_none()
        {
            problems
                .push(format!("book/src/{path}: no `> **Time:** N min (…, B min exercises)` line"));
        }
    }
    problems.extend(diffs::run(root, true));
    problems.extend(schedule(root, true));
    problems.extend(exercises::check_pages(root));
    problems
}

/// The checks on one page; `here` names it in messages, `dir` is where its includes resolve.
pub fn check_page(here: &str, dir: &Path, text: &str) -> Problems {
    let mut problems = Vec::new();
    let mut block: Option<(usize, String, String)> = None; // (line, info string, body)
    for (event, range) in Parser::new(text).into_offset_iter() {
        match event {
            Event::Start(Tag::CodeBlock(CodeBlockKind::Fenced(info))) => {
                let line = text[..range.start].matches('\n').count() + 1;
                block = Some((line, info.to_string(), String::new()));
            }
            Event::Text(body) => block.iter_mut().for_each(|b| b.2.push_str(&body)),
            Event::End(TagEnd::CodeBlock) => {
                let Some((line, info, body)) = block.take() else {
                    continue;
                };
                let typed: Vec<&str> = (body.lines().map(str::trim))
                    .filter(|l| !l.is_empty() && !l.starts_with("{{#"))
                    .collect();
                let words: Vec<&str> = info.split([',', ' ']).collect();
                // Generated pages show compiled sources too, verified by regenerating them.
                let generated = here.starts_with("book/src/generated/");
                if words[0] == "rust"
                    && !words.contains(&"ignore")
                    && !typed.is_empty()
                    && !generated
                {
                    problems.push(format!("{here}:{line}: rust block is neither an include of compiled code nor marked `rust,ignore`"));
                }
                // A `$ command` followed by output (not a command, continuation or comment).
                let output =
                    |i: usize| !typed[i].starts_with(['$', '#']) && !typed[i - 1].ends_with('\\');
                let after_command = |i: usize| typed[..i].iter().any(|l| l.starts_with("$ "));
                if (1..typed.len()).any(|i| output(i) && after_command(i)) {
                    problems.push(format!("{here}:{line}: hand-written command transcript: include the snapshot a test checks instead"));
                }
            }
            _ => {}
        }
    }
    for (number, line) in text.lines().enumerate() {
        for (start, _) in line.match_indices("{{#").filter(|(i, _)| !line[..*i].ends_with('\\')) {
            let Some((directive, _)) = line[start + 3..].split_once("}}") else {
                continue;
            };
            if let Some(problem) = check_include(dir, directive) {
                problems.push(format!("{here}:{}: {problem}", number + 1));
            }
        }
    }
    problems
}

/// What is wrong with `include path[:spec]` (or `rustdoc_include …`), if anything.
fn check_include(dir: &Path, directive: &str) -> Option<String> {
    let arg = directive.strip_prefix("include ").or(directive.strip_prefix("rustdoc_include "))?;
    let (file, spec) = arg.trim().split_once(':').map_or((arg.trim(), None), |(f, s)| (f, Some(s)));
    let Ok(text) = fs::read_to_string(dir.join(file)) else {
        return Some(format!("include of a missing file: {file}"));
    };
    let snapshot = file.ends_with(".snap");
    // `4:`, `4:10`, `:10` or `7` is a line range (its first line); anything else an anchor.
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    let start = spec.and_then(|s| {
        let (from, to) = s.split_once(':').unwrap_or((s, ""));
        (digits(from) && digits(to) && s != ":").then(|| from.parse().unwrap_or(1))
    });
    let anchor = |marker: &str| text.lines().any(|l| l.split(marker).nth(1).map(str::trim) == spec);
    match (spec, start) {
        (None, _) if snapshot => {
            Some(format!("include a snapshot without insta's header: `{file}:4:`"))
        }
        (Some(spec), Some(n)) if snapshot && n != 4 => {
            Some(format!("include a snapshot from line 4, not `:{spec}`"))
        }
        (Some(spec), Some(n)) if n > text.lines().count() => {
            Some(format!("`{file}:{spec}` starts past the end"))
        }
        (Some(spec), None) if snapshot => {
            Some(format!("include a snapshot by line range `:4:`, not `{spec}`"))
        }
        (Some(spec), None) if !anchor("ANCHOR:") || !anchor("ANCHOR_END:") => {
            Some(format!("anchor `{spec}` not found in {file}"))
        }
        _ => None,
    }
}

/// `SUMMARY.md`'s entries that have a file: (path, title, needs a time line). A chapter needs
/// one if it is a top-level numbered chapter (`- [..](..)`, not indented) of workshop time.
fn summary(src: &Path) -> Vec<(String, String, bool)> {
    let text = fs::read_to_string(src.join("SUMMARY.md")).unwrap_or_default();
    let entry = |line: &str| {
        let trimmed = line.trim_start();
        let item = trimmed.strip_prefix("- ").or(trimmed.strip_prefix("* "));
        let inner = item.unwrap_or(trimmed).trim().strip_prefix('[')?.strip_suffix(')')?;
        let (title, path) = inner.split_once("](").filter(|(_, path)| !path.is_empty())?;
        let top_level = item.is_some() && trimmed.len() == line.len();
        let timed = top_level && !UNTIMED.iter().any(|p| path.starts_with(p));
        Some((path.to_owned(), title.to_owned(), timed))
    };
    text.lines().filter_map(entry).collect()
}

/// The `**Time:** 30 min (15 min talk and demo, 15 min exercises)` line as (teaching,
/// exercises) minutes; `None` without one, or if the exercises exceed the total.
fn time_of(text: &str) -> Option<(u32, u32)> {
    let rest = text.lines().find_map(|l| l.split_once("**Time:**"))?.1;
    let words: Vec<&str> = rest.split([' ', '(', ')', ',']).filter(|w| !w.is_empty()).collect();
    let total: u32 = words.first()?.parse().ok().filter(|_| words.get(1) == Some(&"min"))?;
    let exercises = words.windows(3).find(|w| w[1] == "min" && w[2].starts_with("exercise"));
    let exercises = exercises.and_then(|w| w[0].parse().ok()).unwrap_or(0);
    (exercises <= total).then(|| (total - exercises, exercises))
}

/// `cargo xtask schedule [--check]`: `book/src/generated/schedule.md` from the chapter times.
pub fn schedule(root: &Path, check: bool) -> Problems {
    let src = root.join("book/src");
    let timed: Vec<(String, u32, u32)> = (summary(&src).into_iter())
        .filter_map(|(path, title, _)| {
            let (teaching, exercises) = time_of(&fs::read_to_string(src.join(&path)).ok()?)?;
            Some((format!("[{title}]({path})"), teaching, exercises))
        })
        .collect();
    let page = render_schedule(&timed);
    write_or_check(root, "book/src/generated/schedule.md", &page, check, "schedule")
}

const START: u32 = 9 * 60;

fn clock(minutes: u32) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

fn duration(minutes: u32) -> String {
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("{m} min"),
        (h, 0) => format!("{h} h"),
        (h, m) => format!("{h} h {m} min"),
    }
}

/// A timetable from 09:00, and its end; each pause `(not before, length, label)` comes after
/// the first session that ends at or after its time (never after the last session).
fn plan(title: &str, rows: &[(String, u32)], pauses: &[(u32, u32, &str)]) -> String {
    let mut table = String::from("| Start | Session |\n| ---: | --- |\n");
    let (mut now, mut pauses) = (START, pauses.iter().peekable());
    for (index, (label, minutes)) in rows.iter().enumerate() {
        table += &format!("| {} | {label} ({}) |\n", clock(now), duration(*minutes));
        now += minutes;
        while let Some((_, length, label)) =
            pauses.next_if(|p| index + 1 < rows.len() && now >= p.0)
        {
            table += &format!("| {} | *{label}* ({}) |\n", clock(now), duration(*length));
            now += length;
        }
    }
    let (start, end) = (clock(START), clock(now));
    format!("### {title} ({start} to {end})\n\n{table}| {end} | End |\n")
}

fn render_schedule(timed: &[(String, u32, u32)]) -> String {
    let mut out = String::from(
        "<!-- Generated by `cargo xtask schedule` from the chapters' **Time:** lines; do not edit by hand. -->\n\n",
    );
    if timed.is_empty() {
        return out + "No chapter has a **Time:** line yet.\n";
    }
    out += "| Chapter | Teaching | Exercises |\n| --- | ---: | ---: |\n";
    for (link, t, e) in timed {
        let e = if *e == 0 { "—".to_owned() } else { duration(*e) };
        out += &format!("| {link} | {} | {e} |\n", duration(*t));
    }
    let (t, e) = timed.iter().fold((0, 0), |(t, e), row| (t + row.1, e + row.2));
    out += &format!("| **Total** | **{}** | **{}** |\n\n", duration(t), duration(e));
    let half: Vec<(String, u32)> = timed.iter().map(|(link, t, _)| (link.clone(), *t)).collect();
    out += &plan(
        "Half day: teaching only, exercises as homework",
        &half,
        &[(START + 90, 15, "Break")],
    );
    let mut full = Vec::new();
    for (link, t, e) in timed {
        full.push((link.clone(), *t));
        full.extend((*e > 0).then(|| (format!("Exercises: {link}"), *e)));
    }
    let pauses = [(10 * 60 + 30, 15, "Break"), (12 * 60, 60, "Lunch"), (15 * 60, 15, "Break")];
    out + "\n" + &plan("Full day: teaching and exercises", &full, &pauses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_show_only_what_the_project_verifies() {
        let dir = std::env::temp_dir().join(format!("xtask-book-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("lib.rs"), "// ANCHOR: app\nfn app() {}\n// ANCHOR_END: app\n").unwrap();
        fs::write(dir.join("x.snap"), "---\nsource: t.rs\n---\n$ curl\nok\n").unwrap();
        let cases = [
            ("```rust\nfn main() {}\n```\n", "page.md:1: rust block is neither"),
            ("> ```rust\n> let x = 1;\n> ```\n", "rust block"), // in a note box too
            ("```rust,no_run\nfn main() {}\n```\n", "rust block"), // only `ignore` marks one
            ("```rust,ignore\nfn main() {}\n```\n", ""),
            ("text\n\n```rust\n{{#include lib.rs:app}}\n```\n", ""),
            ("```\n{{#include x.snap:4:}}\n```\n", ""),
            ("{{#include x.snap}}\n", "snapshot without insta's header"),
            ("{{#include x.snap:1:}}\n", "snapshot from line 4"),
            ("{{#include x.snap:app}}\n", "snapshot by line range"),
            ("{{#include nope.rs}}\n", "page.md:1: include of a missing file"),
            ("\n{{#include lib.rs:nope}}\n", "page.md:2: anchor `nope` not found"),
            ("{{#include lib.rs:9:}}\n", "past the end"),
            ("Write \\{{#include nope.rs}} to include.\n", ""),
            ("```console\n$ curl -i localhost:8080/\nHTTP/1.1 200 OK\n```\n", "transcript"),
            ("```sh\n$ cargo run -p step-01\n$ curl \\\n  localhost:8080/ # ok\n```\n", ""),
        ];
        let listing =
            check_page("book/src/generated/diff.md", &dir, "```rust\nfn main() {}\n```\n");
        assert!(listing.is_empty(), "a generated page may list a source file: {listing:?}");
        for (page, expected) in cases {
            let problems = check_page("page.md", &dir, page);
            let ok = if expected.is_empty() {
                problems.is_empty()
            } else {
                problems.len() == 1 && problems[0].contains(expected)
            };
            assert!(ok, "{page:?}: expected {expected:?}, got {problems:?}");
        }
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn times_parse_with_and_without_exercises() {
        assert_eq!(
            time_of("> **Time:** 30 min (15 min talk and demo, 15 min exercises)"),
            Some((15, 15))
        );
        assert_eq!(time_of("**Time:** 10 min\n"), Some((10, 0)));
        assert_eq!(
            time_of("**Time:** 10 min (20 min exercises)\n"),
            None,
            "more exercise than time"
        );
        assert_eq!(time_of("Time: 10 min\n"), None);
    }

    #[test]
    fn only_top_level_numbered_workshop_chapters_need_a_time() {
        let dir = std::env::temp_dir().join(format!("xtask-summary-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let text = "[Intro](intro.md)\n\n- [One](one.md)\n  - [Sub](sub.md)\n- [Exercises](exercises/one.md)\n- [Draft]()\n";
        fs::write(dir.join("SUMMARY.md"), text).unwrap();
        let shape: Vec<(String, bool)> =
            summary(&dir).into_iter().map(|(p, _, t)| (p, t)).collect();
        fs::remove_dir_all(&dir).ok();
        let expected =
            [("intro.md", false), ("one.md", true), ("sub.md", false), ("exercises/one.md", false)];
        assert_eq!(shape, expected.map(|(p, t)| (p.to_owned(), t)));
    }

    #[test]
    fn the_schedule_adds_up_and_places_breaks_between_chapters() {
        let timed: Vec<(String, u32, u32)> = (1..=4).map(|n| (format!("C{n}"), 40, 20)).collect();
        let page = render_schedule(&timed);
        assert!(page.contains("| **Total** | **2 h 40 min** | **1 h 20 min** |"), "{page}");
        // Half day: 4 × 40 min from 09:00; the first chapter to end after 10:30 ends at 11:00.
        assert!(
            page.contains("| 11:00 | *Break* (15 min) |") && page.contains("(09:00 to 11:55)"),
            "{page}"
        );
        assert!(page.contains("| 12:15 | *Lunch* (1 h) |"), "{page}");
    }
}

//! `cargo xtask book-check` and `cargo xtask schedule`.
//!
//! The book may show only what the project verifies. Every Markdown file under `book/src` is
//! checked for:
//!
//! - **rust blocks**: a fenced block whose language is `rust` must hold only
//!   `{{#include …}}` / `{{#rustdoc_include …}}` lines (compiled code), or be marked
//!   `rust,ignore` (an illustration that is not meant to compile);
//! - **transcripts**: a fenced block that shows a `$ command` followed by its output must come
//!   from an include (a snapshot a test checks), never be typed by hand;
//! - **includes**: the file exists; an anchor exists as `ANCHOR:`/`ANCHOR_END:`; a line range
//!   starts inside the file; a `.snap` file is included from line 4, after insta's header;
//! - **links**: a relative link or image points to a file that exists;
//! - **times**: every numbered chapter in `SUMMARY.md` (other than instructor, exercise and
//!   schedule pages) has a `**Time:** N min (A min talk and demo, B min exercises)` line (N is
//!   the total; the part in parentheses is optional, and only `B min exercises` is read).
//!
//! It also fails if a generated file (step diffs, schedule) is out of date, or if an exercise
//! page does not give an exercise's check command and solution.
//!
//! Paths: an include resolves against the directory of the file it is written in (mdBook does
//! the same for includes inside included files). A link resolves against the chapter that
//! shows it, so links in the fragments under `exercises/` and `generated/` (which chapters
//! include) resolve against `book/src`.

use std::fs;
use std::path::{Path, PathBuf};

use crate::Problems;
use crate::fsutil::{files_with_suffix, relative, write_if_changed};
use crate::{diffs, exercises};

/// Directories whose pages are included into chapters rather than being chapters.
const FRAGMENT_DIRS: [&str; 2] = ["exercises/", "generated/"];
/// Numbered chapters that need no time estimate: reference pages, not workshop time.
const UNTIMED_PREFIXES: [&str; 4] = ["instructor/", "exercises/", "generated/", "schedule.md"];

pub fn run_check(root: &Path) -> Result<(), Problems> {
    let src = root.join("book/src");
    let mut problems = Vec::new();
    for page in files_with_suffix(&src, ".md") {
        let rel = relative(&page, &src);
        match fs::read_to_string(&page) {
            Ok(text) => problems.extend(check_page(&src, &rel, &text)),
            Err(error) => problems.push(format!("book/src/{rel}: cannot read: {error}")),
        }
    }
    problems.extend(check_times(&src));
    if let Err(found) = diffs::run(root, true) {
        problems.extend(found);
    }
    if let Err(found) = run_schedule(root, true) {
        problems.extend(found);
    }
    problems.extend(exercises::check_pages(root));
    if problems.is_empty() {
        eprintln!("book-check: all good");
        Ok(())
    } else {
        Err(problems)
    }
}

/// All checks that look at one page's text; `rel` is its path under `book/src`.
pub fn check_page(src: &Path, rel: &str, text: &str) -> Problems {
    let mut problems = Vec::new();
    let here = format!("book/src/{rel}");
    let page_dir = src
        .join(rel)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| src.to_path_buf());
    let link_base = if FRAGMENT_DIRS.iter().any(|d| rel.starts_with(d)) {
        src.to_path_buf()
    } else {
        page_dir.clone()
    };

    let blocks = fenced_blocks(text);
    for block in &blocks {
        let lang = block.lang();
        let hand_written: Vec<&(usize, String)> = block
            .body
            .iter()
            .filter(|(_, line)| !line.trim().is_empty() && parse_include(line).is_none())
            .collect();
        if lang.first().map(String::as_str) == Some("rust")
            && !lang.iter().any(|t| t == "ignore")
            && !hand_written.is_empty()
        {
            problems.push(format!(
                "{here}:{}: rust block is neither an include of compiled code nor marked `rust,ignore`",
                block.line
            ));
        }
        if looks_like_transcript(&hand_written) {
            problems.push(format!(
                "{here}:{}: hand-written command transcript: include the snapshot a test checks instead",
                block.line
            ));
        }
    }

    for (number, line) in text.lines().enumerate() {
        let number = number + 1;
        let mut rest = line;
        while let Some(start) = rest.find("{{#") {
            let escaped = rest[..start].ends_with('\\');
            let after = &rest[start..];
            let Some(end) = after.find("}}") else { break };
            let directive = &after[..end + 2];
            rest = &after[end + 2..];
            if escaped {
                continue;
            }
            if let Some(include) = parse_include(directive) {
                problems.extend(check_include(&here, number, &page_dir, &include));
            }
        }
    }

    let in_code = code_lines(&blocks);
    for (number, line) in text.lines().enumerate() {
        if in_code.contains(&(number + 1)) {
            continue;
        }
        for target in link_targets(line) {
            let path = target.split('#').next().unwrap_or("");
            if path.is_empty() {
                continue;
            }
            if !link_base.join(path).exists() {
                problems.push(format!(
                    "{here}:{}: link to a missing file: {target}",
                    number + 1
                ));
            }
        }
    }
    problems
}

/// A fenced code block: the line of its opening fence, its info string words, its body lines.
#[derive(Debug)]
struct Block {
    line: usize,
    info: String,
    body: Vec<(usize, String)>,
}

impl Block {
    /// `rust,ignore` or `rust ignore` → `["rust", "ignore"]`.
    fn lang(&self) -> Vec<String> {
        self.info
            .split([',', ' ', '\t'])
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// Strips up to `depth` block-quote markers (`>`) and the indentation around them.
fn strip_quotes(line: &str, depth: usize) -> (&str, usize) {
    let mut rest = line.trim_start();
    let mut stripped = 0;
    while stripped < depth {
        match rest.strip_prefix('>') {
            Some(after) => {
                rest = after.trim_start();
                stripped += 1;
            }
            None => break,
        }
    }
    (rest, stripped)
}

fn fenced_blocks(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<(char, usize, usize, Block)> = None;
    for (number, line) in text.lines().enumerate() {
        let number = number + 1;
        match &mut open {
            None => {
                let (content, depth) = strip_quotes(line, usize::MAX);
                let fence_char = content.chars().next().filter(|c| *c == '`' || *c == '~');
                if let Some(c) = fence_char {
                    let len = content.chars().take_while(|x| *x == c).count();
                    let info = content[len..].trim();
                    if len >= 3 && !(c == '`' && info.contains('`')) {
                        let block = Block {
                            line: number,
                            info: info.to_owned(),
                            body: Vec::new(),
                        };
                        open = Some((c, len, depth, block));
                    }
                }
            }
            Some((c, len, depth, block)) => {
                let (content, _) = strip_quotes(line, *depth);
                let run = content.chars().take_while(|x| x == c).count();
                if run >= *len && content[run..].trim().is_empty() {
                    if let Some((_, _, _, block)) = open.take() {
                        blocks.push(block);
                    }
                } else {
                    block.body.push((number, content.to_owned()));
                }
            }
        }
    }
    if let Some((_, _, _, block)) = open {
        blocks.push(block);
    }
    blocks
}

fn code_lines(blocks: &[Block]) -> std::collections::HashSet<usize> {
    let mut lines = std::collections::HashSet::new();
    for block in blocks {
        lines.insert(block.line);
        let last = block.body.last().map(|(n, _)| *n).unwrap_or(block.line);
        // The body and the closing fence.
        lines.extend(block.line..=last + 1);
    }
    lines
}

/// A `$ command` line followed by a line of output (not another command, a continuation or a
/// comment) is a transcript.
fn looks_like_transcript(lines: &[&(usize, String)]) -> bool {
    let mut after_command = false;
    let mut continued = false;
    for (_, line) in lines {
        let trimmed = line.trim();
        if trimmed.starts_with("$ ") {
            after_command = true;
        } else if after_command && !continued && !trimmed.starts_with('#') {
            return true;
        }
        continued = trimmed.ends_with('\\');
    }
    false
}

/// An `{{#include path[:spec]}}` or `{{#rustdoc_include …}}` directive.
#[derive(Debug, PartialEq)]
struct Include {
    path: String,
    spec: Option<String>,
}

/// Parses a line that is exactly one include directive (or a directive cut out of a line).
fn parse_include(line: &str) -> Option<Include> {
    let inner = line.trim().strip_prefix("{{#")?.strip_suffix("}}")?;
    let arg = inner
        .strip_prefix("include ")
        .or_else(|| inner.strip_prefix("rustdoc_include "))?
        .trim();
    let (path, spec) = match arg.split_once(':') {
        Some((path, spec)) => (path, Some(spec.to_owned())),
        None => (arg, None),
    };
    Some(Include {
        path: path.to_owned(),
        spec,
    })
}

/// `4:`, `4:10`, `:10` or `7` → the first line (1-based); `None` for an anchor name.
fn range_start(spec: &str) -> Option<usize> {
    let (start, end) = spec.split_once(':').unwrap_or((spec, ""));
    let numeric = |s: &str| s.is_empty() || s.chars().all(|c| c.is_ascii_digit());
    if !numeric(start) || !numeric(end) || (start.is_empty() && end.is_empty()) {
        return None;
    }
    Some(start.parse().unwrap_or(1))
}

fn check_include(here: &str, line: usize, base: &Path, include: &Include) -> Problems {
    let path: PathBuf = base.join(&include.path);
    let Ok(text) = fs::read_to_string(&path) else {
        return vec![format!(
            "{here}:{line}: include of a missing file: {}",
            include.path
        )];
    };
    let mut problems = Vec::new();
    let is_snapshot = include.path.ends_with(".snap");
    match include.spec.as_deref() {
        None if is_snapshot => problems.push(format!(
            "{here}:{line}: snapshot included with its insta header: use `{}:4:`",
            include.path
        )),
        None => {}
        Some(spec) => match range_start(spec) {
            Some(start) => {
                if is_snapshot && start != 4 {
                    problems.push(format!(
                        "{here}:{line}: snapshot must be included from line 4 (after the 3-line insta header), not `:{spec}`"
                    ));
                }
                if start > text.lines().count() {
                    problems.push(format!(
                        "{here}:{line}: `{}:{spec}` starts past the end of the file",
                        include.path
                    ));
                }
            }
            None => {
                if is_snapshot {
                    problems.push(format!("{here}:{line}: snapshot must be included by line range `:4:`, not anchor `{spec}`"));
                }
                let has = |marker: &str| {
                    text.lines().any(|l| {
                        l.split(marker)
                            .nth(1)
                            .map(|rest| rest.trim() == spec)
                            .unwrap_or(false)
                    })
                };
                if !has("ANCHOR:") || !has("ANCHOR_END:") {
                    problems.push(format!(
                        "{here}:{line}: anchor `{spec}` not found in {}",
                        include.path
                    ));
                }
            }
        },
    }
    problems
}

/// Relative targets of `[text](target)` and `![alt](target)` outside inline code.
fn link_targets(line: &str) -> Vec<String> {
    let mut targets = Vec::new();
    // Even segments between backticks are prose; odd ones are inline code.
    for prose in line.split('`').step_by(2) {
        let mut rest = prose;
        while let Some(start) = rest.find("](") {
            let after = &rest[start + 2..];
            let Some(end) = after.find(')') else { break };
            let target = after[..end]
                .split_whitespace()
                .next()
                .unwrap_or("")
                .trim_matches(['<', '>']);
            rest = &after[end..];
            let external =
                target.contains("://") || target.starts_with("mailto:") || target.starts_with('#');
            if !target.is_empty() && !external {
                targets.push(target.to_owned());
            }
        }
    }
    targets
}

/// One entry of `SUMMARY.md`.
#[derive(Debug, Clone, PartialEq)]
pub struct Chapter {
    pub title: String,
    pub path: String,
    /// A list item (`- [..](..)`), as opposed to a prefix or suffix chapter.
    pub numbered: bool,
    /// Not nested under another chapter.
    pub top_level: bool,
}

pub fn parse_summary(text: &str) -> Vec<Chapter> {
    let mut chapters = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let (item, numbered) = match trimmed
            .strip_prefix("- ")
            .or_else(|| trimmed.strip_prefix("* "))
        {
            Some(item) => (item.trim(), true),
            None => (trimmed.trim(), false),
        };
        let Some(inner) = item.strip_prefix('[') else {
            continue;
        };
        let Some((title, rest)) = inner.split_once("](") else {
            continue;
        };
        let Some(path) = rest.strip_suffix(')') else {
            continue;
        };
        if path.is_empty() {
            continue; // a draft chapter: no file yet
        }
        chapters.push(Chapter {
            title: title.to_owned(),
            path: path.to_owned(),
            numbered,
            top_level: indent == 0,
        });
    }
    chapters
}

/// The `**Time:** 30 min (15 min talk and demo, 15 min exercises)` line: the chapter's total
/// time first, then, optionally, how much of it is exercises. Returns (teaching, exercises)
/// in minutes; `None` if there is no such line or the exercises exceed the total.
pub fn time_of(text: &str) -> Option<(u32, u32)> {
    let line = text.lines().find(|l| l.contains("**Time:**"))?;
    let rest = &line[line.find("**Time:**")? + "**Time:**".len()..];
    let words: Vec<&str> = rest
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ',' || c == '+')
        .filter(|w| !w.is_empty())
        .collect();
    let total: u32 = words.first()?.parse().ok()?;
    if words.get(1).copied() != Some("min") {
        return None;
    }
    // "… 15 min exercises": the number two words before "exercises".
    let exercises = words
        .windows(3)
        .find(|w| w[1] == "min" && w[2].starts_with("exercise"))
        .and_then(|w| w[0].parse().ok())
        .unwrap_or(0);
    (exercises <= total).then(|| (total - exercises, exercises))
}

fn summary_chapters(src: &Path) -> Result<Vec<Chapter>, String> {
    let text = fs::read_to_string(src.join("SUMMARY.md"))
        .map_err(|e| format!("book/src/SUMMARY.md: cannot read: {e}"))?;
    Ok(parse_summary(&text))
}

fn check_times(src: &Path) -> Problems {
    let chapters = match summary_chapters(src) {
        Ok(chapters) => chapters,
        Err(problem) => return vec![problem],
    };
    let mut problems = Vec::new();
    for chapter in chapters {
        let Ok(text) = fs::read_to_string(src.join(&chapter.path)) else {
            problems.push(format!(
                "book/src/SUMMARY.md: chapter file missing: {}",
                chapter.path
            ));
            continue;
        };
        let needs_time = chapter.numbered
            && chapter.top_level
            && !UNTIMED_PREFIXES.iter().any(|p| chapter.path.starts_with(p));
        if needs_time && time_of(&text).is_none() {
            problems.push(format!(
                "book/src/{}: no time estimate: add a `> **Time:** N min (A min talk and demo, B min exercises)` line",
                chapter.path
            ));
        }
    }
    problems
}

/// `cargo xtask schedule [--check]`: `book/src/generated/schedule.md` from the chapter times.
pub fn run_schedule(root: &Path, check: bool) -> Result<(), Problems> {
    let src = root.join("book/src");
    let chapters = summary_chapters(&src).map_err(|p| vec![p])?;
    let timed: Vec<(Chapter, u32, u32)> = chapters
        .into_iter()
        .filter_map(|chapter| {
            let text = fs::read_to_string(src.join(&chapter.path)).ok()?;
            let (teaching, exercises) = time_of(&text)?;
            Some((chapter, teaching, exercises))
        })
        .collect();
    let content = render_schedule(&timed);
    let path = src.join("generated/schedule.md");
    if check {
        return match fs::read_to_string(&path) {
            Ok(current) if current == content => Ok(()),
            Ok(_) => Err(vec![
                "book/src/generated/schedule.md is out of date: run `cargo xtask schedule`"
                    .to_owned(),
            ]),
            Err(_) => Err(vec![
                "book/src/generated/schedule.md is missing: run `cargo xtask schedule`".to_owned(),
            ]),
        };
    }
    match write_if_changed(&path, &content) {
        Ok(true) => eprintln!("wrote book/src/generated/schedule.md"),
        Ok(false) => {}
        Err(error) => {
            return Err(vec![format!(
                "book/src/generated/schedule.md: cannot write: {error}"
            )]);
        }
    }
    Ok(())
}

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

/// A pause in a plan: taken after the first chapter that ends at or after `after`.
struct Pause {
    after: u32,
    length: u32,
    label: &'static str,
}

const START: u32 = 9 * 60;

/// A timetable: chapters in order, pauses slotted in at chapter boundaries.
fn plan(rows: &[(String, u32)], pauses: &[Pause]) -> (String, u32) {
    let mut table = String::from("| Start | Session |\n| ---: | --- |\n");
    let mut now = START;
    let mut pending = pauses.iter().peekable();
    for (index, (label, minutes)) in rows.iter().enumerate() {
        table.push_str(&format!(
            "| {} | {label} ({}) |\n",
            clock(now),
            duration(*minutes)
        ));
        now += minutes;
        let more = index + 1 < rows.len();
        while let Some(pause) = pending.peek() {
            if !more || now < pause.after {
                break;
            }
            table.push_str(&format!(
                "| {} | *{}* ({}) |\n",
                clock(now),
                pause.label,
                duration(pause.length)
            ));
            now += pause.length;
            pending.next();
        }
    }
    table.push_str(&format!("| {} | End |\n", clock(now)));
    (table, now)
}

fn render_schedule(timed: &[(Chapter, u32, u32)]) -> String {
    let link = |c: &Chapter| format!("[{}]({})", c.title, c.path);
    let mut out = String::from(
        "<!-- Generated by `cargo xtask schedule` from the chapters' **Time:** lines; do not edit by hand. -->\n\n",
    );
    if timed.is_empty() {
        out.push_str("No chapter has a **Time:** line yet.\n");
        return out;
    }
    out.push_str("| Chapter | Teaching | Exercises |\n| --- | ---: | ---: |\n");
    let (mut teaching, mut exercising) = (0, 0);
    for (chapter, t, e) in timed {
        let e_text = if *e == 0 {
            "—".to_owned()
        } else {
            duration(*e)
        };
        out.push_str(&format!(
            "| {} | {} | {e_text} |\n",
            link(chapter),
            duration(*t)
        ));
        teaching += t;
        exercising += e;
    }
    out.push_str(&format!(
        "| **Total** | **{}** | **{}** |\n\n",
        duration(teaching),
        duration(exercising)
    ));

    let half: Vec<(String, u32)> = timed.iter().map(|(c, t, _)| (link(c), *t)).collect();
    let half_pauses = [Pause {
        after: START + 90,
        length: 15,
        label: "Break",
    }];
    let (half_table, half_end) = plan(&half, &half_pauses);
    out.push_str(&format!(
        "### Half day: teaching only, exercises as homework ({} to {})\n\n{half_table}\n",
        clock(START),
        clock(half_end)
    ));

    let full: Vec<(String, u32)> = timed
        .iter()
        .flat_map(|(c, t, e)| {
            let mut rows = vec![(link(c), *t)];
            if *e > 0 {
                rows.push((format!("Exercises: {}", link(c)), *e));
            }
            rows
        })
        .collect();
    let full_pauses = [
        Pause {
            after: 10 * 60 + 30,
            length: 15,
            label: "Break",
        },
        Pause {
            after: 12 * 60,
            length: 60,
            label: "Lunch",
        },
        Pause {
            after: 15 * 60,
            length: 15,
            label: "Break",
        },
    ];
    let (full_table, full_end) = plan(&full, &full_pauses);
    out.push_str(&format!(
        "### Full day: teaching and exercises ({} to {})\n\n{full_table}",
        clock(START),
        clock(full_end)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "xtask-book-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        fs::create_dir_all(dir.join("src/exercises")).unwrap();
        fs::create_dir_all(dir.join("steps/s/tests/snapshots")).unwrap();
        fs::write(
            dir.join("steps/s/lib.rs"),
            "// ANCHOR: app\nfn app() {}\n// ANCHOR_END: app\n",
        )
        .unwrap();
        fs::write(
            dir.join("steps/s/tests/snapshots/x.snap"),
            "---\nsource: t.rs\n---\n$ curl\nok\n",
        )
        .unwrap();
        fs::write(dir.join("src/page.md"), "").unwrap();
        dir
    }

    fn problems_of(page: &str) -> Problems {
        let dir = fixture();
        let problems = check_page(&dir.join("src"), "chapter.md", page);
        fs::remove_dir_all(&dir).ok();
        problems
    }

    #[test]
    fn a_loose_rust_block_is_refused_and_marked_or_included_ones_pass() {
        let problems = problems_of("```rust\nfn main() {}\n```\n");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("chapter.md:1: rust block"),
            "{problems:?}"
        );
        assert_eq!(
            problems_of("```rust,ignore\nfn main() {}\n```\n"),
            Vec::<String>::new()
        );
        assert_eq!(
            problems_of("```rust\n{{#include ../steps/s/lib.rs:app}}\n```\n"),
            Vec::<String>::new()
        );
        assert_eq!(
            problems_of("> ```rust\n> let x = 1;\n> ```\n").len(),
            1,
            "inside a note box too"
        );
        assert_eq!(
            problems_of("```rust,no_run\nfn main() {}\n```\n").len(),
            1,
            "only `ignore` marks an illustration"
        );
    }

    #[test]
    fn a_snapshot_must_be_included_from_line_4() {
        assert_eq!(
            problems_of("```\n{{#include ../steps/s/tests/snapshots/x.snap:4:}}\n```\n"),
            Vec::<String>::new()
        );
        for bad in ["x.snap}}", "x.snap:1:}}", "x.snap:5:}}"] {
            let page = format!("```\n{{{{#include ../steps/s/tests/snapshots/{bad}\n```\n");
            let problems = problems_of(&page);
            assert_eq!(problems.len(), 1, "{bad}: {problems:?}");
            assert!(problems[0].contains("snapshot"), "{problems:?}");
        }
    }

    #[test]
    fn a_missing_file_or_anchor_is_reported_and_escaped_directives_are_not() {
        assert!(problems_of("{{#include ../steps/s/nope.rs}}\n")[0].contains("missing file"));
        assert!(
            problems_of("{{#include ../steps/s/lib.rs:nope}}\n")[0]
                .contains("anchor `nope` not found")
        );
        assert!(problems_of("{{#include ../steps/s/lib.rs:9:}}\n")[0].contains("past the end"));
        assert_eq!(
            problems_of("Write \\{{#include ../steps/s/nope.rs}} to include.\n"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn hand_written_transcripts_are_refused_but_command_lists_are_not() {
        assert_eq!(
            problems_of("```console\n$ curl -i localhost:8080/\nHTTP/1.1 200 OK\n```\n").len(),
            1
        );
        assert_eq!(
            problems_of("```sh\n$ cargo run -p step-01\n$ curl \\\n  localhost:8080/\n```\n"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn links_to_missing_files_are_reported() {
        assert_eq!(
            problems_of("See [the page](page.md#part) and `[not](a-link.md)`.\n"),
            Vec::<String>::new()
        );
        assert_eq!(
            problems_of("See [the step](https://example.invalid/x) or [top](#top).\n"),
            Vec::<String>::new()
        );
        assert!(
            problems_of("![diagram](img/missing.png)\n")[0]
                .contains("missing file: img/missing.png")
        );
    }

    #[test]
    fn times_parse_with_and_without_exercises() {
        assert_eq!(
            time_of("> [!NOTE]\n> **Time:** 30 min (15 min talk and demo, 15 min exercises)\n"),
            Some((15, 15))
        );
        assert_eq!(
            time_of("> **Time:** 45 min (20 min talk, 25 min exercises)"),
            Some((20, 25))
        );
        assert_eq!(
            time_of("**Time:** 10 min (20 min exercises)\n"),
            None,
            "exercises longer than the whole"
        );
        assert_eq!(time_of("**Time:** 10 min\n"), Some((10, 0)));
        assert_eq!(time_of("Time: 10 min\n"), None);
    }

    #[test]
    fn summary_entries_know_whether_they_are_numbered() {
        let chapters = parse_summary(
            "# Summary\n\n[Intro](intro.md)\n\n# Part\n\n- [One](one.md)\n  - [Sub](sub.md)\n- [Draft]()\n",
        );
        let shape: Vec<(&str, bool, bool)> = chapters
            .iter()
            .map(|c| (c.path.as_str(), c.numbered, c.top_level))
            .collect();
        assert_eq!(
            shape,
            [
                ("intro.md", false, true),
                ("one.md", true, true),
                ("sub.md", true, false)
            ]
        );
    }

    #[test]
    fn the_schedule_adds_up_and_places_breaks_between_chapters() {
        let chapter = |n: u32| Chapter {
            title: format!("C{n}"),
            path: format!("c{n}.md"),
            numbered: true,
            top_level: true,
        };
        let timed: Vec<(Chapter, u32, u32)> = (1..=4).map(|n| (chapter(n), 40, 20)).collect();
        let page = render_schedule(&timed);
        assert!(
            page.contains("| **Total** | **2 h 40 min** | **1 h 20 min** |"),
            "{page}"
        );
        // Half day: 4 × 40 min from 09:00; the first chapter to end after 10:30 ends at 11:00.
        assert!(page.contains("| 11:00 | *Break* (15 min) |"), "{page}");
        assert!(page.contains("(09:00 to 11:55)"), "{page}");
        // Full day: 4 × 60 min plus a break and lunch.
        assert!(page.contains("*Lunch* (1 h)"), "{page}");
    }
}

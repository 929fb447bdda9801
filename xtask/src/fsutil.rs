//! Small file-system helpers shared by the commands.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The step directories (`steps/step-*`), sorted by name, so consecutive entries are
/// consecutive steps.
pub fn step_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(root.join("steps"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.is_dir()
                && path.join("Cargo.toml").is_file()
                && file_name(path).starts_with("step-")
        })
        .collect();
    dirs.sort();
    dirs
}

/// The last component of `path` as text (empty if there is none).
pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Every file under `dir` whose name ends with `suffix`, sorted.
pub fn files_with_suffix(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in fs::read_dir(&current).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if file_name(&path).ends_with(suffix) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// `path` relative to `base`, with `/` separators, for messages and generated text.
pub fn relative(path: &Path, base: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

/// Copies the tree at `from` to `to`, skipping any directory whose name is in `skip_names`
/// and any path (relative to `from`) in `skip_paths`.
pub fn copy_tree(
    from: &Path,
    to: &Path,
    skip_names: &[&str],
    skip_paths: &[&str],
) -> io::Result<()> {
    copy_tree_inner(from, from, to, skip_names, skip_paths)
}

fn copy_tree_inner(
    base: &Path,
    from: &Path,
    to: &Path,
    skip_names: &[&str],
    skip_paths: &[&str],
) -> io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let path = entry.path();
        let name = file_name(&path);
        let rel = relative(&path, base);
        // Follows symbolic links: the copy holds the files themselves.
        let kind = fs::metadata(&path)?.file_type();
        if kind.is_dir() {
            if skip_names.contains(&name.as_str()) || skip_paths.contains(&rel.as_str()) {
                continue;
            }
            copy_tree_inner(base, &path, &to.join(&name), skip_names, skip_paths)?;
        } else if kind.is_file() {
            fs::copy(&path, to.join(&name))?;
        }
    }
    Ok(())
}

/// Writes `content` to `path` only if it differs, creating parent directories; returns
/// whether it wrote.
pub fn write_if_changed(path: &Path, content: &str) -> io::Result<bool> {
    if fs::read_to_string(path).ok().as_deref() == Some(content) {
        return Ok(false);
    }
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(path, content)?;
    Ok(true)
}

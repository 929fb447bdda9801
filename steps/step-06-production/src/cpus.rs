//! How many worker threads the runtime gets: as many as the CPUs the container may use.
//!
//! A container's CPU limit is a *quota* (say 100 ms of CPU time per 100 ms period = 1 CPU),
//! not a number of visible cores: the machine may show 32. A runtime that starts 32 busy
//! threads on a 1-CPU quota burns its quota early in every period and is then throttled for
//! the rest of it, which shows up as latency spikes. The quota is in the cgroup files:
//! cgroup v2 `cpu.max` (`"<quota> <period>"` or `"max <period>"`), cgroup v1
//! `cpu.cfs_quota_us` and `cpu.cfs_period_us` (quota `-1` = unlimited).
//!
//! `std::thread::available_parallelism()` (what tokio uses by default) also reads the quota,
//! but rounds it *down* (1.5 CPUs → 1) and says nothing about where its number came from.
//! Here it is the fallback when no quota is found, the rounding is up (a half CPU is still
//! CPU time worth a thread), and `main` logs the decision.

use std::path::Path;

// ANCHOR: cpus
/// The chosen number of worker threads and why.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerThreads {
    pub threads: usize,
    /// `"WORKER_THREADS"`, `"cgroup v2 cpu.max"`, `"cgroup v1 cfs quota"` or
    /// `"available_parallelism"`.
    pub source: &'static str,
    /// The CPU quota as a fraction of CPUs (`1.5`), when one was found.
    pub quota_cpus: Option<f64>,
    /// What `available_parallelism()` said, for comparison in the log.
    pub available_parallelism: usize,
}

/// Decides the worker thread count: the override if given, else the cgroup quota rounded up
/// (at least 1), else `available_parallelism()`.
pub fn worker_threads(override_threads: Option<usize>, cgroup_root: &Path) -> WorkerThreads {
    let available_parallelism = std::thread::available_parallelism().map_or(1, |n| n.get());
    let quota = read_quota(cgroup_root);
    let quota_cpus = quota.map(|(cpus, _)| cpus);
    let (threads, source) = match (override_threads, quota) {
        (Some(n), _) => (n, "WORKER_THREADS"),
        (None, Some((cpus, source))) => (threads_for_quota(cpus), source),
        (None, None) => (available_parallelism, "available_parallelism"),
    };
    WorkerThreads {
        threads,
        source,
        quota_cpus,
        available_parallelism,
    }
}

/// `ceil(quota)`, at least one thread.
pub fn threads_for_quota(cpus: f64) -> usize {
    (cpus.ceil() as usize).max(1)
}

/// The quota in CPUs from cgroup v2, else v1; `None` if unlimited or unreadable.
fn read_quota(root: &Path) -> Option<(f64, &'static str)> {
    let read = |name: &str| std::fs::read_to_string(root.join(name)).ok();
    if let Some(cpus) = read("cpu.max").and_then(|text| parse_cpu_max(&text)) {
        return Some((cpus, "cgroup v2 cpu.max"));
    }
    for dir in ["cpu", "cpu,cpuacct"] {
        let quota = read(&format!("{dir}/cpu.cfs_quota_us"));
        let period = read(&format!("{dir}/cpu.cfs_period_us"));
        if let (Some(quota), Some(period)) = (quota, period)
            && let Some(cpus) = parse_cfs(&quota, &period)
        {
            return Some((cpus, "cgroup v1 cfs quota"));
        }
    }
    None
}

/// cgroup v2: `"150000 100000"` → 1.5; `"max 100000"` → `None` (no limit).
pub fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut parts = text.split_whitespace();
    let quota = parts.next()?;
    let period = parts.next().unwrap_or("100000");
    quota_over_period(quota, period)
}

/// cgroup v1: quota `-1` means no limit.
pub fn parse_cfs(quota: &str, period: &str) -> Option<f64> {
    quota_over_period(quota.trim(), period.trim())
}

fn quota_over_period(quota: &str, period: &str) -> Option<f64> {
    let quota: u64 = quota.parse().ok()?; // "max" and "-1" fail here: unlimited
    let period: u64 = period.parse().ok()?;
    (quota > 0 && period > 0).then(|| quota as f64 / period as f64)
}
// ANCHOR_END: cpus

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_v2_quota_is_quota_over_period() {
        assert_eq!(parse_cpu_max("200000 100000\n"), Some(2.0));
        assert_eq!(parse_cpu_max("50000 100000"), Some(0.5));
        assert_eq!(parse_cpu_max("max 100000"), None);
        assert_eq!(parse_cpu_max(""), None);
    }

    #[test]
    fn cgroup_v1_minus_one_is_unlimited() {
        assert_eq!(parse_cfs("150000\n", "100000\n"), Some(1.5));
        assert_eq!(parse_cfs("-1", "100000"), None);
        assert_eq!(parse_cfs("100000", "0"), None);
    }

    #[test]
    fn fractional_quotas_round_up_and_never_reach_zero() {
        assert_eq!(threads_for_quota(0.25), 1);
        assert_eq!(threads_for_quota(1.0), 1);
        assert_eq!(threads_for_quota(1.5), 2);
        assert_eq!(threads_for_quota(4.0), 4);
    }

    #[test]
    fn reads_cgroup_files_and_the_override_wins() {
        let root = std::env::temp_dir().join(format!("step06-cgroup-{}", std::process::id()));
        std::fs::create_dir_all(root.join("cpu")).expect("temp dir");
        std::fs::write(root.join("cpu/cpu.cfs_quota_us"), "250000\n").expect("write");
        std::fs::write(root.join("cpu/cpu.cfs_period_us"), "100000\n").expect("write");

        let v1 = worker_threads(None, &root);
        std::fs::write(root.join("cpu.max"), "150000 100000\n").expect("write");
        let v2 = worker_threads(None, &root);
        let overridden = worker_threads(Some(7), &root);
        std::fs::remove_dir_all(&root).expect("clean up");

        assert_eq!(
            (v1.threads, v1.source, v1.quota_cpus),
            (3, "cgroup v1 cfs quota", Some(2.5))
        );
        assert_eq!(
            (v2.threads, v2.source, v2.quota_cpus),
            (2, "cgroup v2 cpu.max", Some(1.5))
        );
        assert_eq!(
            (overridden.threads, overridden.source),
            (7, "WORKER_THREADS")
        );
    }

    #[test]
    fn without_a_quota_it_falls_back_to_available_parallelism() {
        let nowhere = Path::new("/nonexistent/step06-cgroup");

        let chosen = worker_threads(None, nowhere);

        assert_eq!(chosen.source, "available_parallelism");
        assert_eq!(chosen.threads, chosen.available_parallelism);
    }
}

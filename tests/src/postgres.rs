//! A real, throwaway PostgreSQL for tests: no mocks, no Docker, nothing to set up by hand.
//!
//! - [`database`]: a fresh, empty database (`CREATE DATABASE test_<pid>_<n>`) for one test. It
//!   lives on a server this test binary starts once, from the local install, in a temporary
//!   directory on a free port (its unix socket in that directory too). When `DATABASE_URL` is
//!   set, the databases are made on that server instead.
//! - [`Server`]: a server of the test's own, for tests that stop and restart the database.
//!
//! Where PostgreSQL is not installed (and `DATABASE_URL` is unset) both print one line naming
//! the install command and return `None`, so the test returns early and counts as passed; with
//! `CI=true` they panic instead, because a CI run that skipped its database tests proves
//! nothing.
//!
//! ```ignore
//! let Some(db) = testkit::postgres::database() else { return };
//! let pool = sqlx::PgPool::connect(&db.url).await?;
//! ```
//!
//! How the server is stopped. A Rust `static` is never dropped, and a test binary can also end
//! by a panic, an abort or a SIGKILL; so instead of a destructor each server has a *watchdog*: a
//! tiny `sh` loop, started with the server, that checks every second whether the test process
//! still exists (`kill -0`) and, once it is gone, stops PostgreSQL (`pg_ctl stop -m immediate`)
//! and deletes the temporary directory. It ignores SIGINT/SIGHUP/SIGTERM, so a Ctrl-C that
//! reaches the whole process group still leaves it alive to clean up. The cost is at most a
//! second of a stray server after the tests.
//!
//! As root (CI runs as root) `initdb` refuses to run, so the server's commands run as the
//! `postgres` system user (which Debian's package creates) through `runuser`, in a directory
//! owned by that user; the tests themselves still connect as root over TCP.
//!
//! Only the PostgreSQL programs are needed (`initdb`, `pg_ctl`, `psql`), no Rust crate: they
//! are found on `PATH`, through `pg_config --bindir`, in `/usr/lib/postgresql/*/bin` (Debian,
//! Ubuntu) or in Homebrew's `postgresql@*` folders.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// The line printed (or, with `CI=true`, panicked with) when there is no PostgreSQL to use.
pub const INSTALL_HINT: &str = "no PostgreSQL found (initdb, pg_ctl) and DATABASE_URL is unset; \
     install it with `apt-get install postgresql` (Debian/Ubuntu) or \
     `brew install postgresql@17` (macOS), or set DATABASE_URL";

/// A fresh, empty database for one test.
#[derive(Debug)]
pub struct TestDatabase {
    /// `postgres://user@127.0.0.1:PORT/test_…` (over TCP), for `PgPool::connect`.
    pub url: String,
    /// The same database reached through the server's unix socket
    /// (`postgres://postgres@/test_…?host=/tmp/…&port=PORT`), as Cloud SQL is reached on
    /// Cloud Run; `None` on a `DATABASE_URL` server.
    pub socket_url: Option<String>,
    /// The database's name.
    pub name: String,
    /// Dropped with the value on a server this binary does not own (`DATABASE_URL`).
    drop_with: Option<(Psql, String)>,
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Only on someone else's server: a throwaway server is deleted whole at the end.
        if let Some((psql, admin_url)) = &self.drop_with {
            let _ = psql.run(
                admin_url,
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            );
        }
    }
}

/// A fresh database for this test, on this binary's shared server or on `DATABASE_URL`.
///
/// `None` (after printing [`INSTALL_HINT`]) when there is no PostgreSQL; panics instead
/// when `CI=true`.
pub fn database() -> Option<TestDatabase> {
    static SHARED: OnceLock<Result<Shared, String>> = OnceLock::new();
    let shared = SHARED.get_or_init(|| {
        if let Some(url) = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) {
            let psql = Psql::find()?;
            return Ok(Shared::External { psql, url });
        }
        match find_bindir() {
            Some(bindir) => Cluster::start(&bindir).map(Shared::Local),
            None => Err(String::new()),
        }
    });
    match shared {
        Ok(shared) => Some(shared.create_database()),
        Err(reason) if reason.is_empty() => skip(),
        Err(reason) => panic!("cannot start PostgreSQL for the tests: {reason}"),
    }
}

/// A PostgreSQL server of one test's own, which the test can stop and start again (same port,
/// same data), e.g. to prove a service recovers from a database outage. Stopped and deleted
/// when dropped (and by its watchdog if the test process dies first).
pub struct Server {
    cluster: Cluster,
}

impl Server {
    /// Starts a new server from the local install. `None` (after printing [`INSTALL_HINT`])
    /// when PostgreSQL is not installed, even if `DATABASE_URL` is set: someone else's server
    /// is not ours to stop. Panics instead when `CI=true`.
    pub fn start() -> Option<Server> {
        let Some(bindir) = find_bindir() else {
            return skip();
        };
        match Cluster::start(&bindir) {
            Ok(cluster) => Some(Server { cluster }),
            Err(reason) => panic!("cannot start PostgreSQL for the test: {reason}"),
        }
    }

    /// A fresh database on this server.
    pub fn database(&self) -> TestDatabase {
        self.cluster.create_database()
    }

    /// Stops the server now (`pg_ctl stop -m fast`: open connections are closed).
    pub fn stop(&self) {
        self.cluster.stop("fast").unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts the stopped server again, on the same port, with the same databases.
    pub fn restart(&self) {
        self.cluster
            .pg_ctl_start()
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// The server's TCP port.
    pub fn port(&self) -> u16 {
        self.cluster.port
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.cluster.stop("immediate");
        let _ = std::fs::remove_dir_all(&self.cluster.dir);
    }
}

fn skip<T>() -> Option<T> {
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("database tests cannot be skipped with CI=true: {INSTALL_HINT}");
    }
    // Straight to the process's stderr: the test harness captures `eprintln!` of a passing
    // test, and this line must be seen.
    let _ = writeln!(std::io::stderr(), "skipped: {INSTALL_HINT}");
    None
}

enum Shared {
    Local(Cluster),
    External { psql: Psql, url: String },
}

impl Shared {
    fn create_database(&self) -> TestDatabase {
        match self {
            Shared::Local(cluster) => cluster.create_database(),
            Shared::External { psql, url } => {
                let name = next_database_name();
                psql.run(url, &format!("CREATE DATABASE {name}"))
                    .unwrap_or_else(|e| panic!("{e}"));
                TestDatabase {
                    url: with_database(url, &name),
                    socket_url: None,
                    name,
                    drop_with: Some((psql.clone(), url.clone())),
                }
            }
        }
    }
}

/// `test_<pid>_<n>`: unique on a server shared by several test binaries, too.
fn next_database_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    format!(
        "test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// `postgres://u:p@h:5432/app?x=y` with the database replaced: `postgres://u:p@h:5432/<name>?x=y`.
fn with_database(url: &str, name: &str) -> String {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[authority_start..];
    let path_start = rest.find(['/', '?']).unwrap_or(rest.len());
    let after_path = &rest[path_start..];
    let query = after_path.find('?').map_or("", |i| &after_path[i..]);
    format!(
        "{}{}/{name}{query}",
        &url[..authority_start],
        &rest[..path_start]
    )
}

/// A server in a temporary directory: `data/` (the cluster), `socket/`, `server.log`.
struct Cluster {
    bindir: PathBuf,
    dir: PathBuf,
    port: u16,
    /// `Some("postgres")` when we are root and the server's commands must run as that user.
    run_as: Option<&'static str>,
    psql: Psql,
}

impl Cluster {
    fn start(bindir: &Path) -> Result<Cluster, String> {
        static NEXT: AtomicU32 = AtomicU32::new(1);
        let run_as = if is_root() { Some("postgres") } else { None };
        // As root, $TMPDIR may be a folder the `postgres` user cannot enter; /tmp it can.
        let base = if run_as.is_some() {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!(
            "testkit-pg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("socket")).map_err(|e| format!("{dir:?}: {e}"))?;
        let mut cluster = Cluster {
            bindir: bindir.to_owned(),
            dir,
            port: 0,
            run_as,
            psql: Psql(bindir.join("psql")),
        };
        // The watchdog first, so even a failure below leaves nothing behind.
        cluster.spawn_watchdog()?;
        if let Some(user) = run_as {
            let status = Command::new("chown")
                .args(["-R", user])
                .arg(&cluster.dir)
                .status()
                .map_err(|e| format!("chown: {e}"))?;
            if !status.success() {
                return Err(format!(
                    "running as root, the server must run as the `{user}` user (initdb refuses \
                     root), but `chown {user}` failed: create that user (Debian's postgresql \
                     package does) or run the tests as a normal user"
                ));
            }
        }
        cluster.run_server_command(
            "initdb",
            &[
                "-D",
                &cluster.data(),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                // A throwaway cluster: no need to wait for the disk.
                "--no-sync",
            ],
        )?;
        // A port picked now may be taken by the time the server binds it: try a few.
        let mut last_error = String::new();
        for _ in 0..5 {
            cluster.port = crate::free_port();
            match cluster.pg_ctl_start() {
                Ok(()) => return Ok(cluster),
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {socket} -c max_connections=300 \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            port = self.port,
            socket = self.dir.join("socket").display(),
        );
        let log = self.dir.join("server.log").display().to_string();
        // -w: return once the server accepts connections; -l: its output goes to a file, so
        // it holds none of our pipes open.
        self.run_server_command(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
        .map_err(|e| {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            format!("{e}\nserver log:\n{log}")
        })
    }

    fn stop(&self, mode: &str) -> Result<(), String> {
        self.run_server_command(
            "pg_ctl",
            &["-D", &self.data(), "-m", mode, "-w", "-t", "60", "stop"],
        )
    }

    fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn create_database(&self) -> TestDatabase {
        let name = next_database_name();
        self.psql
            .run(&self.admin_url(), &format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("{e}"));
        TestDatabase {
            url: format!("postgres://postgres@127.0.0.1:{}/{name}", self.port),
            socket_url: Some(format!(
                "postgres://postgres@/{name}?host={}&port={}",
                self.dir.join("socket").display(),
                self.port
            )),
            name,
            drop_with: None,
        }
    }

    /// Runs one of the server's programs (as the `postgres` user when we are root).
    fn run_server_command(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let path = self.bindir.join(program);
        let mut command = match self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(&path);
                command
            }
            None => Command::new(&path),
        };
        let output = command
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} {} failed ({}): {}{}",
                path.display(),
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    /// See the module's documentation: stops the server and deletes its folder once this
    /// process is gone, however it ended.
    fn spawn_watchdog(&self) -> Result<(), String> {
        let runuser = self
            .run_as
            .map(|user| format!("runuser -u {user} -- "))
            .unwrap_or_default();
        let script = format!(
            "trap '' INT HUP TERM QUIT\n\
             while kill -0 {pid} 2>/dev/null; do sleep 1; done\n\
             if [ -f '{data}/postmaster.pid' ]; then {runuser}'{pg_ctl}' -D '{data}' -m immediate -w stop; fi\n\
             rm -rf '{dir}'\n",
            pid = std::process::id(),
            data = self.data(),
            pg_ctl = self.bindir.join("pg_ctl").display(),
            dir = self.dir.display(),
        );
        // Not waited for, and not killed when its handle is dropped: it must outlive us.
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(drop)
            .map_err(|e| format!("cannot start the watchdog: {e}"))
    }
}

/// The `psql` program, for the few administrative statements the helpers need.
#[derive(Clone, Debug)]
struct Psql(PathBuf);

impl Psql {
    fn find() -> Result<Psql, String> {
        if let Some(bindir) = find_bindir() {
            return Ok(Psql(bindir.join("psql")));
        }
        if on_path("psql").is_some() {
            return Ok(Psql(PathBuf::from("psql")));
        }
        Err(
            "DATABASE_URL is set but `psql` was not found: install the PostgreSQL client \
             (`apt-get install postgresql-client`, `brew install libpq`)"
                .into(),
        )
    }

    fn run(&self, url: &str, sql: &str) -> Result<(), String> {
        let output = Command::new(&self.0)
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.0.display()))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "psql `{sql}` failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }
}

/// Where `initdb`, `pg_ctl` and `psql` are: `PATH`, `pg_config --bindir`, then the usual
/// Debian and Homebrew folders (newest version first).
fn find_bindir() -> Option<PathBuf> {
    let complete = |dir: &Path| {
        ["initdb", "pg_ctl", "psql"]
            .iter()
            .all(|p| dir.join(p).is_file())
    };
    if let Some(dir) = on_path("initdb").filter(|d| complete(d)) {
        return Some(dir);
    }
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if output.status.success() && complete(&dir) {
            return Some(dir);
        }
    }
    let mut candidates = Vec::new();
    for (parent, prefix, suffix) in [
        ("/usr/lib/postgresql", "", "bin"),
        ("/opt/homebrew/opt", "postgresql@", "bin"),
        ("/usr/local/opt", "postgresql@", "bin"),
    ] {
        let Ok(entries) = std::fs::read_dir(parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(version) = name
                .strip_prefix(prefix)
                .and_then(|v| v.split('.').next()?.parse::<u32>().ok())
            {
                candidates.push((version, entry.path().join(suffix)));
            }
        }
    }
    candidates.sort();
    candidates
        .into_iter()
        .rev()
        .map(|(_, dir)| dir)
        .find(|dir| complete(dir))
}

/// The folder on `PATH` that holds `program`.
fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).find(|dir| dir.join(program).is_file())
}

/// Through `id -u`, which keeps `unsafe` (libc's `geteuid`) out of the helpers.
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_the_database_in_a_url() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/app?sslmode=disable", "test_1"),
            "postgres://u:p@h:5432/test_1?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://u@localhost", "t"),
            "postgres://u@localhost/t"
        );
        assert_eq!(
            with_database("postgres://u:p@/app?host=/cloudsql/p:r:i", "t"),
            "postgres://u:p@/t?host=/cloudsql/p:r:i"
        );
    }
}

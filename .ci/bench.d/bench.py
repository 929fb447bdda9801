#!/usr/bin/env python3
"""The benchmark harness behind `.ci/bench` (standard library only).

For every step under steps/ that builds and serves HTTP it measures:
  * binary size, as built (release profile) and static (+crt-static, stripped);
  * cold start: exec -> first 200 on the health path, polled by a tight loop of
    non-blocking connects (its resolution is measured and reported);
  * RSS when idle after start (VmRSS) and peak RSS after the loads (VmHWM);
  * throughput and latency under wrk, server pinned to CPU 0 and wrk to CPU 1;
  * graceful drain: SIGTERM in the middle of a wrk run, errors counted, SIGTERM -> exit;
and, once for the workspace, the clean debug build time (full mode only) and the time to
rebuild one step after touching a handler file.

Results go to bench.json (machine-readable) and bench.md (the table the book includes).
"""

from __future__ import annotations

import argparse
import datetime as dt
import errno
import json
import math
import os
import platform
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVER_CPU = 0
LOAD_CPU = 1

# The route each step answers 200 on cheaply. Steps 02 and 03 simulate 50 ms of work on `/`
# by default; `?work_ms=0` turns that off so we measure the server, not a sleep. Unknown
# steps are probed in PROBE_ORDER.
HEALTH_PATHS = {
    "step-01": "/",
    "step-02": "/?work_ms=0",
    "step-03": "/?work_ms=0",
    "step-04": "/health",
    "step-05": "/health",
    "step-06": "/healthz",
}
PROBE_ORDER = ["/healthz", "/health", "/"]
ITEM_BODY = '{"name":"bench","description":"made by .ci/bench"}'


GENERATED = "<!-- Written by .ci/bench: do not edit. -->\n"


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Small helpers


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile: the smallest value with at least p% of values at or below."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values: list[float]) -> dict:
    return {
        "runs": len(values),
        "median": round(statistics.median(values), 3),
        "p90": round(percentile(values, 90), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, text=True, capture_output=True, **kw)


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a live process, in KiB."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def http_request(port: int, method: str, path: str, body: str | None = None,
                 timeout: float = 2.0) -> tuple[int, bytes]:
    """One HTTP/1.1 request on a fresh connection; returns (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        data = b""
        if body is not None:
            data = body.encode()
            head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        s.sendall(head.encode() + b"\r\n" + data)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    raw = b"".join(chunks)
    status = int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/") else 0
    return status, raw.partition(b"\r\n\r\n")[2]


# ---------------------------------------------------------------------------------------------
# Steps and builds


def discover_steps(only: list[str] | None) -> list[dict]:
    steps = []
    for manifest in sorted(ROOT.glob("steps/*/Cargo.toml")):
        match = re.search(r'^name\s*=\s*"([^"]+)"', manifest.read_text(), re.M)
        if not match:
            continue
        package = match.group(1)
        if only and package not in only:
            continue
        steps.append({"package": package, "dir": str(manifest.parent.relative_to(ROOT))})
    return steps


def cargo_build(packages: list[str], target_dir: Path, extra: list[str],
                env_extra: dict[str, str] | None = None) -> tuple[dict[str, str], float, str]:
    """Builds with --keep-going so one broken step does not hide the others.

    Returns {package: executable}, the wall time, and cargo's stderr tail.
    """
    cmd = ["cargo", "build", "--keep-going", "--message-format=json-render-diagnostics", *extra]
    for package in packages:
        cmd += ["-p", package]
    env = dict(os.environ, CARGO_TARGET_DIR=str(target_dir), **(env_extra or {}))
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, text=True, capture_output=True)
    elapsed = time.monotonic() - start
    executables = {}
    for line in proc.stdout.splitlines():
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        if msg.get("reason") == "compiler-artifact" and msg.get("executable"):
            target = msg["target"]
            if "bin" in target["kind"] and target["name"] in packages:
                executables[target["name"]] = msg["executable"]
    return executables, elapsed, "\n".join(proc.stderr.splitlines()[-15:])


# ---------------------------------------------------------------------------------------------
# A server under test


class Server:
    """A step's binary started with PORT, pinned to SERVER_CPU, stdout+stderr to a log file."""

    def __init__(self, binary: str, env: dict[str, str], logfile: Path):
        self.port = free_port()
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env, "PORT": str(self.port)}
        self.binary = binary
        self.logfile = logfile
        self.pid: int | None = None
        self.exit_status: int | None = None

    def spawn(self) -> int:
        """Starts the binary and returns the time of the spawn call (perf_counter_ns)."""
        out = os.open(self.logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        # The child inherits our CPU affinity at spawn: pin ourselves to the server's CPU for
        # the spawn only, then move to the other one to poll.
        os.sched_setaffinity(0, {SERVER_CPU})
        t0 = time.perf_counter_ns()
        self.pid = os.posix_spawn(
            self.binary, [self.binary], self.env,
            file_actions=[(os.POSIX_SPAWN_DUP2, out, 1), (os.POSIX_SPAWN_DUP2, out, 2)],
        )
        os.sched_setaffinity(0, {LOAD_CPU})
        os.close(out)
        return t0

    def wait_ready(self, path: str, t0: int, limit_s: float = 10.0) -> tuple[float, int, float]:
        """Polls until `path` answers 200.

        Returns (ms from spawn to the first 200, attempts, mean µs between attempts). Each
        attempt is a non-blocking connect; a refused connect is retried at once (no sleep),
        so the resolution is the cost of one attempt, reported alongside.
        """
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        deadline = t0 + int(limit_s * 1e9)
        attempts = 0
        while True:
            attempts += 1
            now = time.perf_counter_ns()
            if now > deadline:
                raise TimeoutError(f"no 200 on {path} within {limit_s} s")
            if attempts % 256 == 0 and self.poll_exit() is not None:
                raise RuntimeError(f"server exited with status {self.exit_status} before ready")
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            err = s.connect_ex(("127.0.0.1", self.port))
            if err not in (0, errno.EINPROGRESS):
                s.close()
                continue
            try:
                if err == errno.EINPROGRESS:
                    # Loopback connects complete at once or are refused; wait for the answer.
                    select.select([], [s], [], 2.0)
                    if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        s.close()
                        continue
                s.settimeout(2.0)
                s.sendall(request)
                head = s.recv(64)
            except OSError:
                s.close()
                continue
            s.close()
            if head.startswith(b"HTTP/1.1 200") or head.startswith(b"HTTP/1.0 200"):
                t1 = time.perf_counter_ns()
                elapsed_ms = (t1 - t0) / 1e6
                return elapsed_ms, attempts, (t1 - t0) / 1e3 / attempts

    def poll_exit(self) -> int | None:
        if self.exit_status is None and self.pid is not None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.exit_status = os.waitstatus_to_exitcode(status)
        return self.exit_status

    def rss(self) -> dict[str, int]:
        return proc_status(self.pid) if self.pid else {}

    def stop(self, sig: int = signal.SIGKILL, limit_s: float = 10.0) -> float | None:
        """Sends `sig`, waits for exit (polling every 0.1 ms); returns ms to exit."""
        if self.pid is None or self.poll_exit() is not None:
            return None
        t0 = time.perf_counter_ns()
        os.kill(self.pid, sig)
        deadline = t0 + int(limit_s * 1e9)
        while self.poll_exit() is None:
            if time.perf_counter_ns() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                self.exit_status = -9
                return None
            time.sleep(0.0001)
        return (time.perf_counter_ns() - t0) / 1e6


def probe_health(binary: str, package: str, env: dict, logfile: Path) -> str | None:
    """The health path for this step: the known one if it answers 200, else the first of
    PROBE_ORDER that does."""
    candidates = [HEALTH_PATHS[package]] if package in HEALTH_PATHS else []
    candidates += [p for p in PROBE_ORDER if p not in candidates]
    server = Server(binary, env, logfile)
    t0 = server.spawn()
    try:
        # Wait for the socket first (any status), then try each candidate.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
                break
            except OSError:
                if server.poll_exit() is not None:
                    return None
                time.sleep(0.005)
        for path in candidates:
            try:
                if http_request(server.port, "GET", path)[0] == 200:
                    return path
            except OSError:
                continue
        return None
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------
# Measurements


def build_poller(workdir: Path) -> Path | None:
    """Compiles coldstart.c (a few µs per poll); None if there is no C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return None
    exe = workdir / "coldstart"
    proc = run([cc, "-O2", "-o", str(exe), str(Path(__file__).with_name("coldstart.c"))])
    if proc.returncode:
        log(f"could not compile the cold-start poller, using Python's: {proc.stderr[-300:]}")
        return None
    return exe


def measure_cold_start(binary: str, env: dict, path: str, runs: int, logfile: Path,
                       poller: Path | None) -> dict:
    times, resolutions, late = [], [], 0
    for _ in range(runs):
        if poller:
            port = free_port()
            full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env, "PORT": str(port)}
            proc = run([str(poller), str(logfile), str(port), path, str(SERVER_CPU),
                        str(LOAD_CPU), binary], env=full_env, timeout=30)
            if proc.returncode:
                raise RuntimeError(f"cold start: {proc.stderr.strip()}")
            elapsed_ns, _attempts, gap_ns = map(int, proc.stdout.split())
            times.append(elapsed_ns / 1e6)
            if gap_ns >= 0:
                resolutions.append(gap_ns / 1e3)
            else:
                late += 1
            continue
        server = Server(binary, env, logfile)
        t0 = server.spawn()
        try:
            elapsed, _attempts, us_per_attempt = server.wait_ready(path, t0)
            times.append(elapsed)
            resolutions.append(us_per_attempt)
        finally:
            server.stop()
    result = summary(times)
    result["poll_interval_us_median"] = (
        round(statistics.median(resolutions), 1) if resolutions else None)
    # Runs whose first poll already got a 200: the poller was scheduled late (busy machine),
    # so those times are upper bounds.
    result["late_poller_runs"] = late
    result["poller"] = "coldstart.c" if poller else "python"
    return result


WRK_LINE = re.compile(r"^\s*(\d+) requests in ([\d.]+)(\w+)", re.M)


def to_ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    if not match:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def parse_wrk(out: str) -> dict:
    result: dict = {}
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    result["rps"] = round(float(match.group(1))) if match else None
    match = WRK_LINE.search(out)
    result["requests"] = int(match.group(1)) if match else None
    for pct in ("50", "90", "99"):
        match = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        result[f"p{pct}_ms"] = round(to_ms(match.group(1)), 3) if match else None
    match = re.search(r"^\s+Latency\s+\S+\s+\S+\s+(\S+)", out, re.M)
    result["max_ms"] = round(to_ms(match.group(1)), 3) if match else None
    match = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    result["non2xx"] = int(match.group(1)) if match else 0
    match = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result["socket_errors"] = (
        dict(zip(("connect", "read", "write", "timeout"), map(int, match.groups())))
        if match else {"connect": 0, "read": 0, "write": 0, "timeout": 0})
    return result


def wrk_cmd(port: int, path: str, connections: int, seconds: float, script: Path | None) -> list[str]:
    cmd = ["taskset", "-c", str(LOAD_CPU), "wrk", "-t1", f"-c{connections}",
           f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "2s"]
    if script:
        cmd += ["-s", str(script)]
    return cmd + [f"http://127.0.0.1:{port}{path}"]


def run_wrk(port: int, path: str, connections: int, seconds: float,
            script: Path | None = None) -> dict:
    proc = run(wrk_cmd(port, path, connections, seconds, script), timeout=seconds + 30)
    result = parse_wrk(proc.stdout)
    if result["rps"] is None:
        result["error"] = (proc.stderr or proc.stdout).strip()[-300:]
    return result


def write_post_script(workdir: Path) -> Path:
    script = workdir / "post.lua"
    body = ITEM_BODY.replace("\\", "\\\\").replace("'", "\\'")
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = '{body}'\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    return script


def has_item_routes(step_dir: str) -> bool:
    sources = "".join(p.read_text(errors="replace") for p in (ROOT / step_dir).glob("src/**/*.rs"))
    return "/api/items" in sources


def has_text(step_dir: str, needle: str) -> bool:
    return any(needle in p.read_text(errors="replace") for p in (ROOT / step_dir).glob("src/**/*.rs"))


def create_item(port: int) -> str | None:
    """POSTs one item and returns the path to GET it, or None."""
    try:
        status, body = http_request(port, "POST", "/api/items", ITEM_BODY)
        if status not in (200, 201):
            log(f"POST /api/items answered {status}: {body[:200]!r}")
            return None
        item = json.loads(body)
        return f"/api/items/{item['id']}"
    except (OSError, ValueError, KeyError, TypeError) as error:
        log(f"could not create an item: {error}")
        return None


def measure_load(binary: str, env: dict, health: str, step_dir: str, args, workdir: Path,
                 logfile: Path) -> dict:
    """Idle RSS, the wrk runs, and peak RSS after them, on one server process."""
    result: dict = {"runs": []}
    server = Server(binary, env, logfile)
    t0 = server.spawn()
    try:
        server.wait_ready(health, t0)
        time.sleep(0.5)  # let start-up settle: the idle figure is the process at rest
        result["rss_idle_kib"] = server.rss().get("VmRSS")
        routes = [("GET", health, None)]
        if has_item_routes(step_dir):
            item = create_item(server.port)
            if item:
                routes.append(("GET", item, None))
            routes.append(("POST", "/api/items", write_post_script(workdir)))
        for method, path, script in routes:
            # A short warm-up, so the first measured second is not connection set-up.
            run(wrk_cmd(server.port, path, 64, 1, script), timeout=40)
            for connections in args.connections:
                log(f"  wrk {method} {path} -c{connections} -d{args.load_seconds}s")
                run_result = run_wrk(server.port, path, connections, args.load_seconds, script)
                route = "/api/items/{id}" if "items/" in path else path
                run_result.update(method=method, route=route, connections=connections)
                run_result["rss_hwm_kib_after"] = server.rss().get("VmHWM")
                result["runs"].append(run_result)
        status = server.rss()
        result["rss_peak_kib"] = status.get("VmHWM")
        result["rss_after_kib"] = status.get("VmRSS")
    finally:
        server.stop()
    return result


def measure_drain(binary: str, env: dict, health: str, args, logfile: Path) -> dict:
    """SIGTERM in the middle of a 64-connection wrk run; how long to exit, and what wrk saw."""
    server = Server(binary, env, logfile)
    t0 = server.spawn()
    seconds = args.drain_seconds
    try:
        server.wait_ready(health, t0)
        wrk = subprocess.Popen(wrk_cmd(server.port, health, 64, seconds, None),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(seconds / 2)
        exit_ms = server.stop(signal.SIGTERM, limit_s=15)
        out, _ = wrk.communicate(timeout=seconds + 30)
        result = parse_wrk(out)
        result.update(
            connections=64,
            signal_after_s=seconds / 2,
            sigterm_to_exit_ms=round(exit_ms, 2) if exit_ms is not None else None,
            exit_code=server.exit_status,
        )
        return result
    finally:
        server.stop()


def measure_build_times(steps: list[dict], target_dir: Path, quick: bool) -> dict:
    result: dict = {}
    if not quick:
        clean_dir = target_dir / "bench-clean-build"
        shutil.rmtree(clean_dir, ignore_errors=True)
        log("clean debug build of the whole workspace (fresh target dir)")
        start = time.monotonic()
        proc = run(["cargo", "build", "--workspace", "--keep-going"], cwd=ROOT,
                   env=dict(os.environ, CARGO_TARGET_DIR=str(clean_dir)))
        result["clean_workspace_debug_s"] = round(time.monotonic() - start, 1)
        result["clean_workspace_ok"] = proc.returncode == 0
        if proc.returncode:
            result["clean_workspace_error"] = "\n".join(proc.stderr.splitlines()[-5:])
        shutil.rmtree(clean_dir, ignore_errors=True)
    # Rebuild after a handler edit: step-04 (the targets are for it), else the newest step.
    ordered = ([s for s in steps if s["package"] == "step-04"]
               + [s for s in reversed(steps) if s["package"] != "step-04"])
    for step in ordered:
        src = ROOT / step["dir"] / "src"
        handler = next((src / n for n in ("handlers.rs", "routes.rs", "api.rs", "lib.rs")
                        if (src / n).exists()), None)
        if handler is None:
            continue
        env = dict(os.environ, CARGO_TARGET_DIR=str(target_dir))
        cmd = ["cargo", "build", "-p", step["package"]]
        if run(cmd, cwd=ROOT, env=env).returncode != 0:  # warm-up; also proves it builds
            continue
        log(f"rebuild of {step['package']} after touching {handler.relative_to(ROOT)}")
        handler.touch()
        start = time.monotonic()
        proc = run(cmd, cwd=ROOT, env=env)
        result["rebuild_step"] = step["package"]
        result["rebuild_touched"] = str(handler.relative_to(ROOT))
        result["rebuild_debug_s"] = round(time.monotonic() - start, 2)
        result["rebuild_ok"] = proc.returncode == 0
        break
    return result


def measure_shedding(step: dict, binary: str, args, logfile: Path) -> dict:
    """Step-06's load shedding: 256 connections on a slow debug route, with and without a
    tight MAX_CONCURRENCY. With the limit, requests beyond it wait at most QUEUE_TIMEOUT and
    then get 503 at once; the ones served keep their latency."""
    rows = []
    slow = "/debug/slow?ms=50"
    for limit in (10000, 32):
        env = {"RUST_LOG": os.environ.get("BENCH_RUST_LOG", "info"), "ENABLE_DEBUG_ROUTES": "1",
               "MAX_CONCURRENCY": str(limit)}
        server = Server(binary, env, logfile)
        t0 = server.spawn()
        try:
            server.wait_ready(step["health_path"], t0)
            row = run_wrk(server.port, slow, 256, max(1, args.load_seconds // 2))
            row.update(max_concurrency=limit, connections=256, route=slow)
            rows.append(row)
        finally:
            server.stop()
    return {"route": slow, "rows": rows}


def render_shedding(report: dict) -> str:
    step = next((s for s in report["steps"] if s.get("shedding")), None)
    if step is None:
        return (GENERATED + "*Load shedding was not measured: no step that builds has `MAX_CONCURRENCY` and "
                "`ENABLE_DEBUG_ROUTES` (step-06). Run `.ci/bench` again once it does.*\n")
    sh = step["shedding"]
    lines = [GENERATED + f"*{step['package']}, `GET {sh['route']}` (each request holds its slot 50 ms), "
             f"256 connections, measured {report['date'][:10]} ({report['mode']} run).*", "",
             "| MAX_CONCURRENCY | req/s | of which 503 | p50 | p99 | socket errors |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in sh["rows"]:
        lines.append(f"| {r['max_concurrency']} | {fmt_num(r['rps'])} | {fmt_num(r['non2xx'])} | "
                     f"{fmt_num(r['p50_ms'])} ms | {fmt_num(r['p99_ms'])} ms | "
                     f"{sum(r['socket_errors'].values())} |")
    return "\n".join(lines) + "\n"


def measure_release_profile(steps: list[dict], built: dict, target_dir: Path, args,
                            workdir: Path) -> dict | None:
    """opt-level 3 (the workspace's) against "z" on one step: size and health throughput,
    both as the scratch image ships them (static, stripped). `built` holds the static builds."""
    step = next((s for s in reversed(steps) if s["package"] in ("step-04", "step-03")
                 and s["package"] in built and s.get("health_path")), None)
    if step is None:
        return None
    package = step["package"]
    log(f"release profile: static {package} with opt-level = \"z\" (separate target dir)")
    z_built, _z_s, err = cargo_build(
        [package], target_dir / "bench-opt-z",
        ["--release", "--target", "x86_64-unknown-linux-gnu"],
        {"CARGO_PROFILE_RELEASE_OPT_LEVEL": "z", "RUSTFLAGS": "-C target-feature=+crt-static"})
    if package not in z_built:
        log(f"opt-level z build failed: {err}")
        return None
    variants = {"3": (built[package], {}), "z": (z_built[package], {})}
    result = ab_compare(step, variants, args, workdir)
    for level, (binary, _env) in variants.items():
        result["levels"][level]["size_bytes"] = Path(binary).stat().st_size
    return result


def ab_compare(step: dict, variants: dict[str, tuple[str, dict]], args, workdir: Path) -> dict:
    """Health-route throughput of several variants of one step, in alternating short runs."""
    package = step["package"]
    rounds = 1 if args.quick else 3
    seconds = 1 if args.quick else 2
    rps: dict[str, list] = {name: [] for name in variants}
    p99: dict[str, list] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (binary, extra_env) in variants.items():  # alternate: drift hits all alike
            env = {"RUST_LOG": os.environ.get("BENCH_RUST_LOG", "info"), "MAX_ITEMS": "100000000",
                   **extra_env}
            server = Server(binary, env, workdir / f"{package}-{name}.log")
            t0 = server.spawn()
            try:
                server.wait_ready(step["health_path"], t0)
                run(wrk_cmd(server.port, step["health_path"], 64, 1, None), timeout=40)
                r = run_wrk(server.port, step["health_path"], 64, seconds)
                rps[name].append(r["rps"] or 0)
                p99[name].append(r["p99_ms"] or float("nan"))
            finally:
                server.stop()
    return {
        "package": package,
        "route": step["health_path"],
        "rounds": rounds,
        "seconds": seconds,
        "levels": {name: {"rps_median": statistics.median(rps[name]),
                          "p99_ms_median": statistics.median(p99[name])} for name in variants},
    }


def measure_logging_cost(steps: list[dict], built: dict, args, workdir: Path) -> dict | None:
    """The price of per-request logging: the same binary with RUST_LOG=info, stdout to a file
    (the harness's default) and to /dev/null, and with RUST_LOG=warn (no per-request lines)."""
    step = next((s for s in reversed(steps) if s["package"] == "step-04"
                 and s["package"] in built and s.get("health_path")), None)
    if step is None:
        return None
    log("logging cost: step-04 with RUST_LOG=info vs warn")
    binary = built["step-04"]
    variants = {"info": (binary, {"RUST_LOG": "info"}), "warn": (binary, {"RUST_LOG": "warn"})}
    return ab_compare(step, variants, args, workdir)


def render_release_profile(report: dict) -> str:
    rp = report.get("release_profile")
    if not rp:
        return GENERATED + "*The release-profile comparison did not run (step-03/04 did not build).*\n"
    a, b = rp["levels"]["3"], rp["levels"]["z"]
    lines = [GENERATED + f"*{rp['package']}, `GET {rp['route']}` at 64 connections, median of {rp['rounds']} "
             f"alternating {rp['seconds']} s wrk runs per level; {report['date'][:10]}, "
             f"{report['mode']} run, load average {report['loadavg_end']}.*", "",
             "| opt-level | static binary | req/s | p99 |", "|---|---:|---:|---:|"]
    for name, r in (("3 (the workspace's)", a), ('"z"', b)):
        lines.append(f"| {name} | {fmt_bytes(r['size_bytes'])} | {fmt_num(r['rps_median'])} | "
                     f"{fmt_num(r['p99_ms_median'])} ms |")
    lines.append("")
    lines.append(f"\"z\" is {100 * (1 - b['size_bytes'] / a['size_bytes']):.0f} % smaller and "
                 f"serves {b['rps_median'] / max(a['rps_median'], 1):.2f}× the requests per second "
                 "of 3. Both static (`+crt-static`), stripped, fat LTO, one codegen unit.")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Context: machine, git, tools


def machine_info() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass

    def version(cmd: list[str]) -> str | None:
        try:
            proc = run(cmd)
            return (proc.stdout or proc.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return None

    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "mem_mib": mem,
        "kernel": platform.release(),
        "rustc": version(["rustc", "-V"]),
        "wrk": version(["wrk", "-v"]),
        "python": platform.python_version(),
    }


def git_info() -> dict:
    head = run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT)
    status = run(["git", "status", "--porcelain"], cwd=ROOT)
    return {
        "commit": head.stdout.strip() if head.returncode == 0 else None,
        "dirty_paths": len(status.stdout.splitlines()) if status.returncode == 0 else None,
    }


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


# ---------------------------------------------------------------------------------------------
# Markdown


def fmt_kib(kib: int | None) -> str:
    return "–" if kib is None else f"{kib / 1024:.1f} MiB"


def fmt_bytes(n: int | None) -> str:
    return "–" if n is None else f"{n / 1e6:.2f} MB"


def fmt_num(x, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:,.{digits}f}" if isinstance(x, float) else f"{x:,}"


# The targets for step-04 on a 2-core machine, and the Go/nginx figures behind them.
GO_GET_RPS = (46_000, 64_000)
GO_POST_RPS = 42_000
NGINX_RPS = 134_000


def render_targets(report: dict) -> list[str]:
    """Each target for step-04 beside the measured figure (full and quick runs alike)."""
    step = next((s for s in report["steps"] if s["package"] == "step-04" and s.get("load")), None)
    if step is None:
        return ["", "*Targets: step-04 was not measured (it did not build or serve).*"]
    runs = {(r["method"], r["route"], r["connections"]): r for r in step["load"]["runs"]}
    lines = ["", "Step-04 against the targets (Go ≈ 46–64 k req/s on `GET /health` and ≈ 42 k on "
             "`POST`, nginx's fixed 200 ≈ 134 k, all measured on this kind of machine):", "",
             "| target | measured | met? |", "|---|---:|:---:|"]

    def row(name: str, measured: str, ok: bool | str | None) -> None:
        verdict = ok if isinstance(ok, str) else "–" if ok is None else "yes" if ok else "**no**"
        lines.append(f"| {name} | {measured} | {verdict} |")

    for route in ("/health", "/api/items/{id}"):
        r = runs.get(("GET", route, 64))
        if not r or not r["rps"]:
            row(f"`GET {route}` ≥ 1.8× Go", "not measured", None)
            continue
        need = 1.8 * GO_GET_RPS[1]
        row(f"`GET {route}` ≥ 1.8× Go ({1.8 * GO_GET_RPS[0] / 1000:.0f}–{need / 1000:.0f} k req/s)",
            f"{r['rps']:,} req/s ({r['rps'] / GO_GET_RPS[1]:.2f}–{r['rps'] / GO_GET_RPS[0]:.2f}× Go)",
            "yes" if r["rps"] >= need else
            "against the lower Go figure only" if r["rps"] >= 1.8 * GO_GET_RPS[0] else "**no**")
        row(f"`GET {route}` ≥ 0.7× nginx ({0.7 * NGINX_RPS / 1000:.0f} k req/s)",
            f"{r['rps'] / NGINX_RPS:.2f}× nginx", r["rps"] >= 0.7 * NGINX_RPS)
        row(f"`GET {route}` p99 at 64 connections ≤ 2 ms", f"{r['p99_ms']} ms", r["p99_ms"] <= 2)
    r = runs.get(("POST", "/api/items", 64))
    if r and r["rps"]:
        row(f"`POST /api/items` ≥ 1.6× Go ({1.6 * GO_POST_RPS / 1000:.0f} k req/s)",
            f"{r['rps']:,} req/s ({r['rps'] / GO_POST_RPS:.2f}× Go), {r['non2xx']} non-2xx",
            r["rps"] >= 1.6 * GO_POST_RPS and r["non2xx"] == 0)
        row("`POST /api/items` no latency above 10 ms at 64 connections",
            f"p99 {r['p99_ms']} ms, max {r['max_ms']} ms", r["max_ms"] is not None and r["max_ms"] <= 10)
    cs = step.get("cold_start_ms")
    if cs:
        css = step.get("cold_start_static_ms") or {}
        row("cold start ≤ 2.5 ms median", f"{cs['median']} ms (static: {css.get('median', '–')} ms)",
            min(cs["median"], css.get("median", cs["median"])) <= 2.5)
    idle = step["load"].get("rss_idle_kib")
    if idle:
        row("idle RSS ≤ 3 MB", f"{idle / 1024:.2f} MiB ({idle * 1024 / 1e6:.2f} MB)", idle * 1024 <= 3e6)
    size = step.get("static_size_bytes")
    if size:
        row("static stripped binary ≤ 2 MB", fmt_bytes(size), size <= 2e6)
    b = report.get("build_times") or {}
    if "clean_workspace_debug_s" in b:
        row("clean build of the workspace ≤ 3 min", f"{b['clean_workspace_debug_s']} s",
            b["clean_workspace_debug_s"] <= 180)
    if "rebuild_debug_s" in b:
        row(f"rebuild after a handler edit ≤ 10 s ({b['rebuild_step']})", f"{b['rebuild_debug_s']} s",
            b["rebuild_debug_s"] <= 10)
    lc = report.get("logging_cost")
    if lc:
        info, warn = lc["levels"]["info"], lc["levels"]["warn"]
        lines.append("")
        lines.append(
            f"Per-request logging on step-04 (`GET /health`, 64 connections, median of "
            f"{lc['rounds']} alternating {lc['seconds']} s runs): `RUST_LOG=info` (a line per "
            f"request, to a file) {info['rps_median']:,.0f} req/s, p99 {info['p99_ms_median']} ms; "
            f"`RUST_LOG=warn` (no request lines) {warn['rps_median']:,.0f} req/s, "
            f"p99 {warn['p99_ms_median']} ms: logging costs "
            f"{100 * (1 - info['rps_median'] / max(warn['rps_median'], 1)):.0f} % of the throughput.")
    return lines


def render_markdown(report: dict) -> str:
    m, lines = report["machine"], []
    mode = "quick run (indicative only)" if report["mode"] == "quick" else "full run"
    lines.append(
        f"*Measured {report['date'][:10]} by `.ci/bench` ({mode}) on {m['cpus']} cores "
        f"({m['cpu_model']}), {m['rustc']}; load average {report['loadavg_start']} at start and "
        f"{report['loadavg_end']} at the end"
        + (": **a shared machine with other work running**, so read ratios, not absolutes"
           if max(report["loadavg_start"], report["loadavg_end"]) > 0.7 else "")
        + f". Git: {report['git']['commit'] or 'no commit yet'}"
        + (f" + {report['git']['dirty_paths']} uncommitted paths"
           if report['git']['dirty_paths'] else "")
        + ".*"
    )
    lines.append("")
    lines.append("| step | binary | static, stripped | cold start median (p90) | "
                 "cold start, static | idle RSS | peak RSS after load |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|")
    for s in report["steps"]:
        if s.get("skipped"):
            lines.append(f"| {s['package']} | {s['skipped']} | | | | | |")
            continue
        cs, css = s.get("cold_start_ms"), s.get("cold_start_static_ms")
        lines.append(
            f"| {s['package']} | {fmt_bytes(s.get('size_bytes'))} | "
            f"{fmt_bytes(s.get('static_size_bytes'))} | "
            + (f"{cs['median']:.2f} ms ({cs['p90']:.2f})" if cs else "–") + " | "
            + (f"{css['median']:.2f} ms ({css['p90']:.2f})" if css else "–") + " | "
            f"{fmt_kib(s.get('load', {}).get('rss_idle_kib'))} | "
            f"{fmt_kib(s.get('load', {}).get('rss_peak_kib'))} |"
        )
    lines.append("")
    lines.append("| step | request | conns | req/s | p50 | p99 | non-2xx | socket errors |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|")
    for s in report["steps"]:
        for r in s.get("load", {}).get("runs", []):
            errors = sum(r["socket_errors"].values())
            lines.append(
                f"| {s['package']} | `{r['method']} {r['route']}` | {r['connections']} | "
                f"{fmt_num(r['rps'])} | {fmt_num(r['p50_ms'])} ms | {fmt_num(r['p99_ms'])} ms | "
                f"{r['non2xx']} | {errors} |"
            )
    drains = [s for s in report["steps"] if s.get("drain")]
    if drains:
        lines.append("")
        lines.append("| step | responses during the run (64 conns) | SIGTERM → exit | exit code | "
                     "non-2xx | read errors | timeouts | refused after close |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for s in drains:
            d = s["drain"]
            e = d["socket_errors"]
            lines.append(
                f"| {s['package']} | {fmt_num(d['requests'])} | "
                f"{fmt_num(d['sigterm_to_exit_ms'])} ms | {d['exit_code']} | {d['non2xx']} | "
                f"{e['read']} | {e['timeout']} | {e['connect'] + e['write']} |"
            )
        lines.append("")
        lines.append(
            "Drain: SIGTERM half-way through the wrk run. *Read errors* are requests wrk wrote on a "
            "connection that was closed before the server read them: a keep-alive connection the "
            "server closed as idle, or a connection still waiting in the kernel's accept queue "
            "when the listener closed. *Refused after close* are wrk's reconnects once the "
            "listener is closed (wrk's non-blocking connect reports the refusal as a write "
            "error). A request the server had read and then dropped would show as a non-2xx or a "
            "timeout, and the exit code would be 1 (drain deadline passed).")
    b = report.get("build_times") or {}
    if b:
        lines.append("")
        parts: list[str] = []
        if "clean_workspace_debug_s" in b:
            parts.append(f"clean debug build of the workspace: **{b['clean_workspace_debug_s']} s**"
                         + ("" if b.get("clean_workspace_ok") else " (some members failed)"))
        if "rebuild_debug_s" in b:
            parts.append(f"rebuild of `{b['rebuild_step']}` after touching "
                         f"`{b['rebuild_touched']}`: **{b['rebuild_debug_s']} s**")
        lines.append("Build times (dependencies already downloaded): " + "; ".join(parts) + ".")
    poll = [s["cold_start_ms"]["poll_interval_us_median"] for s in report["steps"]
            if s.get("cold_start_ms") and s["cold_start_ms"]["poll_interval_us_median"]]
    late = sum(s[k].get("late_poller_runs", 0) for s in report["steps"]
               for k in ("cold_start_ms", "cold_start_static_ms") if s.get(k))
    runs = sum(s[k]["runs"] for s in report["steps"]
               for k in ("cold_start_ms", "cold_start_static_ms") if s.get(k))
    lines.append("")
    lines.append(
        f"Cold start: {report['method']['cold_start_runs']} runs per binary, server pinned to CPU "
        f"{SERVER_CPU}, poller on CPU {LOAD_CPU}; a tight loop of non-blocking connects "
        + (f"(one attempt every ≈ {statistics.median(poll):.0f} µs: the resolution)" if poll else "")
        + (f"; in {late} of {runs} runs the poller itself got the CPU late (its first attempt "
           "already succeeded), so those times are upper bounds" if late else "")
        + f". Loads: wrk -t1 on CPU {LOAD_CPU}, {report['method']['load_seconds']} s per row after a "
        f"1 s warm-up, server on CPU {SERVER_CPU}, server log to a file."
    )
    lines += render_targets(report)
    return GENERATED + "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="every measurement, briefly (for CI; numbers are indicative only)")
    parser.add_argument("--out", type=Path,
                        help="output directory (default: book/src/generated, or "
                             "target/bench-quick with --quick)")
    parser.add_argument("--steps", nargs="*", help="only these packages, e.g. step-04")
    parser.add_argument("--no-build-times", action="store_true", help="skip build timings")
    parser.add_argument("--no-release-profile", action="store_true",
                        help='skip the opt-level 3 vs "z" comparison (one more release build)')
    args = parser.parse_args()

    if len(os.sched_getaffinity(0)) < 2:
        log("needs two CPUs (server on one, load generator on the other)")
        return 1
    quick = args.quick
    args.cold_runs = 5 if quick else 30
    args.load_seconds = 1 if quick else 8
    args.drain_seconds = 2 if quick else 4
    args.connections = [64, 256]
    target_dir = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")).resolve()
    out_dir = args.out or (target_dir / "bench-quick" if quick else ROOT / "book/src/generated")
    out_dir.mkdir(parents=True, exist_ok=True)
    have_wrk = shutil.which("wrk") is not None and shutil.which("taskset") is not None
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    started = time.monotonic()
    poller = build_poller(workdir)

    report: dict = {
        "schema": 1,
        "mode": "quick" if quick else "full",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "git": git_info(),
        "loadavg_start": loadavg(),
        "method": {
            "cold_start_runs": args.cold_runs,
            "cold_start": "posix_spawn with PORT (from .ci/bench.d/coldstart.c, or Python if no C "
                          "compiler), then a busy loop of non-blocking connects to 127.0.0.1 (no "
                          "sleep), each connected attempt sending GET <health> and reading the "
                          "status line; time = spawn call -> first 200",
            "load_seconds": args.load_seconds,
            "load": f"wrk -t1 -cN --latency pinned to CPU {LOAD_CPU}; server pinned to CPU "
                    f"{SERVER_CPU} (tokio then runs one worker thread); 1 s warm-up per route",
            "server_output": "stdout and stderr appended to a log file (as in production)",
            "rss": "/proc/<pid>/status: VmRSS 0.5 s after the first 200; VmHWM after all loads",
            "drain": f"SIGTERM half-way through a {args.drain_seconds} s wrk run at 64 "
                     "connections; SIGTERM -> exit polled every 0.1 ms",
            "health_paths": HEALTH_PATHS,
        },
        "steps": [],
    }

    steps = discover_steps(args.steps)
    packages = [s["package"] for s in steps]
    log(f"release build of {', '.join(packages)} in {target_dir}")
    built, build_s, build_err = cargo_build(packages, target_dir, ["--release"])
    report["release_build_s"] = round(build_s, 1)
    if len(built) < len(packages):
        log(f"some steps did not build; cargo said:\n{build_err}")
    log("static release build (+crt-static, --target x86_64-unknown-linux-gnu)")
    static, static_s, _ = cargo_build(
        packages, target_dir, ["--release", "--target", "x86_64-unknown-linux-gnu"],
        {"RUSTFLAGS": "-C target-feature=+crt-static"})
    report["static_build_s"] = round(static_s, 1)

    for step in steps:
        package = step["package"]
        binary = built.get(package)
        if not binary:
            step["skipped"] = "does not build (or has no binary)"
            log(f"{package}: skipped: {step['skipped']}")
            report["steps"].append(step)
            continue
        step["size_bytes"] = Path(binary).stat().st_size
        if package in static:
            step["static_size_bytes"] = Path(static[package]).stat().st_size
        logfile = workdir / f"{package}.log"
        env = {"RUST_LOG": os.environ.get("BENCH_RUST_LOG", "info"),
               # Room for every POST of the loads to really create an item.
               "MAX_ITEMS": "100000000"}
        health = probe_health(binary, package, env, logfile)
        if health is None:
            step["skipped"] = "no route answered 200 (not a server?)"
            log(f"{package}: skipped: {step['skipped']}")
            report["steps"].append(step)
            continue
        step["health_path"] = health
        try:
            log(f"{package}: cold start x{args.cold_runs} on {health}")
            step["cold_start_ms"] = measure_cold_start(
                binary, env, health, args.cold_runs, logfile, poller)
            if package in static:
                step["cold_start_static_ms"] = measure_cold_start(
                    static[package], env, health, args.cold_runs, logfile, poller)
            if have_wrk:
                step["load"] = measure_load(binary, env, health, step["dir"], args, workdir, logfile)
                if has_text(step["dir"], "SIGTERM") or has_text(step["dir"], "terminate()"):
                    log(f"{package}: drain under load")
                    step["drain"] = measure_drain(binary, env, health, args, logfile)
                if has_text(step["dir"], "MAX_CONCURRENCY") and has_text(step["dir"], "/debug/slow"):
                    log(f"{package}: load shedding")
                    step["shedding"] = measure_shedding(step, binary, args, logfile)
        except (RuntimeError, TimeoutError, OSError, subprocess.TimeoutExpired) as error:
            step["error"] = str(error)
            log(f"{package}: {error}")
        report["steps"].append(step)

    # Each extra is optional: one failing must not lose the table.
    extras = []
    if have_wrk:
        extras.append(("logging_cost", lambda: measure_logging_cost(steps, built, args, workdir)))
    if have_wrk and not args.no_release_profile:
        extras.append(("release_profile", lambda: measure_release_profile(
            steps, static, target_dir, args, workdir)))
    if not args.no_build_times:
        extras.append(("build_times", lambda: measure_build_times(
            [s for s in steps if not s.get("skipped")], target_dir, quick)))
    for key, measure in extras:
        try:
            report[key] = measure()
        except (RuntimeError, TimeoutError, OSError, subprocess.TimeoutExpired) as error:
            log(f"{key}: {error}")
            report[key] = None
    report["loadavg_end"] = loadavg()
    report["harness_s"] = round(time.monotonic() - started, 1)

    (out_dir / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "bench.md").write_text(render_markdown(report))
    (out_dir / "bench-shedding.md").write_text(render_shedding(report))
    (out_dir / "release-profile.md").write_text(render_release_profile(report))
    log(f"wrote {out_dir / 'bench.json'} and {out_dir / 'bench.md'} in {report['harness_s']} s")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

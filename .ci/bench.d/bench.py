#!/usr/bin/env python3
"""The benchmark harness behind `.ci/bench` (standard library only); book/src/measuring.md
explains every figure. For each step whose Cargo.toml names a `health` path: binary sizes,
cold start (spawn -> first 200, a tight connect loop), idle and peak RSS, wrk loads (server on
CPU 0, wrk on CPU 1), SIGTERM under load and after the POST load, memory per stored item, instructions per request
(callgrind: step-04, step-06, Go); the same for the Go twin of
step-04 (.ci/bench.d/go-items, when a Go toolchain is present) and nginx's fixed 200 (when installed); then shedding (step-06, waiting and computing work), the pool
sweep (step-07), gRPC against REST (step-08), the cost of per-request logging and of opt-level
"z" (step-04), step-09 in front of a failing inventory, the cost of step-10's traces, and build times. Steps with
`database = true` get a fresh database on $DATABASE_URL's server."""

import argparse, datetime, html, http.client, json, math, os, shutil, signal, socket, statistics, subprocess
import sys, tempfile, time, tomllib, urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / ".ci"))
import stamp as stamps  # noqa: E402 (.ci/stamp.py: the stamp line on every file written)

SERVER_CPU, LOAD_CPU = 0, 1
TARGET = f"{os.uname().machine}-unknown-linux-gnu"
STATIC = {"RUSTFLAGS": "-C target-feature=+crt-static"}
ITEM = '{"name":"bench","description":"made by .ci/bench"}'
WORK = {"wait 50 ms": "/debug/slow?ms=50", "compute 2 ms": "/debug/slow?ms=0&cpu_ms=2"}
GO, NGINX = "go (article)", "nginx"  # the yardsticks, measured in the same run as the steps


def log(message):
    print(f"bench: {message}", file=sys.stderr, flush=True)


def build(packages, target_dir, *extra, env=None):
    """{package: executable}; --keep-going, so that one broken step hides no other."""
    if not packages:
        return {}
    cmd = ["cargo", "build", "--keep-going", "--message-format=json-render-diagnostics", *extra]
    env = {**os.environ, "CARGO_TARGET_DIR": str(target_dir), **(env or {})}
    proc = subprocess.run(cmd + [a for p in packages for a in ("-p", p)], cwd=ROOT, env=env, text=True, capture_output=True)
    messages = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    built = {m["target"]["name"]: m["executable"] for m in messages
             if m.get("executable") and m["target"]["name"] in packages}
    if len(built) < len(packages):
        log("some steps did not build:\n" + "\n".join(proc.stderr.splitlines()[-15:]))
    return built


class Server:
    """A step's binary on a free PORT, pinned to SERVER_CPU, its output appended to a log."""

    def __init__(self, binary, logfile, pin=True, argv=None, **env):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        # As deployed: room for every POST, and from step-06 on JSON logs with the trace of the header that
        # Cloud Run's front end adds (wrk.lua sends it to every server); the other servers ignore these.
        env = {"PATH": os.environ["PATH"], "RUST_LOG": os.environ.get("BENCH_RUST_LOG", "info"), "MAX_ITEMS": "100000000",
               "LOG_FORMAT": "json", "GOOGLE_CLOUD_PROJECT": "bench", **env, "PORT": str(self.port)}
        os.sched_setaffinity(0, {SERVER_CPU} if pin else os.sched_getaffinity(0) | {SERVER_CPU})  # the child
        # inherits our CPUs at spawn...
        self.t0 = time.perf_counter()
        with open(logfile, "a") as out:
            # close_fds=False lets Python use posix_spawn: the cheapest spawn, measured in the cold start.
            self.proc = subprocess.Popen([binary, *(argv(self.port) if argv else [])], env=env, stdout=out, stderr=out, close_fds=False)
        os.sched_setaffinity(0, {LOAD_CPU})  # ...while we poll and load from the other one

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.stop(signal.SIGKILL)

    def ready(self, path, limit=10.0):
        """(ms from spawn to the first 200 on `path`, attempts), with no sleep between attempts."""
        request, attempts = f"GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n".encode(), 0
        while time.perf_counter() - self.t0 < limit:
            attempts += 1
            with socket.socket() as s:
                s.settimeout(2)
                try:  # on loopback, a refused connect returns at once: retry without a pause
                    if s.connect_ex(("127.0.0.1", self.port)) == 0:
                        s.sendall(request)
                        if s.recv(64).startswith(b"HTTP/1.1 200"):
                            return (time.perf_counter() - self.t0) * 1e3, attempts
                except OSError:
                    pass
            if attempts % 256 == 0 and self.proc.poll() is not None:
                raise RuntimeError(f"exit {self.proc.returncode} before a 200 on {path}")
        raise TimeoutError(f"no 200 on {path} within {limit} s")

    def rss(self, key):  # VmRSS or VmHWM, KiB
        lines = Path(f"/proc/{self.proc.pid}/status").read_text().splitlines()
        return next(int(line.split()[1]) for line in lines if line.startswith(key + ":"))

    def stop(self, sig):
        """Sends `sig`; the ms until the process exited (None if it already had)."""
        if self.proc.poll() is not None:
            return None
        t0 = time.perf_counter()
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return round((time.perf_counter() - t0) * 1e3, 2)


def cpu_ticks(pid):
    """(user, system) CPU time of a process, all its threads, in clock ticks (/proc/PID/stat fields 14, 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def wrk(port, path, connections, seconds, post=False, wait=True, pid=None, **env):
    """A wrk run on LOAD_CPU; .ci/bench.d/wrk.lua prints its results as JSON (`env` for it). With `pid`, also
    the server's CPU time per request: user space and kernel (system calls, the network stack, page faults)."""
    cmd = ["taskset", "-c", str(LOAD_CPU), "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
           "--timeout", "2s", "-s", str(Path(__file__).with_name("wrk.lua")), f"http://127.0.0.1:{port}{path}"]
    env = {**os.environ, **({"BENCH_POST": ITEM} if post else {}), **env}
    before = pid and cpu_ticks(pid)
    proc = subprocess.Popen(cmd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if not wait:
        return proc
    result = wrk_result(proc)
    if pid:
        tick_us = 1e6 / os.sysconf("SC_CLK_TCK") / max(result["requests"], 1)
        result |= {f"{k}_us": round((a - b) * tick_us, 2) for k, a, b in zip(("user", "system"), cpu_ticks(pid), before)}
    return result


def wrk_result(proc):
    out, err = proc.communicate(timeout=120)
    line = next((line for line in out.splitlines() if line.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk: {(err or out).strip()[-300:]}")
    result = {k: round(v, 3) if isinstance(v, float) else v for k, v in json.loads(line[6:]).items()}
    return {**result, "rps": round(result["requests"] / result["seconds"])}


def cold_start(binary, path, runs, logfile, env, argv=None):
    times, polls = [], []
    for _ in range(runs):
        with Server(binary, logfile, argv=argv, **env) as server:
            ms, attempts = server.ready(path)
        times.append(ms)
        polls.append(ms * 1e3 / attempts)
    ordered = sorted(times)
    return {"runs": runs, "median": round(statistics.median(times), 3), "p90": round(ordered[-(-9 * runs // 10) - 1], 3),
            "min": round(ordered[0], 3), "max": round(ordered[-1], 3), "poll_us": round(statistics.median(polls), 1)}


def measure_step(step, binary, static, args, logfile):
    path, name, env, ready, argv = step["health"], step["package"], step["env"], step["ready"], step.get("argv")
    result = {"size_bytes": os.path.getsize(binary), "static_size_bytes": static and os.path.getsize(static), "runs": []}
    log(f"{name}: cold start x{args.cold_runs} on {path}")
    result["cold_start_ms"] = cold_start(binary, path, args.cold_runs, logfile, env, argv)
    if static and static != binary:
        result["cold_start_static_ms"] = cold_start(static, path, args.cold_runs, logfile, env, argv)
    with Server(binary, logfile, argv=argv, **env) as server:
        server.ready(ready)
        time.sleep(0.5)  # the idle figure is the process at rest
        result["rss_idle_kib"] = server.rss("VmRSS")
        client = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        client.request("POST", "/api/items", ITEM, {"Content-Type": "application/json"})
        reply = client.getresponse()
        item = f"/api/items/{json.loads(reply.read())['id']}" if reply.status == 201 else None  # 201: has items
        for method, route in [("GET", path)] + ([("GET", item), ("POST", "/api/items")] if item else []):
            if method == "POST":  # every item the POST runs store, against the resident memory they add
                rss_before, created = server.rss("VmRSS"), 1
            runs = [wrk(server.port, route, 64, 1, method == "POST")]  # warm-up: measure no connection set-up
            for connections in (64, 256):
                log(f"  wrk {method} {route} -c{connections} -d{args.load_seconds}s")
                runs.append(run := wrk(server.port, route, connections, args.load_seconds, method == "POST",
                                       pid=server.proc.pid))
                shown = "/api/items/{id}" if "items/" in route else route
                result["runs"].append({**run, "method": method, "route": shown, "connections": connections})
            if method == "POST":
                created += sum(r["requests"] - r["non2xx"] for r in runs)
                result["memory_per_item"] = {"items": created, "rss_before_kib": rss_before, "rss_after_kib": server.rss("VmRSS")}
        result["rss_peak_kib"] = server.rss("VmHWM")
        if name == "step-08" and item:
            result["grpc"] = grpc_against_rest(server.port, item, args, logfile.parent)
        if item:  # a process about to exit with every item the loads stored
            log(f"{name}: SIGTERM after the POST load")
            result["sigterm_after_post"] = {"items": created, "ms": server.stop(signal.SIGTERM),
                                            "exit_code": server.proc.returncode}
    if name == "step-07" and item:
        log(f"{name}: GET {item} -c64 for each DB_MAX_CONNECTIONS")
        result["pool_sweep"] = []
        for size in (1, 5, 25) if args.quick else (1, 2, 5, 10, 25):
            with Server(binary, logfile, **env, DB_MAX_CONNECTIONS=str(size)) as server:
                server.ready(ready)
                wrk(server.port, item, 64, 1)
                result["pool_sweep"].append({**wrk(server.port, item, 64, args.load_seconds), "pool": size})
    log(f"{name}: SIGTERM half-way through a wrk run")
    with Server(binary, logfile, argv=argv, **env) as server:
        server.ready(ready)
        load = wrk(server.port, path, 64, args.drain_seconds, wait=False)
        time.sleep(args.drain_seconds / 2)
        exit_ms = server.stop(signal.SIGTERM)
        drain = wrk_result(load)
    if server.proc.returncode != -signal.SIGTERM:  # else it has no handler: the signal killed it
        result["drain"] = {**drain, "sigterm_to_exit_ms": exit_ms, "exit_code": server.proc.returncode}
    return result


def yardsticks(workdir, target_dir):
    """The Go twin of step-04, built as the article builds it for its scratch image (static, stripped), and nginx
    answering a fixed 200 (one process, an access log like the steps' request log): [(step entry, binary)]."""
    found, go, nginx = [], shutil.which("go"), shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if go:
        out = target_dir / "bench-go"
        env = {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOCACHE": str(out / "cache"),
               "GOPATH": str(out / "path")}
        proc = subprocess.run([go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(out / "go-items"), "."], env=env,
                              cwd=Path(__file__).with_name("go-items"), text=True, capture_output=True)
        if proc.returncode == 0:
            found.append(({"package": GO, "health": "/health", "ready": "/health"}, str(out / "go-items")))
        else:
            log(f"go build failed, no Go rows: {proc.stderr.strip()[-300:]}")
    else:
        log("no Go toolchain on PATH, no Go rows (.ci/bench installs one when run as root)")
    if nginx:
        def argv(port):
            (conf := workdir / f"nginx-{port}.conf").write_text(
                f"daemon off; master_process off; worker_processes 1; pid {workdir}/nginx-{port}.pid; error_log stderr;\n"
                "events { worker_connections 1024; }\n"
                f"http {{ access_log {workdir}/nginx-access.log; server {{ listen 127.0.0.1:{port}; "
                'location / { return 200 "ok\\n"; } } }\n')
            return ["-p", str(workdir), "-e", "stderr", "-c", str(conf)]
        found.append(({"package": NGINX, "health": "/", "ready": "/", "argv": argv}, nginx))
    else:
        log("no nginx, no nginx rows (.ci/bench installs it when run as root)")
    return [({**entry, "database": False, "env": {}}, binary) for entry, binary in found]


def database(step):
    """A fresh database for `step` on $DATABASE_URL's server: its URL."""
    url, name = os.environ["DATABASE_URL"], "bench_" + step.replace("-", "_")
    for sql in (f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}"):
        subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql], check=True, capture_output=True)
    return urllib.parse.urlsplit(url)._replace(path="/" + name).geturl()


def grpc_against_rest(port, item, args, workdir):
    """The health check and the item over REST and over gRPC, each by h2load over h2c on LOAD_CPU with
    64 connections of one stream each; p99 from h2load's per-request log."""
    key, runs = item.rsplit("/", 1)[1].encode(), []
    for protocol, path, message in (("REST", "/healthz", None), ("gRPC", "/grpc.health.v1.Health/Check", b""),
                                    ("REST", item, None), ("gRPC", "/items.v1.ItemService/GetItem",
                                                           b"\x0a" + bytes([len(key)]) + key)):  # GetItemRequest{id}
        extra = []
        if message is not None:  # not compressed (0), the message's length (4 bytes, big-endian), the message
            (body := workdir / "grpc.bin").write_bytes(b"\0" + len(message).to_bytes(4, "big") + message)
            extra = ["-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers"]
        log(f"  h2load {protocol} {path} -c64 -m1 -D{args.load_seconds}")
        (requests := workdir / "h2load.tsv").unlink(missing_ok=True)
        out = subprocess.run(["taskset", "-c", str(LOAD_CPU), "h2load", "-t1", "-c64", "-m1", "--warm-up-time=1",
                              f"-D{args.load_seconds}", f"--log-file={requests}", *extra, f"http://127.0.0.1:{port}{path}"],
                             text=True, capture_output=True, timeout=120).stdout
        us, done = sorted(int(line.split("\t")[2]) for line in requests.read_text().splitlines()), out.split("requests:")[1].split()
        if message is not None and int(out.split(") data")[0].rsplit("(", 1)[1]) < len(us):  # an error: trailers only
            raise RuntimeError(f"h2load {path}: answers without a message (a gRPC error status)")
        runs.append({"protocol": protocol, "route": path, "rps": round(len(us) / args.load_seconds), "p50_ms": us[len(us) // 2] / 1e3,
                     "p99_ms": us[len(us) * 99 // 100] / 1e3, "failed": int(done[8]) + int(done[10])})
    return runs


def alternate(variants, path, args, workdir):
    """Health-route throughput of variants {name: (binary, env)}, in alternating runs."""
    rounds, seconds = (1, 1) if args.quick else (3, 2)
    runs = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (binary, env) in variants.items():  # alternate: drift hits all alike
            with Server(binary, workdir / f"{name}.log", **env) as server:
                server.ready(path)
                wrk(server.port, path, 64, 1)
                runs[name].append(wrk(server.port, path, 64, seconds))
    medians = {n: {"rps_median": statistics.median(r["rps"] for r in rs),
                   "p99_ms_median": statistics.median(r["p99_ms"] for r in rs)} for n, rs in runs.items()}
    return {"route": path, "rounds": rounds, "seconds": seconds, "variants": medians}


def instructions(built, steps, args, workdir):
    """User-space instructions per request (callgrind, all threads) of step-04, step-06 and the Go twin on each
    route, as the wrk rows run them: a profile that, unlike req/s, other work on a shared machine does not move.
    Counted between `callgrind_control --zero` and `--dump`, after a warm-up, so start-up is left out."""
    if not shutil.which("valgrind"):
        raise LookupError("no valgrind: no instruction counts (.ci/bench installs it as root)")
    result = {}
    for step in [s for s in steps if s["package"] in ("step-04", "step-06", GO) and s["package"] in built]:
        name, out = step["package"], workdir / f"callgrind-{len(result)}.out"
        argv = lambda port: ["--tool=callgrind", f"--callgrind-out-file={out}", built[name]]
        dumps = lambda: set(workdir.glob(f"{out.name}.*"))
        # callgrind aborts on the signals of Go's asynchronous preemption; without it, Go preempts at calls only
        env = {**step["env"], **({"GODEBUG": "asyncpreemptoff=1"} if name == GO else {})}
        result[name] = {}
        try:
            with Server(shutil.which("valgrind"), workdir / "callgrind.log", argv=argv, **env) as server:
                server.ready(step["ready"], limit=60)  # valgrind starts a program many times slower
                item = send(server.port, "POST", "/api/items", ITEM)
                routes = [("GET", step["health"])] + (
                    [("GET", f"/api/items/{item['id']}"), ("POST", "/api/items")] if item else [])
                for method, route in routes:
                    wrk(server.port, route, 8, 1, method == "POST")
                    control = lambda command: subprocess.run(["callgrind_control", command, str(server.proc.pid)],
                                                             check=True, capture_output=True, timeout=30)
                    control("--zero")
                    before = dumps()
                    run = wrk(server.port, route, 8, 1 if args.quick else 3, method == "POST")
                    control("--dump")
                    for _ in range(300):  # the program writes the dump itself, once it next runs
                        new = [f for f in dumps() - before if "\ntotals:" in f.read_text(errors="replace")]
                        if new:
                            break
                        time.sleep(0.1)
                    else:
                        raise TimeoutError(f"no callgrind dump within 30 s for {method} {route}")
                    total = sum(int(line.split()[1]) for line in new[0].read_text().splitlines()
                                if line.startswith("totals:"))
                    shown = "/api/items/{id}" if "items/" in route else route
                    result[name][f"{method} {'health' if route == step['health'] else shown}"] = {
                        "route": shown, "requests": run["requests"], "per_request": round(total / max(run["requests"], 1))}
        except (RuntimeError, TimeoutError, OSError, ValueError, TypeError, subprocess.SubprocessError) as error:
            log(f"instructions, {name}: {error}")
    return {"connections": 8, "seconds": 1 if args.quick else 3, "servers": result}


def where_the_time_goes(report, by):
    """The profile behind the throughput targets: CPU per request, user and kernel, from the wrk rows at 64
    connections, and the user-space instructions per request (`instructions`, when valgrind ran)."""
    counted = (report.get("instructions") or {}).get("servers", {})
    rows = []
    for name in ("step-04", "step-06", GO, NGINX):
        for key, r in rows_by_kind(by[name]).items() if name in by else []:
            if key[2] == 64 and "user_us" in r:
                count = counted.get(name, {}).get(f"{key[0]} {key[1]}", {}).get("per_request")
                rows.append([name, f"`{key[0]} {r['route']}`", f"{r['user_us']:.1f} µs", f"{r['system_us']:.1f} µs",
                             f"{r['user_us'] + r['system_us']:.1f} µs", num(count) if count else "–"])
    if not rows:
        return []
    intro = ("Where the time goes (the profile behind the throughput targets): CPU per request at 64 connections, "
             "from the same wrk rows")
    intro += (", and user-space instructions per request, counted by callgrind over all threads at "
              f"{report['instructions']['connections']} connections:") if counted else (
        " (valgrind did not run: no instruction counts):")
    lines = ["", intro]
    lines += table("server:<|request:<|user:>|kernel:>|CPU per request:>|instructions per request:>", rows)
    s04, go = rows_by_kind(by["step-04"]), rows_by_kind(by[GO]) if GO in by else {}
    if (r := s04.get(("GET", "health", 64))) and (g := go.get(("GET", "health", 64))) and "user_us" in g:
        need = (g["user_us"] + g["system_us"]) / 1.8
        lines += ["", f"At 1.8× Go on the health route, step-04 would spend {need:.1f} µs per request in all; its kernel "
                  f"time alone (system calls and the network stack, much the same work for every server) is "
                  f"{r['system_us']:.1f} µs, which leaves {max(need - r['system_us'], 0):.1f} µs of user time, against "
                  f"the {r['user_us']:.1f} µs it spends."]
    return lines


def side_by_side(steps, built, args, workdir):
    """Step-06 against step-04 on every wrk row, in alternating runs: a fresh server each time, the two steps
    taking turns, and the medians compared. Drift on a shared machine (another job, the CPU's clock) then hits both
    alike, which it does not for rows measured minutes apart: their ratio moved by 20 % from one run to the next."""
    rounds, seconds = (1, 1) if args.quick else (3, 2)
    pair = [s for name in ("step-04", "step-06") for s in steps if s["package"] == name and name in built]
    rows = []
    for method, route in (("GET", "health"), ("GET", "/api/items/{id}"), ("POST", "/api/items")):
        for connections in (64, 256):
            runs = {s["package"]: [] for s in pair}
            for _ in range(rounds):
                for step in pair:
                    with Server(built[step["package"]], workdir / f"{step['package']}.log", **step["env"]) as server:
                        server.ready(step["ready"])
                        path = {"health": step["health"], "/api/items/{id}": None}.get(route, route)
                        path = path or f"/api/items/{send(server.port, 'POST', '/api/items', ITEM)['id']}"
                        wrk(server.port, path, connections, 1, method == "POST")
                        runs[step["package"]].append(wrk(server.port, path, connections, seconds, method == "POST")["rps"])
            rows.append({"method": method, "route": route, "connections": connections,
                         **{name: statistics.median(rps) for name, rps in runs.items()}})
    return {"rounds": rounds, "seconds": seconds, "rows": rows}


def send(port, method, path, body=None):
    """One request: the answer's JSON, or None."""
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    client.request(method, path, body, {"Content-Type": "application/json"})
    reply = client.getresponse().read()
    return json.loads(reply) if reply.startswith(b"{") else None


def resilience(binary, args, workdir):
    """Step-09's `GET /api/items/{id}` under wrk while its inventory is well, fails every other request, then
    every one: the service's answers and the requests the inventory received, with the breaker and the retry
    budget on and off (3 attempts and the deadline stay in both; the bulkhead is as wide as the load)."""
    seconds, db, runs = 1 if args.quick else 10, database("step-09-resilience"), []
    for defences, env in (("on", {}), ("off", {"BREAKER_ENABLED": "0", "RETRY_BUDGET_ENABLED": "0"})):
        log(f"step-09 against a failing inventory, breaker and budget {defences}")
        with Server(Path(binary).with_name("inventory"), workdir / "inventory.log") as inventory, \
                Server(binary, workdir / "step-09.log", DATABASE_URL=db, UPSTREAM_MAX_CONCURRENCY="64", **env,
                       UPSTREAM_URL=f"http://127.0.0.1:{inventory.port}") as server:
            inventory.ready("/stats")
            server.ready("/readyz")
            item = f"/api/items/{send(server.port, 'POST', '/api/items', ITEM)['id']}"
            wrk(server.port, item, 64, 1)  # warm-up
            for mode in ("ok", "flaky", "fail"):
                send(inventory.port, "PUT", f"/mode/{mode}")
                before = send(inventory.port, "GET", "/stats")["served"]
                run = wrk(server.port, item, 64, seconds, BENCH_DEGRADED="1")
                runs.append({**run, "defences": defences, "inventory": mode,
                             "upstream_requests": send(inventory.port, "GET", "/stats")["served"] - before})
    return {"seconds": seconds, "runs": runs}


def shedding(binary, args, workdir):
    """Step-06's `/debug/slow` at 256 connections, MAX_CONCURRENCY 10000 against 32, for work that waits (as
    for a slow dependency: the server is not saturated) and work that computes (one worker thread, saturated)."""
    runs = []
    for work, path in WORK.items():
        for limit in (10000, 32):
            log(f"step-06 shedding: {work}, MAX_CONCURRENCY={limit}")
            with Server(binary, workdir / "step-06.log", ENABLE_DEBUG_ROUTES="1", MAX_CONCURRENCY=str(limit)) as server:
                server.ready("/healthz")
                runs.append({**wrk(server.port, path, 256, max(2, args.load_seconds // 2)), "work": work,
                             "max_concurrency": limit})
    return runs


class CpuQuota:
    """A cgroup with a CPU quota, cgroup v2 (`cpu.max`) or v1 (`cpu.cfs_quota_us`); root only."""

    def __init__(self, cpus):
        v2, v1 = Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/cpu")
        if os.geteuid() != 0:
            raise RuntimeError("a CPU quota needs root (a cgroup of our own)")
        if "cpu" in (v2 / "cgroup.controllers").read_text(errors="ignore").split() if (v2 / "cgroup.controllers").exists() else False:
            self.dir, files = v2 / f"bench-{os.getpid()}", {"cpu.max": f"{round(cpus * 100_000)} 100000"}
        elif (v1 / "cpu.cfs_quota_us").exists():
            self.dir, files = v1 / f"bench-{os.getpid()}", {"cpu.cfs_period_us": "100000",
                                                           "cpu.cfs_quota_us": str(round(cpus * 100_000))}
        else:
            raise RuntimeError("no cgroup cpu controller to set a quota with (neither v2 cpu.max nor v1 cfs)")
        self.dir.mkdir()
        try:
            for name, value in files.items():
                (self.dir / name).write_text(value)
        except OSError as error:  # e.g. cgroup v2 without the cpu controller delegated here
            self.dir.rmdir()
            raise RuntimeError(f"cannot set a CPU quota in {self.dir}: {error}") from error

    def add(self, pid):
        (self.dir / "cgroup.procs").write_text(str(pid))  # the whole process, every thread

    def stat(self):  # v1: nr_periods, nr_throttled, throttled_time (ns); v2: ..._usec
        return {k: int(v) for k, v in (line.split() for line in (self.dir / "cpu.stat").read_text().splitlines())}

    def remove(self):
        self.dir.rmdir()


def paced(port, path, rate, seconds, workdir):
    """h2load over HTTP/1.1 on LOAD_CPU at a fixed `rate` (64 clients, each its share): an offered load, not wrk's
    "as fast as answered", so the server is not saturated. p50/p99 from h2load's per-request log."""
    (log_file := workdir / "paced.tsv").unlink(missing_ok=True)
    subprocess.run(["taskset", "-c", str(LOAD_CPU), "h2load", "--h1", "-t1", "-c64", f"--rps={rate / 64:g}",
                    f"-D{seconds}", f"--log-file={log_file}", f"http://127.0.0.1:{port}{path}"],
                   capture_output=True, timeout=120, check=True)
    lines = log_file.read_text().splitlines()
    us = sorted(int(line.split("\t")[2]) for line in lines)
    failed = sum(1 for line in lines if line.split("\t")[1] != "200")
    return {"requests": len(us), "rps": round(len(us) / seconds), "p50_ms": us[len(us) // 2] / 1e3,
            "p99_ms": us[len(us) * 99 // 100] / 1e3, "max_ms": us[-1] / 1e3, "non200": failed}


RATES = (12_000, 24_000)  # about half of what 0.5 CPU serves flat out, and a little more than it sustains


def cpu_quota(binary, args, workdir):
    """Step-06's `GET /healthz` at steady RATES of requests a second inside a CPU quota of 0.5 and 1 CPU, with
    WORKER_THREADS at the quota (1) and well above it (8); the server not pinned, so its threads can run on both
    cores at once, as in a container on a bigger machine. p50/p99, and the 100 ms periods the kernel throttled."""
    runs = []
    for rate, cpus, threads in ((r, c, t) for r in RATES for c in (0.5, 1.0) for t in (1, 8)):
        log(f"step-06 in a quota of {cpus} CPU, WORKER_THREADS={threads}, {rate} requests/s")
        quota = CpuQuota(cpus)
        try:
            with Server(Path(binary), workdir / "step-06.log", pin=False, WORKER_THREADS=str(threads)) as server:
                quota.add(server.proc.pid)
                server.ready("/healthz")
                paced(server.port, "/healthz", rate, 1, workdir)
                before = quota.stat()
                run = paced(server.port, "/healthz", rate, args.load_seconds, workdir)
                after = quota.stat()
        finally:
            quota.remove()
        delta = {k: after[k] - before.get(k, 0) for k in after}
        throttled_ms = delta.get("throttled_time", 0) / 1e6 or delta.get("throttled_usec", 0) / 1e3
        runs.append({**run, "rate": rate, "cpus": cpus, "threads": threads, "periods": delta.get("nr_periods", 0),
                     "throttled_periods": delta.get("nr_throttled", 0), "throttled_ms": round(throttled_ms)})
    return runs


def render_cpu_quota(report):
    """bench-quota.md and .svg: step-06 inside a CPU quota, threads at the quota and above it."""
    runs = report["cpu_quota"]
    lines = [stamp(report), "", "step-06, `GET /healthz` at a steady rate (h2load, 64 connections), "
             "the server in a cgroup CPU quota and not pinned (its threads may run on both cores at once; h2load "
             "takes one of them)."] + table(
        "offered/s:>|CPU quota:>|WORKER_THREADS:>|answered/s:>|p50:>|p99:>|slowest:>|periods throttled:>|time throttled (all CPUs):>", [
            [num(r["rate"]), r["cpus"], r["threads"], num(r["rps"]), f"{num(r['p50_ms'])} ms", f"{num(r['p99_ms'])} ms",
             f"{num(r['max_ms'])} ms", f"{r['throttled_periods']} of {r['periods']}", f"{num(r['throttled_ms'])} ms"]
            for r in runs])
    runs = [r for r in runs if r["rate"] == max(RATES)]  # the chart: the rate near the smaller quota
    labels = [f"{r['cpus']:g}/{r['threads']}" for r in runs]
    return {"bench-quota.md": lines, "bench-quota.svg": [chart(
        f"step-06 at {max(RATES):,} requests/s in a CPU quota, worker threads at it (1) or above it (8)",
        "CPU quota / worker threads", labels,
        [("p99 latency (ms)", [r["p99_ms"] for r in runs]), ("slowest answer (ms)", [r["max_ms"] for r in runs]),
         ("periods throttled (%)", [round(100 * r["throttled_periods"] / max(r["periods"], 1)) for r in runs])])]}


def tracing_cost(binary, args, workdir):
    """Step-10's `GET /api/items/{id}` with traces off, sampled at 10 % and at 100 %, exported to its otlp-sink
    (on the server's CPU, as a sidecar shares the instance's): alternating runs, the median of each."""
    (rounds, seconds), db, item = (1, 1) if args.quick else (3, 5), database("step-10-tracing"), None
    with Server(Path(binary).with_name("otlp-sink"), workdir / "otlp-sink.log") as sink:
        sink.ready("/spans")
        otlp = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.port}", "OTEL_TRACES_SAMPLER": "traceidratio"}
        variants = {"off": {}, "10 %": {**otlp, "OTEL_TRACES_SAMPLER_ARG": "0.1"}, "100 %": otlp}
        runs = {name: [] for name in variants}
        for _ in range(rounds):
            for name, env in variants.items():  # alternate: drift hits all alike
                log(f"step-10 GET /api/items/{{id}}, traces {name}")
                with Server(binary, workdir / "step-10.log", DATABASE_URL=db, **env) as server:
                    server.ready("/readyz")
                    item = item or f"/api/items/{send(server.port, 'POST', '/api/items', ITEM)['id']}"
                    wrk(server.port, item, 64, 1, BENCH_NO_TRACE="1")
                    runs[name].append(wrk(server.port, item, 64, seconds, BENCH_NO_TRACE="1"))
    return {"rounds": rounds, "seconds": seconds, "variants": {n: {
        "rps_median": statistics.median(r["rps"] for r in rs), "p99_ms_median": statistics.median(r["p99_ms"] for r in rs),
        "non2xx": sum(r["non2xx"] for r in rs)} for n, rs in runs.items()}}


def render_tracing(report):
    """bench-tracing.md: what step-10's traces cost."""
    t = report["tracing"]
    off = t["variants"]["off"]
    return {"bench-tracing.md": [stamp(report), "", f"step-10, `GET /api/items/{{id}}` (PostgreSQL, no upstream), wrk at 64 "
            f"connections, the median of {t['rounds']} alternating {t['seconds']} s runs per setting."] + table(
        "traces:<|req/s:>|against off:>|p99:>|non-2xx:>", [
            [name, num(v["rps_median"]), f"{100 * (v['rps_median'] / max(off['rps_median'], 1) - 1):+.1f} %",
             f"{num(v['p99_ms_median'])} ms", v["non2xx"]] for name, v in t["variants"].items()])}


PULL_MB_S = (25, 125, 1250)  # model inputs: 200 Mbit/s, 1 Gbit/s, 10 Gbit/s of image pulled, not platform figures


def render_images(path, out):
    """ship-images.md and .svg from .ci/image-check's measurements: each image's size, the size a pull moves, the
    time from `podman run` to the first 200 with the image local, and the cold-start model (pull + that start)."""
    data = json.loads(Path(path).read_text())
    stamp = stamps.stamp(data["command"], [data["step"]], [".ci/image-check", *(f"Dockerfile.{i['kind']}" for i in data["images"])])
    model = lambda i, bw: i["gzip_bytes"] / 1e6 / bw * 1e3 + statistics.median(i["cold_ms"])
    lines = [f"*`{data['step']}`, measured {datetime.date.today()} by `.ci/image-check` with podman (runc, host network); "
             "the base images are local stand-ins (see the script), so only the scratch row's sizes are what Docker builds "
             "from the real bases. Start: `podman run` to the first 200 on the health path, the image already local, "
             "median (min–max) of 5 runs. Model: the gzipped image pulled at each bandwidth, plus that start.*"]
    lines += table("image:<|size:>|gzipped (a pull):>|start, image local:>|" + "|".join(
        f"model at {bw * 8 / 1000:g} Gbit/s:>" for bw in PULL_MB_S), [
        [f"`Dockerfile.{i['kind']}`", mb(i["bytes"]), mb(i["gzip_bytes"]),
         f"{statistics.median(i['cold_ms']):.0f} ms ({min(i['cold_ms']):.0f}–{max(i['cold_ms']):.0f})",
         *(f"{model(i, bw):,.0f} ms" for bw in PULL_MB_S)] for i in data["images"] if i["cold_ms"]])
    svg = chart(f"Cold start by image kind ({data['step']}): measured start, and the model with a 1 Gbit/s pull",
                "image", [i["kind"] for i in data["images"]],
                [("podman run → first 200 (ms)", [statistics.median(i["cold_ms"]) for i in data["images"]]),
                 ("gzipped image (MB)", [round(i["gzip_bytes"] / 1e6, 1) for i in data["images"]]),
                 ("model: pull at 1 Gbit/s + start (ms)", [round(model(i, 125)) for i in data["images"]])])
    write_files({"ship-images.md": lines, "ship-images.svg": [svg]}, out, stamps.line(stamp) + "\n")


def release_profile(step, static, target_dir, args, workdir):
    log('release profile: static step-04 with opt-level = "z" (separate target dir)')
    z = build(["step-04"], target_dir / "bench-opt-z", "--release", "--target", TARGET,
              env={**STATIC, "CARGO_PROFILE_RELEASE_OPT_LEVEL": "z"})
    binaries = {"3": static["step-04"], "z": z["step-04"]}
    result = alternate({level: (binary, {}) for level, binary in binaries.items()}, step["health"], args, workdir)
    for level, binary in binaries.items():
        result["variants"][level]["size_bytes"] = os.path.getsize(binary)
    return result


def cargo_seconds(target, *args):
    t0 = time.monotonic()
    env = {**os.environ, "CARGO_TARGET_DIR": str(target)}
    subprocess.run(["cargo", "build", *args], cwd=ROOT, capture_output=True, env=env)
    return round(time.monotonic() - t0, 2)


def build_times(step, target_dir, quick):
    """A clean debug build of the workspace (full runs), and a step's rebuild after an edit."""
    result = {}
    if not quick:
        log("clean debug build of the whole workspace (fresh target dir)")
        shutil.rmtree(clean := target_dir / "bench-clean-build", ignore_errors=True)
        result["clean_workspace_debug_s"] = cargo_seconds(clean, "--workspace")
        shutil.rmtree(clean, ignore_errors=True)
    handler = next(f for f in (step["dir"] / "src/api.rs", step["dir"] / "src/lib.rs") if f.exists())
    cargo_seconds(target_dir, "-p", step["package"])  # up to date first
    log(f"rebuild of {step['package']} after touching {handler.relative_to(ROOT)}")
    handler.touch()
    return {**result, "rebuild_step": step["package"], "rebuild_touched": str(handler.relative_to(ROOT)),
            "rebuild_debug_s": cargo_seconds(target_dir, "-p", step["package"])}


def num(x):
    return "–" if x is None else f"{x:,.2f}" if isinstance(x, float) else f"{x:,}"


def mb(n):
    return "–" if n is None else f"{n / 1e6:.2f} MB"


def mib(kib):
    return "–" if kib is None else f"{kib / 1024:.1f} MiB"


def table(header, rows):
    """A Markdown table: `header` is `name:align|…` (align `<`, `>` or `^`), rows lists of cells."""
    names, aligns = zip(*(h.rsplit(":", 1) for h in header.split("|")))
    rule = {"<": "---", ">": "---:", "^": ":---:"}
    return ["", "| " + " | ".join(names) + " |", "|" + "|".join(rule[a] for a in aligns) + "|"] + [
        "| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def rows_by_kind(entry):
    """{(method, "health" or the route, connections): run} of a measured entry: the rows two servers share."""
    return {(r["method"], "health" if r["route"] == entry["health_path"] else r["route"], r["connections"]): r
            for r in entry.get("runs", [])}


def targets(report):
    """Issue 17's targets and step-04's own, each beside the figure measured in this run."""
    by = {s["package"]: s for s in report["steps"] if s.get("runs")}
    if "step-04" not in by:
        return ["", "*Targets: step-04 was not measured (it did not build or serve).*"]
    verdict = lambda ok: "yes" if ok else "**no**"
    label = lambda k: f"{'the health route' if k[1] == 'health' else f'`{k[0]} {k[1]}`'}, {k[2]} conns"
    rows, s04, go = [], rows_by_kind(by["step-04"]), rows_by_kind(by[GO]) if GO in by else {}
    for key, r in s04.items():
        if g := go.get(key):
            rows.append([f"{label(key)}: step-04 ≥ 1.8× Go", f"{num(r['rps'])} ÷ {num(g['rps'])} = "
                         f"{r['rps'] / max(g['rps'], 1):.2f}×", verdict(r["rps"] >= 1.8 * g["rps"])])
    if not go:
        rows.append(["step-04 ≥ 1.8× Go", "the Go twin was not measured (no Go toolchain)", "–"])
    rows += [[f"{label(k)}: step-04 p99 ≤ 2 ms", f"{num(r['p99_ms'])} ms (Go: {num(go[k]['p99_ms']) if k in go else '–'} ms)",
              verdict(r["p99_ms"] <= 2)] for k, r in s04.items() if k[2] == 64]
    # Each step that grows from the item service (`grows-from` in its Cargo.toml), against that step; step-06
    # against step-04 from the runs that took turns (`side_by_side`), when they ran.
    sbs = report.get("side_by_side") or {}
    turns = {("GET" if r["method"] == "GET" else "POST", "health" if r["route"] == "health" else r["route"],
              r["connections"]): r for r in sbs.get("rows", []) if "step-04" in r and "step-06" in r}
    # Each step that grows from the item service (`grows-from` in its Cargo.toml), against that step.
    for child, parent in ((s["package"], s.get("grows_from")) for s in report["steps"]):
        if child in by and parent in by and parent >= "step-04":
            mine, theirs = rows_by_kind(by[child]), rows_by_kind(by[parent])
            memory = lambda name: not next(s for s in report["steps"] if s["package"] == name).get("database")
            for key in [k for k in mine if k in theirs and (k[1] == "health" or memory(child) == memory(parent))]:
                r, p = mine[key], theirs[key]
                once = f"{num(r['rps'])} ÷ {num(p['rps'])} = {r['rps'] / max(p['rps'], 1):.2f}×"
                if (alt := turns.get(key)) and (child, parent) == ("step-06", "step-04"):
                    a, b = alt["step-06"], alt["step-04"]
                    rows.append([f"{label(key)}: {child} ≥ 0.9× {parent}", f"{num(a)} ÷ {num(b)} = {a / max(b, 1):.2f}× "
                                 f"taking turns (the rows above: {once.rsplit(' = ', 1)[1]})", verdict(a >= 0.9 * b)])
                    continue
                rows.append([f"{label(key)}: {child} ≥ 0.9× {parent}", once, verdict(r["rps"] >= 0.9 * p["rps"])])
    for name in ("step-04", "step-06", GO):
        if t := by.get(name, {}).get("sigterm_after_post"):
            rows.append([f"{name}: SIGTERM → exit after the POST load ≤ 50 ms" if name != GO else f"{name}: SIGTERM → exit "
                         "after the POST load (for comparison)", f"{num(t['ms'])} ms, {num(t['items'])} items, exit "
                         f"{t['exit_code']}", verdict(t["ms"] is not None and t["ms"] <= 50) if name != GO else "–"])
    s, ng = by["step-04"], by.get(NGINX)
    if ng and (r := s04.get(("GET", "health", 64))):
        n = rows_by_kind(ng).get(("GET", "health", 64))
        rows.append(["`GET /health`, 64 conns: step-04 ≥ 0.7× nginx's fixed 200",
                     f"{num(r['rps'])} ÷ {num(n['rps'])} = {r['rps'] / max(n['rps'], 1):.2f}×", verdict(r["rps"] >= 0.7 * n["rps"])])
    cold, cold_static = s["cold_start_ms"]["median"], s.get("cold_start_static_ms", {}).get("median")
    rows += [["step-04 cold start ≤ 2.5 ms median", f"{cold} ms (static: {num(cold_static)} ms)", verdict(min(cold, cold_static or cold) <= 2.5)],
             ["step-04 idle RSS ≤ 3 MB", mb(s["rss_idle_kib"] * 1024), verdict(s["rss_idle_kib"] * 1024 <= 3e6)],
             ["step-04 static stripped binary ≤ 2 MB", mb(s["static_size_bytes"]), verdict((s["static_size_bytes"] or 3e6) <= 2e6)]]
    b = report.get("build_times") or {}
    if "clean_workspace_debug_s" in b:
        rows.append(["clean build of the workspace ≤ 3 min", f"{b['clean_workspace_debug_s']} s", verdict(b["clean_workspace_debug_s"] <= 180)])
    if "rebuild_debug_s" in b:
        rows.append([f"rebuild after a handler edit ≤ 10 s ({b['rebuild_step']})", f"{b['rebuild_debug_s']} s", verdict(b["rebuild_debug_s"] <= 10)])
    lines = ["", "The targets, each beside what this run measured (req/s from the table above" + (
        f"; step-06 against step-04 from {sbs['rounds']} run{'s' if sbs['rounds'] > 1 else ''} of {sbs['seconds']} s "
        "each (the median), in which the two took turns, each on a fresh server" if turns else "") + "):"]
    lines += table("target:<|measured:>|met?:^", rows)
    lines += where_the_time_goes(report, by)
    memory = [(name, m) for name in ("step-04", "step-06", GO) if (m := by.get(name, {}).get("memory_per_item"))]
    lines += table("memory per stored item:<|items stored by the POST runs:>|resident memory added:>|bytes per item:>", [
        [name, num(m["items"]), mib(m["rss_after_kib"] - m["rss_before_kib"]),
         num(round((m["rss_after_kib"] - m["rss_before_kib"]) * 1024 / max(m["items"], 1)))] for name, m in memory])
    if lc := report.get("logging_cost"):
        info, warn = lc["variants"]["info"], lc["variants"]["warn"]
        lines += ["", f"Per-request logging on step-04 (`GET /health`, 64 connections, median of {lc['rounds']} alternating "
                  f"{lc['seconds']} s runs): `RUST_LOG=info` (a line per request, to a file) {info['rps_median']:,.0f} req/s, "
                  f"p99 {info['p99_ms_median']} ms; `RUST_LOG=warn` (no request lines) {warn['rps_median']:,.0f} req/s, "
                  f"p99 {warn['p99_ms_median']} ms: logging costs "
                  f"{100 * (1 - info['rps_median'] / max(warn['rps_median'], 1)):.0f} % of the throughput."]
    return lines


def chart(title, xlabel, labels, panels):
    """An SVG bar chart, as text: one panel per (axis label, values), side by side, over the same x labels."""
    width, out = 40 + 300 * len(panels), []
    for i, (ylabel, values) in enumerate(panels):  # each panel: x from x0, 240 wide; y from 200 (0) up to 40 (top)
        x0, step, peak = 70 + 300 * i, 240 / len(values), max([v for v in values if v] or [1])
        top = next(f * 10 ** math.floor(math.log10(peak)) for f in (1, 2, 5, 10) if f * 10 ** math.floor(math.log10(peak)) >= peak)
        out += [f'<text transform="translate({x0 - 48},120) rotate(-90)" text-anchor="middle">{ylabel}</text>',
                f'<text x="{x0 + 120}" y="240" text-anchor="middle">{xlabel}</text>',
                f'<path d="M{x0},40V200H{x0 + 240}" fill="none" stroke="#333"/>']
        out += [f'<text x="{x0 - 4}" y="{204 - 160 * t / top}" text-anchor="end">{t:,g}</text>' for t in (0, top / 2, top)]
        for j, (label, v) in enumerate(zip(labels, values)):
            x, bar, text = x0 + step * (j + 0.5), 160 * (v or 0) / top, "–" if v is None else f"{v / 1e3:.3g} k" if v >= 1e3 else f"{v:.3g}"
            out += [f'<rect x="{x - 0.35 * step:.1f}" y="{200 - bar:.1f}" width="{0.7 * step:.1f}" height="{bar:.1f}" fill="#4a7ab5"/>',
                    f'<text x="{x:.1f}" y="214" text-anchor="middle">{label}</text>',
                    f'<text x="{x:.1f}" y="{197 - bar:.1f}" text-anchor="middle" font-size="9">{text}</text>']
    return "\n".join([f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="260" viewBox="0 0 {width} 260" '
                      'font-family="sans-serif" font-size="11">', f"<title>{html.escape(title)}</title>",
                      '<rect width="100%" height="100%" fill="#fff"/>',
                      f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="13">{html.escape(title)}</text>', *out, "</svg>"])


def stamp(report):
    m, git = report["machine"], report["git"]
    busy = max(report["loadavg_start"], report["loadavg_end"]) > 0.7
    dirty = f" + {git['dirty_paths']} uncommitted paths" if git["dirty_paths"] else ""
    return (f"*Measured {report['date'][:10]} by `.ci/bench` ({report['mode']} run) on {m['cpus']} cores ({m['cpu_model']}), "
            f"{m['rustc']}; load average {report['loadavg_start']} at start and {report['loadavg_end']} at the end"
            + (": **a shared machine with other work running**, so read ratios, not absolutes" if busy else "")
            + f". Git: {git['commit']}{dirty}.*")


def render_database(report):
    """bench-postgres.md (step-07 against its targets, the pool sweep) and bench-grpc.md (step-08)."""
    by = {s["package"]: s for s in report["steps"] if "skipped" not in s}
    lines = [stamp(report), "", "Server pinned to CPU 0, load generator on CPU 1, PostgreSQL (local; fsync and synchronous "
             "commit off: nothing waits for a disk) free to run on both."]
    grpc = lines + ["", "*Step-08 was not measured.*"]
    if s := by.get("step-07"):
        runs = {(r["method"], r["route"]): r for r in s["runs"] if r["connections"] == 64}
        rows = [(m, limit, r) for m, limit in (("GET", 15000), ("POST", 8000))
                if (r := runs.get((m, "/api/items/{id}" if m == "GET" else "/api/items")))]
        lines += table("step-07 at 64 connections:<|req/s:>|p99:>|target:<|met?:^", [
            [f"`{m} {r['route']}`", num(r["rps"]), f"{num(r['p99_ms'])} ms", f"≥ {limit:,} req/s, p99 ≤ 20 ms",
             "yes" if r["rps"] >= limit and r["p99_ms"] <= 20 else "**no**"] for m, limit, r in rows])
        lines += table("DB_MAX_CONNECTIONS:>|`GET /api/items/{id}` req/s:>|p50:>|p99:>|non-2xx:>", [
            [r["pool"], num(r["rps"]), f"{num(r['p50_ms'])} ms", f"{num(r['p99_ms'])} ms", r["non2xx"]]
            for r in s.get("pool_sweep", [])])
    if g := by.get("step-08", {}).get("grpc"):
        grpc = lines[:3] + table("step-08, h2c, 64 connections × 1 stream:<|req/s:>|p50:>|p99:>|failed:>", [
            [f"{r['protocol']} `{r['route']}`", num(r["rps"]), f"{num(r['p50_ms'])} ms", f"{num(r['p99_ms'])} ms", r["failed"]]
            for r in g])
    return {"bench-postgres.md": lines if "step-07" in by else lines + ["", "*Step-07 was not measured.*"],
            "bench-grpc.md": grpc}


def render_resilience(report):
    """bench-resilience.md and .svg: step-09 in front of a failing inventory, its defences on and off."""
    res, modes = report["resilience"], {"ok": "well", "flaky": "fails ½", "fail": "down"}
    share = lambda n, r: f"{100 * n / max(r['requests'], 1):.1f} %"
    lines = [stamp(report), "", f"step-09, `GET /api/items/{{id}}`, wrk at 64 connections for {res['seconds']} s per "
             "inventory state, in this order; in both runs `UPSTREAM_TIMEOUT` 1 s, 3 attempts, and "
             "`UPSTREAM_MAX_CONCURRENCY=64`: the bulkhead never refuses, so the rows compare the breaker and the budget alone."]
    lines += table("breaker + budget:<|inventory:<|req/s:>|p50:>|p99:>|degraded:>|errors:>|inventory received:>|"
                   "per request:>", [[r["defences"], modes[r["inventory"]], num(r["rps"]), f"{num(r['p50_ms'])} ms",
                                      f"{num(r['p99_ms'])} ms", share(r["degraded"], r),
                                      share(r["non2xx"] + sum(r["errors"].values()), r), num(r["upstream_requests"]),
                                      f"{r['upstream_requests'] / max(r['requests'], 1):.2f}"] for r in res["runs"]])
    bad = sorted((r for r in res["runs"] if r["inventory"] != "ok"), key=lambda r: r["inventory"] == "fail")
    return {"bench-resilience.md": lines, "bench-resilience.svg": [chart(
        "step-09 while its inventory fails: breaker and retry budget on or off", "breaker + budget, inventory",
        [f"{r['defences']}, {modes[r['inventory']].split()[-1]}" for r in bad],
        [("p99 latency (ms)", [r["p99_ms"] for r in bad]),
         ("answers without stock (%)", [100 * r["degraded"] / max(r["requests"], 1) for r in bad]),
         ("inventory requests per answer", [round(r["upstream_requests"] / max(r["requests"], 1), 2) for r in bad])])]}


def render(report):
    steps = [s for s in report["steps"] if "skipped" not in s]
    lines = [stamp(report)]
    cold = lambda c: f"{c['median']:.2f} ms ({c['p90']:.2f})" if c else "–"
    lines += table("step:<|binary:>|static, stripped:>|cold start median (p90):>|cold start, static:>|idle RSS:>|"
                   "peak RSS after load:>", [[s["package"], s["skipped"], "", "", "", "", ""] if "skipped" in s else [
                       s["package"], mb(s["size_bytes"]), mb(s["static_size_bytes"]), cold(s["cold_start_ms"]),
                       cold(s.get("cold_start_static_ms")), mib(s["rss_idle_kib"]), mib(s["rss_peak_kib"])]
                       for s in report["steps"]])
    cpu = lambda r: f"{r['user_us']:.1f} + {r['system_us']:.1f} µs" if "user_us" in r else "–"
    lines += table("step:<|request:<|conns:>|req/s:>|p50:>|p99:>|CPU per request, user + kernel:>|non-2xx:>|"
                   "socket errors:>", [
        [s["package"], f"`{r['method']} {r['route']}`", r["connections"], num(r["rps"]), f"{num(r['p50_ms'])} ms",
         f"{num(r['p99_ms'])} ms", cpu(r), r["non2xx"], sum(r["errors"].values())] for s in steps for r in s["runs"]])
    lines += table("step:<|responses during the run (64 conns):>|SIGTERM → exit:>|exit code:>|non-2xx:>|read errors:>|"
                   "timeouts:>|refused after close:>", [
                       [s["package"], num(d["requests"]), f"{num(d['sigterm_to_exit_ms'])} ms", d["exit_code"], d["non2xx"],
                        d["errors"]["read"], d["errors"]["timeout"], d["errors"]["connect"] + d["errors"]["write"]]
                       for s in steps if (d := s.get("drain"))])
    lines += ["", "Drain: SIGTERM half-way through the wrk run (steps that handle it; the columns are explained "
              "under [Graceful drain](#what-each-number-means-on-cloud-run))."]
    if b := report.get("build_times"):
        clean = b.get("clean_workspace_debug_s")
        clean = f"clean debug build of the workspace: **{clean} s**; " if clean else ""
        lines += ["", f"Build times (dependencies already downloaded): {clean}rebuild of `{b['rebuild_step']}` after "
                  f"touching `{b['rebuild_touched']}`: **{b['rebuild_debug_s']} s**."]
    poll = statistics.median([s["cold_start_ms"]["poll_us"] for s in steps] or [0])
    lines += ["", f"Cold start: {report['method']['cold_start_runs']} runs per binary, server pinned to CPU {SERVER_CPU}, "
              f"poller on CPU {LOAD_CPU}; a tight loop of connects (one attempt every ≈ {poll:.0f} µs: the resolution). "
              f"Loads: wrk -t1 on CPU {LOAD_CPU}, {report['method']['load_seconds']} s per row after a 1 s warm-up, "
              f"server on CPU {SERVER_CPU}, server log to a file."]
    return lines + targets(report)


def render_shedding(report):
    if not (runs := report.get("shedding")):
        return ["*Load shedding was not measured: step-06 did not build or serve.*"]
    rate = lambda n, r: num(round(n / r["seconds"]))
    return [f"*step-06, `GET /debug/slow` at 256 connections, one worker thread (the server pinned to one CPU), "
            f"measured {report['date'][:10]} ({report['mode']} run); latencies are of every answer, 503s included.*"] + table(
        "work per request:<|MAX_CONCURRENCY:>|answered/s:>|503/s:>|p50:>|p99:>|timeouts (2 s):>",
        [[r["work"], r["max_concurrency"], rate(r["requests"] - r["non2xx"], r), rate(r["non2xx"], r),
          f"{num(r['p50_ms'])} ms", f"{num(r['p99_ms'])} ms", r["errors"]["timeout"]] for r in runs])


def render_release_profile(report):
    if not (rp := report.get("release_profile")):
        return ["*The release-profile comparison did not run (step-04 did not build, or --no-release-profile).*"]
    a, b = rp["variants"]["3"], rp["variants"]["z"]
    return [f"*step-04, `GET {rp['route']}` at 64 connections, median of {rp['rounds']} alternating {rp['seconds']} s "
            f"wrk runs per level; {report['date'][:10]}, {report['mode']} run, load average {report['loadavg_end']}.*"] + table(
        "opt-level:<|static binary:>|req/s:>|p99:>",
        [[name, mb(v["size_bytes"]), num(v["rps_median"]), f"{num(v['p99_ms_median'])} ms"]
         for name, v in (("3 (the workspace's)", a), ('"z"', b))]) + [
        "", f"\"z\" is {100 * (1 - b['size_bytes'] / a['size_bytes']):.0f} % smaller and serves "
            f"{b['rps_median'] / max(a['rps_median'], 1):.2f}× the requests per second of 3. Both static (`+crt-static`), "
            "stripped, fat LTO, one codegen unit."]


def write(report, out, name="bench.json"):
    """The report (`name`) and the tables and charts from it, so that they can be redrawn without measuring again;
    without "steps" (--only), only the part's."""
    (out / name).write_text(json.dumps(report, indent=2, default=str) + "\n")
    note = stamps.line(report["stamp"]) + "\n"
    files = render_resilience(report) if report.get("resilience") else {}
    files |= {"bench-shedding.md": render_shedding(report)} if report.get("shedding") else {}
    files |= render_cpu_quota(report) if report.get("cpu_quota") else {}
    files |= render_tracing(report) if report.get("tracing") else {}
    if "steps" not in report:
        return write_files(files, out, note, name)
    health = [(s["package"][-2:] if s["package"].startswith("step-") else s["package"].split()[0], next(r for r in s["runs"] if r["connections"] == 64)) for s in report["steps"] if s.get("runs")]
    pool = next((s["pool_sweep"] for s in report["steps"] if s.get("pool_sweep")), [])
    files |= {"bench.md": render(report),
             "release-profile.md": render_release_profile(report), **render_database(report),
             "bench-steps.svg": [chart("Each step's health route, 64 connections", "step", [n for n, _ in health],
                                       [("requests per second", [r["rps"] for _, r in health]),
                                        ("p99 latency (ms)", [r["p99_ms"] for _, r in health])])]}
    if pool:
        files["bench-pool.svg"] = [chart("step-07, GET /api/items/{id}, 64 connections", "DB_MAX_CONNECTIONS",
                                         [r["pool"] for r in pool], [("requests per second", [r["rps"] for r in pool]),
                                                                     ("p99 latency (ms)", [r["p99_ms"] for r in pool])])]
    write_files(files, out, note, name)


def write_files(files, out, note, name=None):
    for file, lines in files.items():
        (out / file).write_text(note + "\n".join(lines) + "\n")
    log(f"wrote {', '.join(([name] if name else []) + list(files))} to {out}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every measurement, briefly (numbers indicative only)")
    parser.add_argument("--out", type=Path, help="default: book/src/generated, or target/bench-quick with --quick")
    parser.add_argument("--steps", nargs="*", help="only these packages, e.g. step-04")
    parser.add_argument("--no-build-times", action="store_true", help="skip the build timings")
    parser.add_argument("--no-release-profile", action="store_true", help='skip opt-level 3 vs "z" (a release build)')
    parser.add_argument("--only", choices=["shedding", "cpu_quota", "resilience", "tracing"], help="only step-06's "
                        "load shedding (bench-shedding.*), step-06 in a CPU quota (bench-quota.*; root), step-09 "
                        "against a failing inventory (bench-resilience.*), or step-10's traces (bench-tracing.*)")
    parser.add_argument("--images", type=Path, help="only draw ship-images.{md,svg} from .ci/image-check's JSON")
    args = parser.parse_args()
    if args.images:
        return render_images(args.images, args.out or ROOT / "book/src/generated")
    args.steps = [{"shedding": "step-06", "cpu_quota": "step-06", "resilience": "step-09", "tracing": "step-10"}[args.only]] if args.only else args.steps
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("bench: needs two CPUs (server on one, load generator on the other)")
    args.cold_runs, args.load_seconds, args.drain_seconds = (5, 1, 2) if args.quick else (30, 8, 4)
    target_dir = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")).resolve()
    out = args.out or (target_dir / "bench-quick" if args.quick else ROOT / "book/src/generated")
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    git = lambda *a: subprocess.run(["git", *a], cwd=ROOT, text=True, capture_output=True).stdout.strip()
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "unknown")
    report = {
        "mode": "quick" if args.quick else "full",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "cpu_model": cpu, "kernel": os.uname().release,
                    "rustc": subprocess.run(["rustc", "-V"], text=True, capture_output=True).stdout.strip(),
                    **{tool: subprocess.run(argv, text=True, capture_output=True).stdout.strip() or None
                       for tool, argv in (("go", ["go", "version"]),) if shutil.which(tool)}},
        "git": {"commit": git("rev-parse", "--short", "HEAD"), "dirty_paths": len(git("status", "--porcelain").splitlines())},
        "loadavg_start": round(os.getloadavg()[0], 2),
        "method": {"cold_start_runs": args.cold_runs, "load_seconds": args.load_seconds, "drain_seconds": args.drain_seconds},
        "steps": [],
    }
    steps = []
    for manifest in sorted(ROOT.glob("steps/*/Cargo.toml")):
        package = tomllib.loads(manifest.read_text())["package"]
        workshop = package.get("metadata", {}).get("workshop", {})
        if workshop.get("health") and (not args.steps or package["name"] in args.steps):
            db = workshop.get("database", False)  # loads wait for /readyz: the database is reachable
            steps.append({"package": package["name"], "dir": manifest.parent, "health": workshop["health"],
                          "grows_from": workshop.get("grows-from"),
                          "database": db, "ready": "/readyz" if db else workshop["health"], "env": {}})
    packages = [s["package"] for s in steps]
    # What the files written describe: the steps measured (with the steps they build on) and this harness.
    report["stamp"] = stamps.stamp(" ".join([".ci/bench", *sys.argv[1:]]), packages,
                                   [".ci/bench", ".ci/bench.d", "Cargo.lock", "Cargo.toml"])
    log(f"release builds (as built, and static) of {', '.join(packages)} in {target_dir}")
    built = build(packages, target_dir, "--release")
    if args.only:  # no other measurement, and no report of the steps
        steps = []
        del report["steps"]
    static = build([s["package"] for s in steps if not (args.quick and s["database"])], target_dir, "--release",
                   "--target", TARGET, env=STATIC)  # --quick: no second build of sqlx and tonic
    if any(s["package"] == "step-04" for s in steps):  # step-04's yardsticks, in the same run
        for entry, binary in yardsticks(workdir, target_dir):
            steps.append(entry)
            built[entry["package"]] = binary
            static[entry["package"]] = binary if entry["package"] == GO else None
    errors = (RuntimeError, TimeoutError, OSError, ValueError, subprocess.SubprocessError, StopIteration, LookupError)
    for step in steps:
        entry = {"package": step["package"], "health_path": step["health"], "grows_from": step.get("grows_from"),
                 "database": step["database"], "skipped": "does not build"}
        if step["database"] and "DATABASE_URL" not in os.environ:
            entry["skipped"] = "needs PostgreSQL"
        elif step["package"] in built:
            try:
                del entry["skipped"]
                if step["database"]:
                    step["env"] = {"DATABASE_URL": database(step["package"])}
                entry.update(measure_step(step, built[step["package"]], static.get(step["package"]), args,
                                          workdir / f"{step['package']}.log"))
            except errors as error:
                log(f"{step['package']}: {error}")
                entry["skipped"] = f"failed: {error}"
        report["steps"].append(entry)
    step04 = next((s for s in steps if s["package"] == "step-04" and s["package"] in built), None)
    extras = {}  # each optional: one failing must not lose the tables
    if step04:
        extras["logging_cost"] = lambda: alternate({level: (built["step-04"], {"RUST_LOG": level})
                                                    for level in ("info", "warn")}, step04["health"], args, workdir)
    if step04 and "step-04" in static and not args.no_release_profile:
        extras["release_profile"] = lambda: release_profile(step04, static, target_dir, args, workdir)
    if step04:
        extras["instructions"] = lambda: instructions(built, steps, args, workdir)
    if step04 and "step-06" in built and any(s["package"] == "step-06" for s in steps):
        extras["side_by_side"] = lambda: side_by_side(steps, built, args, workdir)
    if step04 and not args.no_build_times:
        extras["build_times"] = lambda: build_times(step04, target_dir, args.quick)
    for key, step, measure, db in (("shedding", "step-06", shedding, False), ("cpu_quota", "step-06", cpu_quota, False),
                                   ("resilience", "step-09", resilience, True),
                                   ("tracing", "step-10", tracing_cost, True)):
        if step in built and ("DATABASE_URL" in os.environ or not db) and args.only in (None, key):
            extras[key] = lambda measure=measure, step=step: measure(built[step], args, workdir)
        elif args.only == key:
            sys.exit(f"bench: --only {key} needs {step} built" + (" and PostgreSQL" if db else ""))
    for key, measure in extras.items():
        try:
            report[key] = measure()
        except errors as error:
            log(f"{key}: {error}")
    report["loadavg_end"] = round(os.getloadavg()[0], 2)
    write(report, out, f"bench-{args.only}.json" if args.only else "bench.json")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

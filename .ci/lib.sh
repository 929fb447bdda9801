# Shared by the .ci scripts (sourced): checks counted, Debian tools, health paths, servers.
passed=0 failed=0 pids=() pg=() pgdir=
pass() { echo "ok: $*"; passed=$((passed + 1)); }
fail() { echo "FAILED: $*" >&2; failed=$((failed + 1)); }
check() { if "${@:2}"; then pass "$1"; else fail "$1"; fi; } # check LABEL CMD…
work=$(mktemp -d)
cleanup() {
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    [[ ${#pg[@]} == 0 ]] || "${pg[@]}" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$work" ${pgdir:+"$pgdir"}
}
trap cleanup EXIT
trap 'exit 143' INT TERM # so that the EXIT clean-up runs then too

# need CMD[:PACKAGE]…: installs what is missing from Debian's packages as root; without root,
# says what is missing and fails.
need() {
    local missing=() tool
    for tool in "$@"; do command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}"); done
    [[ ${#missing[@]} == 0 ]] && return 0
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >/dev/null
    else
        echo "missing: ${missing[*]} (as root: apt-get install ${missing[*]})" >&2
        return 1
    fi
}

# health_path STEP: the path the step answers 200 on (`health` under [package.metadata.workshop]).
health_path() {
    cargo metadata --no-deps --format-version 1 | jq -er --arg step "$1" \
        '.packages[] | select(.name == $step) | .metadata.workshop.health' ||
        { echo "$1 names no health path: add health = \"/…\" under [package.metadata.workshop]" >&2; return 1; }
}

# start NAME CMD…: runs CMD with PORT=0 and its output in $work/NAME.log until it prints
# `listening on ADDR:PORT`; sets $server (its pid) and $port. Fails if CMD exits first or 10 s pass.
start() {
    local name=$1 _
    shift
    PORT=0 RUST_LOG=info "$@" >"$work/$name.log" 2>&1 &
    server=$!
    pids+=("$server")
    for _ in $(seq 100); do
        port=$(sed -n 's/.*listening on [0-9.]*:\([0-9]\+\).*/\1/p' "$work/$name.log" | head -n 1)
        [[ -n $port ]] && return 0
        kill -0 "$server" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

millis() { echo $(($(date +%s%N) / 1000000)); }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# first_200 PORT PATH T0_NS: prints the ms from T0 (`date +%s%N`) to the first 200 on PATH, polling
# every millisecond; fails after 10 s.
first_200() {
    python3 -c '
import socket, sys, time
port, path, t0 = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
request = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
while time.time_ns() - t0 < 10e9:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(request)
            if s.recv(12) == b"HTTP/1.1 200":
                sys.exit(print(round((time.time_ns() - t0) / 1e6, 1)))
    except OSError:
        time.sleep(0.001)
sys.exit(1)' "$@"
}

# postgres: unless DATABASE_URL is set, starts a throwaway PostgreSQL the way tests/src/postgres.rs
# does (initdb, pg_ctl in a temporary directory, a free port; as root, as the `postgres` user) and
# exports DATABASE_URL (its `postgres` database) and PATH with its programs; stopped at exit.
postgres() {
    [[ -n ${DATABASE_URL:-} ]] && return 0
    local bin as=() port
    bin=$(pg_config --bindir 2>/dev/null) && [[ -x $bin/initdb ]] || bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [[ -x $bin/initdb ]] || { echo "no PostgreSQL: apt-get install postgresql, or set DATABASE_URL" >&2; return 1; }
    pgdir=$(mktemp -d /tmp/pg.XXXXXX) # in /tmp: `postgres` may not enter $TMPDIR
    [[ $(id -u) == 0 ]] && as=(runuser -u postgres --) && chown postgres "$pgdir"
    port=$(free_port)
    "${as[@]}" "$bin/initdb" -D "$pgdir/data" -U postgres --auth=trust --no-sync --locale=C -E UTF8 >/dev/null || return 1
    pg=("${as[@]}" "$bin/pg_ctl" -D "$pgdir/data")
    "${pg[@]}" -l "$pgdir/log" -w -o "-p $port -k $pgdir -c listen_addresses=127.0.0.1 -c max_connections=300 \
        -c fsync=off -c synchronous_commit=off -c full_page_writes=off" start >/dev/null || return 1
    export DATABASE_URL=postgres://postgres@127.0.0.1:$port/postgres PATH=$bin:$PATH
}

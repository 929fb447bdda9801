# Shared by the .ci scripts (sourced): checks counted, Debian tools, health paths, servers.
passed=0 failed=0 pids=()
pass() { echo "ok: $*"; passed=$((passed + 1)); }
fail() { echo "FAILED: $*" >&2; failed=$((failed + 1)); }
check() { if "${@:2}"; then pass "$1"; else fail "$1"; fi; } # check LABEL CMD…
work=$(mktemp -d)
cleanup() {
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    rm -rf "$work"
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

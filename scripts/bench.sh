#!/usr/bin/env bash
# Prints every figure of the performance issue (20), each beside its previous value and target:
#   engine     CPU per job at 10,000 and 100,000 jobs, refresh of 100 hosts, quota at scale
#              (10,000 VMs held), memory per VM held;
#   callgrind  the engine's instructions per job, counted by valgrind's callgrind (they hold
#              still on a busy machine, where times do not);
#   http       the HTTP service: create, get a VM, get a job, list 100 and 1,000 VMs (req/s,
#              latency, server CPU per request);
#   sim        start-up: /readyz with 10,000 VMs in the simulator's state file, and an embedded
#              `hcp vm list` with 100 hosts and 1,000 VMs;
#   postgres   the engine through the PostgreSQL store beside the in-memory store (issue 12):
#              jobs/s, submit p50/p99, CPU per job of HCP and of PostgreSQL, one replica and
#              three; and a tenant's list pages among other tenants' VMs and alone; needs the
#              PostgreSQL peer (scripts/postgres-peer.sh starts it).
# Usage: ./scripts/bench.sh [engine|callgrind|http|sim|postgres]...   (all five when none is named)
# Release builds, in $CARGO_TARGET_DIR. To profile one HTTP request kind for a while:
#   HCP_BENCH_PROFILE=list-1000 HCP_BENCH_SECONDS=60 cargo bench -p hcp-benches --bench http
# (create, get-vm, get-job, list-100 or list-1000), then `perf top -p PID` with the printed PID.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hcp-target}"
fail() { echo "bench: $*" >&2; exit 1; }
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(engine callgrind http sim postgres)

# Builds one bench and prints the path of its executable.
bench_exe() {
    local out
    out="$(cargo bench -p hcp-benches --bench "$1" --no-run 2>&1)" || { echo "$out" >&2; fail "building the $1 bench failed"; }
    sed -n 's/.*Executable .*(\(.*\))$/\1/p' <<<"$out" | tail -1
}

# Prints the instructions the engine bench's jobs part executes with $2 VMs (2 x $2 jobs).
instructions() {
    local exe="$1" vms="$2" log
    log="$(HCP_BENCH_ONLY=jobs HCP_BENCH_JOBS="$vms" valgrind --tool=callgrind \
        --callgrind-out-file=/dev/null "$exe" 2>&1 >/dev/null)" || { echo "$log" >&2; fail "callgrind failed"; }
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p' <<<"$log"
}

for part in "${parts[@]}"; do
    echo "== $part"
    case "$part" in
        engine | http | sim | postgres) cargo bench --quiet -p hcp-benches --bench "$part" ;;
        callgrind)
            command -v valgrind >/dev/null || fail "valgrind is missing: apt-get install valgrind"
            exe="$(bench_exe engine)"
            [ -x "$exe" ] || fail "no engine bench executable"
            # The difference of two runs is what the jobs cost, without start-up and set-up.
            small=1000 large=5000
            a="$(instructions "$exe" "$small")"
            b="$(instructions "$exe" "$large")"
            [ -n "$a" ] && [ -n "$b" ] || fail "callgrind printed no instruction count"
            echo "engine/instructions: create + delete jobs on the simulator, counted by callgrind"
            echo "  $((2 * small)) jobs: $a instructions; $((2 * large)) jobs: $b instructions"
            echo "  -> $(((b - a) / (2 * (large - small)))) instructions per job   (previous: 37,199-37,443 on 960d776 and 71ecda1, built without link-time optimisation; 36,815-36,977 on 6466054, 39,142-39,316 on bd97666, 44,191-44,249 on 551e117, 54,033-54,489 on 2a7b395, 60,382-60,491 on 590c1c5, 76,011 on 62bcc92, 84,960 on 39bfcb6, 110,506 on b3558c7, 179,588 on 27a70bc; target: <= 25,000; floor: ~14,600)"
            ;;
        *) fail "unknown part $part: use engine, callgrind, http, sim or postgres" ;;
    esac
done

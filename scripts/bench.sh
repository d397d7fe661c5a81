#!/bin/sh
# Reproduces every figure of docs/benchmarks.md (issue 7, SPEC §12).
# Usage: scripts/bench.sh [quick]     (quick: small sizes, for a smoke run)
# Needs: go, openssl; for the PostgreSQL rows MESHANICS_BENCH_POSTGRES, a DSN of
# a role that may CREATE DATABASE (each row gets a fresh database), on a server
# with max_connections of at least 120 (each replica pools up to 16 connections;
# six replicas in the last row).
# Prints one line per figure: the command, the load average, the JSON result.
set -eu
cd "$(dirname "$0")/.."
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/" ./cmd/meshanics-bench ./cmd/meshanics-server
b="$bin/meshanics-bench"

run() {
	printf '$ meshanics-bench %s\n' "$*"
	printf '  load average: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
	"$b" "$@" -bin-dir "$bin" -json 2>/dev/null | sed 's/^/  /'
}

fresh_db() { # fresh_db NAME: prints the DSN of a new, empty database
	base=${MESHANICS_BENCH_POSTGRES%%\?*}
	query=${MESHANICS_BENCH_POSTGRES#"$base"}
	psql -q "$MESHANICS_BENCH_POSTGRES" -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" >/dev/null
	printf '%s/%s%s' "${base%/*}" "$1" "$query"
}

if [ "${1:-}" = quick ]; then
	run heartbeat -devices 200 -interval 2s -duration 5s -settle 2s
	run rollout -devices 100 -interval 1s
	run apply -size 64MiB
	run agent -duration 5s
	exit 0
fi

# Control plane on SQLite: the SPEC rate (3,300 heartbeats/s) with as many
# connections as one process may hold, then the SPEC interval.
run heartbeat -devices 19000 -interval 6s -duration 60s
run heartbeat -devices 19000 -interval 30s -duration 60s
# Adaptive interval: the same budget, growing fleets.
for n in 500 1000 2000; do
	run heartbeat -devices $n -interval 10s -heartbeat-budget 50 -duration 30s -settle 15s
done
run rollout -devices 5000 -interval 5s
run apply -size 1GiB -runs 3
run agent -duration 60s
if [ -n "${MESHANICS_BENCH_POSTGRES:-}" ]; then
	run heartbeat -devices 19000 -interval 6s -duration 60s -database "$(fresh_db meshanics_bench_pg1)"
	run heartbeat -devices 38000 -interval 12s -duration 60s -replicas 2 -database "$(fresh_db meshanics_bench_pg2)"
	run heartbeat -devices 60000 -interval 30s -duration 60s -settle 45s -replicas 4 -database "$(fresh_db meshanics_bench_pg4)"
	run heartbeat -devices 100000 -interval 30s -duration 60s -settle 45s -replicas 6 -database "$(fresh_db meshanics_bench_pg6)"
fi

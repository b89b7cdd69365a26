# Shared by the shell benchmarks (benches/*/run.sh), sourced from the repository's root after
# `set -euo pipefail`: the tools they need, the jobq binary, a daemon on a temporary folder.
#
#   bench_setup NAME TOOL...  checks that each TOOL is there, builds jobq (release) unless
#                             JOBQ_BIN names a binary, and makes $work, a temporary folder that is
#                             removed at exit, after the daemon is stopped and the containers of
#                             its store are removed
#   start NAME [LEVEL]        starts `jobq serve --config $work/jobq.toml`, its log at LEVEL
#                             (default info; RUST_LOG wins) in $work/jobq-NAME.log, and sets pid,
#                             addr and instance from its listening line
#   stop [SIGNAL]             sends SIGNAL (default TERM) to the daemon and waits for its end

bench_setup() {
  local name=$1 tool
  shift
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "the benchmark needs $tool" >&2; exit 1; }
  done
  if [[ -z ${JOBQ_BIN:-} ]]; then
    cargo build --release --bin jobq
    JOBQ_BIN=${CARGO_TARGET_DIR:-target}/release/jobq
  fi
  work=$(mktemp -d "${TMPDIR:-/tmp}/jobq-bench-$name-XXXXXX")
  pid=
  instance=
  trap bench_cleanup EXIT
}

bench_cleanup() {
  if [[ -n $pid ]]; then
    stop
  fi
  if [[ -n $instance ]] && command -v docker >/dev/null; then
    docker ps -aq --filter "label=jobq.instance=$instance" | xargs -r docker rm -f >/dev/null
  fi
  rm -rf "$work"
}

start() {
  local log=$work/jobq-$1.log line
  NO_COLOR=1 RUST_LOG=${RUST_LOG:-${2:-info}} "$JOBQ_BIN" serve --config "$work/jobq.toml" \
    >/dev/null 2>"$log" &
  pid=$!
  for _ in $(seq 600); do
    line=$(grep -m1 "jobq is listening" "$log" || true)
    if [[ -n $line ]]; then
      addr=$(sed -E 's/.*addr=([^ ]+).*/\1/' <<<"$line")
      instance=$(sed -E 's/.*instance=([^ ]+).*/\1/' <<<"$line")
      return
    fi
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.1
  done
  echo "jobq did not start" >&2
  exit 1
}

stop() {
  kill -"${1:-TERM}" "$pid"
  wait "$pid" 2>/dev/null || true
  pid=
}

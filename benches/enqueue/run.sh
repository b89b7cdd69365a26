#!/usr/bin/env bash
# Enqueue benchmark (issue 10): durable job creations over HTTP, measured with wrk.
#
#   benches/enqueue/run.sh            # builds release, about 40 s after the build
#
# Builds `jobq` (release; `JOBQ_BIN` names a binary to use instead), builds the demo component
# image through `jobq demo`, and starts `jobq serve` on 127.0.0.1 (a free port) with a fresh data
# dir in a temporary folder and `max_concurrent_jobs = 1`. It stores a configuration, creates one
# job that sleeps, so the only slot is busy and every created job queues behind it, then runs
# `wrk -t2 -c8 -d10s` with post_job.lua: each request is `POST /jobs {"component", "config"}`
# with the token header, answered 201 once its job is durably committed. After wrk the daemon is
# SIGKILLed (no graceful stop that could still write), started again on the same data dir, and
# the jobs in its store are counted: every 201 must be there.
#
# Settings (environment): JOBQ_BENCH_DURATION (wrk's -d, default 10s), JOBQ_BENCH_CONNECTIONS
# (wrk's -c, default 8), JOBQ_BIN, CARGO_TARGET_DIR, TMPDIR, RUST_LOG (the daemon's log, default
# info as `jobq serve`). Needs wrk (apt-get install -y wrk), curl, jq, docker and the engine.
# Exits 1 when a request is answered other than 201 or the store does not hold each 201's job.
set -euo pipefail

cd "$(dirname "$0")/../.."
here=benches/enqueue
duration=${JOBQ_BENCH_DURATION:-10s}
connections=${JOBQ_BENCH_CONNECTIONS:-8}
component=keboola.ex-demo
config=bench
token=bench-$RANDOM$RANDOM

source benches/daemon.sh
bench_setup enqueue wrk curl jq docker

echo "building the demo component image (jobq demo)..."
"$JOBQ_BIN" demo >"$work/demo.log" 2>&1 || { cat "$work/demo.log" >&2; exit 1; }

cat >"$work/jobq.toml" <<EOF
listen = "127.0.0.1:0"
data_dir = "$work/data"
max_concurrent_jobs = 1
[[tokens]]
id = "1"
description = "bench"
token = "$token"
[[components]]
id = "$component"
image = "local/jobq-demo"
tag = "1.0.0"
memory = "64m"
network = "none"
EOF

api() {
  local method=$1 path=$2
  shift 2
  curl -sS --fail-with-body -X "$method" -H "X-StorageApi-Token: $token" \
    -H "Content-Type: application/json" "http://$addr$path" "$@"
}

start first
api POST "/v2/storage/components/$component/configs" \
  -d "{\"configurationId\": \"$config\", \"name\": \"$config\", \"configuration\": {\"parameters\": {}}}" \
  >/dev/null
busy=$(api POST /jobs -d "{\"component\": \"$component\", \"configData\": {\"parameters\": {\"sleep\": 3600}}}" | jq -r .id)
for _ in $(seq 300); do
  status=$(api GET "/jobs/$busy" | jq -r .status)
  [[ $status == processing ]] && break
  sleep 0.2
done
[[ $status == processing ]] || { echo "the busy job is $status, not processing" >&2; exit 1; }
echo "job $busy keeps the only slot busy; wrk -t2 -c$connections -d$duration POST /jobs"

JOBQ_TOKEN=$token JOBQ_COMPONENT=$component JOBQ_CONFIG=$config \
  wrk -t2 -c"$connections" -d"$duration" --latency -s "$here/post_job.lua" "http://$addr/jobs" \
  | tee "$work/wrk.txt"

stop KILL
start again
jobs=0
while :; do
  page=$(api GET "/search/jobs?limit=500&offset=$jobs" | jq length)
  ((page == 0)) && break
  jobs=$((jobs + page))
done
created=$(sed -nE 's/^status 201: ([0-9]+)$/\1/p' "$work/wrk.txt")
created=${created:-0}
others=$(grep -E '^status ' "$work/wrk.txt" | grep -vc '^status 201:' || true)
queued=$((jobs - 1))
echo
echo "201 answers: $created; other answers: $others kinds; jobs in the store after a SIGKILL and a restart: $queued created + the busy one"
# wrk drops the requests in flight when its time is up; the daemon still creates their jobs.
if ((others > 0 || queued < created || queued > created + connections)); then
  echo "FAIL: the store does not hold exactly the jobs answered 201 (and at most $connections in flight)"
  exit 1
fi
echo "ok: every 201's job is in the store ($((queued - created)) more were in flight when wrk stopped)"

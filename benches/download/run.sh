#!/usr/bin/env bash
# Debug-archive download benchmark (issue 10): downloading a 1 GiB debug archive must grow the
# RSS of the daemon and of the CLI by less than 16 MiB each.
#
#   benches/download/run.sh                 # builds release; about 2 minutes, 5 GiB in TMPDIR
#   JOBQ_BENCH_MIB=256 benches/download/run.sh
#
# 1. Makes a debug stage archive in a temporary folder: a zip (python3's zipfile) of
#    `in/files/blob.bin`, JOBQ_BENCH_MIB MiB of random bytes stored as they are, and a
#    `config.json`; and a small one (a few bytes of blob) to compare with.
# 2. Registers both through the Storage files API (`POST /v2/storage/files`, tagged `debug` and
#    `jobId:<job>`, as the daemon stores a debug job's archives) with a daemon whose
#    `max_body_bytes` lets the upload in. An upload is read whole into memory, so that daemon
#    is stopped and a fresh one is started on the same data dir for the downloads.
# 3. Daemon side: its VmRSS after one download of the small archive (the baseline), then for
#    each download its peak: the high-water mark is reset (`5` into /proc/<pid>/clear_refs)
#    before, and VmHWM read after; VmRSS is also sampled every 20 ms meanwhile.
#    - curl: `GET /v2/storage/files/{id}/download` into a file, compared with the archive.
#    - CLI: `jobq debug <job> --out <folder>`, which streams the archive to a temporary file and
#      unpacks it; the unpacked blob is compared with the original.
# 4. CLI side: its peak RSS (`/usr/bin/time -f %M`, the whole process) downloading the big
#    archive minus its peak downloading the small one.
#
# Settings (environment): JOBQ_BENCH_MIB (the blob's size, default 1024), JOBQ_BIN (a binary to
# use instead of building), CARGO_TARGET_DIR, TMPDIR (about 5 times the size is needed). Needs
# python3, curl, jq and /usr/bin/time; root (or the daemon's user) to reset its high-water mark.
# Exits 1 when a download differs or a growth reaches 16 MiB.
set -euo pipefail

cd "$(dirname "$0")/../.."
mib=${JOBQ_BENCH_MIB:-1024}
limit_kib=$((16 * 1024))
token=bench-$RANDOM$RANDOM

source benches/daemon.sh
bench_setup download python3 curl jq /usr/bin/time

echo "making the archives ($mib MiB of random bytes)..."
python3 - "$work" "$mib" <<'EOF'
import os, sys, zipfile
work, mib = sys.argv[1], int(sys.argv[2])
with open(os.path.join(work, "blob.bin"), "wb") as blob:
    for _ in range(mib):
        blob.write(os.urandom(1 << 20))
for name, blob in [("big.zip", os.path.join(work, "blob.bin")), ("small.zip", None)]:
    with zipfile.ZipFile(os.path.join(work, name), "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("config.json", '{"parameters": {}}')
        if blob:
            archive.write(blob, "in/files/blob.bin")
        else:
            archive.writestr("in/files/blob.bin", "small")
EOF

cat >"$work/jobq.toml" <<EOF
listen = "127.0.0.1:0"
data_dir = "$work/data"
max_body_bytes = $(((mib + 64) << 20))
[[tokens]]
id = "1"
description = "bench"
token = "$token"
EOF

# The daemon's /proc status value $1 (VmRSS, VmHWM) in KiB.
status_kib() {
  awk -v key="$1:" '$1 == key {print $2}' "/proc/$pid/status"
}

# Resets the daemon's high-water mark, runs "$@" while sampling its VmRSS every 20 ms, and
# prints "<VmHWM after> <largest VmRSS sample>" in KiB.
peak_while() {
  echo 5 >"/proc/$pid/clear_refs"
  local samples=$work/samples
  (while :; do status_kib VmRSS; sleep 0.02; done) >"$samples" &
  local sampler=$!
  "$@"
  kill "$sampler"
  wait "$sampler" 2>/dev/null || true
  echo "$(status_kib VmHWM) $(sort -n "$samples" | tail -1)"
}

start upload warn,jobq::daemon=info
for name in big small; do
  curl -sS --fail-with-body -H "X-StorageApi-Token: $token" \
    -H "Content-Type: application/octet-stream" -X POST -T "$work/$name.zip" \
    "http://$addr/v2/storage/files?name=stage_0.zip&tags%5B%5D=jobId:$name&tags%5B%5D=debug" \
    >"$work/$name.json"
done
stop
rm "$work/big.zip"
start download warn,jobq::daemon=info
big=$(jq -r .id "$work/big.json")
small=$(jq -r .id "$work/small.json")

cli() {
  /usr/bin/time -f %M -o "$work/cli-$1.kib" "$JOBQ_BIN" debug "$1" --out "$work/out-$1" \
    --url "http://$addr" --token "$token" >/dev/null
}
download() {
  curl -sS --fail -H "X-StorageApi-Token: $token" -o "$work/$1.download" \
    "http://$addr/v2/storage/files/$2/download"
}

download small "$small"
cli small
baseline=$(status_kib VmRSS)
read -r curl_hwm curl_sampled < <(peak_while download big "$big")
python3 - "$work" <<'EOF' || { echo "FAIL: curl's download differs from the archive"; exit 1; }
import sys, zipfile
work = sys.argv[1]
with zipfile.ZipFile(f"{work}/big.download") as archive, open(f"{work}/blob.bin", "rb") as blob:
    with archive.open("in/files/blob.bin") as stored:
        while True:
            a, b = stored.read(1 << 20), blob.read(1 << 20)
            if a != b:
                sys.exit(1)
            if not a:
                break
EOF
rm "$work/big.download"
read -r cli_hwm cli_sampled < <(peak_while cli big)
cmp -s "$work/blob.bin" "$work/out-big/stage_0/in/files/blob.bin" \
  || { echo "FAIL: the CLI's unpacked blob differs"; exit 1; }
cli_small=$(cat "$work/cli-small.kib")
cli_big=$(cat "$work/cli-big.kib")

mib_of() { awk -v kib="$1" 'BEGIN {printf "%.1f", kib / 1024}'; }
echo
echo "archive: $(jq -r .sizeBytes "$work/big.json") bytes; daemon baseline VmRSS $(mib_of "$baseline") MiB"
echo "| download | daemon peak growth (VmHWM) | daemon (sampled) | CLI peak growth |"
echo "|---|---:|---:|---:|"
echo "| curl | $(mib_of $((curl_hwm - baseline))) MiB | $(mib_of $((curl_sampled - baseline))) MiB | |"
echo "| jobq debug | $(mib_of $((cli_hwm - baseline))) MiB | $(mib_of $((cli_sampled - baseline))) MiB | $(mib_of $((cli_big - cli_small))) MiB ($(mib_of "$cli_big") MiB peak, $(mib_of "$cli_small") MiB for the small archive) |"
for growth in $((curl_hwm - baseline)) $((cli_hwm - baseline)) $((cli_big - cli_small)); do
  if ((growth >= limit_kib)); then
    echo "FAIL: a growth reaches 16 MiB"
    exit 1
  fi
done
echo "ok: both downloads are whole, every growth under 16 MiB"

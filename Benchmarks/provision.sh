#!/usr/bin/env bash
# Benchmark: `imgtool provision` against the sequential baseline
#   curl -o, then sha256sum -c, then gzip -dc | cp --sparse=always, then truncate -s,
# side by side in one run, downloading from a real nginx on 127.0.0.1 throttled to
# 100 MB/s per connection (nginx limit_rate 100m) to resemble a fast real link.
#
# Usage: Benchmarks/provision.sh [IMAGE_DIR] [RUNS]
#   IMAGE_DIR  built by scripts/make-rancher-like-image if missing
#              (default scratch/bench-image: 4 GiB disk, 300 MB of files)
#   RUNS       repetitions of each side (default 3); the table shows the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
image_dir=${1:-scratch/bench-image}
runs=${2:-3}
size=20G

[ -f "$image_dir/image.env" ] || scripts/make-rancher-like-image "$image_dir" --size 4G --data-mb 300
image_dir=$(cd "$image_dir" && pwd)
swift build -c release --product imgtool >/dev/null
imgtool="$(swift build -c release --show-bin-path)/imgtool"
work=$(mktemp -d "${TMPDIR:-/var/tmp}/imgtool-bench-provision-XXXXXX")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
setsid scripts/serve-directory "$image_dir" "$port" 100m &
server=$!
trap 'kill -- -$server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 50); do curl -sf -o /dev/null "http://127.0.0.1:$port/SHA256SUMS" && break; sleep 0.1; done
# shellcheck disable=SC1091
. "$image_dir/image.env"
url="http://127.0.0.1:$port/demo-rancher.img.gz"
cat > "$work/catalog.json" <<JSON
{ "extendsDefault": true, "images": [ { "name": "Bench", "version": "v1", "url": "$url",
  "checksumURL": "http://127.0.0.1:$port/SHA256SUMS", "kernel": "$KERNEL", "initrd": "$INITRD",
  "kernelArguments": [], "passwordForm": "sha512-crypt", "splitsCommandLineOnSpaces": false } ] }
JSON

now() { date +%s.%N; }
elapsed() { echo "$2 - $1" | bc; }
median() { sort -n | awk '{ value[NR] = $1 } END { print value[int((NR + 1) / 2)] }'; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }

# Prints: total download verify inflate truncate (seconds).
baseline() {
    local dir=$work/baseline t0 t1 t2 t3 t4
    rm -rf "$dir"
    mkdir -p "$dir"
    t0=$(now)
    curl -sf -o "$dir/demo-rancher.img.gz" "$url"
    t1=$(now)
    (cd "$dir" && curl -sf -o SHA256SUMS "http://127.0.0.1:$port/SHA256SUMS" && sha256sum -c --quiet SHA256SUMS)
    t2=$(now)
    gzip -dc "$dir/demo-rancher.img.gz" | cp --sparse=always /dev/stdin "$dir/disk.raw"
    t3=$(now)
    truncate -s "$size" "$dir/disk.raw"
    sync -f "$dir/disk.raw"
    t4=$(now)
    echo "$(elapsed "$t0" "$t4") $(elapsed "$t0" "$t1") $(elapsed "$t1" "$t2") $(elapsed "$t2" "$t3") $(elapsed "$t3" "$t4")"
}

# Prints: total download inflate rest overlap (seconds), from provision's own summary.
imgtool_run() {
    local dir=$work/imgtool t0 t1
    rm -rf "$dir"
    mkdir -p "$dir/pools/tank" "$dir/state" "$dir/vms"
    t0=$(now)
    printf 'pw\n' | IMGTOOL_POOLS_ROOT=$dir/pools IMGTOOL_STATE_DIR=$dir/state IMGTOOL_CATALOG=$work/catalog.json \
        "$imgtool" provision Bench@v1 --raw "$dir/vms/disk.raw" --size "$size" --vm-id 1 --vm-name bench \
        --password-stdin --progress json > "$dir/out.json"
    t1=$(now)
    python3 - "$dir/out.json" "$(elapsed "$t0" "$t1")" <<'PY'
import json, sys
summary = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
steps = {step["name"]: step["seconds"] for step in summary["steps"]}
rest = steps.get("resize", 0) + steps.get("grub", 0) + steps.get("publish", 0)
print(sys.argv[2], steps.get("download", 0), steps.get("inflate", 0), rest, summary["overlap_seconds"])
PY
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/ { print $2 }') GiB"
echo "image: $(stat -c %s "$image_dir/demo-rancher.img.gz") bytes compressed, $RAW_SIZE bytes inflated; disk grown to $size"
for run in $(seq "$runs"); do
    drop_caches
    baseline > "$work/baseline.$run"
    drop_caches
    imgtool_run > "$work/imgtool.$run"
    echo "run $run: baseline $(cut -d' ' -f1 "$work/baseline.$run") s, imgtool $(cut -d' ' -f1 "$work/imgtool.$run") s"
done

column() { cut -d' ' -f"$2" "$work"/"$1".* | median; }
base_total=$(column baseline 1)
tool_total=$(column imgtool 1)
printf '\n| side | wall s (median of %d) | steps, s (medians) |\n|---|---|---|\n' "$runs"
printf '| curl; sha256sum; gzip -dc \\| cp --sparse=always; truncate | %.2f | curl %.2f, sha256sum %.2f, gzip+cp %.2f, truncate %.2f |\n' \
    "$base_total" "$(column baseline 2)" "$(column baseline 3)" "$(column baseline 4)" "$(column baseline 5)"
printf '| imgtool provision | %.2f | download %.2f, inflate %.2f (overlapping %.2f), resize+grub+publish %.2f |\n' \
    "$tool_total" "$(column imgtool 2)" "$(column imgtool 3)" "$(column imgtool 5)" "$(column imgtool 4)"
printf '\nimgtool provision is %.2fx faster (wall) than the sequential baseline\n' "$(echo "$base_total / $tool_total" | bc -l)"

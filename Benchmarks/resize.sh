#!/usr/bin/env bash
# Grows a sparse 1 GiB RAW file to 1 TiB with imgtool, coreutils truncate and qemu-img,
# side by side in one hyperfine run. Each run starts from a fresh 1 GiB file, so every
# command does the same growth. Needs a release build (swift build -c release).
# Usage: Benchmarks/resize.sh [SCRATCH DIR]   (default /tmp/imgtool-bench-resize)
set -euo pipefail
cd "$(dirname "$0")/.."

imgtool="$(swift build -c release --show-bin-path)/imgtool"
scratch="${1:-/tmp/imgtool-bench-resize}"
mkdir -p "$scratch"
disk="$scratch/disk.raw"
trap 'rm -f "$disk"' EXIT

hyperfine --warmup 3 --runs 50 --shell=none \
    --prepare "truncate -s 1G $disk" \
    --command-name "imgtool resize" "$imgtool resize $disk 1T" \
    --command-name "truncate -s" "truncate -s 1T $disk" \
    --command-name "qemu-img resize" "qemu-img resize -q -f raw $disk 1T"

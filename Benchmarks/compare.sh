#!/bin/bash
# Compares imgtool builds (or options) on one image, interleaving the runs so that
# changes in the machine's speed hit every variant alike, and prints each variant's wall
# times sorted (take the median).
#
# Usage: Benchmarks/compare.sh WORKDIR IMAGE RUNS VARIANT...
#   WORKDIR  contains IMAGE.img.gz and IMAGE.img.gzidx (as Benchmarks/parallel.sh leaves them)
#   IMAGE    realistic or data-heavy
#   VARIANT  "label|VAR=value ...|path/to/imgtool|threads|extra"; extra is "noindex"
#            for no index, or empty for --index WORKDIR/IMAGE.img.gzidx
#
# A run counts only when the machine's busy CPU time during it exceeds the run's own
# CPU time by less than 0.25 s, so runs that shared the CPUs with other work are
# repeated (up to 10 times).

set -euo pipefail
work=$1; image=$2; runs=$3; shift 3
cd "$work"
declare -A times
busy() { awk '/^cpu /{print ($2+$3+$4+$7+$8)/100}' /proc/stat; }
timing=$(mktemp)
trap 'rm -f "$timing" "$work/compare-out.raw"' EXIT
for run in $(seq "$runs"); do
    for variant in "$@"; do
        IFS='|' read -r label environment binary threads extra <<< "$variant"
        options="--index $image.img.gzidx"
        [ "$extra" = noindex ] && options=""
        for attempt in $(seq 10); do
            rm -f compare-out.raw; sync; sleep 1
            before=$(busy)
            # shellcheck disable=SC2086
            env $environment /usr/bin/time -f "%e %U %S" -o "$timing" "$binary" decompress --progress none \
                --threads "$threads" $options "$image.img.gz" compare-out.raw 2>/dev/null
            after=$(busy)
            read -r wall user system < "$timing"
            other=$(echo "$after - $before - $user - $system" | bc)
            if (( $(echo "$other < 0.25" | bc) )); then
                times[$label]+="$wall "
                break
            fi
            sleep 5
        done
    done
done
for variant in "$@"; do
    IFS='|' read -r label _ <<< "$variant"
    echo "$label: $(echo "${times[$label]:-}" | tr ' ' '\n' | sed '/^$/d' | sort -n | tr '\n' ' ')"
done

#!/usr/bin/env bash
# Times imgtool's parallel gzip inflation against the fastest peers on disk images, side
# by side in one run, and prints Markdown tables plus a throughput-versus-threads table.
#
# Usage: Benchmarks/parallel.sh [--work DIR] [--max-threads N] [--repeat N] [--plot FILE.png]
#                               [--bgzf]
#
# Images (built with scripts/make-disk-image, compressed with gzip -6 as one stream):
#   realistic   4 GiB disk, 700 MiB of real files from /usr, the rest zeros
#   data-heavy  1400 MiB disk, 1024 MiB of real files, few zeros
# Commands per image, each writing a sparse RAW file that is compared with cmp:
#   imgtool decompress                      (the default: speculative on all CPUs)
#   imgtool decompress --threads 1          (one chunk: ISA-L, zero runs as holes)
#   cat | imgtool decompress /dev/stdin     (a pipe: the sequential ISA-L path)
#   imgtool decompress --threads N          (speculative parallel decoding, N = 2..max)
#   imgtool decompress --threads N --index  (index from `imgtool index`, N = 1..max)
#   rapidgzip -d -P 2, igzip -dc, pigz -dc, libdeflate-gunzip -c, each piped into
#   cp --sparse=always so that every tool writes the same sparse file
# With --bgzf, each image is also compressed with bgzip (kept as IMAGE.bgz) and decoded
# by imgtool on 1 to N threads, rapidgzip -P 2, igzip, and bgzip -d -@ 2 (rows "BGZF:").
# Every imgtool run fsyncs its output before the rename; the peers' cp does not.
# Reported: wall seconds and CPU seconds (user + system, GNU time) and peak resident
# memory. The page cache is warmed before each run; nothing is dropped. With --repeat N,
# each command runs N times and its row is the run with the median wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
source Benchmarks/lib/images.sh

work="${TMPDIR:-/tmp}/imgtool-parallel-bench"
max_threads=$(nproc)
plot=""
repeat=1
bgzf=no
while [ $# -gt 0 ]; do
    case "$1" in
        --work) work="$2"; shift 2 ;;
        --max-threads) max_threads="$2"; shift 2 ;;
        --plot) plot="$2"; shift 2 ;;
        --repeat) repeat="$2"; shift 2 ;;
        --bgzf) bgzf=yes; shift ;;
        *) echo "parallel.sh: unknown argument '$1'" >&2; exit 64 ;;
    esac
done

build_release_imgtool
mkdir -p "$work"
results="$work/results.tsv"
: > "$results"

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB RAM, kernel $(uname -r)"
echo "filesystem of $work: $(stat -f -c %T "$work")"
echo "imgtool $("$imgtool" --version | cut -d' ' -f2), $(date -u +%Y-%m-%dT%H:%MZ)"
echo

# run IMAGE LABEL THREADS COMMAND: times COMMAND (OUT stands for the output path)
# `repeat` times and records the run with the median wall time, or a failed one.
run() {
    local image="$1" label="$2" threads="$3" command="$4"
    local output="$work/out.raw" runs="$work/runs.tsv"
    : > "$runs"
    for _ in $(seq "$repeat"); do
        rm -f "$output"
        cat "$image.gz" "$image.bgz" > /dev/null 2>&1 || true
        local verdict="ok"
        if ! /usr/bin/time -o "$work/time.txt" -f "%e %U %S %M" sh -c "${command//OUT/$output}" >/dev/null 2>"$work/err.txt"; then
            verdict="FAILED: $(tail -1 "$work/err.txt")"
        fi
        local wall user system peak
        read -r wall user system peak < <(tail -1 "$work/time.txt")
        [ "$verdict" = ok ] && { cmp -s "$output" "$image" || verdict="OUTPUT DIFFERS"; }
        local allocated=$(( $(stat -c %b "$output" 2>/dev/null || echo 0) * 512 >> 20 ))
        printf '%s\t%s\t%s\t%s\t%.2f\t%d\t%d\t%s\n' "$(basename "$image")" "$label" "$threads" "$wall" \
            "$(echo "$user + $system" | bc)" $((peak >> 10)) "$allocated" "$verdict" >> "$runs"
    done
    # A failed run or a wrong output is recorded in place of the median.
    if grep -qv $'\tok$' "$runs"; then
        grep -v $'\tok$' "$runs" | head -1 >> "$results"
    else
        sort -t $'\t' -k4,4n "$runs" | sed -n "$(( (repeat + 1) / 2 ))p" >> "$results"
    fi
    rm -f "$output"
}

for spec in "realistic 4G 700" "data-heavy 1400M 1024"; do
    read -r name size data_mb <<< "$spec"
    image="$work/$name.img"
    build_gzip_image "$image" "$size" "$data_mb"
    index_gzip_image "$image"

    run "$image" "imgtool decompress (default)" "$max_threads" "$imgtool decompress --progress none $image.gz OUT"
    run "$image" "imgtool decompress --threads 1 (one chunk)" 1 "$imgtool decompress --progress none --threads 1 $image.gz OUT"
    run "$image" "cat | imgtool decompress (pipe: sequential ISA-L)" 1 \
        "cat $image.gz | $imgtool decompress --progress none --threads 1 /dev/stdin OUT"
    for threads in $(seq 2 "$max_threads"); do
        run "$image" "imgtool decompress --threads $threads" "$threads" "$imgtool decompress --progress none --threads $threads $image.gz OUT"
    done
    for threads in $(seq 1 "$max_threads"); do
        run "$image" "imgtool decompress --threads $threads --index" "$threads" \
            "$imgtool decompress --progress none --threads $threads --index $image.gzidx $image.gz OUT"
    done
    run "$image" "rapidgzip -d -P 2 | cp --sparse=always" 2 "rapidgzip -d -P 2 -c $image.gz | cp --sparse=always /dev/stdin OUT"
    run "$image" "igzip -dc | cp --sparse=always" 1 "igzip -dc $image.gz | cp --sparse=always /dev/stdin OUT"
    run "$image" "pigz -dc | cp --sparse=always" 1 "pigz -dc $image.gz | cp --sparse=always /dev/stdin OUT"
    run "$image" "libdeflate-gunzip -c | cp --sparse=always" 1 "libdeflate-gunzip -c $image.gz | cp --sparse=always /dev/stdin OUT"

    [ "$bgzf" = yes ] || continue
    [ -f "$image.bgz" ] || bgzip -@ "$max_threads" -c "$image" > "$image.bgz"
    for threads in $(seq 1 "$max_threads"); do
        run "$image" "BGZF: imgtool decompress --threads $threads" "$threads" \
            "$imgtool decompress --progress none --threads $threads $image.bgz OUT"
    done
    run "$image" "BGZF: rapidgzip -d -P 2 | cp --sparse=always" 2 "rapidgzip -d -P 2 -c $image.bgz | cp --sparse=always /dev/stdin OUT"
    run "$image" "BGZF: igzip -dc | cp --sparse=always" 1 "igzip -dc $image.bgz | cp --sparse=always /dev/stdin OUT"
    run "$image" "BGZF: bgzip -d -@ 2 | cp --sparse=always" 2 "bgzip -d -@ 2 -c $image.bgz | cp --sparse=always /dev/stdin OUT"
done

for name in realistic data-heavy; do
    image="$work/$name.img"
    echo "### $name: $(( $(stat -c %s "$image") >> 20 )) MiB image, $(( $(stat -c %s "$image.gz") >> 20 )) MiB gzip -6"
    echo
    echo "| command | threads | wall s | CPU s | peak MiB | allocated MiB | output |"
    echo "|---|---|---|---|---|---|---|"
    # A pipe in a command or an error message would end its table cell, so it is escaped.
    awk -F'\t' -v image="$name.img" '$1 == image { label = $2; output = $8
        gsub(/\|/, "\\|", label); gsub(/\|/, "\\|", output)
        printf "| %s | %s | %s | %s | %s | %s | %s |\n", label, $3, $4, $5, $6, $7, output }' "$results"
    echo
done

if [ -n "$plot" ]; then
    python3 - "$results" "$plot" <<'PYTHON'
import sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
figure, axis = plt.subplots(figsize=(7, 4.5))
for image, style in (("realistic.img", "-"), ("data-heavy.img", "--")):
    sizes = {"realistic.img": 4096, "data-heavy.img": 1400}
    for prefix, marker in (("imgtool decompress --threads", "o"), ("index", "s")):
        points = []
        for row in rows:
            # The default row repeats one of the others, and the pipe row is the
            # sequential path, not a thread count.
            if row[0] != image or not row[1].startswith("imgtool") or "(default)" in row[1]:
                continue
            if (prefix == "index") != row[1].endswith("--index"):
                continue
            points.append((int(row[2]), sizes[image] / float(row[3])))
        points.sort()
        if points:
            label = f"{image[:-4]}, {'with index' if prefix == 'index' else 'no index'}"
            axis.plot([p[0] for p in points], [p[1] for p in points], style, marker=marker, label=label)
axis.set_xlabel("threads")
axis.set_ylabel("output MiB/s (wall)")
axis.set_title("imgtool decompress throughput, gzip -6 single stream")
axis.grid(True, alpha=0.3)
axis.legend()
figure.tight_layout()
figure.savefig(sys.argv[2], dpi=100)
PYTHON
    echo "plot written to $plot"
fi

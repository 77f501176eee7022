#!/usr/bin/env bash
# Times `imgtool decompress` against other decompressors on realistic disk images, side
# by side in one run, and prints a Markdown table per image.
#
# Usage: Benchmarks/decompress.sh [--sizes "1G 4G"] [--data-mb 700] [--threads N] [--work DIR]
#
# For each size: builds the image with scripts/make-disk-image (about 700 MiB of real
# files from /usr in ext4, the rest zeros), compresses it with gzip -6, pigz, bgzip and
# xz -T N, then decompresses each with imgtool and with the peers that read that format:
#   gzip -dc | cp --sparse=always   (the baseline: zlib plus a sparse copy)
#   pigz -dc, igzip -dc (ISA-L), libdeflate-gunzip -c, rapidgzip -d -P N, xz -dc -T N
# Peers write through a shell redirection, so they allocate every zero block they write;
# the "allocated" column shows it. Each output is compared with the image by cmp.
#
# Reported per run: wall time and CPU time (user + system of the process and the
# children it waited for, from GNU time). Also the peak resident memory of the largest
# process, the allocated output size, and the peer's wall time divided by imgtool's on
# the same input.
# The page cache is warmed by reading the input before each run; nothing is dropped.
# Needs: a release build (built here), scripts/install-deps, and 3 times the largest
# size free under --work (default /work/scratch/decompress-bench, or $TMPDIR).
set -euo pipefail
cd "$(dirname "$0")/.."
source Benchmarks/lib/images.sh

sizes="1G 4G"
data_mb=700
threads=$(nproc)
work="${TMPDIR:-/tmp}/imgtool-decompress-bench"
while [ $# -gt 0 ]; do
    case "$1" in
        --sizes) sizes="$2"; shift 2 ;;
        --data-mb) data_mb="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        --work) work="$2"; shift 2 ;;
        *) echo "decompress.sh: unknown argument '$1'" >&2; exit 64 ;;
    esac
done

build_release_imgtool
mkdir -p "$work"
results="$work/results.txt"
: > "$results"

# Runs one decompression; prints a table row. $1 label, $2 input, $3 reference image,
# $4 the command (OUT is replaced by the output path).
run() {
    local label="$1" input="$2" image="$3" command="$4"
    local output="$work/out.raw"
    rm -f "$output"
    cat "$input" > /dev/null
    if ! /usr/bin/time -o "$work/time.txt" -f "%e %U %S %M" sh -c "${command//OUT/$output}" >/dev/null 2>&1; then
        printf '| %s | failed | | | | |\n' "$label"
        rm -f "$output"
        return
    fi
    read -r wall user system peak < <(tail -1 "$work/time.txt")
    local allocated=$(( $(stat -c %b "$output") * 512 ))
    local verdict="ok"
    cmp -s "$output" "$image" || verdict="OUTPUT DIFFERS"
    rm -f "$output"
    echo "$label $wall" >> "$results"
    printf '| %s | %.2f | %.2f | %d | %d | %s |\n' "$label" "$wall" "$(echo "$user + $system" | bc)" \
        $((peak / 1024)) $((allocated >> 20)) "$verdict"
}

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB RAM, kernel $(uname -r)"
echo "filesystem of $work: $(df -T "$work" | awk 'NR==2 {print $2}')"
echo "imgtool $("$imgtool" --version | cut -d' ' -f2), threads $threads, $(date -u +%Y-%m-%dT%H:%MZ)"

for size in $sizes; do
    image="$work/image-$size.raw"
    build_disk_image "$image" "$size" "$data_mb"
    gzip_image "$image" "$image.gzip6.gz"
    pigz -p "$threads" -c "$image" > "$image.pigz.gz"
    bgzip -@ "$threads" -c "$image" > "$image.bgzip.gz"
    xz -T "$threads" -c "$image" > "$image.xz"

    echo
    echo "### $size image ($data_mb MiB of files): inputs gzip -6 $(( $(stat -c %s "$image.gzip6.gz") >> 20 )) MiB," \
        "pigz $(( $(stat -c %s "$image.pigz.gz") >> 20 )) MiB, bgzip $(( $(stat -c %s "$image.bgzip.gz") >> 20 )) MiB," \
        "xz $(( $(stat -c %s "$image.xz") >> 20 )) MiB"
    echo
    echo "| command | wall s | CPU s | peak MiB | allocated MiB | output |"
    echo "|---|---|---|---|---|---|"
    : > "$results"
    for kind in gzip6 pigz bgzip; do
        input="$image.$kind.gz"
        run "imgtool decompress ($kind)" "$input" "$image" "'$imgtool' decompress '$input' OUT --progress none --threads $threads"
        run "gzip -dc \\| cp --sparse=always ($kind)" "$input" "$image" "gzip -dc '$input' | cp --sparse=always /dev/stdin OUT"
        run "pigz -dc ($kind)" "$input" "$image" "pigz -dc '$input' > OUT"
        run "igzip -dc ($kind)" "$input" "$image" "igzip -dc '$input' > OUT"
        run "libdeflate-gunzip -c ($kind)" "$input" "$image" "libdeflate-gunzip -c '$input' > OUT"
        run "rapidgzip -d -P $threads ($kind)" "$input" "$image" "rapidgzip -d -c -P $threads '$input' > OUT"
    done
    run "imgtool decompress (xz)" "$image.xz" "$image" "'$imgtool' decompress '$image.xz' OUT --progress none --threads $threads"
    run "xz -dc -T $threads (xz)" "$image.xz" "$image" "xz -dc -T $threads '$image.xz' > OUT"

    echo
    echo "Wall-time ratio, peer / imgtool on the same input (above 1 means imgtool is faster):"
    echo
    awk '
        { label = $0; sub(/ [^ ]+$/, "", label); wall = $NF
          match(label, /\(([a-z0-9]+)\)$/); kind = substr(label, RSTART + 1, RLENGTH - 2)
          if (label ~ /^imgtool/) base[kind] = wall; else { peers[++n] = label; time[n] = wall; of[n] = kind } }
        END { for (i = 1; i <= n; i++) if (base[of[i]] > 0) printf "- %s: %.2fx\n", peers[i], time[i] / base[of[i]] }
    ' "$results"
    rm -f "$image" "$image".*
done

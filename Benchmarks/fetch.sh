#!/usr/bin/env bash
# Benchmark: download 1 GiB from nginx on 127.0.0.1 with `imgtool fetch` (SHA-256
# included) against `curl -o` followed by `sha256sum`, and against `curl -o` alone.
#
# Usage: Benchmarks/fetch.sh [RUNS]   (default 5 rounds, after one warm-up round)
# Environment: BENCH_DIR  where the 1 GiB file, nginx's files and the downloads go
#              (default: ${TMPDIR:-/tmp}/imgtool-bench-fetch); removed at the end.
# Needs nginx, curl and sha256sum (scripts/install-deps installs them).
set -euo pipefail
cd "$(dirname "$0")/.."

runs="${1:-5}"
dir="${BENCH_DIR:-${TMPDIR:-/tmp}/imgtool-bench-fetch}"
mkdir -p "$dir/www" "$dir/out" "$dir/nginx/tmp"

swift build -c release --product imgtool >/dev/null
imgtool="$(swift build -c release --show-bin-path)/imgtool"

if [ ! -f "$dir/www/big.bin" ]; then
    head -c 1073741824 /dev/urandom >"$dir/www/big.bin"
fi
hash="$(sha256sum "$dir/www/big.bin" | cut -c1-64)"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
user=""
if [ "$(id -u)" = 0 ]; then user="user root;"; fi
cat >"$dir/nginx/nginx.conf" <<CONF
$user
worker_processes 1;
error_log $dir/nginx/error.log;
pid $dir/nginx/nginx.pid;
events { worker_connections 64; }
http {
    access_log off;
    sendfile on;
    client_body_temp_path $dir/nginx/tmp;
    proxy_temp_path $dir/nginx/tmp;
    fastcgi_temp_path $dir/nginx/tmp;
    uwsgi_temp_path $dir/nginx/tmp;
    scgi_temp_path $dir/nginx/tmp;
    server { listen 127.0.0.1:$port; root $dir/www; }
}
CONF
nginx -p "$dir/nginx" -c "$dir/nginx/nginx.conf" -g 'daemon off;' &
nginx_pid=$!
cleanup() {
    kill "$nginx_pid" 2>/dev/null || true
    wait "$nginx_pid" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
sleep 0.5

url="http://127.0.0.1:$port/big.bin"
out="$dir/out/big.bin"
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r)"
echo "versions: $(curl --version | head -1 | cut -d' ' -f1-2), $(nginx -v 2>&1 | cut -d' ' -f3), imgtool $("$imgtool" --version | cut -d' ' -f2)"
# The three commands run in interleaved rounds (A B C, A B C, ...) rather than one after
# the other, so that load from other jobs on a shared machine hits them alike. Each run
# starts without the output file and after a `sync` (not timed): otherwise a run would
# pay for writing back the gigabyte the run before it left dirty, which slowed whichever
# command came next by up to 3x here. imgtool's time includes its fsync before
# publication; curl's does not. The first round is a warm-up and is not counted.
commands=(
    "$imgtool fetch $url --sha256 $hash --output $out --progress none"
    "curl -s -o $out $url && sha256sum $out"
    "curl -s -o $out $url"
)
names=("imgtool fetch" "curl -o + sha256sum" "curl -o")
results="$dir/times.txt"
: >"$results"
for round in $(seq 0 "$runs"); do
    for index in 0 1 2; do
        rm -f "$out" "$out.part" "$out.part.state" "$out.lock"
        sync
        start=$(date +%s.%N)
        sh -c "${commands[$index]}" >/dev/null
        end=$(date +%s.%N)
        if [ "$round" -gt 0 ]; then echo "$index $(awk "BEGIN { print $end - $start }")" >>"$results"; fi
    done
done

echo "| command | runs | median s | min s | max s |"
echo "|---|---|---|---|---|"
for index in 0 1 2; do
    awk -v i="$index" '$1 == i { print $2 }' "$results" | sort -n | awk -v name="${names[$index]}" '
        { times[NR] = $1 }
        END {
            median = (NR % 2) ? times[(NR + 1) / 2] : (times[NR / 2] + times[NR / 2 + 1]) / 2
            printf "| %s | %d | %.3f | %.3f | %.3f |\n", name, NR, median, times[1], times[NR]
        }'
done

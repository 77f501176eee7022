# Test images for the decompression benchmarks, sourced by Benchmarks/decompress.sh and
# Benchmarks/parallel.sh. Defines functions only and changes no shell option.
#
# The images come from scripts/make-disk-image: an MBR disk with one ext4 partition that
# contains real files from /usr, the rest zeros. Both scripts compress them with gzip -6
# into one gzip stream.

benchmark_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# build_release_imgtool: builds imgtool in release mode and sets `imgtool` to its path.
build_release_imgtool() {
    (cd "$benchmark_root" && swift build -c release --product imgtool >/dev/null)
    imgtool="$(cd "$benchmark_root" && swift build -c release --show-bin-path)/imgtool"
}

# build_disk_image IMAGE SIZE DATA_MB: builds IMAGE, a disk of SIZE (K, M or G suffix)
# with DATA_MB MiB of files, unless a file already exists at IMAGE.
build_disk_image() {
    local image="$1" size="$2" data_mb="$3"
    [ -e "$image" ] && return 0
    "$benchmark_root/scripts/make-disk-image" "$image" --size "$size" --data-mb "$data_mb" >/dev/null
}

# gzip_image IMAGE OUTPUT: compresses IMAGE with gzip -6 into OUTPUT, one gzip stream.
gzip_image() {
    gzip -6 -c "$1" > "$2"
}

# build_gzip_image IMAGE SIZE DATA_MB: makes IMAGE.gz (gzip -6) and IMAGE. An IMAGE.gz
# from an earlier run is kept, and IMAGE is decompressed from it when missing. Without
# IMAGE.gz, an existing IMAGE is removed and built again.
build_gzip_image() {
    local image="$1" size="$2" data_mb="$3"
    if [ ! -f "$image.gz" ]; then
        rm -f "$image"
        build_disk_image "$image" "$size" "$data_mb"
        gzip_image "$image" "$image.gz"
    fi
    [ -f "$image" ] || gzip -dc "$image.gz" > "$image"
}

# index_gzip_image IMAGE: writes the seek index of IMAGE.gz to IMAGE.gzidx with
# `imgtool index`, replacing an older one. Needs `imgtool` (see build_release_imgtool).
index_gzip_image() {
    local image="$1"
    rm -f "$image.gzidx"
    "$imgtool" index "$image.gz" -o "$image.gzidx"
}

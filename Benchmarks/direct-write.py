#!/usr/bin/env python3
"""Measures how fast the disk takes O_DIRECT writes of 4 MiB into a new file.

imgtool's sparse writer writes a RAW file's data the same way: O_DIRECT, up to 4 MiB
per write, one write at a time, holes skipped. For the allocated size of a RAW file, the
time reported here is about the least time any decode of that file can take on this
disk, however many threads decode. Several queue depths show whether more writes in
flight would help.

Usage: Benchmarks/direct-write.py DIRECTORY [--mib N] [--depths 1,2,4] [--runs 3]

DIRECTORY must be on the disk that RAW files go to. The script creates and removes
DIRECTORY/direct-write.tmp.
"""

import argparse
import mmap
import os
import threading
import time

PIECE = 4 << 20


def write_file(path: str, size: int, depth: int) -> float:
    """Writes `size` bytes of random data with `depth` writes in flight, fsyncs, and
    returns the seconds taken."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_DIRECT, 0o600)
    # An anonymous map is page-aligned, as O_DIRECT requires.
    buffer = mmap.mmap(-1, PIECE)
    buffer.write(os.urandom(PIECE))
    offsets = list(range(0, size, PIECE))
    lock = threading.Lock()

    def writer() -> None:
        while True:
            with lock:
                if not offsets:
                    return
                offset = offsets.pop()
            os.pwrite(descriptor, buffer, offset)

    started = time.monotonic()
    threads = [threading.Thread(target=writer) for _ in range(depth)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    os.fsync(descriptor)
    elapsed = time.monotonic() - started
    os.close(descriptor)
    os.unlink(path)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory")
    parser.add_argument("--mib", type=int, default=1200, help="MiB to write per run (default 1200)")
    parser.add_argument("--depths", default="1,2,4", help="writes in flight, comma-separated (default 1,2,4)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each depth, interleaved (default 3)")
    arguments = parser.parse_args()
    path = os.path.join(arguments.directory, "direct-write.tmp")
    if os.path.exists(path):
        raise SystemExit(f"{path} exists: remove it first (a run that was killed leaves it)")
    depths = [int(text) for text in arguments.depths.split(",")]
    size = arguments.mib << 20
    times: dict[int, list[float]] = {depth: [] for depth in depths}
    for _ in range(arguments.runs):
        for depth in depths:
            times[depth].append(write_file(path, size, depth))
    for depth in depths:
        values = sorted(times[depth])
        median = values[len(values) // 2]
        runs = " ".join(f"{value:.2f}" for value in values)
        print(f"{arguments.mib} MiB, {depth} in flight: median {median:.2f} s "
              f"({size / median / 1e6:.0f} MB/s); runs {runs}")


if __name__ == "__main__":
    main()

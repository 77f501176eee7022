// parallel-engine: times ImageCore's parallel gzip engine on one file, without the CLI.
//
// Usage: parallel-engine FILE.gz THREADS [INDEX.gzidx] [OUTPUT]
// Writes the output sparsely to OUTPUT (default /dev/null) and prints one line:
// threads, strategy, chunks, uncompressed bytes, seconds, MB/s of output.

import Foundation
import Glibc
import ImageCore

/// Writes data with pwrite and skips holes and all-zero 4 KiB blocks, then sets the size.
final class SparseSink: ExtentSink {
    let descriptor: Int32
    var offset: Int64 = 0

    init(path: String) {
        descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        precondition(descriptor >= 0, "cannot open \(path)")
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        var start = 0
        while start < bytes.count {
            let end = min(bytes.count, start + 4096)
            let block = UnsafeRawBufferPointer(rebasing: bytes[start..<end])
            if !isZero(block) {
                _ = pwrite(descriptor, block.baseAddress, block.count, off_t(offset + Int64(start)))
            }
            start = end
        }
        offset += Int64(bytes.count)
    }

    func writeHole(count: Int64) throws { offset += count }

    /// Word-wise zero check.
    private func isZero(_ block: UnsafeRawBufferPointer) -> Bool {
        var index = 0
        var combined: UInt64 = 0
        while index + 8 <= block.count {
            combined |= block.loadUnaligned(fromByteOffset: index, as: UInt64.self)
            index += 8
        }
        while index < block.count {
            combined |= UInt64(block[index])
            index += 1
        }
        return combined == 0
    }

    func close() {
        _ = ftruncate(descriptor, off_t(offset))
        _ = Glibc.close(descriptor)
    }
}

if ProcessInfo.processInfo.environment["IMGTOOL_LOG"] == "debug" { Log.level = .debug }
let arguments = CommandLine.arguments
guard arguments.count >= 3, let threads = Int(arguments[2]) else {
    print("usage: parallel-engine FILE.gz THREADS [INDEX.gzidx|-] [OUTPUT]")
    exit(64)
}
let index = arguments.count >= 4 && arguments[3] != "-" ? try GzipIndex(contentsOf: arguments[3]) : nil
let sink = SparseSink(path: arguments.count >= 5 ? arguments[4] : "/dev/null")
let started = ContinuousClock.now
let result = try ParallelGzipInflater.decompress(path: arguments[1], into: sink, threads: threads, index: index)
sink.close()
let seconds = (ContinuousClock.now - started).seconds
print(String(format: "threads %d  %@  chunks %d  bytes %lld  %.3f s  %.0f MB/s", threads, result.strategy.rawValue,
             result.chunks, result.uncompressedSize, seconds, Double(result.uncompressedSize) / seconds / 1e6))

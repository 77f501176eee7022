// Helpers for the parallel inflation tests: an in-memory sink and payload makers.

import Foundation
@testable import ImageCore

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
func randomBytes(_ count: Int, seed: UInt64 = 0x9e3779b97f4a7c15) -> [UInt8] {
    var state = seed
    var result = [UInt8](repeating: 0, count: count)
    for index in 0..<count {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        result[index] = UInt8(truncatingIfNeeded: state)
    }
    return result
}

/// Text-like bytes that compress about 3:1: words drawn from a small vocabulary.
func compressibleBytes(_ count: Int, seed: UInt64 = 7) -> [UInt8] {
    let words = ["block", "deflate", "window", "inflate", "member", "index", "zero", "disk", "image", "sparse",
                 "\n", "root", "grub", "ext4", "superblock", "inode", "extent", "journal"].map { Array("\($0) ".utf8) }
    let choices = randomBytes(count / 4 + 1, seed: seed)
    var result: [UInt8] = []
    result.reserveCapacity(count + 16)
    var next = 0
    while result.count < count {
        result += words[Int(choices[next % choices.count]) % words.count]
        next += 1
    }
    return Array(result.prefix(count))
}

/// Compresses `bytes` with a real tool (`gzip -6`, `pigz`, `bgzip`, `igzip -0`, ...)
/// reading standard input; returns the path of the compressed file.
func compressFile(_ bytes: [UInt8], with command: String, in scratch: ScratchDirectory, name: String) throws -> String {
    let plain = scratch.file(name + ".raw")
    try writeFile(plain, bytes)
    let compressed = scratch.file(name + ".gz")
    let result = try shell("\(command) < '\(plain)' > '\(compressed)'")
    guard result.status == 0 else { throw POSIXError(.EIO) }
    return compressed
}

/// The output of the real `gzip -dc` for a file (the reference for every comparison).
func referenceOutput(_ path: String) throws -> [UInt8] {
    [UInt8](try runProcess("gzip", ["-dc", path]).standardOutput)
}

/// Decodes `path` in parallel into memory.
func parallelOutput(_ path: String, threads: Int, index: GzipIndex? = nil, budget: Int = 1 << 20,
                    minimumChunkInput: Int = 4 << 20) throws -> ([UInt8], ParallelInflateResult) {
    let sink = MemorySink()
    let result = try ParallelGzipInflater.decompress(path: path, into: sink, threads: threads, index: index, budget: budget,
                                                     minimumChunkInput: minimumChunkInput)
    return (sink.bytes, result)
}

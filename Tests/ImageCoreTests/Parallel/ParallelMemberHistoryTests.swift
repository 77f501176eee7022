// A gzip member starts without history: a match in it may not reach before its start,
// even where the bytes before it (the previous member's output) would make its CRC-32
// come out right. Sequential decoding rejects such a member, and so must chunks that
// start inside it, right after a short first block.

import CZlib
import Foundation
import Testing
@testable import ImageCore

/// Raw deflate data of `parts`, compressed with zlib level 6 after `dictionary`, so
/// matches may copy from it. Each part but the last ends its block (`Z_BLOCK`); a
/// strategy of `Z_FIXED` for the first part gives it a fixed-Huffman block.
private func rawDeflate(_ parts: [[UInt8]], dictionary: [UInt8], firstStrategy: Int32) -> [UInt8] {
    var stream = z_stream()
    // Window bits -15: raw deflate with a 32 KiB window.
    var result = deflateInit2_(&stream, 6, Z_DEFLATED, -15, 8, firstStrategy, ZLIB_VERSION,
                               Int32(MemoryLayout<z_stream>.size))
    precondition(result == Z_OK, "deflateInit2 failed with \(result)")
    defer { deflateEnd(&stream) }
    var dictionary = dictionary
    result = deflateSetDictionary(&stream, &dictionary, UInt32(dictionary.count))
    precondition(result == Z_OK, "deflateSetDictionary failed with \(result)")
    let total = parts.reduce(0) { $0 + $1.count }
    var output = [UInt8](repeating: 0, count: Int(deflateBound(&stream, UInt(total))) + 4096)
    output.withUnsafeMutableBufferPointer { target in
        stream.next_out = target.baseAddress
        stream.avail_out = UInt32(target.count)
        for (number, part) in parts.enumerated() {
            if number == 1 {
                result = deflateParams(&stream, 6, Z_DEFAULT_STRATEGY)
                precondition(result == Z_OK, "deflateParams failed with \(result)")
            }
            var input = part
            input.withUnsafeMutableBufferPointer { source in
                stream.next_in = source.baseAddress
                stream.avail_in = UInt32(source.count)
                result = deflate(&stream, number + 1 < parts.count ? Z_BLOCK : Z_FINISH)
            }
            precondition(result == (number + 1 < parts.count ? Z_OK : Z_STREAM_END), "deflate failed with \(result)")
        }
    }
    return Array(output.prefix(Int(stream.total_out)))
}

/// Wraps `deflate`, whose output is `payload`, in a gzip member.
private func gzipMember(deflate: [UInt8], payload: [UInt8]) -> [UInt8] {
    let crc = payload.withUnsafeBufferPointer { UInt32(crc32(0, $0.baseAddress, UInt32($0.count))) }
    let size = UInt32(truncatingIfNeeded: payload.count)
    let header: [UInt8] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]
    return header + deflate + withUnsafeBytes(of: crc.littleEndian, Array.init) + withUnsafeBytes(of: size.littleEndian, Array.init)
}

@Suite("Matches that reach before their member")
struct ParallelMemberHistoryTests {
    @Test("match before member start rejected")
    func matchBeforeMember() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let first = compressibleBytes(160 << 10, seed: 31) + randomBytes(40 << 10, seed: 32)
        // The second member's first block is short: 2 KiB stored (random) or fixed
        // (text). Its second block copies the last 8 KiB of the first member, then zero
        // runs, which keep marker mode going. A short final block and a third member
        // follow.
        let cases: [(String, [UInt8], Int32)] = [
            ("stored first block", randomBytes(2 << 10, seed: 33), Z_DEFAULT_STRATEGY),
            ("fixed first block", compressibleBytes(6 << 10, seed: 34), Z_FIXED),
        ]
        for (label, head, strategy) in cases {
            let tail = Array(first.suffix(8 << 10)) + [UInt8](repeating: 0, count: 2 << 20)
            let end = compressibleBytes(4 << 10, seed: 36)
            let deflate = rawDeflate([head, tail, end], dictionary: Array(first.suffix(32 << 10)), firstStrategy: strategy)
            let third = compressibleBytes(64 << 10, seed: 35)
            let firstMember = try compress(first, with: "gzip -n -6 -c")
            let bytes = try firstMember + gzipMember(deflate: deflate, payload: head + tail + end) + compress(third, with: "gzip -n -6 -c")
            let path = scratch.file("before-member.gz")
            try? FileManager.default.removeItem(atPath: path)
            try writeFile(path, bytes)
            #expect(try runProcess("gzip", ["-t", path]).status != 0, "\(label): gzip accepts the file")
            #expect(throws: InflateError.self, "\(label): threads 1") { try parallelOutput(path, threads: 1) }
            // With that many ranges per thread, the ranges have the minimum size. Ranges of
            // the first member's size start the second chunk 1 byte into the second
            // member's first block, so it starts at the second block, in marker mode. Ranges
            // of a few hundred bytes start chunks all over the second member.
            let second = firstMember.count + 10 + 1
            for (threads, perThread, minimum) in [(2, 1 << 20, second), (3, 1 << 20, second), (2, 64, 128), (3, 64, 128),
                                                  (4, 48, 128), (2, 200, 128)] {
                #expect(throws: InflateError.self, "\(label): threads \(threads), \(perThread) ranges per thread") {
                    try ParallelGzipInflater.decompress(path: path, into: MemorySink(), threads: threads,
                                                        minimumChunkInput: minimum, rangesPerThread: perThread)
                }
            }
        }
    }
}

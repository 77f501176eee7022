// Helpers for the inflation tests: inputs held in memory, in-memory sinks, payload
// generators and compression through the real tools.

import Foundation
import Testing
@testable import ImageCore

/// A `CompressedInput` over bytes in memory that returns at most `pieceSize` bytes per
/// read, to exercise every boundary between reads.
final class MemoryInput: CompressedInput {
    let name: String
    let bytes: [UInt8]
    let pieceSize: Int
    private var position = 0

    init(_ bytes: [UInt8], name: String = "memory.gz", pieceSize: Int = 1 << 20) {
        self.bytes = bytes
        self.name = name
        self.pieceSize = pieceSize
    }

    var totalSize: Int64? { Int64(bytes.count) }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let count = min(buffer.count, pieceSize, bytes.count - position)
        bytes.withUnsafeBytes { source in
            buffer.baseAddress!.copyMemory(from: source.baseAddress! + position, byteCount: count)
        }
        position += count
        return count
    }
}

/// An `ExtentSink` that keeps everything in memory, holes as zero bytes.
final class MemorySink: ExtentSink {
    var bytes: [UInt8] = []
    var holeBytes: Int64 = 0

    func write(_ bytes: UnsafeRawBufferPointer) throws { self.bytes.append(contentsOf: bytes) }

    func writeHole(count: Int64) throws {
        holeBytes += count
        bytes.append(contentsOf: repeatElement(0, count: Int(count)))
    }
}

/// Decodes `bytes` into memory with `engine`, feeding `pieceSize` bytes per read.
func inflateInMemory(_ bytes: [UInt8], engine: DeflateEngine = .isal, pieceSize: Int = 1 << 20,
                     threads: Int = 1) throws -> (output: [UInt8], summary: DecompressSummary) {
    let sink = MemorySink()
    let summary = try Decompressor.decode(input: MemoryInput(bytes, pieceSize: pieceSize), into: sink,
                                          options: DecompressOptions(threads: threads, engine: engine))
    return (sink.bytes, summary)
}

/// Runs a shell pipeline that reads `input` on standard input and returns its output,
/// for compressing with the real tools (`gzip -6`, `pigz`, `bgzip`, `xz -T2`).
func compress(_ input: [UInt8], with command: String) throws -> [UInt8] {
    let result = try runProcess("/bin/sh", ["-c", command], input: Data(input))
    guard result.status == 0 else {
        throw POSIXError(.EIO, userInfo: [NSLocalizedDescriptionKey: "\(command) failed: \(result.standardError)"])
    }
    return Array(result.standardOutput)
}

/// `gzip -c -n` of `text` by the real gzip.
func gzip(_ text: String) throws -> [UInt8] {
    try compress(Array(text.utf8), with: "gzip -c -n")
}

/// Bytes from hex text; spaces are ignored.
func bytes(hex: String) -> [UInt8] {
    let digits = Array(hex.filter { !$0.isWhitespace })
    return stride(from: 0, to: digits.count, by: 2).map { UInt8(String(digits[$0...$0 + 1]), radix: 16)! }
}

/// Deterministic payloads: a seeded generator, so a failure reproduces.
struct PayloadGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed | 1 }

    /// xorshift64*: fast and good enough for incompressible test data.
    mutating func next() -> UInt64 {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return state &* 2_685_821_657_736_338_717
    }

    mutating func random(_ count: Int) -> [UInt8] {
        var result = [UInt8](repeating: 0, count: count)
        for index in stride(from: 0, to: count, by: 8) {
            let value = next()
            for byte in 0..<min(8, count - index) { result[index + byte] = UInt8(truncatingIfNeeded: value >> (byte * 8)) }
        }
        return result
    }

    mutating func text(_ count: Int) -> [UInt8] {
        let words = ["disk", "image", "sector", "ext4", "grub", "kernel", "initrd", "rancher", "partition", "zero",
                     "block", "sparse", "inflate", "the", "a", "of", "and", "\n"]
        var result: [UInt8] = []
        result.reserveCapacity(count + 16)
        while result.count < count {
            result.append(contentsOf: words[Int(next() % UInt64(words.count))].utf8)
            result.append(0x20)
        }
        return Array(result.prefix(count))
    }
}

/// A payload that mixes random data, text and long zero runs.
func mixedPayload(seed: UInt64, size: Int) -> [UInt8] {
    var generator = PayloadGenerator(seed: seed)
    var result: [UInt8] = []
    result.reserveCapacity(size)
    while result.count < size {
        let piece = min(size - result.count, Int(generator.next() % 300_000) + 1)
        switch generator.next() % 3 {
        case 0: result.append(contentsOf: generator.random(piece))
        case 1: result.append(contentsOf: generator.text(piece))
        default: result.append(contentsOf: repeatElement(0, count: piece))
        }
    }
    return result
}

/// The gzip "compress an empty input" member, as `gzip -n` writes it.
let emptyGzipMember = bytes(hex: "1f8b 0800 0000 0000 0003 0300 0000 0000 0000 0000")

/// Writes `bytes` to `path`.
func writeFile(_ path: String, _ bytes: [UInt8]) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

/// The contents of `path`.
func readFile(_ path: String) throws -> [UInt8] {
    Array(try Data(contentsOf: URL(fileURLWithPath: path)))
}

/// The names in `directory`, sorted.
func directoryNames(_ directory: String) throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
}

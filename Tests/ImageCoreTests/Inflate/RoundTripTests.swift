// Round trips: payloads mixing random data, text and zero runs, compressed by the real
// tools, inflated into RAW files and compared by SHA-256 and by allocated size.

import Foundation
import Testing
@testable import ImageCore

@Suite struct RoundTripTests {
    static let compressors = ["gzip -1 -c", "gzip -6 -c", "gzip -9 -c", "pigz -c -p 2", "bgzip -c", "xz -T2 -c"]

    /// Named payloads; sizes stay small so the suite runs in seconds on a debug build.
    static func payloads() -> [(name: String, bytes: [UInt8])] {
        var generator = PayloadGenerator(seed: 42)
        return [
            ("empty", []),
            ("all zeros", [UInt8](repeating: 0, count: 3 << 20)),
            ("mixed", mixedPayload(seed: 1, size: 5 << 20)),
            ("ends in zeros", generator.text(300_000) + [UInt8](repeating: 0, count: 2 << 20)),
            ("starts with zeros", [UInt8](repeating: 0, count: 2 << 20) + generator.random(300_001)),
            ("random", generator.random(1_000_003)),
        ]
    }

    @Test(arguments: compressors)
    func roundTripMatchesHashAndAllocation(compressor: String) throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        for (index, payload) in Self.payloads().enumerated() {
            let original = scratch.file("original-\(index)")
            try writeFile(original, payload.bytes)
            let source = scratch.file("input-\(index)")
            try shell("\(compressor) < '\(original)' > '\(source)'")
            let raw = scratch.file("disk-\(index).raw")
            let summary = try Decompressor.decompress(source: source, destination: raw, options: DecompressOptions(threads: 2))

            #expect(try sha256sum(raw) == sha256sum(original), "\(payload.name) through \(compressor)")
            #expect(summary.bytesWritten == Int64(payload.bytes.count), "\(payload.name) through \(compressor)")
            // `cp --sparse=always` is the reference for "allocates only its data blocks".
            let reference = scratch.file("reference-\(index)")
            try shell("cp --sparse=always '\(original)' '\(reference)' && sync '\(reference)'")
            #expect(allocatedBytes(raw) <= allocatedBytes(reference), "\(payload.name) through \(compressor)")
            #expect(summary.allocatedBytes == allocatedBytes(raw), "\(payload.name) through \(compressor)")
        }
    }

    /// Sizes on both sides of 2^31 and 2^32, where 32-bit counters overflow.
    static let largeSizes: [Int64] = [(1 << 31) - 1, (1 << 31) + 1, (1 << 32) - 1, (1 << 32) + 1]

    @Test(.enabled(if: ProcessInfo.processInfo.environment["IMGTOOL_LARGE_TESTS"] == "1"), arguments: largeSizes)
    func largeRoundTripKeepsSize(size: Int64) throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        // 1 MiB of random data at each end and zeros between, so both ends are checked
        // and the file stays cheap to build.
        let original = scratch.file("original")
        try shell("{ head -c 1048576 /dev/urandom; head -c \(size - 2 * 1_048_576) /dev/zero; "
                  + "head -c 1048576 /dev/urandom; } > '\(original)'")
        for compressor in ["gzip -1 -c", "xz -T2 -0 -c"] {
            let source = scratch.file("input")
            try shell("\(compressor) < '\(original)' > '\(source)'")
            let raw = scratch.file("disk.raw")
            let summary = try Decompressor.decompress(source: source, destination: raw, options: DecompressOptions(threads: 2))
            #expect(summary.bytesWritten == size, "\(compressor)")
            #expect(fileSize(raw) == size, "\(compressor)")
            #expect(try sha256sum(raw) == sha256sum(original), "\(compressor)")
            // Two 1 MiB data ends, plus at most a few blocks of filesystem metadata.
            #expect(allocatedBytes(raw) < 3 << 20, "\(compressor)")
            try FileManager.default.removeItem(atPath: raw)
            try FileManager.default.removeItem(atPath: source)
        }
    }

    @Test func isalAndZlibAgree() throws {
        for payload in Self.payloads() {
            for compressor in Self.compressors where !compressor.hasPrefix("xz") {
                let input = try compress(payload.bytes, with: compressor)
                let fromIsal = try inflateInMemory(input, engine: .isal)
                let fromZlib = try inflateInMemory(input, engine: .zlib)
                expectEqualBytes(fromIsal.output, fromZlib.output, "\(payload.name) through \(compressor)")
                expectEqualBytes(fromIsal.output, payload.bytes, "\(payload.name) through \(compressor)")
                #expect(fromIsal.summary.members == fromZlib.summary.members, "\(payload.name) through \(compressor)")
            }
        }
    }

    @Test(arguments: [1, 7, 4096])
    func smallReadsGiveSameOutput(pieceSize: Int) throws {
        // Reads of a few bytes put every member and trailer boundary across two reads,
        // which checks how bytes ISA-L read ahead are given back to the trailer.
        let payload = mixedPayload(seed: 3, size: 40_000)
        var input: [UInt8] = []
        for part in stride(from: 0, to: payload.count, by: 5_000) {
            input += try compress(Array(payload[part..<min(payload.count, part + 5_000)]), with: "gzip -c")
            input += emptyGzipMember
        }
        for engine in DeflateEngine.allCases {
            let (output, summary) = try inflateInMemory(input, engine: engine, pieceSize: pieceSize)
            expectEqualBytes(output, payload, "\(engine) with \(pieceSize)-byte reads")
            #expect(summary.members == 16, "\(engine) with \(pieceSize)-byte reads")
        }
    }

    @Test func manySmallPigzBlocksDecode() throws {
        // pigz -i resets its blocks every 32 KiB and emits empty stored blocks to align them.
        let payload = mixedPayload(seed: 5, size: 1 << 20)
        let input = try compress(payload, with: "pigz -i -b 32 -c")
        let (output, _) = try inflateInMemory(input)
        expectEqualBytes(output, payload)
    }

    @Test func progressReportsCompressedBytes() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let source = scratch.file("input.gz")
        let input = try compress(mixedPayload(seed: 6, size: 4 << 20), with: "gzip -c")
        try writeFile(source, input)
        let updates = ProgressLog()
        let options = DecompressOptions(progress: { updates.append($0) })
        _ = try Decompressor.decompress(source: source, destination: scratch.file("disk.raw"), options: options)
        let last = try #require(updates.all.last)
        #expect(last.completed == Int64(input.count))
        #expect(last.total == Int64(input.count))
        #expect(last.written == 4 << 20)
        #expect(last.step == "inflate")
    }

    @Test func cancellationRemovesTemporaryFile() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let source = scratch.file("input.gz")
        try writeFile(source, try compress(mixedPayload(seed: 6, size: 4 << 20), with: "gzip -c"))
        let token = CancellationToken()
        token.cancel()
        #expect(throws: CancelledError.self) {
            _ = try Decompressor.decompress(source: source, destination: scratch.file("disk.raw"),
                                            options: DecompressOptions(cancellation: token))
        }
        #expect(try directoryNames(scratch.path) == ["input.gz"])
    }

    @Test func restartedInputStartsOver() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let payload = mixedPayload(seed: 11, size: 2 << 20)
        let input = RestartingInput(try compress(payload, with: "gzip -c"), restartAfter: 100_000)
        let file = try TemporaryFile(for: scratch.file("disk.raw"))
        let summary = try Decompressor.decompress(input: input, into: file, options: DecompressOptions())
        #expect(!pathExists(scratch.file("disk.raw")))
        try file.publish()
        expectEqualBytes(try readFile(scratch.file("disk.raw")), payload)
        #expect(summary.bytesWritten == Int64(payload.count))
    }
}

/// Collects progress updates from any thread.
final class ProgressLog: @unchecked Sendable {
    private let lock = NSLock()
    private var updates: [ProgressUpdate] = []

    func append(_ update: ProgressUpdate) {
        lock.lock()
        updates.append(update)
        lock.unlock()
    }

    var all: [ProgressUpdate] {
        lock.lock()
        defer { lock.unlock() }
        return updates
    }
}

/// An input that throws `CompressedInputRestarted` once after `restartAfter` bytes, as a
/// download does when the server ignores a range request.
final class RestartingInput: CompressedInput {
    let name = "restarting.gz"
    private let bytes: [UInt8]
    private let restartAfter: Int
    private var position = 0
    private var restarted = false

    init(_ bytes: [UInt8], restartAfter: Int) {
        self.bytes = bytes
        self.restartAfter = restartAfter
    }

    var totalSize: Int64? { Int64(bytes.count) }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        if !restarted, position >= restartAfter {
            restarted = true
            position = 0
            throw CompressedInputRestarted()
        }
        let count = min(buffer.count, 65536, bytes.count - position)
        bytes.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress! + position, byteCount: count) }
        position += count
        return count
    }
}

/// A gzip member followed by zero bytes in 64 KiB reads, like `cat a.gz /dev/zero` through
/// a pipe, that cancels `token` after `cancelAfter` reads and ends after `endAfter`.
final class EndlessZerosInput: CompressedInput {
    let name = "pipe"
    let totalSize: Int64? = nil
    private var pending: [UInt8]
    private var reads = 0
    private let token: CancellationToken
    private let cancelAfter: Int
    private let endAfter: Int

    init(_ member: [UInt8], token: CancellationToken, cancelAfter: Int, endAfter: Int) {
        pending = member
        self.token = token
        self.cancelAfter = cancelAfter
        self.endAfter = endAfter
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        reads += 1
        if reads == cancelAfter { token.cancel() }
        if reads > endAfter { return 0 }
        let count = min(buffer.count, 65536)
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        let copied = min(count, pending.count)
        buffer.copyBytes(from: pending.prefix(copied))
        pending.removeFirst(copied)
        return count
    }
}

@Suite struct TrailingDataCancellationTests {
    @Test func cancelStopsTrailingZeros() throws {
        let token = CancellationToken()
        // Cancelled after 10 reads; the input ends after 200 so that a decoder that never
        // checks the token returns (wrongly) instead of hanging.
        let input = EndlessZerosInput(try gzip("abc"), token: token, cancelAfter: 10, endAfter: 200)
        #expect(throws: CancelledError.self) {
            _ = try Decompressor.decode(input: input, into: MemorySink(), options: DecompressOptions(cancellation: token))
        }
    }
}

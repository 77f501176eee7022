// Speculative decoding with many small ranges against sequential decoding. Small ranges
// make most chunk ends fall in places a few large ranges rarely reach: inside stored,
// fixed and dynamic blocks, right after a member's end, and next to false block headers.

import CZlib
import Foundation
import Testing
@testable import ImageCore

/// Compresses `payload` into one gzip member whose block types change every `segment`
/// bytes: zlib's level and strategy are switched between segments (level 0 gives stored
/// blocks, `Z_FIXED` fixed ones, the rest dynamic ones), each switch ending a block.
private func mixedBlockGzip(_ payload: [UInt8], segment: Int) -> [UInt8] {
    let settings: [(Int32, Int32)] = [(6, Z_DEFAULT_STRATEGY), (0, Z_DEFAULT_STRATEGY), (1, Z_FIXED), (9, Z_FILTERED),
                                      (3, Z_HUFFMAN_ONLY), (0, Z_DEFAULT_STRATEGY), (5, Z_RLE), (1, Z_DEFAULT_STRATEGY)]
    var stream = z_stream()
    // Window bits 31: a gzip wrapper around a 32 KiB window.
    var result = deflateInit2_(&stream, settings[0].0, Z_DEFLATED, 31, 8, settings[0].1, ZLIB_VERSION,
                               Int32(MemoryLayout<z_stream>.size))
    precondition(result == Z_OK, "deflateInit2 failed with \(result)")
    defer { deflateEnd(&stream) }
    var output = [UInt8](repeating: 0, count: Int(deflateBound(&stream, UInt(payload.count))) + payload.count / 8 + 4096)
    var input = payload
    input.withUnsafeMutableBufferPointer { source in
        output.withUnsafeMutableBufferPointer { target in
            stream.next_out = target.baseAddress
            stream.avail_out = UInt32(target.count)
            var offset = 0
            var number = 0
            while offset < source.count {
                if number > 0 {
                    let (level, strategy) = settings[number % settings.count]
                    result = deflateParams(&stream, level, strategy)
                    precondition(result == Z_OK, "deflateParams failed with \(result)")
                }
                let count = min(segment, source.count - offset)
                stream.next_in = source.baseAddress! + offset
                stream.avail_in = UInt32(count)
                result = deflate(&stream, Z_NO_FLUSH)
                precondition(result == Z_OK && stream.avail_in == 0, "deflate failed with \(result)")
                offset += count
                number += 1
            }
            result = deflate(&stream, Z_FINISH)
            precondition(result == Z_STREAM_END, "deflate did not finish: \(result)")
        }
    }
    return Array(output.prefix(Int(stream.total_out)))
}

/// Compresses `payload` into one gzip member with a sync flush after every `every`
/// bytes, which ends the block and adds an empty stored block, as in pigz output.
private func syncFlushedGzip(_ payload: [UInt8], every: Int) -> [UInt8] {
    var stream = z_stream()
    // Window bits 31: a gzip wrapper around a 32 KiB window.
    var result = deflateInit2_(&stream, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY, ZLIB_VERSION,
                               Int32(MemoryLayout<z_stream>.size))
    precondition(result == Z_OK, "deflateInit2 failed with \(result)")
    defer { deflateEnd(&stream) }
    let flushes = payload.count / every + 1
    var output = [UInt8](repeating: 0, count: Int(deflateBound(&stream, UInt(payload.count))) + flushes * 16 + 4096)
    var input = payload
    input.withUnsafeMutableBufferPointer { source in
        output.withUnsafeMutableBufferPointer { target in
            stream.next_out = target.baseAddress
            stream.avail_out = UInt32(target.count)
            var offset = 0
            while offset < source.count {
                let count = min(every, source.count - offset)
                stream.next_in = source.baseAddress! + offset
                stream.avail_in = UInt32(count)
                result = deflate(&stream, Z_SYNC_FLUSH)
                precondition(result == Z_OK && stream.avail_in == 0, "deflate failed with \(result)")
                offset += count
            }
            result = deflate(&stream, Z_FINISH)
            precondition(result == Z_STREAM_END, "deflate did not finish: \(result)")
        }
    }
    return Array(output.prefix(Int(stream.total_out)))
}

/// Bytes like those of a disk image: text, machine code-like bytes, zero runs, random
/// (incompressible) stretches and repeated records, in pieces of varying length.
private func variedBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var result: [UInt8] = []
    result.reserveCapacity(count)
    let choices = randomBytes(4096, seed: seed)
    var next = 0
    while result.count < count {
        let length = (Int(choices[next % choices.count]) + 1) * 1024
        let part: [UInt8]
        switch choices[(next + 1) % choices.count] % 5 {
        case 0: part = compressibleBytes(length, seed: seed &+ UInt64(next))
        case 1: part = [UInt8](repeating: 0, count: length * 4)
        case 2: part = randomBytes(length / 2, seed: seed &+ UInt64(next) &* 31)
        case 3: part = randomBytes(length, seed: seed &+ UInt64(next)).map { $0 & 0x1f }
        default:
            let record = randomBytes(61, seed: seed &+ UInt64(next))
            part = Array((0..<(length / 61 + 1)).flatMap { index in record + [UInt8(truncatingIfNeeded: index)] }.prefix(length))
        }
        result += part
        next += 2
    }
    return Array(result.prefix(count))
}

/// Decodes one chunk on the calling thread and returns its output (holes as zeros), the
/// CRC-32 of each member end it passed, and where it stopped.
private func decodeChunk(_ decoder: SpeculativeDecoder, from start: SpeculativeDecoder.Start, stopAt: Int64) throws
    -> (bytes: [UInt8], memberCRCs: [UInt32], end: Int64) {
    let stream = ChunkStream(budget: .max)
    let end = try decoder.decode(from: start, stopAt: stopAt, into: stream)
    stream.finish(.success(end))
    var bytes: [UInt8] = []
    var memberCRCs: [UInt32] = []
    for piece in stream.take().0 {
        switch piece {
        case .data(let data, _): bytes += data
        case .block(let block, let range, _): bytes += block.bytes[range]
        case .hole(let count): bytes += repeatElement(0, count: Int(count))
        case .markers: Issue.record("a chunk with a known start handed on markers")
        case .placed: Issue.record("a chunk without buffers to place output in placed it")
        case .window: Issue.record("a chunk that placed nothing handed on a window")
        case .memberEnd(let crc, _, _): memberCRCs.append(crc)
        case .chunkStart: break
        case .guessedWindow: Issue.record("a chunk with a known start guessed its window")
        case .guessedZeroRun: Issue.record("a chunk with a known start guessed a run's byte")
        }
    }
    return (bytes, memberCRCs, end.bitOffset)
}

@Suite("Speculative decoding with many ranges")
struct SpeculativeRangeTests {
    /// Decodes `path` speculatively with 32 ranges per thread at 2, 3, 4 and 8 threads
    /// (and with 4 ranges per thread at 2 threads) and compares with `expected`.
    private func checkRanges(_ path: String, expected: [UInt8], label: String) throws {
        let size = Int(fileSize(path))
        let runs = [(2, 32), (3, 32), (4, 32), (8, 32), (2, 4)]
        for (threads, perThread) in runs {
            let sink = MemorySink()
            let result = try ParallelGzipInflater.decompress(path: path, into: sink, threads: threads, minimumChunkInput: 512,
                                                             rangesPerThread: perThread)
            #expect(sink.bytes.count == expected.count, "\(label): threads \(threads), \(perThread) ranges per thread")
            if sink.bytes != expected {
                let first = zip(sink.bytes, expected).enumerated().first { $0.element.0 != $0.element.1 }?.offset
                    ?? min(sink.bytes.count, expected.count)
                Issue.record("\(label): threads \(threads), \(perThread) ranges per thread: output differs from byte \(first) on")
            }
            // A file without a block start near its second range's start (igzip -0, or
            // one block of zeros) is decoded as one chunk.
            if size > 4 * 512 {
                #expect([.speculative, .singleChunk].contains(result.strategy), "\(label): threads \(threads)")
            }
        }
    }

    @Test("gzip and igzip levels on text, random data and zero runs")
    func levels() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        // Random data gives stored blocks, text dynamic ones, zero runs long blocks.
        let payloads: [(String, [UInt8], [String])] = [
            ("random", randomBytes(96 << 10, seed: 11), ["gzip -6", "igzip -0 -c"]),
            ("text", compressibleBytes(256 << 10, seed: 5), ["gzip -1", "gzip -6", "gzip -9", "igzip -0 -c", "igzip -3 -c"]),
            ("zeros", compressibleBytes(32 << 10, seed: 2) + [UInt8](repeating: 0, count: 2 << 20)
                + compressibleBytes(48 << 10, seed: 9) + [UInt8](repeating: 0, count: 512 << 10) + randomBytes(16 << 10),
             ["gzip -6", "igzip -0 -c"]),
        ]
        for (name, payload, commands) in payloads {
            for command in commands {
                let path = try compressFile(payload, with: command, in: scratch, name: name)
                try checkRanges(path, expected: payload, label: "\(name), \(command)")
            }
        }
    }

    @Test("stored, fixed and dynamic blocks mixed in one member")
    func mixedBlocks() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let payload = variedBytes(512 << 10, seed: 21)
        for segment in [3000, 20000] {
            let path = scratch.file("mixed-\(segment).gz")
            try writeFile(path, mixedBlockGzip(payload, segment: segment))
            try checkRanges(path, expected: payload, label: "mixed blocks, segment \(segment)")
        }
    }

    @Test("several members of different sizes")
    func members() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        var compressed: [UInt8] = []
        var expected: [UInt8] = []
        let sizes = [100, 96 << 10, 0, 7, 32 << 10, 256 << 10, 2000, 64 << 10]
        for (number, size) in sizes.enumerated() {
            let payload = variedBytes(size, seed: UInt64(number) + 40)
            let level = ["-1", "-6", "-9"][number % 3]
            compressed += try compress(payload, with: "gzip -n \(level) -c")
            expected += payload
        }
        let path = scratch.file("members.gz")
        try writeFile(path, compressed)
        try checkRanges(path, expected: expected, label: "members")
    }

    @Test("ISA-L stops where the Swift decoder stops")
    func isalStopsLikeSwift() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        var files: [(String, String)] = []
        let varied = variedBytes(640 << 10, seed: 3)
        files.append(("gzip -6", try compressFile(varied, with: "gzip -6", in: scratch, name: "varied")))
        // igzip -0 writes these 640 KiB as one block, and -1 as a few.
        files.append(("igzip -1", try compressFile(varied, with: "igzip -1 -c", in: scratch, name: "igzip")))
        files.append(("stored", try compressFile(randomBytes(200 << 10, seed: 4), with: "gzip -9", in: scratch, name: "random")))
        let mixed = scratch.file("mixed.gz")
        try writeFile(mixed, mixedBlockGzip(variedBytes(384 << 10, seed: 5), segment: 4000))
        files.append(("mixed blocks", mixed))
        let members = scratch.file("members.gz")
        try writeFile(members, try [70 << 10, 10, 90 << 10, 0, 120 << 10].enumerated().flatMap { number, size in
            try compress(compressibleBytes(size, seed: UInt64(number)), with: "gzip -n -c")
        })
        files.append(("members", members))

        for (name, path) in files {
            let file = try MappedFile(path: path)
            let swift = SpeculativeDecoder(file: file)
            let isal = SpeculativeDecoder(file: file, usesIsal: true)
            // An access point at every block boundary gives each boundary's window.
            let points = try GzipIndexBuilder.build(path: path, spacing: 1).points
                .filter { $0.compressedBitOffset < Int64(file.count - 16) * 8 }
            #expect(points.count > 3, "\(name): \(points.count) points")
            var starts: [(Int64, SpeculativeDecoder.Start)] = [(0, .memberHeader(0))]
            for point in stride(from: 1, to: points.count, by: max(1, points.count / 6)).map({ points[$0] }) {
                starts.append((point.compressedBitOffset, .known(bitOffset: point.compressedBitOffset, window: point.window ?? [])))
            }
            for (from, start) in starts {
                // Stop bits before, at and after the next boundary, between the next two, and
                // at the second.
                let next = points.map(\.compressedBitOffset).filter { $0 > from }.prefix(2)
                guard let first = next.first else { continue }
                let second = next.last ?? first
                for stopAt in [first - 1, first, first + 1, first + 3, (first + second) / 2, second] {
                    let expected = try decodeChunk(swift, from: start, stopAt: stopAt)
                    let actual = try decodeChunk(isal, from: start, stopAt: stopAt)
                    let label = "\(name): from bit \(from), stop at \(stopAt)"
                    #expect(actual.end == expected.end, "\(label)")
                    #expect(actual.memberCRCs == expected.memberCRCs, "\(label)")
                    expectEqualBytes(actual.bytes, expected.bytes, "\(label): \(actual.bytes.count) bytes, expected \(expected.bytes.count)")
                }
            }
        }
    }

    @Test("chunks decoded with a guessed window come out right")
    func guessedWindows() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        // Each record is random bytes, some text, and the same random bytes again. A chunk
        // that starts between the two copies copies bytes from before its start, whole
        // 4 KiB blocks of them, which the guessed window turns into holes.
        var payload: [UInt8] = []
        for number in 0..<96 {
            let record = randomBytes(12 << 10, seed: UInt64(number) + 100)
            payload += record + compressibleBytes(6 << 10, seed: UInt64(number)) + record
        }
        // Each copy repeats the one before it with one byte changed, so wrong bytes live on
        // through many copies.
        var copy = randomBytes(20 << 10, seed: 7)
        for number in 0..<40 {
            copy[(number * 997) % copy.count] &+= 1
            payload += copy
        }
        payload += compressibleBytes(512 << 10, seed: 8)
        let path = try compressFile(payload, with: "gzip -6", in: scratch, name: "repeats")
        for threads in [2, 3, 4, 8] {
            let result = try decodeMatching(path, payload, threads: threads, minimumChunkInput: 512,
                                            rangesPerThread: 16)
            // With 8 threads the ranges are too short for marker mode to hand over.
            #expect(threads == 8 || result.guessedWindows > 0 && result.repairedBytes > 0,
                    "threads \(threads): \(result.guessedWindows) guessed windows, \(result.repairedBytes) bytes decoded again")
        }
    }

    /// Lines made from a few base lines with one character changed each: every line
    /// copies from the lines before it, so a guessed window's errors never die out.
    private static func repeatedLines(_ size: Int) -> [UInt8] {
        let bases = (0..<40).map { randomBytes(180, seed: UInt64($0) + 900).map { 97 + $0 % 26 } }
        let changes = randomBytes(1 << 20, seed: 31)
        var payload: [UInt8] = []
        var line = 0
        while payload.count < size {
            var bytes = bases[Int(changes[line % changes.count]) % bases.count]
            bytes[Int(changes[(line + 1) % changes.count]) % bytes.count] = 48 + UInt8(line % 10)
            payload += Array(String(format: "%010d ", line).utf8) + bytes + [10]
            line += 1
        }
        return payload
    }

    /// Writes 40 MiB of `repeatedLines` compressed with `gzip -9` into `scratch`; returns
    /// the payload and the gzip file's path.
    private func linesFile(in scratch: ScratchDirectory) throws -> (payload: [UInt8], path: String) {
        let payload = Self.repeatedLines(40 << 20)
        return (payload, try compressFile(payload, with: "gzip -9", in: scratch, name: "lines"))
    }

    @Test("uncorrectable guesses finish on one thread")
    func finishesSequentially() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let (payload, path) = try linesFile(in: scratch)
        // Eight ranges of about 5 MB of output each: a repair counts as unfinished only
        // after `unfinishedRepairMinimum` bytes.
        for threads in [2, 4] {
            let result = try decodeMatching(path, payload, threads: threads, minimumChunkInput: 64 << 10,
                                            rangesPerThread: 8 / threads)
            #expect(result.finishedSequentially, "threads \(threads)")
        }
        // Data whose guessed windows are corrected within each chunk keeps all threads.
        let varied = variedBytes(24 << 20, seed: 12)
        let variedPath = try compressFile(varied, with: "gzip -6", in: scratch, name: "varied")
        let sink = MemorySink()
        let result = try ParallelGzipInflater.decompress(path: variedPath, into: sink, threads: 2,
                                                         minimumChunkInput: 64 << 10, rangesPerThread: 4)
        expectEqualBytes(sink.bytes, varied)
        #expect(!result.finishedSequentially)
    }

    @Test("one-thread finish reports progress")
    func sequentialFinishProgress() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let (payload, path) = try linesFile(in: scratch)
        let total = Int64(try FileManager.default.attributesOfItem(atPath: path)[.size] as! Int)
        let updates = Recorded<ProgressUpdate>()
        let reporter = ProgressReporter(step: "inflate", interval: .zero) { updates.append($0) }
        let sink = MemorySink()
        let result = try ParallelGzipInflater.decompress(path: path, into: sink, threads: 2, minimumChunkInput: 64 << 10,
                                                         rangesPerThread: 4, progress: reporter)
        expectEqualBytes(sink.bytes, payload)
        #expect(result.finishedSequentially)
        // The one-thread part's worker reports the input it has decoded, so the last
        // report before the final one is near the end of the input, not where that part
        // began.
        let before = updates.values.map(\.completed).filter { $0 < total }
        #expect((before.max() ?? 0) >= total * 3 / 4, "completed \(before.max() ?? 0) of \(total)")
        #expect(updates.values.last?.completed == total)
    }

    @Test("zero runs go to byte mode and data back to ISA-L")
    func switchesDecoders() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        var payload: [UInt8] = []
        for number in 0..<3 {
            payload += compressibleBytes(2 << 20, seed: UInt64(number) + 60)
            payload += [UInt8](repeating: 0, count: (6 + number) << 20)
        }
        payload += compressibleBytes(128 << 10, seed: 61)
        let path = try compressFile(payload, with: "gzip -6", in: scratch, name: "switching")

        let file = try MappedFile(path: path)
        let decoder = SpeculativeDecoder(file: file, usesIsal: true)
        let stream = ChunkStream(budget: .max)
        let end = try decoder.decode(from: .memberHeader(0), stopAt: .max, into: stream)
        stream.finish(.success(end))

        var bytes: [UInt8] = []
        var longestHole: Int64 = 0
        var isalAfterHole = false
        for piece in stream.take().0 {
            switch piece {
            case .data(let data, _):
                bytes += data
            case .block(let block, let range, _):
                bytes += block.bytes[range]
                if longestHole > 1 << 20 { isalAfterHole = true }
            case .hole(let count):
                bytes += repeatElement(0, count: Int(count))
                longestHole = max(longestHole, count)
            default:
                break
            }
        }

        expectEqualBytes(bytes, payload)
        // ISA-L hands on at most one 1 MiB call's output per hole; byte mode skips a whole run.
        #expect(longestHole > 1 << 20)
        #expect(isalAfterHole)
    }

    @Test("long zero run handed on in pieces")
    func longZeroRunInPieces() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        // One zero run as long as 2.5 hole pieces. Byte mode must hand it on in pieces:
        // as one pending hole, the writer would receive nothing until the member ended,
        // so it would update no progress and check no cancellation during the run.
        let zeroCount = Int64(ByteOutput.holePieceLimit) * 5 / 2
        let path = scratch.file("zeros.gz")
        let compressed = try shell("head -c \(zeroCount) /dev/zero | gzip -1 > '\(path)'")
        try #require(compressed.status == 0)
        let total = Int64(try FileManager.default.attributesOfItem(atPath: path)[.size] as! Int)

        let file = try MappedFile(path: path)
        let decoder = SpeculativeDecoder(file: file, usesIsal: true)
        let stream = ChunkStream(budget: .max)
        let end = try decoder.decode(from: .memberHeader(0), stopAt: .max, into: stream)
        stream.finish(.success(end))

        var output: Int64 = 0
        var holes: [Int64] = []
        for piece in stream.take().0 {
            output += piece.outputCount
            if case .hole(let count) = piece { holes.append(count) }
        }
        #expect(output == zeroCount)
        #expect(holes.count >= 2, "hole pieces: \(holes)")
        // The match that reaches the limit ends the piece: at most 258 bytes more.
        #expect(holes.allSatisfy { $0 < Int64(ByteOutput.holePieceLimit + 258) }, "hole pieces: \(holes)")
        // Byte mode reports the input it reached with each piece.
        #expect(stream.inputReached >= total / 2, "input reached \(stream.inputReached) of \(total)")
    }

    /// Decodes `path` speculatively on `threads` threads into memory, expects `expected`,
    /// and returns the result.
    private func decodeMatching(_ path: String, _ expected: [UInt8], threads: Int, minimumChunkInput: Int,
                                rangesPerThread: Int) throws -> ParallelInflateResult {
        let sink = MemorySink()
        let result = try ParallelGzipInflater.decompress(path: path, into: sink, threads: threads,
                                                         minimumChunkInput: minimumChunkInput, rangesPerThread: rangesPerThread)
        expectEqualBytes(sink.bytes, expected, "threads \(threads)")
        return result
    }

    /// Decodes `path` from bit `from` on as a speculative chunk, without an end, and
    /// returns the output pieces.
    private func searchChunk(_ path: String, from: Int64, usesIsal: Bool = true) throws -> [OutputPiece] {
        let file = try MappedFile(path: path)
        let decoder = SpeculativeDecoder(file: file, usesIsal: usesIsal)
        let stream = ChunkStream(budget: .max)
        let end = try decoder.decode(from: .search(from), stopAt: .max, into: stream)
        stream.finish(.success(end))
        return stream.take().0
    }

    @Test("chunk inside a zero run guesses zeros", arguments: ["gzip -6", "gzip -1"])
    func chunkInsideZeroRun(compressor: String) throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        // A chunk that starts inside a long zero run copies bytes of its unknown window to
        // its end: one byte with gzip -6, whose matches copy the byte before them, and
        // bytes 258 or more back with gzip -1.
        let payload = compressibleBytes(16 << 10, seed: 70) + [UInt8](repeating: 0, count: 40 << 20)
            + compressibleBytes(16 << 10, seed: 71)
        let path = try compressFile(payload, with: compressor, in: scratch, name: "zero-run")
        let size = fileSize(path)

        // The middle of the file is inside the compressed zero run (about 40 KB between
        // two parts of about 5 KB). Marker mode goes to the end of the first block, then
        // byte mode goes on with zeros as the window and turns the run into holes.
        // The Swift decoder alone takes the same path.
        for usesIsal in [true, false] {
            let pieces = try searchChunk(path, from: size * 8 / 2, usesIsal: usesIsal)
            var markerValues = 0
            var longestHole: Int64 = 0
            var guessed = false
            for piece in pieces {
                switch piece {
                case .markers(let values): markerValues += values.count
                case .hole(let count): longestHole = max(longestHole, count)
                case .guessedZeroRun: guessed = true
                default: break
                }
            }
            let label = "\(compressor), usesIsal \(usesIsal)"
            #expect(guessed, "\(label)")
            // zlib's blocks of zeros hold about 8 MiB here; the run goes on for about 20 MiB.
            #expect(markerValues < 12 << 20, "\(label): marker values: \(markerValues)")
            #expect(longestHole > 1 << 20, "\(label)")
        }

        // The window byte is zero, so the guess needs no correction.
        for threads in [2, 3, 4, 8] {
            let result = try decodeMatching(path, payload, threads: threads, minimumChunkInput: 4096,
                                            rangesPerThread: 4)
            #expect(result.repairedBytes < 1 << 20, "\(compressor), threads \(threads): \(result.repairedBytes) bytes decoded again")
        }
    }

    @Test("run of another byte corrected", arguments: [
        ("gzip -6", [UInt8]([0xff])), ("gzip -1", [0xff]), ("gzip -6", [0xde, 0xad, 0xbe, 0xef]),
    ])
    func runOfOtherByte(compressor: String, pattern: [UInt8]) throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        // A chunk inside this run guesses zeros for the window bytes it copies, so the
        // writer corrects the run. The run is most of the compressed file, so ranges start
        // inside it at every thread count.
        let run = [UInt8]((0..<(24 << 20)).map { pattern[$0 % pattern.count] })
        let payload = compressibleBytes(16 << 10, seed: 72) + run
            + compressibleBytes(16 << 10, seed: 73) + [UInt8](repeating: 0, count: 8 << 20)
        let path = try compressFile(payload, with: compressor, in: scratch, name: "pattern-run")
        for threads in [2, 3, 4, 8] {
            let result = try decodeMatching(path, payload, threads: threads, minimumChunkInput: 4096,
                                            rangesPerThread: 4)
            #expect(result.guessedWindows > 0, "\(compressor), pattern \(pattern), threads \(threads)")
        }
    }

    @Test("empty stored blocks keep byte mode")
    func emptyStoredBlocksKeepByteMode() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        // A sync flush after every 128 KiB adds an empty stored block there. Byte mode
        // must not take such a block for data and hand the zero run back to ISA-L, which
        // hands on at most one 1 MiB call's output per hole.
        let payload = compressibleBytes(1 << 20, seed: 74) + [UInt8](repeating: 0, count: 16 << 20)
            + compressibleBytes(128 << 10, seed: 75)
        let path = scratch.file("flushed.gz")
        try writeFile(path, syncFlushedGzip(payload, every: 128 << 10))

        let file = try MappedFile(path: path)
        let decoder = SpeculativeDecoder(file: file, usesIsal: true)
        let stream = ChunkStream(budget: .max)
        let end = try decoder.decode(from: .memberHeader(0), stopAt: .max, into: stream)
        stream.finish(.success(end))
        var bytes: [UInt8] = []
        var longestHole: Int64 = 0
        for piece in stream.take().0 {
            switch piece {
            case .data(let data, _): bytes += data
            case .block(let block, let range, _): bytes += block.bytes[range]
            case .hole(let count):
                bytes += repeatElement(0, count: Int(count))
                longestHole = max(longestHole, count)
            default: break
            }
        }
        expectEqualBytes(bytes, payload)
        #expect(longestHole > 4 << 20, "longest hole: \(longestHole)")

        for threads in [2, 4] {
            _ = try decodeMatching(path, payload, threads: threads, minimumChunkInput: 4096, rangesPerThread: 4)
        }
    }

    @Test("truncated zero run fails")
    func truncatedZeroRun() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        // In the last blocks of gzip -1 of 32 MiB of zeros, the all-zero bit pattern is a
        // zero match, so the zero bits read past the end decode as zero runs without end.
        let zeroCount = 32 << 20
        let whole = scratch.file("zeros.gz")
        let compressed = try shell("head -c \(zeroCount) /dev/zero | gzip -1 > '\(whole)'")
        try #require(compressed.status == 0)
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: whole)))
        let path = scratch.file("truncated.gz")
        try writeFile(path, Array(bytes.prefix(bytes.count - 20)))

        let file = try MappedFile(path: path)
        let decoder = DeflateDecoder(input: file.bytes)
        decoder.seek(toBit: 10 * 8)
        var handedOn: Int64 = 0
        let output = ByteOutput(window: UnsafeBufferPointer(start: nil, count: 0), pieceSize: 1 << 20) { piece throws(DeflateError) in
            handedOn += piece.outputCount
            // Far more than the whole member holds: without a truncation check the
            // decoder would run on forever.
            if handedOn > Int64(zeroCount) * 4 { throw .invalid("output ran on past the end of the input") }
        }
        var failure: DeflateError?
        do throws(DeflateError) {
            repeat {
                try decoder.readBlockHeader()
                while case .outputFull = try decoder.decodeBytes(into: output) {
                    try output.flush()
                }
            } while !decoder.isFinalBlock
            try output.finish()
        } catch {
            failure = error
        }
        guard case .truncated = failure else {
            Issue.record("expected a truncation error, got \(String(describing: failure)) after \(handedOn) bytes")
            return
        }
        #expect(handedOn <= Int64(zeroCount))
    }

    @Test("repetitive text goes to ISA-L with a guessed window")
    func repetitiveText() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        // Lines drawn from 200 base lines, some with a number appended: a chunk's matches
        // keep copying from before its start, so its markers never clear, and two blocks
        // fill marker mode's first 1 MiB piece. Marker mode then decoded every chunk to
        // its end, and two threads took 2.8 times as long as one.
        var generator = SeededGenerator(seed: 11)
        let words = (0..<400).map { Array("w\($0)".utf8) }
        let baseLines = (0..<200).map { _ in
            Array((0..<12).map { _ in words[Int(generator.next() % 400)] }.joined(separator: [0x20]))
        }
        var payload: [UInt8] = []
        while payload.count < 8 << 20 {
            payload += baseLines[Int(generator.next() % 200)]
            if generator.next() % 10 < 3 { payload += Array(" \(generator.next() % 1_000_000)".utf8) }
            payload.append(0x0a)
        }
        let path = try compressFile(payload, with: "gzip -9", in: scratch, name: "lines")
        for threads in [2, 3] {
            let result = try decodeMatching(path, payload, threads: threads, minimumChunkInput: 256 << 10,
                                            rangesPerThread: 2)
            #expect(result.guessedWindows > 0, "threads \(threads)")
        }
    }

    @Test("zero runs inside huge blocks after data")
    func zeroRunsInHugeBlocks() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        // A gzip -6 member, so the second range has block starts, then an igzip -0 member
        // of blocks larger than a range, with zero runs. ISA-L meets the zero runs, finds
        // no block start near them, and must not search the rest of the file bit by bit
        // for its stop: that took 37% of the CPU time of a 28 MB file. The speed is a
        // benchmark's to check; this test checks the output.
        let head = variedBytes(1 << 20, seed: 80)
        var tail: [UInt8] = []
        for number in 0..<6 {
            tail += variedBytes(128 << 10, seed: UInt64(number) + 81)
            tail += [UInt8](repeating: 0, count: 2 << 20)
        }
        let first = try compressFile(head, with: "gzip -6", in: scratch, name: "head")
        let second = try compressFile(tail, with: "igzip -0 -c", in: scratch, name: "tail")
        let path = scratch.file("both.gz")
        try writeFile(path, try readFile(first) + readFile(second))
        let sequential = try ParallelGzipInflater.decompress(path: path, into: MemorySink(), threads: 1)
        #expect(sequential.strategy != .speculative)
        for threads in [2] {
            let result = try decodeMatching(path, head + tail, threads: threads, minimumChunkInput: 128 << 10,
                                            rangesPerThread: 4)
            #expect(result.strategy == .speculative, "threads \(threads)")
        }
    }

    @Test("one huge block decodes as one chunk")
    func hugeBlock() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        // igzip -0 writes blocks of megabytes: no range but the first has a block start.
        let payload = variedBytes(12 << 20, seed: 70)
        let path = try compressFile(payload, with: "igzip -0 -c", in: scratch, name: "huge")
        for threads in [2, 4] {
            let result = try decodeMatching(path, payload, threads: threads, minimumChunkInput: 64 << 10,
                                            rangesPerThread: 4)
            #expect(result.strategy == .singleChunk, "threads \(threads)")
        }
    }

    @Test("false start whose next block fails")
    func falseStartNextBlockFails() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        // A stored block of 40000 bytes of 0xff at bit 0 gives a clean window at once.
        // The fixed-Huffman block after it parses, but its first code is 286, which is
        // no valid symbol. Every other bit position starts with a final block (a set
        // bit), so the search finds no other start.
        let length = 40_000
        var bytes: [UInt8] = [0x00, UInt8(length & 0xff), UInt8(length >> 8),
                              UInt8(~length & 0xff), UInt8((~length >> 8) & 0xff)]
        bytes += [UInt8](repeating: 0xff, count: length)
        // Bits from the least significant: BFINAL 0, BTYPE 01, then code 11000110.
        bytes += [0x1a, 0x03] + [UInt8](repeating: 0xff, count: 64)
        let path = scratch.file("false-start.bin")
        try writeFile(path, bytes)
        let decoder = SpeculativeDecoder(file: try MappedFile(path: path), usesIsal: true)
        let stream = ChunkStream(budget: .max)
        let end = try decoder.decode(from: .search(0), stopAt: Int64(bytes.count) * 8, into: stream)
        stream.finish(.success(end))
        #expect(!end.foundStart, "the start at bit 0 is rejected before anything is handed on")
        #expect(stream.take().0.isEmpty)
    }

    @Test("stored header found bits early")
    func storedHeaderFoundEarly() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        // Stored blocks of 0xff bytes, each ending in one 0x00 byte. A stored header read
        // from 2 or 1 bits before a real one (the zero top bits of that last byte) has the
        // same zero padding and reads the same LEN, so it decodes the same block. 0xff
        // bytes start only final blocks, which the search skips, so the search finds
        // exactly those early headers. gzip and pigz write runs of stored blocks for
        // incompressible data, where the top bit of the byte before a header is zero
        // about every second time.
        let blockLength = 65_535
        var content = [UInt8](repeating: 0xff, count: blockLength)
        content[blockLength - 1] = 0
        let blockCount = 48
        var payload: [UInt8] = []
        var member: [UInt8] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]
        for number in 0..<blockCount {
            let final: UInt8 = number == blockCount - 1 ? 1 : 0
            member += [final, UInt8(blockLength & 0xff), UInt8(blockLength >> 8),
                       UInt8(~blockLength & 0xff), UInt8((~blockLength >> 8) & 0xff)]
            member += content
            payload += content
        }
        let crc = crc32Of(payload)
        let size = UInt32(payload.count)
        member += [UInt8(crc & 0xff), UInt8((crc >> 8) & 0xff), UInt8((crc >> 16) & 0xff), UInt8(crc >> 24)]
        member += [UInt8(size & 0xff), UInt8((size >> 8) & 0xff), UInt8((size >> 16) & 0xff), UInt8(size >> 24)]
        let path = scratch.file("stored.gz")
        try writeFile(path, member)

        let (output, result) = try parallelOutput(path, threads: 4, minimumChunkInput: 256 << 10)
        #expect(output == payload)
        #expect(result.chunks > 4, "the file splits into several ranges")
        #expect(result.rangesDecodedAgain == 0, "a worker that started bits early decoded the same blocks")
    }

    @Test("stored starts compared by LEN byte")
    func storedStartsCompared() {
        // Data bytes ff 00, then a stored header at bit 16: 00, LEN 0x0400, NLEN 0xfbff.
        let bytes: [UInt8] = [0xff, 0x00, 0x00, 0x00, 0x04, 0xff, 0xfb] + [UInt8](repeating: 0xff, count: 16)
        let header: Int64 = 16
        let cases: [(Int64, Bool)] = [(header, true), (header - 2, true), (header - 1, true), (header + 5, true),
                                      (header - 3, false), (header + 6, false), (0, false)]
        bytes.withUnsafeBytes { input in
            for (offset, same) in cases {
                #expect(BlockFinder.startsSameBlock(offset, header, in: input) == same, "bit \(offset)")
                #expect(BlockFinder.startsSameBlock(header, offset, in: input) == same, "bit \(offset), swapped")
            }
        }
    }

    @Test("gzip of a few MiB of varied data")
    func variedData() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let payload = variedBytes(3 << 20, seed: 1)
        let path = try compressFile(payload, with: "gzip -6", in: scratch, name: "varied")
        try checkRanges(path, expected: payload, label: "varied data")
    }
}

// ParallelGzipInflater: decodes a gzip file on several threads into an ExtentSink.
//
// The file is cut into chunks that can be decoded independently, and a `ChunkPipeline`
// decodes them on worker threads while this thread writes their output in order and
// checks every member's CRC-32 and ISIZE. Chunks come from, in order of preference:
//   1. a seek index (GZIDX): one chunk per access point, started with its window;
//   2. member boundaries: BGZF gives each member's size in its header; other
//      multi-member files (concatenated gzip, `pigz --independent` is not one of them)
//      are cut at candidate member headers found by scanning, which are speculative: a
//      candidate counts only if the previous chunk's decoding ends exactly there;
//   3. otherwise the whole file is one chunk, decoded on one worker.
// The output equals sequential decoding byte for byte: chunks are written in order, a
// chunk whose start turns out not to follow its predecessor's end is discarded and the
// gap decoded again, and the CRC of every member is checked across chunk boundaries.

import CZlib
import Foundation

/// How the file was split.
public enum ParallelStrategy: String, Sendable {
    case index, bgzfMembers, members, singleChunk
}

/// What a parallel decode found.
public struct ParallelInflateResult: Sendable {
    public var uncompressedSize: Int64
    public var members: Int
    public var chunks: Int
    public var strategy: ParallelStrategy
    /// Bytes after the last member that are neither zeros nor a member (ignored).
    public var trailingGarbage: Int64
}

public enum ParallelGzipInflater {
    /// Output bytes a chunk may hold in memory before its worker waits for the writer.
    public static let defaultChunkBudget = 16 << 20

    /// Decodes the gzip file at `path` into `sink` with `threads` workers.
    /// - Parameters:
    ///   - index: a seek index of this file; its access points become the chunks.
    ///   - budget: the bytes of output each chunk may buffer (see `defaultChunkBudget`).
    ///   - minimumChunkInput: the least compressed input per chunk when splitting at
    ///     member boundaries.
    /// - Throws: `GzipDataError` for invalid or truncated data and CRC or size
    ///   mismatches, `GzipIndexError` for an index that does not fit the file,
    ///   `CancelledError`, and whatever the sink throws.
    public static func decompress(path: String, into sink: any ExtentSink, threads: Int, index: GzipIndex? = nil,
                                  budget: Int = defaultChunkBudget, minimumChunkInput: Int = 4 << 20,
                                  cancellation: CancellationToken? = nil,
                                  progress: ProgressReporter? = nil) throws -> ParallelInflateResult {
        let file = try MappedFile(path: path)
        let input = file.bytes
        guard input.count > 0 else {
            throw GzipDataError(path: path, offset: 0, reason: "the file is empty, not a gzip member")
        }
        guard try GzipMemberHeader.parse(input, at: 0) != nil else {
            throw GzipDataError(path: path, offset: 0, reason: "it does not start with the gzip magic bytes 1f 8b")
        }

        let plan: ChunkPlan
        if let index {
            plan = try ChunkPlan(index: index, fileSize: Int64(input.count), path: path)
        } else {
            do {
                plan = try ChunkPlan(members: input, threads: threads, minimumChunkInput: minimumChunkInput)
            } catch {
                throw error.at(path: path)
            }
        }
        Log.debug("parallel inflate", "\(path): \(plan.chunks.count) chunks (\(plan.strategy.rawValue)), \(threads) threads")

        let decoder = SpanDecoder(file: file)
        let chunks = plan.chunks
        let pipeline = ChunkPipeline(chunkCount: chunks.count, threads: threads, budget: budget) { number, stream in
            try decoder.decode(from: chunks[number].start, until: chunks[number].stop, into: stream)
        }
        pipeline.start()
        defer { pipeline.abandonAll() }

        var writer = OrderedWriter(sink: sink, path: path, cancellation: cancellation, progress: progress,
                                   compressedSize: Int64(input.count))
        var expectedBitOffset = chunks.first?.start.bitOffset ?? 0
        var trailingGarbage: Int64 = 0
        for (number, chunk) in chunks.enumerated() {
            let stream = pipeline.streams[number]
            if plan.isSpeculative {
                if chunk.start.bitOffset < expectedBitOffset {
                    stream.abandon()
                    continue
                }
                if chunk.start.bitOffset > expectedBitOffset {
                    // The previous chunk ended at a member end before this candidate: the
                    // bytes between are decoded again on a helper thread, up to the
                    // first member end at or after the candidate.
                    stream.abandon()
                    let gap = ChunkStart(bitOffset: expectedBitOffset, atMemberHeader: true, window: nil)
                    let end = try writer.consume(runAlone(decoder, from: gap,
                                                          until: .memberEndAtOrAfter(chunk.start.bitOffset / 8), budget: budget))
                    expectedBitOffset = end.bitOffset
                    trailingGarbage = end.trailingGarbage
                    if expectedBitOffset != chunk.start.bitOffset { continue }
                    let retry = ChunkStart(bitOffset: expectedBitOffset, atMemberHeader: true, window: nil)
                    let retried = try writer.consume(runAlone(decoder, from: retry, until: chunk.stop, budget: budget))
                    expectedBitOffset = retried.bitOffset
                    trailingGarbage = retried.trailingGarbage
                    continue
                }
            }
            let end = try writer.consume(stream)
            expectedBitOffset = end.bitOffset
            trailingGarbage = end.trailingGarbage
        }
        try writer.finish()
        if trailingGarbage > 0 {
            Log.warning("inflate", "\(path): ignored \(trailingGarbage) bytes of trailing data after the last gzip member")
        }
        return ParallelInflateResult(uncompressedSize: writer.written, members: writer.members, chunks: chunks.count,
                                     strategy: plan.strategy, trailingGarbage: trailingGarbage)
    }

    /// Decodes one range on its own thread and returns its stream for the writer.
    private static func runAlone(_ decoder: SpanDecoder, from start: ChunkStart, until stop: ChunkStop,
                                 budget: Int) -> ChunkStream {
        let stream = ChunkStream(budget: budget)
        let thread = Thread {
            stream.finish(Result { try decoder.decode(from: start, until: stop, into: stream) })
        }
        thread.name = "imgtool-inflate-gap"
        thread.start()
        return stream
    }
}

/// The chunks of one decode and where each starts and stops.
struct ChunkPlan {
    struct Chunk: Sendable {
        var start: ChunkStart
        var stop: ChunkStop
    }

    var chunks: [Chunk]
    var strategy: ParallelStrategy
    /// True when chunk starts are guesses that decoding must confirm.
    var isSpeculative = false

    /// One chunk per access point of `index`.
    init(index: GzipIndex, fileSize: Int64, path: String) throws(GzipIndexError) {
        guard index.compressedSize == fileSize else {
            throw GzipIndexError(path: path, reason: "it describes a file of \(index.compressedSize) bytes, but the input has \(fileSize)")
        }
        var points = index.points.filter { $0.compressedBitOffset < fileSize * 8 }
        if points.first?.uncompressedOffset != 0 {
            points.insert(GzipAccessPoint(compressedBitOffset: 0, uncompressedOffset: 0, window: nil), at: 0)
        }
        chunks = []
        for (number, point) in points.enumerated() {
            // A point without a window starts a member's deflate data (or, for the first
            // point at offset 0, the member header itself).
            let atHeader = point.compressedBitOffset == 0
            let start = ChunkStart(bitOffset: point.compressedBitOffset, atMemberHeader: atHeader, window: point.window)
            let stop: ChunkStop
            if number + 1 < points.count {
                let next = points[number + 1]
                stop = .afterOutput(next.uncompressedOffset - point.uncompressedOffset, endBitOffset: next.compressedBitOffset)
            } else {
                stop = .memberEndAtOrAfter(fileSize)
            }
            chunks.append(Chunk(start: start, stop: stop))
        }
        strategy = .index
    }

    /// Chunks at member boundaries: exact for BGZF, speculative for other files.
    init(members input: UnsafeRawBufferPointer, threads: Int, minimumChunkInput: Int) throws(GzipDataError) {
        let fileSize = input.count
        // Four chunks per thread keep every core busy when members differ in cost; a
        // minimum input per chunk (4 MiB by default) keeps the per-chunk overhead small.
        let target = max(minimumChunkInput, fileSize / max(1, threads * 4))
        var starts: [Int] = [0]
        strategy = .members
        if let first = try GzipMemberHeader.parse(input, at: 0), first.bgzfMemberSize != nil {
            strategy = .bgzfMembers
            var offset = 0
            var chunkStart = 0
            while offset < fileSize, let header = try? GzipMemberHeader.parse(input, at: offset),
                  let size = header.bgzfMemberSize, size > header.length + GzipMemberHeader.trailerSize {
                if offset - chunkStart >= target {
                    starts.append(offset)
                    chunkStart = offset
                }
                offset += size
            }
        } else if threads > 1 {
            isSpeculative = true
            var offset = target
            while offset < fileSize - 18 {
                if let found = Self.findMemberHeader(input, from: offset, limit: min(fileSize, offset + target)) {
                    starts.append(found)
                }
                offset += target
            }
        }
        if starts.count == 1 { strategy = .singleChunk }
        chunks = []
        for (number, start) in starts.enumerated() {
            let end = number + 1 < starts.count ? Int64(starts[number + 1]) : Int64(fileSize)
            chunks.append(Chunk(start: ChunkStart(bitOffset: Int64(start) * 8, atMemberHeader: true, window: nil),
                                stop: .memberEndAtOrAfter(end)))
        }
    }

    /// The first offset in `from..<limit` that holds a plausible member header: magic,
    /// method 8, no reserved flag bits, and a header that parses.
    private static func findMemberHeader(_ input: UnsafeRawBufferPointer, from start: Int, limit: Int) -> Int? {
        var offset = start
        while offset + 10 < limit {
            if input[offset] == 0x1f, input[offset + 1] == 0x8b, input[offset + 2] == 8, input[offset + 3] & 0xe0 == 0,
               (try? GzipMemberHeader.parse(input, at: offset)) != nil {
                return offset
            }
            offset += 1
        }
        return nil
    }
}

/// The consumer side: writes pieces to the sink in order and checks member trailers.
struct OrderedWriter {
    let sink: any ExtentSink
    let path: String
    let cancellation: CancellationToken?
    let progress: ProgressReporter?
    let compressedSize: Int64
    private(set) var written: Int64 = 0
    private(set) var members = 0
    private var memberCRC: UInt32 = 0
    private var memberSize: Int64 = 0

    init(sink: any ExtentSink, path: String, cancellation: CancellationToken?, progress: ProgressReporter?, compressedSize: Int64) {
        self.sink = sink
        self.path = path
        self.cancellation = cancellation
        self.progress = progress
        self.compressedSize = compressedSize
    }

    /// Writes every piece of `stream` and returns the chunk's end, or throws its error.
    mutating func consume(_ stream: ChunkStream) throws -> ChunkEnd {
        while true {
            try cancellation?.check("inflate")
            let (pieces, end) = stream.take()
            for piece in pieces {
                switch piece {
                case .data(let bytes, let crc):
                    try bytes.withUnsafeBytes { try sink.write($0) }
                    memberCRC = UInt32(crc32_combine(UInt(memberCRC), UInt(crc), Int(bytes.count)))
                    memberSize += Int64(bytes.count)
                    written += Int64(bytes.count)
                case .hole(let count):
                    try sink.writeHole(count: count)
                    memberCRC = UInt32(crc32_combine(UInt(memberCRC), UInt(ZeroCRC.crc(ofZeros: count)), Int(count)))
                    memberSize += count
                    written += count
                case .memberEnd(let crc, let size, let trailerOffset):
                    guard crc == memberCRC else {
                        throw GzipDataError(path: path, offset: trailerOffset, reason: String(
                            format: "CRC-32 mismatch: the trailer stores %08x, the data gives %08x", crc, memberCRC))
                    }
                    guard size == UInt32(truncatingIfNeeded: memberSize) else {
                        throw GzipDataError(path: path, offset: trailerOffset + 4, reason:
                            "length mismatch: the trailer stores \(size), the member holds \(memberSize) bytes (\(UInt32(truncatingIfNeeded: memberSize)) modulo 2^32)")
                    }
                    members += 1
                    memberCRC = 0
                    memberSize = 0
                }
            }
            progress?.update(completed: written, total: nil, written: written)
            if pieces.isEmpty, let end {
                switch end {
                case .success(let value): return value
                case .failure(let error as GzipDataError): throw error.at(path: path)
                case .failure(let error): throw error
                }
            }
        }
    }

    /// Checks that the data ended at a member boundary.
    func finish() throws {
        guard memberSize == 0 else {
            throw GzipDataError(path: path, offset: compressedSize, reason: "the file ends inside a member (truncated)")
        }
        progress?.finish(completed: written, total: nil, written: written)
    }
}

/// CRC-32 of runs of zero bytes without reading any: crc(zeros(2n)) is crc(zeros(n))
/// combined with itself, so `crc(ofZeros:)` takes O(log n) `crc32_combine` calls.
enum ZeroCRC {
    static func crc(ofZeros count: Int64) -> UInt32 {
        var result: UInt = 0
        var resultLength: Int64 = 0
        var power: UInt = 0
        var zero: UInt8 = 0
        power = crc32(0, &zero, 1)
        var powerLength: Int64 = 1
        var remaining = count
        while remaining > 0 {
            if remaining & 1 == 1 {
                result = resultLength == 0 ? power : crc32_combine(result, power, Int(powerLength))
                resultLength += powerLength
            }
            remaining >>= 1
            if remaining > 0 {
                power = crc32_combine(power, power, Int(powerLength))
                powerLength *= 2
            }
        }
        return UInt32(result)
    }
}

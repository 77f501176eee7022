// ParallelGzipInflater: decodes a gzip file on several threads into an ExtentSink.
//
// The file is cut into chunks, worker threads decode them (`ChunkPipeline`), and the
// calling thread writes their output in order and checks every member's CRC-32 and
// ISIZE across chunk boundaries. The chunks come from, in order of preference:
//   1. a seek index (GZIDX): one chunk per access point, decoded by ISA-L from the
//      point's window up to the next point's uncompressed offset (`IsalChunkDecoder`);
//   2. BGZF: each member's size is in its header and its output size in its trailer, so
//      chunks are whole members, each decoded in one libdeflate call (`BgzfDecoder`);
//   3. anything else: equal byte ranges decoded speculatively (`SpeculativeDecoder`):
//      the Swift decoder finds a block header in each range and decodes with markers
//      for the unknown window until the window is known, then ISA-L decodes the rest
//      (`IsalRangeDecoder`). A chunk counts only if it starts exactly
//      where the previous chunk stopped. Otherwise its range is decoded again from the
//      known window, so the output always equals sequential decoding byte for byte.

import CZlib
import Foundation

/// The way the file was split into chunks.
public enum ParallelStrategy: String, Sendable {
    case index, bgzfMembers, speculative, singleChunk
}

/// The counts and warnings of one parallel decode.
public struct ParallelInflateResult: Sendable {
    public var uncompressedSize: Int64
    public var members: Int
    public var chunks: Int
    public var strategy: ParallelStrategy
    /// Bytes after the last member that are neither zeros nor a member (ignored).
    public var trailingGarbage: Int64
    /// Problems that did not stop decoding (trailing data). `Decompressor` logs them.
    public var warnings: [String]
    /// Speculative chunks that ISA-L decoded with a guessed window, and the output bytes
    /// the writer decoded again to correct them (see `WindowRepair`).
    public var guessedWindows = 0
    public var repairedBytes: Int64 = 0
    /// Output bytes that workers wrote at their file offsets, without the writer's copy
    /// (see `PlacedChunkOutput`).
    public var placedBytes: Int64 = 0
    /// Speculative ranges whose worker did not start where the chunk before ended, so
    /// the writer decoded them again on its own thread.
    public var rangesDecodedAgain = 0
    /// True when the end of the file was decoded on one thread, because a chunk's guessed
    /// window was still being corrected at the chunk's end (see `runSpeculative`).
    public var finishedSequentially = false
}

public enum ParallelGzipInflater {
    /// Output bytes a chunk may hold in memory before its worker waits for the writer.
    public static let defaultChunkBudget = 16 << 20
    /// Index chunks whose output is more than this many times their input go to the
    /// Swift decoder, which skips zero runs. The files in the test images compress
    /// about 4 to 1, so only zero runs reach this ratio.
    static let zeroHeavyRatio: Int64 = 64
    /// The maximum output an index chunk decodes into one buffer before lending it to the
    /// sparse writer (see `PlacementPool`).
    public static let placementPieceSize = 4 << 20

    /// Decodes the gzip file at `path` into `sink` with `threads` workers.
    /// - Parameters:
    ///   - index: a seek index of this file; its access points become the chunks.
    ///   - budget: the bytes of output each chunk may buffer (see `defaultChunkBudget`).
    ///   - minimumChunkInput: the least compressed input per chunk when splitting at
    ///     member boundaries.
    /// - Throws: `InflateError` for invalid or truncated data and CRC or size
    ///   mismatches, `GzipIndexError` for an index that does not fit the file,
    ///   `CancelledError`, and whatever the sink throws.
    public static func decompress(path: String, into sink: any ExtentSink, threads: Int, index: GzipIndex? = nil,
                                  budget: Int = defaultChunkBudget, minimumChunkInput: Int = 4 << 20,
                                  placementPieceSize: Int = placementPieceSize, cancellation: CancellationToken? = nil,
                                  progress: ProgressReporter? = nil) throws -> ParallelInflateResult {
        try decompress(path: path, into: sink, threads: threads, index: index, budget: budget,
                       minimumChunkInput: minimumChunkInput, rangesPerThread: defaultRangesPerThread,
                       placementPieceSize: placementPieceSize, cancellation: cancellation, progress: progress)
    }

    /// Byte ranges per thread of a speculative decode (at least; see `runSpeculative`).
    /// Several ranges per thread even out differences in cost between ranges.
    static let defaultRangesPerThread = 6
    /// Speculative chunks' streams hold this many times the budget (see `runSpeculative`).
    static let speculativeBudgetFactor = 4

    /// `decompress` with `rangesPerThread` speculative ranges per thread (tests use many
    /// small ranges to reach rare chunk ends).
    static func decompress(path: String, into sink: any ExtentSink, threads: Int, index: GzipIndex? = nil,
                           budget: Int = defaultChunkBudget, minimumChunkInput: Int, rangesPerThread: Int,
                           placementPieceSize: Int = placementPieceSize, cancellation: CancellationToken? = nil,
                           progress: ProgressReporter? = nil) throws -> ParallelInflateResult {
        try decompress(file: try MappedFile(path: path), into: sink, threads: threads, index: index, budget: budget,
                       minimumChunkInput: minimumChunkInput, rangesPerThread: rangesPerThread,
                       placementPieceSize: placementPieceSize, cancellation: cancellation, progress: progress)
    }

    /// `decompress` of a file mapped already (tests change the file in between).
    static func decompress(file: MappedFile, into sink: any ExtentSink, threads: Int, index: GzipIndex? = nil,
                           budget: Int = defaultChunkBudget, minimumChunkInput: Int = 4 << 20,
                           rangesPerThread: Int = defaultRangesPerThread,
                           placementPieceSize: Int = placementPieceSize, cancellation: CancellationToken? = nil,
                           progress: ProgressReporter? = nil) throws -> ParallelInflateResult {
        let result: ParallelInflateResult
        do {
            result = try decompressChecked(file: file, into: sink, threads: threads, index: index, budget: budget,
                                           minimumChunkInput: minimumChunkInput, rangesPerThread: rangesPerThread,
                                           placementPieceSize: placementPieceSize,
                                           cancellation: cancellation, progress: progress)
        } catch {
            // Zeros replaced the pages the file lost, so any failure is reported as
            // the file's change.
            try file.checkUnchanged()
            if let error = error as? GzipDataError { throw error.at(path: file.path).inflateError }
            throw error
        }
        try file.checkUnchanged()
        return result
    }

    private static func decompressChecked(file: MappedFile, into sink: any ExtentSink, threads: Int, index: GzipIndex?,
                                          budget: Int, minimumChunkInput: Int, rangesPerThread: Int,
                                          placementPieceSize: Int,
                                          cancellation: CancellationToken?,
                                          progress: ProgressReporter?) throws -> ParallelInflateResult {
        let path = file.path
        let input = file.bytes
        guard input.count > 0 else {
            throw GzipDataError(path: path, offset: 0, reason: "the file is empty, not a gzip member")
        }
        guard try GzipMemberHeader.parse(input, at: 0) != nil else {
            throw GzipDataError(path: path, offset: 0, reason: "it does not start with the gzip magic bytes 1f 8b")
        }

        var writer = OrderedWriter(sink: sink, path: path, cancellation: cancellation, progress: progress,
                                   compressedSize: Int64(input.count))
        writer.input = file
        let trailingGarbage: Int64
        let chunkCount: Int
        let strategy: ParallelStrategy
        var finishedSequentially = false
        if let index {
            (trailingGarbage, chunkCount) = try runIndex(index, file: file, threads: threads, budget: budget,
                                                         pieceSize: placementPieceSize, writer: &writer)
            strategy = .index
        } else if let first = try GzipMemberHeader.parse(input, at: 0), first.bgzfMemberSize != nil {
            let plan = BgzfPlan(input, threads: threads, minimumChunkInput: minimumChunkInput, outputLimit: budget / 2)
            (trailingGarbage, chunkCount) = try runBgzf(plan, file: file, threads: threads, budget: budget,
                                                        writer: &writer)
            strategy = .bgzfMembers
        } else {
            (trailingGarbage, chunkCount, finishedSequentially) = try runSpeculative(
                file: file, threads: threads, budget: budget, minimumChunkInput: minimumChunkInput,
                rangesPerThread: rangesPerThread, placementPieceSize: placementPieceSize, writer: &writer)
            strategy = chunkCount > 1 ? .speculative : .singleChunk
        }
        try writer.finish()
        var warnings: [String] = []
        if trailingGarbage > 0 {
            warnings.append("'\(path)': ignored \(trailingGarbage) bytes of trailing data at offset "
                            + "\(Int64(input.count) - trailingGarbage) after the last gzip member")
        }
        Log.debug("parallel inflate", "\(path): \(chunkCount) chunks (\(strategy.rawValue)), \(threads) threads")
        if writer.guessedWindows > 0 {
            Log.debug("parallel inflate", "\(path): \(writer.guessedWindows) chunks decoded with a guessed window, \(writer.repairedBytes) bytes decoded again to correct them")
        }
        Log.debug("parallel inflate", "\(path): workers placed \(writer.placedBytes) of \(writer.written) output bytes themselves")
        return ParallelInflateResult(uncompressedSize: writer.written, members: writer.members, chunks: chunkCount,
                                     strategy: strategy, trailingGarbage: trailingGarbage, warnings: warnings,
                                     guessedWindows: writer.guessedWindows, repairedBytes: writer.repairedBytes,
                                     placedBytes: writer.placedBytes, rangesDecodedAgain: writer.rangesDecodedAgain,
                                     finishedSequentially: finishedSequentially)
    }

    /// Runs chunks of whole BGZF members with libdeflate (`BgzfDecoder`), and the part
    /// of the file after the last such member, if any, with ISA-L. zlib, which decoded
    /// them before, made two threads slower than ISA-L's sequential decoding on one.
    private static func runBgzf(_ plan: BgzfPlan, file: MappedFile, threads: Int, budget: Int,
                                writer: inout OrderedWriter) throws -> (Int64, Int) {
        let blocks = OutputBlockPool.forStreams(2 * threads * budget)
        let bgzf = BgzfDecoder(file: file, blocks: blocks)
        let isal = IsalChunkDecoder(file: file, blocks: blocks)
        let chunks = plan.chunks
        // Decodes from `start` to the end of the file: gzip members with ISA-L, then
        // zero padding or trailing data.
        let decodeRest: @Sendable (Int, ChunkStream) throws -> ChunkEnd = { start, stream in
            if try GzipMemberHeader.parse(file.bytes, at: start) != nil {
                return try isal.decode(from: .memberHeader(Int64(start) * 8), length: nil, end: .max,
                                       endsWithMember: false, into: stream)
            }
            let rest = UnsafeRawBufferPointer(rebasing: file.bytes[start...])
            return ChunkEnd(bitOffset: Int64(file.count) * 8, trailingGarbage: stream.trailingGarbage(in: rest, at: start))
        }
        let pipeline = ChunkPipeline(chunkCount: chunks.count, threads: threads, budget: budget) { number, stream in
            let chunk = chunks[number]
            if chunk.members { return try bgzf.decode(from: chunk.start, to: chunk.end, into: stream) }
            return try decodeRest(chunk.start, stream)
        }
        pipeline.start()
        defer { pipeline.abandonAll() }
        var trailingGarbage: Int64 = 0
        for number in chunks.indices {
            let end = try writer.consume(pipeline.streams[number])
            trailingGarbage = end.trailingGarbage
            if end.bgzfMemberMismatch {
                // The members after this one were planned from BSIZE values that can no
                // longer be trusted, so their chunks are dropped.
                pipeline.abandonAll()
                let start = Int(end.bitOffset / 8)
                Log.debug("parallel inflate", "\(file.path): the BGZF member at offset \(start) does not decode within its BSIZE and ISIZE; decoding the rest as plain gzip members")
                let rest = ChunkPipeline(chunkCount: 1, threads: 1, budget: budget) { _, stream in
                    try decodeRest(start, stream)
                }
                rest.start()
                defer { rest.abandonAll() }
                trailingGarbage = try writer.consume(rest.streams[0]).trailingGarbage
                return (trailingGarbage, number + 2)
            }
            pipeline.chunkConsumed(number)
        }
        return (trailingGarbage, chunks.count)
    }

    /// Runs one chunk per access point of `index` with ISA-L, each started with its
    /// point's window and ended after the output up to the next point. The writer
    /// checks that every chunk ends at the next point's uncompressed offset, and the
    /// CRC-32 and length of every member.
    private static func runIndex(_ index: GzipIndex, file: MappedFile, threads: Int, budget: Int, pieceSize: Int,
                                 writer: inout OrderedWriter) throws -> (Int64, Int) {
        let fileSize = Int64(file.count)
        guard index.compressedSize == fileSize else {
            throw GzipIndexError(path: file.path, reason: "it describes a file of \(index.compressedSize) bytes, but the input has \(fileSize)")
        }
        var points = index.points.filter { $0.compressedBitOffset < fileSize * 8 }
        // Decoding starts at the file's first member, wherever the first point lies, because
        // a point at offset 0 elsewhere would skip what lies before it. The chunk up to
        // that point then has no output, and the check below rejects it.
        let firstDeflate = Int64(try GzipMemberHeader.parse(file.bytes, at: 0)?.length ?? 0) * 8
        let startsFirstMember = points.first.map { first in
            first.uncompressedOffset == 0 && (first.compressedBitOffset == 0 || first.compressedBitOffset == firstDeflate)
        }
        if startsFirstMember != true {
            points.insert(GzipAccessPoint(compressedBitOffset: 0, uncompressedOffset: 0, window: nil), at: 0)
        }
        let count = points.count
        let stops: [Int64] = (0..<count).map { $0 + 1 < count ? points[$0 + 1].compressedBitOffset : .max }
        var lengths: [Int64?] = []
        for number in 0..<count {
            guard number + 1 < count else {
                lengths.append(nil)
                break
            }
            let length = points[number + 1].uncompressedOffset - points[number].uncompressedOffset
            guard length >= 0 else {
                throw GzipIndexError(path: file.path, reason: "point \(number + 1) has a smaller uncompressed offset (\(points[number + 1].uncompressedOffset)) than point \(number) (\(points[number].uncompressedOffset))")
            }
            lengths.append(length)
        }
        let isal = IsalChunkDecoder(file: file, blocks: OutputBlockPool.forStreams(2 * threads * budget))
        let pool = placementPool(for: writer.sink, threads: threads, indexed: true, pieceSize: pieceSize)
        let swift = SpeculativeDecoder(file: file)
        let chunkPoints = points
        // Chunks that expand more than `zeroHeavyRatio` times are mostly runs of one byte.
        // The Swift decoder turns zero runs into holes without producing them, but copies
        // a run of another byte byte by byte, several times slower than ISA-L. So such a
        // chunk goes to the Swift decoder only when its window ends in zeros (or it starts
        // a member); ISA-L decodes the rest.
        let zeroHeavy: [Bool] = (0..<count).map { number in
            guard let length = lengths[number], stops[number] != .max else { return false }
            let compressed = max(1, (stops[number] - points[number].compressedBitOffset) / 8)
            guard length / compressed > zeroHeavyRatio else { return false }
            let window = points[number].window ?? []
            return window.suffix(258).allSatisfy { $0 == 0 }
        }
        let endsWithMember = (0..<count).map { $0 + 1 < count && !points[$0 + 1].hasWindow }
        let offsets = points.map(\.uncompressedOffset)
        let pipeline = ChunkPipeline(chunkCount: count, threads: threads, budget: budget) { [lengths] number, stream in
            // The worker copies its point's window here, so loading the index copied none.
            let point = chunkPoints[number]
            let start: SpeculativeDecoder.Start = point.compressedBitOffset == 0
                ? .memberHeader(0) : .known(bitOffset: point.compressedBitOffset, window: point.window ?? [])
            if zeroHeavy[number] {
                return try swift.decode(from: start, stopAt: stops[number], anyBoundary: true, into: stream)
            }
            let placed = pool.map { PlacedChunkOutput(pool: $0, offset: offsets[number]) }
            return try isal.decode(from: start, length: lengths[number], end: stops[number],
                                   endsWithMember: endsWithMember[number], placed: placed, into: stream)
        }
        pipeline.start()
        defer { pipeline.abandonAll() }

        var trailingGarbage: Int64 = 0
        for number in 0..<count {
            let end = try writer.consume(pipeline.streams[number])
            pipeline.chunkConsumed(number)
            trailingGarbage = end.trailingGarbage
            if number + 1 < count {
                let next = points[number + 1]
                // A point at a member's deflate start follows the member's trailer and
                // the next header, so only points inside a member must match exactly.
                guard end.bitOffset == next.compressedBitOffset || !next.hasWindow else {
                    throw GzipIndexError(path: file.path, reason: "point \(number + 1) at bit \(next.compressedBitOffset) is not where a block ends (bit \(end.bitOffset))")
                }
                guard writer.written == next.uncompressedOffset else {
                    throw GzipIndexError(path: file.path, reason: "point \(number + 1) gives uncompressed offset \(next.uncompressedOffset), but decoding reaches it at \(writer.written)")
                }
                // A chunk that ends inside a member stops where its output reaches the
                // next point, and the next chunk continues that member. When the member
                // has no output yet, the member CRC-32 could not show that the next point
                // belongs to another member (one the index skips to): reject such a point.
                guard !end.insideMember || writer.memberOutput > 0 else {
                    throw GzipIndexError(path: file.path, reason: "point \(number + 1) at bit \(next.compressedBitOffset) (uncompressed offset \(next.uncompressedOffset)) would continue a gzip member that has no output yet, so nothing can confirm that the data before it was not skipped")
                }
            }
        }
        logWaiting(for: pool, path: file.path)
        return (trailingGarbage, count)
    }

    /// Logs how long workers waited for `pool`'s buffers, which the writer thread frees
    /// only as fast as the disk takes its writes.
    private static func logWaiting(for pool: PlacementPool?, path: String) {
        guard let pool else { return }
        let seconds = String(format: "%.3f", pool.waitingTime.seconds)
        Log.debug("parallel inflate", "\(path): workers waited \(seconds) s in all for placement buffers")
    }

    /// Returns the buffers that workers lend to `sink` instead of handing it their output
    /// to copy, when it is a sparse writer. Placed output's offsets count from the start
    /// of the output, so the writer must be empty.
    private static func placementPool(for sink: any ExtentSink, threads: Int, indexed: Bool,
                                      pieceSize: Int) -> PlacementPool? {
        guard let writer = sink as? SparseFileWriter, writer.size == 0 else { return nil }
        return PlacementPool(target: writer.placement(), count: PlacementPool.bufferCount(threads: threads, indexed: indexed),
                             pieceSize: pieceSize)
    }

    /// Runs the speculative plan: byte ranges of the input, each decoded from the first
    /// block boundary the finder accepts; see `SpeculativeDecoder`.
    /// Returns the trailing garbage, the number of ranges, and whether the end of the file
    /// was decoded on one thread.
    private static func runSpeculative(file: MappedFile, threads: Int, budget: Int, minimumChunkInput: Int,
                                       rangesPerThread: Int, placementPieceSize: Int,
                                       writer: inout OrderedWriter) throws -> (Int64, Int, Bool) {
        let fileSize = Int64(file.count)
        // A speculative chunk's offset in the output is known only once the chunk before
        // it is written, so a worker that runs ahead keeps its output in memory until
        // then. Two workers on chunks of equal cost both keep going when a stream can
        // take half a chunk's data. So a range has at most half a stream budget of input,
        // enough for data compressed up to 4 to 1 (zero runs become holes, which take no
        // room), and speculative streams hold `speculativeBudgetFactor` budgets. Workers
        // start only chunks within `threads + 1` of the one being written, so the streams
        // hold at most about `threads` stream budgets.
        let streamBudget = budget * speculativeBudgetFactor
        var plannedRangeSize = threads > 1
            ? max(Int64(minimumChunkInput),
                  min(fileSize / Int64(threads * max(1, rangesPerThread)), Int64(streamBudget / 2))) : fileSize
        // A file whose second range starts inside a block larger than the search limit
        // (igzip -0 writes blocks of megabytes) has nothing to split at: searching every
        // range for nothing made two threads slower than one.
        if plannedRangeSize < fileSize {
            let finder = DeflateDecoder(input: file.bytes)
            let limit = min(fileSize * 8, plannedRangeSize * 8 + BlockFinder.searchLimit)
            if BlockFinder.find(in: finder, from: plannedRangeSize * 8, before: limit) == nil {
                Log.debug("parallel inflate", "\(file.path): no deflate block starts near the second range's start, so the file is decoded as one chunk")
                plannedRangeSize = fileSize
            }
        }
        let rangeSize = plannedRangeSize
        let count = Int((fileSize + rangeSize - 1) / rangeSize)
        let endOfData = fileSize * 8
        let stops: [Int64] = (0..<count).map { $0 + 1 < count ? Int64($0 + 1) * rangeSize * 8 : .max }
        let lookahead = threads + 1
        let placement = placementPool(for: writer.sink, threads: threads, indexed: false,
                                      pieceSize: placementPieceSize)
        let decoder = SpeculativeDecoder(file: file, usesIsal: true,
                                         blocks: OutputBlockPool.forStreams(lookahead * streamBudget), rangeBits: rangeSize * 8,
                                         placement: placement)
        defer { logWaiting(for: placement, path: file.path) }
        let pipeline = ChunkPipeline(chunkCount: count, threads: threads, budget: streamBudget,
                                     lookahead: lookahead) { number, stream in
            let start: SpeculativeDecoder.Start = number == 0 ? .memberHeader(0) : .search(Int64(number) * rangeSize * 8)
            return try decoder.decode(from: start, stopAt: stops[number], into: stream)
        }
        pipeline.start()
        defer { pipeline.abandonAll() }

        // Decodes from `start`, the end of the previous chunk, to the first acceptable block
        // boundary at or after `stop`, on a thread of its own, while the writer writes.
        func decodeAgain(from start: Int64, stop: Int64, writer: inout OrderedWriter) throws -> ChunkEnd {
            let window = writer.memberWindow
            let again = ChunkPipeline(chunkCount: 1, threads: 1, budget: budget) { _, stream in
                try decoder.decode(from: .known(bitOffset: start, window: window), stopAt: stop, into: stream)
            }
            again.start()
            defer { again.abandonAll() }
            return try writer.consume(again.streams[0])
        }

        var expected: Int64 = 0
        var trailingGarbage: Int64 = 0
        var redone = 0
        for number in 0..<count {
            let stream = pipeline.streams[number]
            defer { pipeline.chunkConsumed(number) }
            // The chunk before may have taken in this range whole (see `BlockFinder.searchLimit`).
            if expected >= endOfData || expected >= stops[number] {
                stream.abandon()
                continue
            }
            let end: ChunkEnd
            if number == 0 || stream.waitForStart().map({ BlockFinder.startsSameBlock($0, expected, in: file.bytes) }) == true {
                end = try writer.consume(stream)
            } else {
                // The guess was wrong (or found nothing): decode the range again from the
                // known end of the previous chunk, with the window the writer holds.
                Log.debug("parallel inflate", "\(file.path): range \(number) decoded again from bit \(expected); its worker started at \(stream.waitForStart().map(String.init) ?? "no boundary")")
                stream.abandon()
                redone += 1
                writer.rangesDecodedAgain += 1
                end = try decodeAgain(from: expected, stop: stops[number], writer: &writer)
            }
            expected = end.bitOffset
            trailingGarbage = end.trailingGarbage
            // Matches that keep copying from far back (records repeated with changes) carry
            // a guessed window's errors to the end of the chunk, and then the writer decoded
            // the whole chunk a second time on its own thread. The next chunks are likely
            // alike, and the workers' decoding would be wasted and slow the writer down,
            // so one thread decodes the rest of the file (as one chunk, whose worker
            // reports its input for progress).
            if writer.lastRepairUnfinished, expected < endOfData, number + 1 < count {
                Log.debug("parallel inflate", "\(file.path): the guessed window of range \(number) was still being corrected at its end, so the rest of the file from bit \(expected) is decoded on one thread")
                pipeline.abandonAll()
                trailingGarbage = try decodeAgain(from: expected, stop: .max, writer: &writer).trailingGarbage
                return (trailingGarbage, count, true)
            }
        }
        if redone > 0 { Log.debug("parallel inflate", "\(file.path): \(redone) of \(count) ranges decoded again") }
        return (trailingGarbage, count, false)
    }
}

/// Chunks of whole BGZF members, whose sizes their headers give.
struct BgzfPlan {
    struct Chunk: Sendable {
        /// Byte offset of the chunk's first member header.
        var start: Int
        /// Byte offset right after the chunk's last member.
        var end: Int
        /// False for the part of the file after the last BGZF member: other gzip members,
        /// zero padding or trailing data, decoded from `start` to the end of the file.
        var members: Bool
    }

    var chunks: [Chunk] = []

    /// Groups the members into chunks of at least `minimumChunkInput` bytes, four per
    /// thread, and of at most about `outputLimit` bytes of output, which every member's
    /// trailer gives. A worker running ahead of the writer keeps its chunk's output in
    /// its stream, so chunks that fit go on without waiting for the writer. The members
    /// end at the first member that is not BGZF, is cut off by the end of the file, or
    /// gives more output than the format allows.
    init(_ input: UnsafeRawBufferPointer, threads: Int, minimumChunkInput: Int, outputLimit: Int) {
        let fileSize = input.count
        // Four chunks per thread even out members of different cost; a minimum input
        // per chunk keeps the per-chunk overhead small.
        let target = max(minimumChunkInput, fileSize / max(1, threads * 4))
        var offset = 0
        var chunkStart = 0
        var chunkOutput = 0
        while offset < fileSize, let header = try? GzipMemberHeader.parse(input, at: offset),
              let size = header.bgzfMemberSize, size > header.length + GzipMemberHeader.trailerSize,
              size <= fileSize - offset {
            let output = Int(readLittleEndian32(input, at: offset + size - 4))
            guard output <= BgzfDecoder.maximumMemberOutput else { break }
            if offset > chunkStart, offset - chunkStart >= target || chunkOutput >= outputLimit {
                chunks.append(Chunk(start: chunkStart, end: offset, members: true))
                chunkStart = offset
                chunkOutput = 0
            }
            chunkOutput += output
            offset += size
        }
        if offset > chunkStart { chunks.append(Chunk(start: chunkStart, end: offset, members: true)) }
        if offset < fileSize { chunks.append(Chunk(start: offset, end: fileSize, members: false)) }
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
    /// Compressed bytes decoded: the end of the last finished chunk.
    private var compressedDone: Int64 = 0
    /// The compressed bytes last reported as decoded: `compressedDone`, or further into
    /// the chunk being written where its worker reports its input (`ChunkStream.reportInput`).
    private var compressedReported: Int64 = 0
    private var memberCRC: UInt32 = 0
    private var memberSize: Int64 = 0
    /// The output of the member being decoded so far (0 between members).
    var memberOutput: Int64 { memberSize }
    /// The last 32 KiB written (fewer at the start), which markers refer to.
    var window: [UInt8] {
        precondition(!windowUnknown, "Bug in imgtool: the window is unknown after placed output")
        return recent.count > ByteOutput.history ? Array(recent.suffix(ByteOutput.history)) : recent
    }
    /// The part of `window` that the current member wrote: a member starts without
    /// history, so its matches may not reach before its start.
    var memberWindow: [UInt8] {
        memberSize < Int64(ByteOutput.history) ? Array(window.suffix(Int(memberSize))) : window
    }
    /// The window, or the last data piece when that alone is longer: holding on to the
    /// piece costs no copy, and the window is cut from it only when it is asked for.
    private var recent: [UInt8] = []
    /// True once workers placed output, which `recent` then lacks. Only the index path
    /// places output, and it never reads the window.
    private var windowUnknown = false
    private static let zeroWindow = [UInt8](repeating: 0, count: ByteOutput.history)
    /// The window at the start of the current speculative chunk, which its markers use.
    private var chunkWindow: [UInt8] = []
    /// The bit offset the current speculative chunk started at.
    private var chunkStartBit: Int64 = 0
    /// The input: chunks decoded with a guessed window (`.guessedWindow`) are decoded
    /// from it again, and every piece is written only while it has not shrunk.
    var input: MappedFile?
    /// Corrects the current chunk's first bytes while it decoded them with a guessed window.
    private var repair: WindowRepair? {
        didSet {
            if let oldValue, oldValue !== repair { repairedBytes += oldValue.compared }
        }
    }
    /// Chunks that came with a guessed window, and the bytes decoded again for them.
    private(set) var guessedWindows = 0
    private(set) var repairedBytes: Int64 = 0
    /// Output bytes that workers wrote at their file offsets themselves (`.placed`).
    private(set) var placedBytes: Int64 = 0
    /// Speculative ranges decoded again from the end of the chunk before.
    var rangesDecodedAgain = 0
    /// True when the last chunk ended while its repair had compared at least
    /// `unfinishedRepairMinimum` bytes without 32 KiB in a row agreeing.
    private(set) var lastRepairUnfinished = false
    /// Repairs shorter than this may end unfinished only because their chunk was short.
    static let unfinishedRepairMinimum: Int64 = 4 << 20
    /// The stream being consumed, and the output offset where its chunk started.
    private var stream: ChunkStream?
    private var chunkOutputStart: Int64 = 0
    /// True from a speculative chunk's start until its first piece of output, or the end
    /// of its repair, shows that its output is final from there on: then the worker may
    /// place the rest.
    private var placementPending = false

    init(sink: any ExtentSink, path: String, cancellation: CancellationToken?, progress: ProgressReporter?, compressedSize: Int64) {
        self.sink = sink
        self.path = path
        self.cancellation = cancellation
        self.progress = progress
        self.compressedSize = compressedSize
    }

    /// Writes every piece of `stream` and returns the chunk's end, or throws its error.
    mutating func consume(_ stream: ChunkStream) throws -> ChunkEnd {
        self.stream = stream
        placementPending = false
        while true {
            try cancellation?.check("inflate")
            try input?.checkUnchanged()
            let (pieces, end) = stream.take()
            for piece in pieces {
                switch piece {
                case .chunkStart, .guessedWindow, .guessedZeroRun:
                    break
                default:
                    // No window is guessed: the worker's output is final from here on.
                    if placementPending { allowPlacement() }
                }
                switch piece {
                case .data(let bytes, let crc):
                    if let repair {
                        try bytes.withUnsafeBytes { try writeRepaired($0, crc: crc, repair: repair) }
                    } else {
                        try writeData(bytes, crc: crc)
                    }
                case .block(let block, let range, let crc):
                    let bytes = UnsafeRawBufferPointer(rebasing: block.bytes[range])
                    if let repair {
                        try writeRepaired(bytes, crc: crc, repair: repair)
                    } else {
                        try writeBytes(bytes, crc: crc)
                    }
                case .markers(let values):
                    // Markers stand for bytes of the window before the chunk started.
                    var bytes = [UInt8](repeating: 0, count: values.count)
                    for (index, value) in values.enumerated() {
                        bytes[index] = value < 256 ? UInt8(value) : try windowByte(value)
                    }
                    try writeData(bytes, crc: crc32Of(bytes))
                case .guessedZeroRun(let bitOffset, let markers):
                    // The worker went on as if the window bytes that the markers copy were zeros.
                    let window = try markers.map { $0 < 256 ? UInt8($0) : try windowByte($0) }
                    if window.contains(where: { $0 != 0 }) {
                        guard let input else { preconditionFailure("Bug in imgtool: a guessed zero run without the input to repair it") }
                        repair = WindowRepair(input: input.bytes, bitOffset: bitOffset, window: window)
                        guessedWindows += 1
                    }
                case .chunkStart(let bitOffset):
                    chunkWindow = windowUnknown ? [] : memberWindow
                    chunkStartBit = bitOffset
                    chunkOutputStart = written
                    placementPending = true
                    repair = nil
                case .guessedWindow:
                    guard let input else { preconditionFailure("Bug in imgtool: a guessed window without the input to repair it") }
                    precondition(placementPending, "Bug in imgtool: a guessed window after the chunk's first output")
                    // The worker places output only after the repair is done.
                    placementPending = false
                    // The real history is the member's output so far, at most 32 KiB.
                    repair = WindowRepair(input: input.bytes, bitOffset: chunkStartBit, window: memberWindow)
                    guessedWindows += 1
                case .hole(let count) where repair != nil:
                    try writeRepairedHole(count, repair: repair!)
                case .hole(let count):
                    try writeHole(count)
                case .placed(let count, let crc):
                    // The bytes are in the file already; the sink only moves past them.
                    try sink.writeHole(count: count)
                    memberCRC = UInt32(crc32_combine(UInt(memberCRC), UInt(crc), Int(count)))
                    memberSize += count
                    written += count
                    placedBytes += count
                    recent = []
                    windowUnknown = true
                case .window(let bytes):
                    // The history after placed output of a speculative chunk.
                    recent = bytes
                    windowUnknown = false
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
                    // The next member starts without history: nothing after here is guessed.
                    if repair != nil {
                        repair = nil
                        allowPlacement()
                    }
                }
            }
            compressedReported = min(compressedSize, max(compressedReported, compressedDone, stream.inputReached))
            progress?.update(completed: compressedReported, total: compressedSize, written: written)
            if pieces.isEmpty, let end {
                switch end {
                case .success(let value):
                    lastRepairUnfinished = (repair?.compared ?? 0) >= Self.unfinishedRepairMinimum
                    repair = nil
                    compressedDone = min(compressedSize, max(compressedDone, value.bitOffset / 8))
                    return value
                case .failure(let error as GzipDataError): throw error.at(path: path)
                case .failure(let error): throw error
                }
            }
        }
    }

    /// Writes a data piece of a chunk decoded with a guessed window, with the bytes that
    /// `repair` finds wrong replaced, until it is done.
    private mutating func writeRepaired(_ bytes: UnsafeRawBufferPointer, crc: UInt32, repair: WindowRepair) throws {
        var offset = 0
        // The agreeing bytes from here to `offset` are not written yet.
        var agreed = 0
        while offset < bytes.count && !repair.isDone {
            let count = min(bytes.count - offset, WindowRepair.sliceSize)
            if let right = try repair.check(UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + count])) {
                try writeBytes(UnsafeRawBufferPointer(rebasing: bytes[agreed..<offset]))
                try right.withUnsafeBytes { try writeBytes($0) }
                agreed = offset + count
            }
            offset += count
        }
        if repair.isDone { repairDone() }
        try writeBytes(UnsafeRawBufferPointer(rebasing: bytes[agreed...]), crc: agreed == 0 ? crc : nil)
    }

    /// Ends the repair of the current chunk: the worker's output is final from the pieces
    /// it has not pushed yet on, so it may place them.
    private mutating func repairDone() {
        repair = nil
        allowPlacement()
    }

    /// Returns the byte of the current chunk's window that `marker` (256 + i) stands for.
    private func windowByte(_ marker: UInt16) throws -> UInt8 {
        let window = chunkWindow
        let windowIndex = Int(marker) - 256 - (ByteOutput.history - window.count)
        guard windowIndex >= 0 else {
            throw GzipDataError(path: path, offset: chunkStartBit / 8, reason:
                "a match distance reaches before the start of its gzip member (in the chunk that starts here)")
        }
        return window[windowIndex]
    }

    /// Lets the current chunk's worker place the rest of its output (see
    /// `ChunkStream.placeOutput(from:)`).
    private mutating func allowPlacement() {
        placementPending = false
        stream?.placeOutput(from: chunkOutputStart)
    }

    /// Writes a hole of a chunk decoded with a guessed window, or the bytes that `repair`
    /// finds in its place, until it is done.
    private mutating func writeRepairedHole(_ count: Int64, repair: WindowRepair) throws {
        var offset: Int64 = 0
        while offset < count && !repair.isDone {
            let slice = Int(min(count - offset, Int64(WindowRepair.sliceSize)))
            if let right = try repair.checkZeros(slice) {
                try right.withUnsafeBytes { try writeBytes($0) }
            } else {
                try writeHole(Int64(slice))
            }
            offset += Int64(slice)
        }
        if repair.isDone { repairDone() }
        if offset < count { try writeHole(count - offset) }
    }

    /// Writes `bytes`, whose CRC-32 is `crc` (computed here when nil).
    private mutating func writeBytes(_ bytes: UnsafeRawBufferPointer, crc: UInt32? = nil) throws {
        guard !bytes.isEmpty else { return }
        try sink.write(bytes)
        memberCRC = UInt32(crc32_combine(UInt(memberCRC), UInt(crc ?? crc32Of(bytes)), Int(bytes.count)))
        memberSize += Int64(bytes.count)
        written += Int64(bytes.count)
        if windowUnknown {
        } else if bytes.count >= ByteOutput.history {
            recent = Array(bytes.suffix(ByteOutput.history))
        } else {
            recent = Array((window + bytes).suffix(ByteOutput.history))
        }
    }

    private mutating func writeData(_ bytes: [UInt8], crc: UInt32) throws {
        try bytes.withUnsafeBytes { try sink.write($0) }
        memberCRC = UInt32(crc32_combine(UInt(memberCRC), UInt(crc), Int(bytes.count)))
        memberSize += Int64(bytes.count)
        written += Int64(bytes.count)
        if windowUnknown {
        } else if bytes.count >= ByteOutput.history {
            recent = bytes
        } else {
            recent = Array((window + bytes).suffix(ByteOutput.history))
        }
    }

    private mutating func writeHole(_ count: Int64) throws {
        try sink.writeHole(count: count)
        memberCRC = UInt32(crc32_combine(UInt(memberCRC), UInt(ZeroCRC.crc(ofZeros: count)), Int(count)))
        memberSize += count
        written += count
        if windowUnknown {
        } else if count >= Int64(ByteOutput.history) {
            recent = Self.zeroWindow
        } else {
            recent = Array((window + repeatElement(0, count: Int(count))).suffix(ByteOutput.history))
        }
    }

    /// Checks that the data ended at a member boundary.
    func finish() throws {
        guard memberSize == 0 else {
            throw GzipDataError(path: path, offset: compressedSize, kind: .truncated, reason: "inside a gzip member")
        }
        progress?.finish(completed: compressedSize, total: compressedSize, written: written)
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

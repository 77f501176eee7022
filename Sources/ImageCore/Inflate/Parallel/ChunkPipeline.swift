// ChunkPipeline: runs chunk decoders on worker threads and hands their output to one
// consumer in chunk order.
//
// Threads and ownership: `threads` worker threads take chunks in order from a shared
// counter. Each chunk writes pieces of output into its own `ChunkStream`. The consumer,
// the thread that called `start`, reads the streams in chunk order and is the only
// thread that touches the sink. Memory is bounded: a stream holds at most `budget`
// bytes of pieces and its worker blocks until the consumer drains them, and workers
// start a chunk only within `lookahead` chunks of the consumer (2 * threads unless the
// caller sets it). So at most `lookahead * (budget + one piece)` bytes of output wait in
// memory whatever the image size. The chunk at the head of the order is always being drained, so a
// blocked worker always gets unblocked.
//
// Cancellation: `ChunkStream.abandon` makes the worker's next `push` return false; the
// worker then stops. The caller abandons every stream and waits for the workers
// (`abandonAll`) before it returns or throws.

import Foundation
import Synchronization

/// One piece of a chunk's output, in order.
enum OutputPiece: Sendable {
    /// Output bytes and their CRC-32 (computed by the worker, so in parallel).
    case data([UInt8], crc: UInt32)
    /// Output bytes in part of a pooled block (ISA-L's output) and their CRC-32.
    case block(OutputBlock, Range<Int>, crc: UInt32)
    /// `count` zero bytes that were never materialised.
    case hole(Int64)
    /// `count` bytes that the worker writes into the output file itself, at their
    /// final offset, and their CRC-32 (see `PlacedChunkOutput`).
    case placed(Int64, crc: UInt32)
    /// Output of a chunk that started without its window: values 0...255 are bytes,
    /// 256 + i is byte i of the 32 KiB that precede the chunk.
    case markers([UInt16])
    /// The bit offset a speculative chunk started at; always its first piece.
    case chunkStart(Int64)
    /// Follows `.chunkStart` when the chunk was decoded with zeros in place of the
    /// window before it: its first bytes may be wrong until `WindowRepair` corrects them.
    case guessedWindow
    /// Follows marker pieces whose last 32 KiB, `markers`, all copy bytes of the unknown
    /// window, when the chunk goes on from the block boundary at `bitOffset` with zeros
    /// as its history. When those window bytes are not all zero, `WindowRepair` corrects
    /// the output after it.
    case guessedZeroRun(bitOffset: Int64, markers: [UInt16])
    /// The last 32 KiB of output (fewer at a member's start), after `.placed` pieces of a
    /// speculative chunk, whose bytes never pass through the writer: the next chunk
    /// needs them.
    case window([UInt8])
    /// A member's trailer, reached at this point of the output: the CRC-32 and ISIZE it
    /// stores, and the byte offset of the trailer in the input.
    case memberEnd(crc: UInt32, size: UInt32, trailerOffset: Int64)
}

extension OutputPiece {
    /// The number of output bytes the piece adds.
    var outputCount: Int64 {
        switch self {
        case .data(let bytes, _): Int64(bytes.count)
        case .block(_, let range, _): Int64(range.count)
        case .hole(let count), .placed(let count, _): count
        case .markers(let values): Int64(values.count)
        case .chunkStart, .guessedWindow, .guessedZeroRun, .window, .memberEnd: 0
        }
    }
}

/// The position where a chunk's decoding stopped.
struct ChunkEnd: Sendable {
    /// The byte offset in the input right after the last member trailer the chunk read,
    /// or the bit offset it stopped at divided by 8 when it stopped inside a member.
    var bitOffset: Int64
    /// Bytes after the last member that are neither zeros nor a gzip member.
    var trailingGarbage: Int64 = 0
    /// False when a speculative chunk found no block boundary in its range.
    var foundStart = true
    /// True when an index chunk stopped inside a member, at the next access point, because
    /// its output reached the point's offset. `bitOffset` is then the point's, on trust.
    var insideMember = false
    /// True when a BGZF chunk stopped at a member whose deflate data did not decode
    /// within the bounds that its BSIZE and ISIZE give. `bitOffset` is then that
    /// member's first byte times 8, and the rest of the file is decoded as plain gzip
    /// members, because gzip ignores BSIZE and a corrupt one must not fail a valid file.
    var bgzfMemberMismatch = false
}

/// A bounded queue of one chunk's output pieces, written by one worker and read by the
/// consumer. Every field is protected by `condition`.
final class ChunkStream: @unchecked Sendable {
    private let condition = NSCondition()
    private var pieces: [OutputPiece] = []
    private var bufferedBytes = 0
    private var end: Result<ChunkEnd, any Error>?
    private var abandoned = false
    private let budget: Int
    /// The pooled block whose memory `bufferedBytes` counts already (see `push`). A
    /// waiting piece keeps it alive, so no other block can have its identifier until
    /// `take` or `abandon` clears it.
    private var chargedBlock: ObjectIdentifier?
    /// The output bytes of every piece pushed so far, holes and placed bytes included.
    private var pushedOutput: Int64 = 0
    /// The input byte offset the worker has decoded to, for progress within a chunk.
    private var inputOffset: Int64 = 0
    /// The file offset of the chunk's first byte, set once the writer reached the chunk
    /// and the output needs no more correcting (see `placeOutput(from:)`).
    private var outputStart: Int64?

    init(budget: Int) {
        self.budget = budget
    }

    /// Adds a piece; blocks while more than `budget` bytes wait. Returns false when the
    /// consumer abandoned the stream, in which case the worker must stop.
    func push(_ piece: OutputPiece) -> Bool {
        push(contentsOf: CollectionOfOne(piece))
    }

    /// Adds pieces in order under one lock, so the consumer wakes once for all of them;
    /// blocks while more than `budget` bytes wait. Returns false when the consumer
    /// abandoned the stream.
    func push(contentsOf newPieces: some Collection<OutputPiece>) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        // An empty batch needs no room, so it returns at once.
        if newPieces.isEmpty { return !abandoned }
        while bufferedBytes > budget && !abandoned { condition.wait() }
        if abandoned { return false }
        for piece in newPieces {
            switch piece {
            case .data(let bytes, _): bufferedBytes += bytes.count
            case .block(let block, _, _):
                // A piece keeps its whole block in memory, however few bytes of it the
                // piece refers to (zero blocks around it become holes), so the budget
                // counts the block once, with its first piece.
                let identifier = ObjectIdentifier(block)
                if identifier != chargedBlock {
                    bufferedBytes += block.bytes.count
                    chargedBlock = identifier
                }
            case .markers(let values): bufferedBytes += values.count * 2
            default: break
            }
            pushedOutput += piece.outputCount
            pieces.append(piece)
        }
        condition.broadcast()
        return true
    }

    /// Records how the chunk ended (successfully or with an error).
    func finish(_ result: Result<ChunkEnd, any Error>) {
        condition.lock()
        end = result
        condition.broadcast()
        condition.unlock()
    }

    /// Takes all waiting pieces, blocking until there is at least one, the chunk ended
    /// or `timeLimit` seconds passed. Returns the pieces (none after the time limit) and,
    /// once every piece is taken, the end. The limit lets the consumer check for
    /// cancellation and report progress while a worker pushes nothing for a long time,
    /// as it does while it scans the data after the last member.
    func take(timeLimit: TimeInterval = ChunkStream.takeTimeLimit) -> ([OutputPiece], Result<ChunkEnd, any Error>?) {
        condition.lock()
        defer { condition.unlock() }
        let deadline = Date(timeIntervalSinceNow: timeLimit)
        while pieces.isEmpty && end == nil {
            if !condition.wait(until: deadline) { break }
        }
        let taken = pieces
        pieces.removeAll(keepingCapacity: true)
        bufferedBytes = 0
        chargedBlock = nil
        condition.broadcast()
        return (taken, end)
    }

    /// Waits for a speculative chunk's first piece and returns the bit offset the chunk
    /// started at, or nil when it found no start or failed before. The piece stays.
    func waitForStart() -> Int64? {
        condition.lock()
        defer { condition.unlock() }
        while pieces.isEmpty && end == nil { condition.wait() }
        guard let first = pieces.first, case .chunkStart(let offset) = first else { return nil }
        return offset
    }

    /// Lets the worker write the rest of its output at its file offset itself: `offset`
    /// is the offset of the chunk's first byte, which the writer has once it reached the
    /// chunk. The writer calls it only when the worker's output from now on is final
    /// (no window to guess, or `WindowRepair` done).
    func placeOutput(from offset: Int64) {
        condition.lock()
        outputStart = offset
        condition.unlock()
    }

    /// The file offset of the next byte the worker pushes, once `placeOutput(from:)` was
    /// called; nil before.
    var placementOffset: Int64? {
        condition.lock()
        defer { condition.unlock() }
        return outputStart.map { $0 + pushedOutput }
    }

    /// Records that the worker has decoded the input up to `byteOffset`.
    func reportInput(_ byteOffset: Int64) {
        condition.lock()
        inputOffset = max(inputOffset, byteOffset)
        condition.unlock()
    }

    /// The input byte offset the worker reported last (0 before its first report).
    var inputReached: Int64 {
        condition.lock()
        defer { condition.unlock() }
        return inputOffset
    }

    /// Tells the worker to stop and drops its pieces.
    func abandon() {
        condition.lock()
        abandoned = true
        pieces.removeAll()
        bufferedBytes = 0
        chargedBlock = nil
        condition.broadcast()
        condition.unlock()
    }

    var isAbandoned: Bool {
        condition.lock()
        defer { condition.unlock() }
        return abandoned
    }

    /// How long `take` waits for a piece before it returns none.
    static let takeTimeLimit: TimeInterval = 0.25

    /// Bytes that `trailingGarbage(in:at:)` scans between two checks for abandonment.
    static let trailingScanPiece = 16 << 20

    /// Returns `rest.count` when a byte of `rest`, the input after the last member, is not
    /// zero (trailing data), and 0 when every byte is zero (padding). `offset` is the input
    /// offset of `rest`. A sparse input can end in terabytes of zeros, so the scan goes
    /// in pieces. After each one the worker reports its input offset for progress. It
    /// returns 0 once the consumer abandoned the stream, so a cancelled inflation stops.
    func trailingGarbage(in rest: UnsafeRawBufferPointer, at offset: Int) -> Int64 {
        var start = 0
        while start < rest.count {
            let end = min(rest.count, start + ChunkStream.trailingScanPiece)
            if UnsafeRawBufferPointer(rebasing: rest[start..<end]).contains(where: { $0 != 0 }) { return Int64(rest.count) }
            start = end
            reportInput(Int64(offset + start))
            if isAbandoned { return 0 }
        }
        return 0
    }
}

/// Runs `decode(chunkNumber, stream)` for chunks 0..<count on `threads` worker threads.
final class ChunkPipeline: Sendable {
    typealias Decoder = @Sendable (Int, ChunkStream) throws -> ChunkEnd

    let streams: [ChunkStream]
    private let next = Atomic<Int>(0)
    private let decode: Decoder
    private let threads: Int
    /// Protects `runningCount`, `consumedCount` and `stopped`.
    private let running = NSCondition()
    private nonisolated(unsafe) var runningCount = 0
    /// Chunks the consumer has finished with; a worker takes chunk k only while
    /// k < consumedCount + lookahead, so finished chunks waiting for the consumer
    /// never hold more than `lookahead` budgets.
    private nonisolated(unsafe) var consumedCount = 0
    private nonisolated(unsafe) var stopped = false
    private let lookahead: Int

    /// - Parameter lookahead: workers start only chunks fewer than this many after the
    ///   first one not consumed yet; by default twice the threads.
    init(chunkCount: Int, threads: Int, budget: Int, lookahead: Int? = nil, decode: @escaping Decoder) {
        streams = (0..<chunkCount).map { _ in ChunkStream(budget: budget) }
        self.threads = max(1, min(threads, chunkCount))
        self.lookahead = max(self.threads, lookahead ?? 2 * self.threads)
        self.decode = decode
    }

    /// Starts the worker threads; they exit when every chunk is taken.
    func start() {
        running.lock()
        runningCount = threads
        running.unlock()
        for number in 0..<threads {
            let thread = Thread.named("inflate-\(number)") { [self] in work() }
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    private func work() {
        while true {
            let chunk = next.add(1, ordering: .relaxed).oldValue
            guard chunk < streams.count else { break }
            running.lock()
            while chunk >= consumedCount + lookahead && !stopped { running.wait() }
            running.unlock()
            let stream = streams[chunk]
            if stream.isAbandoned { continue }
            stream.finish(Result { try decode(chunk, stream) })
        }
        running.lock()
        runningCount -= 1
        running.broadcast()
        running.unlock()
    }

    /// Records that the consumer is done with chunks 0...number, so workers may start
    /// chunks further ahead.
    func chunkConsumed(_ number: Int) {
        running.lock()
        consumedCount = max(consumedCount, number + 1)
        running.broadcast()
        running.unlock()
    }

    /// Stops every worker at its next piece and waits until all have exited, so no
    /// thread reads the input after the caller returns, which may then unmap it.
    func abandonAll() {
        for stream in streams { stream.abandon() }
        running.lock()
        stopped = true
        running.broadcast()
        while runningCount > 0 { running.wait() }
        running.unlock()
    }
}

// PlacedOutput: lets workers hand their output to the sparse writer without a copy.
//
// With a seek index, every chunk's uncompressed offset is known before it is decoded; a
// speculative chunk's is known once the writer reached it (`IsalRangeDecoder`). A worker
// then decodes into a buffer from a shared pool, aligned to 4 KiB, and lends
// the filled buffer to the sparse writer's thread together with its file offset
// (`SparseFileWriter.Placement`). That thread skips zero blocks and writes the rest as
// it does for its own buffers, then returns the buffer to the pool. The consumer only
// accounts for the bytes (`.placed` pieces: a length and a CRC-32). On two cores, the
// copy into the writer's buffers that this saves took time from the decoders.
//
// Each buffer's bytes start as far into it as their file offset is past a 4 KiB
// boundary, so addresses and file offsets line up for O_DIRECT. A block split between
// two buffers, or two chunks, is written in parts through the page cache.

import CIsal
import Foundation

/// The buffers that workers decode into and lend to the writer thread. They are
/// allocated as workers need them and freed with the pool, so memory stays at most
/// `count * (pieceSize + 4 KiB)`.
final class PlacementPool: @unchecked Sendable {
    /// Buffers per worker thread. On the 2-core test machine, one writer thread writes
    /// about as fast as two ISA-L workers decode, so spare buffers let it catch up after
    /// a slow write. With three per worker, the workers waited for buffers.
    /// Eight per worker were faster.
    static let buffersPerThread = 8
    /// The lower bound of an indexed decode's maximum buffer count (256 MiB of 4 MiB
    /// pieces). There workers place nearly all output through the pool, so it contains the
    /// whole backlog of writes. On the data-heavy test image, workers with 8 buffers
    /// each waited 0.27 s for the disk in the middle of the run; 64 in all took the
    /// median 2-thread run from 1.23 s to 1.12 s. A speculative decode places less than
    /// half its output and keeps `buffersPerThread`: 64 buffers made the realistic
    /// image's run about 5% slower (docs/BENCHMARKS.md). Buffers are allocated only when
    /// none is free, so a decode that the writer keeps up with uses few.
    static let minimumIndexBuffers = 64

    /// Returns the maximum number of buffers for `threads` workers.
    static func bufferCount(threads: Int, indexed: Bool) -> Int {
        indexed ? max(buffersPerThread * threads, minimumIndexBuffers) : buffersPerThread * threads
    }
    let target: SparseFileWriter.Placement
    /// The maximum output of one buffer.
    let pieceSize: Int
    /// The maximum number of buffers in `buffers`.
    let count: Int
    /// Guarded by `condition`; grows up to `count`.
    private var buffers: [UnsafeMutableRawBufferPointer] = []
    /// Guards `buffers`, `free` and `waited`.
    private let condition = NSCondition()
    private var free: [Int] = []
    /// Guarded by `condition`; see `waitingTime`.
    private var waited = Duration.zero

    /// - Parameter count: the maximum number of buffers. A few per worker let decoding
    ///   go on while the writer thread writes. Each is allocated when a worker first
    ///   finds none free.
    init(target: SparseFileWriter.Placement, count: Int, pieceSize: Int) {
        self.target = target
        self.pieceSize = pieceSize
        self.count = count
    }

    /// Frees the buffers. No buffer is lent at that point, because each lent buffer's
    /// give-back closure keeps a reference to the pool until the writer thread is done.
    deinit {
        for buffer in buffers { buffer.deallocate() }
    }

    /// Runs in `take` under the pool's lock right before a thread starts to wait for a
    /// buffer. Tests set it while no other thread uses the pool, to give a buffer back
    /// only once a thread waits. Nil outside tests.
    var beforeWait: (() -> Void)?

    /// Takes a free buffer, waiting while all are filled or being written.
    func take() -> (index: Int, buffer: UnsafeMutableRawBufferPointer) {
        condition.lock()
        defer { condition.unlock() }
        if free.isEmpty, buffers.count < count {
            buffers.append(.allocate(byteCount: pieceSize + SparseFileWriter.directAlignment,
                                     alignment: SparseFileWriter.directAlignment))
            return (buffers.count - 1, buffers[buffers.count - 1])
        }
        if free.isEmpty {
            beforeWait?()
            let started = ContinuousClock.now
            while free.isEmpty { condition.wait() }
            waited += ContinuousClock.now - started
        }
        let index = free.removeLast()
        return (index, buffers[index])
    }

    /// The time workers spent waiting for a buffer, summed over workers: time in which
    /// the writer thread, not decoding, set the pace.
    var waitingTime: Duration {
        condition.lock()
        defer { condition.unlock() }
        return waited
    }

    /// How many buffers the pool has allocated so far (tests).
    var allocated: Int {
        condition.lock()
        defer { condition.unlock() }
        return buffers.count
    }

    /// Returns the buffer `index` to the free ones and wakes the threads that wait.
    func giveBack(_ index: Int) {
        condition.lock()
        free.append(index)
        condition.broadcast()
        condition.unlock()
    }
}

/// One chunk's output, placed at its file offset through a `PlacementPool`.
final class PlacedChunkOutput {
    private let pool: PlacementPool
    /// The file offset of the next decoded byte.
    private var offset: Int64
    /// The buffer `space` returned last and where the space in it starts.
    private var current: (index: Int, buffer: UnsafeMutableRawBufferPointer, start: Int)?

    /// Prepares to place output from file offset `offset` on.
    init(pool: PlacementPool, offset: Int64) {
        self.pool = pool
        self.offset = offset
    }

    /// The maximum output that `space` offers.
    var pieceSize: Int { pool.pieceSize }

    /// Space for the next decoded bytes, at most `limit`, in a buffer taken from the
    /// pool. Call `commit` after every `space`.
    func space(limit: Int) -> UnsafeMutableRawBufferPointer {
        precondition(current == nil, "Bug in imgtool: space taken twice without commit")
        let (index, buffer) = pool.take()
        let start = Int(offset % Int64(SparseFileWriter.directAlignment))
        current = (index, buffer, start)
        let count = min(pool.pieceSize, limit)
        return UnsafeMutableRawBufferPointer(rebasing: buffer[start..<(start + count)])
    }

    /// Lends the first `count` bytes of the last space to the writer thread, and pushes
    /// them to `stream` as a `.placed` piece with their CRC-32. Returns false when the
    /// stream was abandoned.
    func commit(_ count: Int, into stream: ChunkStream) -> Bool {
        guard let (index, buffer, start) = current else { preconditionFailure("Bug in imgtool: commit without space") }
        current = nil
        let pool = self.pool
        guard count > 0 else {
            pool.giveBack(index)
            return true
        }
        let crc = crc32_gzip_refl(0, buffer.baseAddress!.assumingMemoryBound(to: UInt8.self) + start, UInt64(count))
        pool.target.submit(buffer, offset: offset - Int64(start), start: start, count: start + count) {
            pool.giveBack(index)
        }
        offset += Int64(count)
        return stream.push(.placed(Int64(count), crc: crc))
    }
}

// ZeroBlocks: turns the all-zero 4 KiB blocks of ISA-L's output into holes on the
// worker, for index chunks (`IsalChunkDecoder`) and speculative chunks
// (`IsalRangeDecoder`) alike. ISA-L decodes into `OutputBlock`s, memory that goes back to
// its pool once the writer is done with it: fresh memory for every piece cost page
// faults (about 5% of the CPU time of two workers on the data-heavy test image).

import CIsal
import Synchronization

/// Output memory that workers reuse, so that decoding writes into pages that are already
/// mapped. Blocks are taken without waiting; the chunk streams' budget bounds how many
/// are in use, and at most `maximumFree` free ones are held on to.
final class OutputBlockPool: Sendable {
    /// The output of one `isal_inflate` call, scanned for zero blocks at once.
    static let defaultBlockSize = 1 << 20
    let blockSize: Int
    /// The maximum number of free blocks held for reuse.
    private let maximumFree: Int
    /// The addresses of free blocks (as integers, which are `Sendable`).
    private let free = Mutex<[UInt]>([])

    init(blockSize: Int, maximumFree: Int) {
        self.blockSize = blockSize
        self.maximumFree = maximumFree
    }

    /// Makes a pool of `defaultBlockSize` blocks that keeps as many free blocks as
    /// chunk streams holding `bytes` in all use at most.
    static func forStreams(_ bytes: Int) -> OutputBlockPool {
        OutputBlockPool(blockSize: defaultBlockSize, maximumFree: bytes / defaultBlockSize + 8)
    }

    deinit {
        free.withLock { blocks in
            for address in blocks { UnsafeMutableRawPointer(bitPattern: address)!.deallocate() }
        }
    }

    /// Returns a block of `blockSize` bytes, reused when one is free.
    func take() -> OutputBlock {
        let reused = free.withLock { $0.popLast() }.flatMap { UnsafeMutableRawPointer(bitPattern: $0) }
        let memory = reused ?? .allocate(byteCount: blockSize, alignment: 64)
        return OutputBlock(UnsafeMutableRawBufferPointer(start: memory, count: blockSize), pool: self)
    }

    fileprivate func recycle(_ memory: UnsafeMutableRawPointer) {
        let address = UInt(bitPattern: memory)
        let keep = free.withLock { blocks in
            guard blocks.count < maximumFree else { return false }
            blocks.append(address)
            return true
        }
        if !keep { memory.deallocate() }
    }
}

/// One block of a pool; its memory goes back to the pool when the last output piece that
/// refers to it is gone. Written by one worker, then only read: the writer reads the
/// bytes of pieces already pushed while the worker fills the rest.
final class OutputBlock: @unchecked Sendable {
    let bytes: UnsafeMutableRawBufferPointer
    private let pool: OutputBlockPool

    fileprivate init(_ bytes: UnsafeMutableRawBufferPointer, pool: OutputBlockPool) {
        self.bytes = bytes
        self.pool = pool
    }

    deinit { pool.recycle(bytes.baseAddress!) }
}

/// Hands on decoded bytes as data and hole pieces: runs of all-zero 4 KiB blocks (counted
/// from the start of the bytes handed on) become holes, so the writer neither copies nor
/// scans them.
enum ZeroBlocks {
    static let blockSize = 4096

    /// Pushes the bytes `range` of `block` into `stream`; returns false when the stream
    /// was abandoned.
    static func emit(_ block: OutputBlock, _ range: Range<Int>, into stream: ChunkStream) -> Bool {
        var pieces: [OutputPiece] = []
        append(block, range, to: &pieces)
        return stream.push(contentsOf: pieces)
    }

    /// Appends the bytes `range` of `block` to `pieces` as data and hole pieces.
    static func append(_ block: OutputBlock, _ range: Range<Int>, to pieces: inout [OutputPiece]) {
        guard !range.isEmpty else { return }
        let base = UnsafeRawPointer(block.bytes.baseAddress!)
        var dataStart = range.lowerBound
        var zeroStart: Int?
        var offset = range.lowerBound
        func appendData(_ end: Int) {
            guard end > dataStart else { return }
            let crc = crc32_gzip_refl(0, (base + dataStart).assumingMemoryBound(to: UInt8.self), UInt64(end - dataStart))
            pieces.append(.block(block, dataStart..<end, crc: crc))
        }
        while offset < range.upperBound {
            let end = min(range.upperBound, offset + blockSize)
            if isZero(base + offset, count: end - offset) {
                if zeroStart == nil { zeroStart = offset }
            } else if let start = zeroStart {
                appendData(start)
                pieces.append(.hole(Int64(offset - start)))
                zeroStart = nil
                dataStart = offset
            }
            offset = end
        }
        if let start = zeroStart {
            appendData(start)
            pieces.append(.hole(Int64(range.upperBound - start)))
        } else {
            appendData(range.upperBound)
        }
    }

    /// Returns whether `count` bytes at `start` are all zero, checking the first 8 bytes
    /// first because `isal_zero_detect` reads the whole block even when it holds data.
    @inline(__always)
    private static func isZero(_ start: UnsafeRawPointer, count: Int) -> Bool {
        if count >= 8, start.loadUnaligned(as: UInt64.self) != 0 { return false }
        return isal_zero_detect(UnsafeMutableRawPointer(mutating: start), count) == 0
    }
}

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
/// refers to it is gone. Written by one worker, then only read.
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
/// from the piece's start) become holes, so the writer neither copies nor scans them.
enum ZeroBlocks {
    static let blockSize = 4096

    /// Pushes the first `count` bytes of `block` into `stream`; returns false when the
    /// stream was abandoned.
    static func emit(_ block: OutputBlock, count: Int, into stream: ChunkStream) -> Bool {
        guard count > 0 else { return true }
        let bytes = UnsafeRawBufferPointer(rebasing: block.bytes[..<count])
        var dataStart = 0
        var zeroStart: Int?
        var offset = 0
        func pushData(_ end: Int) -> Bool {
            guard end > dataStart else { return true }
            let crc = crc32_gzip_refl(0, (bytes.baseAddress! + dataStart).assumingMemoryBound(to: UInt8.self),
                                      UInt64(end - dataStart))
            return stream.push(.block(block, dataStart..<end, crc: crc))
        }
        while offset < count {
            let end = min(count, offset + blockSize)
            if isZero(bytes.baseAddress! + offset, count: end - offset) {
                if zeroStart == nil { zeroStart = offset }
            } else if let start = zeroStart {
                guard pushData(start), stream.push(.hole(Int64(offset - start))) else { return false }
                zeroStart = nil
                dataStart = offset
            }
            offset = end
        }
        if let start = zeroStart {
            return pushData(start) && stream.push(.hole(Int64(count - start)))
        }
        return pushData(count)
    }

    /// Returns whether `count` bytes at `start` are all zero, checking the first 8 bytes
    /// first because `isal_zero_detect` reads the whole block even when it holds data.
    @inline(__always)
    private static func isZero(_ start: UnsafeRawPointer, count: Int) -> Bool {
        if count >= 8, start.loadUnaligned(as: UInt64.self) != 0 { return false }
        return isal_zero_detect(UnsafeMutableRawPointer(mutating: start), count) == 0
    }
}

// ZeroBlocks: turns the all-zero 4 KiB blocks of ISA-L's output into holes on the
// worker, for index chunks (`IsalChunkDecoder`) and speculative chunks
// (`IsalRangeDecoder`) alike.

import CIsal

/// Hands on decoded bytes as data and hole pieces: runs of all-zero 4 KiB blocks (counted
/// from the piece's start) become holes, so the writer neither copies nor scans them.
enum ZeroBlocks {
    static let blockSize = 4096

    /// Pushes `piece` into `stream`; returns false when the stream was abandoned.
    static func emit(_ piece: [UInt8], into stream: ChunkStream) -> Bool {
        piece.withUnsafeBytes { bytes in
            guard !bytes.isEmpty else { return true }
            var dataStart = 0
            var zeroStart: Int?
            var offset = 0
            func pushData(_ end: Int) -> Bool {
                guard end > dataStart else { return true }
                let run = UnsafeRawBufferPointer(rebasing: bytes[dataStart..<end])
                let crc = crc32_gzip_refl(0, run.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt64(run.count))
                // A piece without zero blocks goes on as it is, without a copy.
                return stream.push(.data(run.count == bytes.count ? piece : Array(run), crc: crc))
            }
            while offset < bytes.count {
                let end = min(bytes.count, offset + blockSize)
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
                return pushData(start) && stream.push(.hole(Int64(bytes.count - start)))
            }
            return pushData(bytes.count)
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

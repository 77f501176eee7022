// WindowRepair: corrects the start of a speculative chunk that ISA-L decoded with zeros
// in place of the unknown 32 KiB window before it.
//
// Deflate data parses the same way whatever the window holds: the literals, lengths and
// distances come from the bits alone, and only the bytes a match copies depend on the
// history. So a chunk decoded from a real block boundary with a guessed window has the
// right length everywhere and wrong bytes only where a match copied, directly or
// through earlier matches, from the guessed window. Once 32 KiB of output in a row are
// right, the decoder's whole history is right, and so is every byte after it.
//
// The writer has the real window when the chunk's turn comes. It decodes the chunk
// again from its first bit with ISA-L and the real window, compares that output with
// the chunk's pieces, and writes its own bytes where they differ. Once 32 KiB in a row
// agreed, it stops, and the rest of the chunk goes through unchanged. On the data-heavy
// test image, 0.2 MB to 25 MB per chunk were decoded again (40 MB of 1.4 GB), at
// ISA-L's speed, where marker mode would have decoded as much with the slower Swift
// decoder.

import CIsal
import Foundation

final class WindowRepair {
    /// Bytes compared per ISA-L call: the repair ends at most this much after the last
    /// wrong byte plus 32 KiB.
    static let sliceSize = 64 << 10

    private let input: UnsafeRawBufferPointer
    private let state: UnsafeMutablePointer<inflate_state>
    private let buffer: UnsafeMutablePointer<UInt8>
    /// The next input byte ISA-L has not been given.
    private var position: Int
    /// Output bytes in a row, up to the last one compared, that the chunk got right.
    private var agreeing = 0
    /// Output bytes decoded again so far.
    private(set) var compared: Int64 = 0

    /// Starts decoding at `bitOffset` of `input`, a block boundary whose real history is
    /// `window` (its last 32 KiB, or all of the member's output when that is shorter).
    init(input: UnsafeRawBufferPointer, bitOffset: Int64, window: [UInt8]) {
        self.input = input
        state = UnsafeMutablePointer<inflate_state>.allocate(capacity: 1)
        isal_inflate_init(state)
        buffer = UnsafeMutablePointer<UInt8>.allocate(capacity: Self.sliceSize)
        position = IsalChunkDecoder.prime(state, at: bitOffset, window: window, in: input)
    }

    deinit {
        state.deallocate()
        buffer.deallocate()
    }

    /// True once 32 KiB in a row agreed: the chunk's remaining output is right.
    var isDone: Bool { agreeing >= ByteOutput.history }

    /// Compares the next `chunkBytes.count` bytes of output (at most `sliceSize`) with a
    /// decode from the real window. Returns nil when they agree, or the right bytes.
    func check(_ chunkBytes: UnsafeRawBufferPointer) throws -> [UInt8]? {
        let count = chunkBytes.count
        try decode(count)
        compared += Int64(count)
        if memcmp(buffer, chunkBytes.baseAddress!, count) == 0 {
            agreeing += count
            return nil
        }
        var last = count - 1
        while buffer[last] == chunkBytes[last] { last -= 1 }
        agreeing = count - 1 - last
        return Array(UnsafeBufferPointer(start: buffer, count: count))
    }

    /// Compares the next `count` bytes (at most `sliceSize`), which the chunk gave as a
    /// hole, with a decode from the real window. Returns nil when they are all zero, or
    /// the right bytes.
    func checkZeros(_ count: Int) throws -> [UInt8]? {
        try decode(count)
        compared += Int64(count)
        if isal_zero_detect(buffer, count) == 0 {
            agreeing += count
            return nil
        }
        var last = count - 1
        while buffer[last] == 0 { last -= 1 }
        agreeing = count - 1 - last
        return Array(UnsafeBufferPointer(start: buffer, count: count))
    }

    /// Decodes exactly `count` bytes into `buffer`.
    private func decode(_ count: Int) throws {
        let base = input.baseAddress!.assumingMemoryBound(to: UInt8.self)
        var produced = 0
        while produced < count {
            if state.pointee.avail_in == 0 && position < input.count {
                let available = min(input.count - position, 1 << 30)
                state.pointee.next_in = UnsafeMutablePointer(mutating: base + position)
                state.pointee.avail_in = UInt32(available)
                position += available
            }
            state.pointee.next_out = buffer + produced
            state.pointee.avail_out = UInt32(count - produced)
            let result = isal_inflate(state)
            let before = produced
            produced = count - Int(state.pointee.avail_out)
            let offset = Int64(position - Int(state.pointee.avail_in))
            if result < 0 {
                throw GzipDataError(offset: offset, reason: IsalInflater.describe(result))
            }
            if produced < count, produced == before,
               state.pointee.block_state == ISAL_BLOCK_FINISH || state.pointee.avail_in == 0 && position >= input.count {
                // The chunk's worker decoded the same bits into more output.
                throw GzipDataError(offset: offset, reason: "decoding a chunk again with its real window gave less output than the first decode")
            }
        }
    }
}

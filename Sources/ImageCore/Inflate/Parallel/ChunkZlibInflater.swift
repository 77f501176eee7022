// ChunkZlibInflater: zlib's inflate on a raw deflate stream (no zlib or gzip wrapper).
//
// zlib keeps a pointer to its own `z_stream`, so the stream lives in a heap allocation
// that never moves. One inflater belongs to one thread at a time; it is not thread-safe.
// zlib's `avail_in`/`avail_out` are 32-bit, so callers pass pieces of at most 1 GiB.

import CZlib

final class ChunkZlibInflater {
    enum Status {
        /// Input or output ran out, or a block ended (with `Z_BLOCK`).
        case progressed
        /// The final block's end-of-block code was decoded.
        case streamEnd
    }

    private let stream: UnsafeMutablePointer<z_stream>

    init() {
        stream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
        stream.initialize(to: z_stream())
        let status = imgtool_inflateInit2(stream, -15)
        // Z_MEM_ERROR is the only failure for valid arguments; imgtool treats it as fatal.
        precondition(status == Z_OK, "Bug in imgtool: inflateInit2 failed with \(status)")
    }

    deinit {
        inflateEnd(stream)
        stream.deinitialize(count: 1)
        stream.deallocate()
    }

    /// Starts a new raw deflate stream (`inflateReset`).
    func reset() {
        inflateReset(stream)
    }

    /// Starts decoding at bit `bitOffset` of `input`, with `window` as the preceding
    /// output; returns the byte offset from which input must be fed next.
    /// Uses `inflatePrime` for the bits of a partly consumed first byte and
    /// `inflateSetDictionary` for the window.
    func start(at bitOffset: Int64, in input: UnsafeRawBufferPointer, window: [UInt8]?) -> Int {
        reset()
        var byteOffset = Int(bitOffset / 8)
        let skipped = Int32(bitOffset % 8)
        if skipped > 0 {
            let byte = Int32(input[byteOffset]) >> skipped
            inflatePrime(stream, 8 - skipped, byte)
            byteOffset += 1
        }
        if let window, !window.isEmpty {
            window.withUnsafeBufferPointer { buffer in
                _ = inflateSetDictionary(stream, buffer.baseAddress, UInt32(buffer.count))
            }
        }
        return byteOffset
    }

    /// The result of one `inflate` call: bytes consumed and produced, and the status.
    struct Step {
        var consumed: Int
        var produced: Int
        var status: Status
        /// Bits of the last consumed byte not yet used (0...7).
        var unusedBits: Int
        /// True when decoding stopped right after an end-of-block code or a block header
        /// boundary (zlib's `data_type & 128`), so the position is a block boundary.
        var atBlockBoundary: Bool
        /// True when the block being decoded is the stream's final one (`data_type & 64`).
        var inFinalBlock: Bool
    }

    /// Runs `inflate` once. `stopAtBlocks` passes `Z_BLOCK` so decoding also stops at
    /// each block boundary. Throws the zlib message for invalid data.
    func inflate(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer,
                 stopAtBlocks: Bool) throws(DeflateDataError) -> Step {
        let inputCount = min(input.count, 1 << 30)
        let outputCount = min(output.count, 1 << 30)
        stream.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: UInt8.self))
        stream.pointee.avail_in = UInt32(inputCount)
        stream.pointee.next_out = output.baseAddress?.assumingMemoryBound(to: UInt8.self)
        stream.pointee.avail_out = UInt32(outputCount)
        let status = CZlib.inflate(stream, stopAtBlocks ? Z_BLOCK : Z_NO_FLUSH)
        let consumed = inputCount - Int(stream.pointee.avail_in)
        let produced = outputCount - Int(stream.pointee.avail_out)
        let dataType = Int(stream.pointee.data_type)
        switch status {
        case Z_OK, Z_BUF_ERROR:
            return Step(consumed: consumed, produced: produced, status: .progressed, unusedBits: dataType & 7,
                        atBlockBoundary: dataType & 128 != 0, inFinalBlock: dataType & 64 != 0)
        case Z_STREAM_END:
            return Step(consumed: consumed, produced: produced, status: .streamEnd, unusedBits: dataType & 7,
                        atBlockBoundary: true, inFinalBlock: true)
        case Z_NEED_DICT:
            throw DeflateDataError(reason: "the stream asks for a preset dictionary")
        default:
            let message = stream.pointee.msg.map { String(cString: $0) } ?? "zlib status \(status)"
            throw DeflateDataError(reason: message)
        }
    }
}

/// Invalid deflate data, as the decoder reported it; the caller adds the file and offset.
struct DeflateDataError: Error {
    var reason: String
}

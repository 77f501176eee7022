// Raw deflate (RFC 1951) decoders behind one interface: ISA-L for speed, zlib as the
// reference. The gzip framing around them (header, trailer, members) is ours, in
// GzipDecoder, so both see exactly the same deflate bytes.
//
// Each object owns one C stream at a stable heap address (zlib keeps a pointer back to its
// stream) and is not thread-safe: one decoder uses it from one thread.

import CIsal
import CZlib

/// A deflate implementation for gzip members.
public enum DeflateEngine: String, Sendable, CaseIterable {
    /// ISA-L's `isal_inflate` (libisal), the default. In Benchmarks/decompress.sh on the
    /// 4 GiB image, `igzip -dc` (ISA-L) took 6.4 s and zlib-based `pigz -dc` 18.0 s.
    case isal
    /// zlib's `inflate`: the reference implementation.
    case zlib
}

/// The result of one `RawInflater.inflate` call.
struct InflateStep {
    /// Input bytes taken, including any read past the end of the stream (see `overread`).
    var consumed: Int
    /// Output bytes produced.
    var produced: Int
    /// The final block has ended and all of its output was produced.
    var finished: Bool
}

/// A deflate decoding error from the C library, described in a sentence.
struct RawInflateFailure: Error {
    var reason: String
}

protocol RawInflater: AnyObject {
    /// Prepares for a new deflate stream.
    func reset()
    /// Decodes from `input` into `output`. Returns with progress on either side, or with
    /// `finished` set; never consumes and produces nothing unless both are empty.
    func inflate(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws(RawInflateFailure) -> InflateStep
    /// The CRC-32 of the output since `reset`.
    var crc: UInt32 { get }
    /// After `finished`: how many consumed bytes lie past the end of the deflate stream
    /// and belong to whatever follows it (the gzip trailer).
    var overread: Int { get }
}

func makeRawInflater(_ engine: DeflateEngine) -> any RawInflater {
    switch engine {
    case .isal: return IsalInflater()
    case .zlib: return ZlibInflater()
    }
}

/// ISA-L's inflater with `crc_flag` set to `ISAL_GZIP_NO_HDR`, so that it computes the
/// gzip CRC-32 of its output while the output is still in cache.
final class IsalInflater: RawInflater {
    private let state: UnsafeMutablePointer<inflate_state>

    init() {
        state = .allocate(capacity: 1)
        isal_inflate_init(state)
        state.pointee.crc_flag = UInt32(ISAL_GZIP_NO_HDR)
    }

    deinit { state.deallocate() }

    func reset() {
        isal_inflate_reset(state)
        state.pointee.crc_flag = UInt32(ISAL_GZIP_NO_HDR)
    }

    func inflate(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws(RawInflateFailure) -> InflateStep {
        // avail_in and avail_out are 32-bit, so at most 2 GiB goes in per call.
        let inputCount = min(input.count, Int(Int32.max))
        let outputCount = min(output.count, Int(Int32.max))
        state.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: UInt8.self))
        state.pointee.avail_in = UInt32(inputCount)
        state.pointee.next_out = output.baseAddress?.assumingMemoryBound(to: UInt8.self)
        state.pointee.avail_out = UInt32(outputCount)
        let result = isal_inflate(state)
        if result < 0 { throw RawInflateFailure(reason: Self.describe(result)) }
        return InflateStep(consumed: inputCount - Int(state.pointee.avail_in),
                           produced: outputCount - Int(state.pointee.avail_out),
                           finished: state.pointee.block_state == ISAL_BLOCK_FINISH)
    }

    var crc: UInt32 { state.pointee.crc }

    /// ISA-L reads input into a 64-bit bit buffer ahead of decoding. When the stream ends,
    /// the partial byte of the last code is discarded and the whole bytes still in the
    /// bit buffer (`read_in_length / 8`) follow the stream.
    var overread: Int { Int(state.pointee.read_in_length / 8) }

    /// Describes an `isal_inflate` error code in a sentence.
    static func describe(_ code: Int32) -> String {
        switch code {
        case ISAL_INVALID_BLOCK: return "invalid deflate block (isal_inflate: ISAL_INVALID_BLOCK)"
        case ISAL_INVALID_SYMBOL: return "invalid deflate symbol (isal_inflate: ISAL_INVALID_SYMBOL)"
        case ISAL_INVALID_LOOKBACK: return "a match distance reaches before the start of the data (isal_inflate: ISAL_INVALID_LOOKBACK)"
        default: return "isal_inflate failed with code \(code)"
        }
    }
}

/// zlib's inflater in raw mode (window bits -15), with the CRC-32 computed by `crc32`.
final class ZlibInflater: RawInflater {
    private let stream: UnsafeMutablePointer<z_stream>
    private(set) var crc: UInt32 = 0

    init() {
        stream = .allocate(capacity: 1)
        stream.initialize(to: z_stream())
        let result = imgtool_inflateInit2(stream, -15)
        precondition(result == Z_OK, "zlib inflateInit2 failed with \(result): out of memory")
    }

    deinit {
        inflateEnd(stream)
        stream.deallocate()
    }

    func reset() {
        inflateReset(stream)
        crc = 0
    }

    func inflate(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws(RawInflateFailure) -> InflateStep {
        let inputCount = min(input.count, Int(Int32.max))
        let outputCount = min(output.count, Int(Int32.max))
        stream.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: UInt8.self))
        stream.pointee.avail_in = UInt32(inputCount)
        stream.pointee.next_out = output.baseAddress?.assumingMemoryBound(to: UInt8.self)
        stream.pointee.avail_out = UInt32(outputCount)
        let result = CZlib.inflate(stream, Z_NO_FLUSH)
        let produced = outputCount - Int(stream.pointee.avail_out)
        if produced > 0 {
            crc = UInt32(crc32(uLong(crc), output.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt32(produced)))
        }
        switch result {
        case Z_OK, Z_STREAM_END, Z_BUF_ERROR:
            break
        default:
            let message = stream.pointee.msg.map { String(cString: $0) } ?? "error \(result)"
            throw RawInflateFailure(reason: "invalid deflate data (zlib: \(message))")
        }
        return InflateStep(consumed: inputCount - Int(stream.pointee.avail_in), produced: produced,
                           finished: result == Z_STREAM_END)
    }

    /// zlib stops exactly at the end of the deflate stream.
    var overread: Int { 0 }
}

// SpanDecoder: decodes one chunk of a gzip file with zlib and streams its output.
//
// A chunk (a run of BGZF members) starts at a member header, where decoding needs no
// history. It decodes across member boundaries, reading each trailer and the next
// header, until its stop rule holds. The worker computes each piece's CRC-32; the consumer combines
// them and checks every member's trailer.

import CZlib

/// Where a chunk starts.
struct ChunkStart: Sendable {
    /// Bit offset of the first bit to decode.
    var bitOffset: Int64
    /// True when `bitOffset` is the first byte of a gzip member header.
    var atMemberHeader: Bool
    /// The output preceding a mid-member start; nil at a member header.
    var window: [UInt8]?
}

/// When a chunk stops.
enum ChunkStop: Sendable {
    /// At the first member end whose next byte is at or after `byteOffset`.
    case memberEndAtOrAfter(Int64)
}

struct SpanDecoder: Sendable {
    /// The input; the map stays valid as long as the decoder exists.
    let file: MappedFile
    var input: UnsafeRawBufferPointer { file.bytes }
    /// Bytes per output piece: large enough that per-piece costs vanish, small enough
    /// that pieces flow to the writer steadily.
    static let pieceSize = 1 << 20

    /// Decodes from `start` until `stop`, pushing pieces into `stream`. Returns where it
    /// stopped; returns early (with the position reached) when the stream is abandoned.
    func decode(from start: ChunkStart, until stop: ChunkStop, into stream: ChunkStream) throws(GzipDataError) -> ChunkEnd {
        let inflater = ChunkZlibInflater()
        var position: Int
        if start.atMemberHeader {
            position = Int(start.bitOffset / 8)
            guard let header = try GzipMemberHeader.parse(input, at: position) else {
                throw GzipDataError(offset: Int64(position), reason: "no gzip member starts here")
            }
            position += header.length
        } else {
            guard start.bitOffset >= 0, start.bitOffset / 8 < Int64(input.count) else {
                throw GzipDataError(offset: start.bitOffset / 8, reason: "the access point lies outside the file")
            }
            position = inflater.start(at: start.bitOffset, in: input, window: start.window)
        }

        var piece = [UInt8](repeating: 0, count: Self.pieceSize)
        var filled = 0

        func flush() -> Bool {
            guard filled > 0 else { return true }
            let crc = piece.withUnsafeBytes { UInt32(crc32(0, $0.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt32(filled))) }
            let bytes = filled == piece.count ? piece : Array(piece[0..<filled])
            filled = 0
            return stream.push(.data(bytes, crc: crc))
        }

        while true {
            let room = piece.count - filled
            let outcome = piece.withUnsafeMutableBytes { buffer in
                Result { () throws(DeflateDataError) in
                    try inflater.inflate(UnsafeRawBufferPointer(rebasing: input[position...]),
                                         into: UnsafeMutableRawBufferPointer(rebasing: buffer[filled..<filled + room]),
                                         stopAtBlocks: false)
                }
            }
            let step = try checked(outcome, at: position)
            position += step.consumed
            filled += step.produced
            if filled == piece.count, !flush() { return ChunkEnd(bitOffset: Int64(position) * 8) }

            if step.status == .streamEnd {
                if !flush() { return ChunkEnd(bitOffset: Int64(position) * 8) }
                let trailerOffset = position
                guard position + GzipMemberHeader.trailerSize <= input.count else {
                    throw GzipDataError(offset: Int64(input.count), kind: .truncated, reason: "inside the 8-byte gzip trailer at offset \(position)")
                }
                let crc = littleEndian32(at: position)
                let size = littleEndian32(at: position + 4)
                position += GzipMemberHeader.trailerSize
                guard stream.push(.memberEnd(crc: crc, size: size, trailerOffset: Int64(trailerOffset))) else {
                    return ChunkEnd(bitOffset: Int64(position) * 8)
                }
                if case .memberEndAtOrAfter(let target) = stop, Int64(position) >= target {
                    return ChunkEnd(bitOffset: Int64(position) * 8)
                }
                // The next member, or the end of the data: zero padding is accepted
                // silently, anything else ends the data with a warning from the caller.
                guard let header = try GzipMemberHeader.parse(input, at: position) else {
                    let rest = UnsafeRawBufferPointer(rebasing: input[position...])
                    let garbage = stream.trailingGarbage(in: rest, at: position)
                    return ChunkEnd(bitOffset: Int64(input.count) * 8, trailingGarbage: garbage)
                }
                position += header.length
                inflater.reset()
                continue
            }

            if step.consumed == 0 && step.produced == 0 && position >= input.count {
                throw GzipDataError(offset: Int64(position), kind: .truncated, reason: "inside deflate data")
            }
        }
    }

    private func checked(_ outcome: Result<ChunkZlibInflater.Step, DeflateDataError>, at position: Int) throws(GzipDataError) -> ChunkZlibInflater.Step {
        switch outcome {
        case .success(let step): return step
        case .failure(let error): throw GzipDataError(offset: Int64(position), reason: "invalid deflate data (\(error.reason))")
        }
    }

    private func littleEndian32(at offset: Int) -> UInt32 {
        UInt32(input[offset]) | UInt32(input[offset + 1]) << 8 | UInt32(input[offset + 2]) << 16 | UInt32(input[offset + 3]) << 24
    }
}

// IsalChunkDecoder: decodes one chunk whose start and window are known (an access point
// of a seek index, or a member header) with ISA-L, which decodes real data about twice
// as fast per core as the Swift decoder on the test machine.
//
// ISA-L has no way to stop at a bit offset, but an index gives each chunk's output
// length, so the chunk ends when that many bytes came out. ISA-L also cannot start at a
// bit offset: the bits of a partly used first byte are put into its bit buffer
// (`read_in`, `read_in_length`) by hand, and the window is set as its dictionary.
//
// ISA-L writes zero runs as bytes. Each output piece is scanned in 4 KiB blocks
// (`isal_zero_detect`) on the worker, and zero blocks are handed on as holes, so the
// writer neither copies nor scans them.

import CIsal
import Foundation

struct IsalChunkDecoder: Sendable {
    let file: MappedFile
    /// The memory ISA-L decodes into when the output is not placed; its block size is
    /// the most output of one call.
    let blocks: OutputBlockPool

    /// Sets up a freshly initialised ISA-L `state` to decode from `bitOffset` of `input`
    /// with `window` as history, and returns the byte offset of its next input byte.
    /// ISA-L starts at a byte, so the unused bits of a partly used first byte go into
    /// its bit buffer (`read_in`, `read_in_length`) by hand.
    static func prime(_ state: UnsafeMutablePointer<inflate_state>, at bitOffset: Int64, window: [UInt8],
                      in input: UnsafeRawBufferPointer) -> Int {
        if !window.isEmpty {
            var window = window
            let result = window.withUnsafeMutableBufferPointer { isal_inflate_set_dict(state, $0.baseAddress, UInt32($0.count)) }
            precondition(result == COMP_OK, "Bug in imgtool: isal_inflate_set_dict failed with \(result)")
        }
        var position = Int(bitOffset / 8)
        let used = Int(bitOffset % 8)
        if used > 0 {
            state.pointee.read_in = UInt64(input[position] >> UInt8(used))
            state.pointee.read_in_length = Int32(8 - used)
            position += 1
        }
        return position
    }

    /// Decodes from `start` (`.memberHeader` or `.known`) until `length` bytes of output,
    /// or to the end of the data when `length` is nil, pushing pieces into `stream`.
    /// Member ends inside the chunk are handled as in `SpeculativeDecoder`.
    ///
    /// Where the chunk stops inside a member, the returned end is `end`, the next
    /// point's bit offset, taken on trust. ISA-L reads on past a full output buffer (the
    /// next block header and one symbol), so its position does not show where the
    /// output ended. The writer still checks the uncompressed offset of every point and
    /// the CRC-32 and length of every member.
    /// - Parameter endsWithMember: the next point is at the start of a member's deflate
    ///   data, so the chunk must also read its member's last end-of-block code and
    ///   trailer.
    /// - Parameter placed: where the chunk writes its own output (see `PlacedChunkOutput`);
    ///   it then pushes `.placed` pieces instead of data and holes.
    func decode(from start: SpeculativeDecoder.Start, length: Int64?, end: Int64, endsWithMember: Bool,
                placed: PlacedChunkOutput? = nil, into stream: ChunkStream) throws -> ChunkEnd {
        let input = file.bytes
        let state = UnsafeMutablePointer<inflate_state>.allocate(capacity: 1)
        defer { state.deallocate() }
        isal_inflate_init(state)

        var position: Int
        switch start {
        case .memberHeader(let bitOffset):
            let offset = Int(bitOffset / 8)
            guard let header = try GzipMemberHeader.parse(input, at: offset) else {
                throw GzipDataError(offset: Int64(offset), reason: "no gzip member starts here")
            }
            guard stream.push(.chunkStart(bitOffset)) else { return ChunkEnd(bitOffset: bitOffset) }
            position = offset + header.length
        case .known(let bitOffset, let window):
            guard bitOffset >= 0, bitOffset / 8 < Int64(input.count) else {
                throw GzipDataError(offset: bitOffset / 8, reason: "the access point lies outside the file")
            }
            guard stream.push(.chunkStart(bitOffset)) else { return ChunkEnd(bitOffset: bitOffset) }
            position = Self.prime(state, at: bitOffset, window: window, in: input)
        case .search:
            preconditionFailure("Bug in imgtool: IsalChunkDecoder needs a known start")
        }

        var remaining = length ?? .max
        // After the last byte of a chunk that ends with its member, one more call with
        // no output space lets ISA-L read the final end-of-block code.
        var finalCallDone = false
        // Unplaced output: the block being filled, how much of it ISA-L filled, and how
        // much of that was handed on. Small members share one block, and their pieces
        // go to the stream together.
        var block: OutputBlock?
        var filled = 0
        var handedOn = 0
        var pending: [OutputPiece] = []
        func handOn(_ piece: OutputPiece? = nil) {
            if let block, filled > handedOn { ZeroBlocks.append(block, handedOn..<filled, to: &pending) }
            handedOn = filled
            if let piece { pending.append(piece) }
        }
        func flush() -> Bool {
            handOn()
            defer { pending.removeAll(keepingCapacity: true) }
            return stream.push(contentsOf: pending)
        }
        // An error ends the chunk. The pieces of the members before it go first, so the
        // writer reports the first fault in the file's order.
        do {
            while true {
                if remaining == 0 {
                    if finalCallDone {
                        guard flush() else { return ChunkEnd(bitOffset: Int64(position) * 8) }
                        return ChunkEnd(bitOffset: end, insideMember: true)
                    }
                    finalCallDone = true
                }
                if stream.isAbandoned { return ChunkEnd(bitOffset: Int64(position) * 8) }
                let inputCount = min(input.count - position, Int(Int32.max))
                if placed == nil, block == nil || filled == blocks.blockSize {
                    guard flush() else { return ChunkEnd(bitOffset: Int64(position) * 8) }
                    block = blocks.take()
                    filled = 0
                    handedOn = 0
                }
                let outputCount = Int(min(Int64(placed?.pieceSize ?? blocks.blockSize - filled), remaining))
                state.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress!.assumingMemoryBound(to: UInt8.self) + position)
                state.pointee.avail_in = UInt32(inputCount)
                var result: Int32 = 0
                let produced: Int
                if let placed {
                    let space = placed.space(limit: outputCount)
                    state.pointee.next_out = space.baseAddress!.assumingMemoryBound(to: UInt8.self)
                    state.pointee.avail_out = UInt32(space.count)
                    result = isal_inflate(state)
                    produced = space.count - Int(state.pointee.avail_out)
                    guard placed.commit(produced, into: stream) else { return ChunkEnd(bitOffset: Int64(position) * 8) }
                } else {
                    state.pointee.next_out = block!.bytes.baseAddress!.assumingMemoryBound(to: UInt8.self) + filled
                    state.pointee.avail_out = UInt32(outputCount)
                    result = isal_inflate(state)
                    produced = outputCount - Int(state.pointee.avail_out)
                    if result >= 0 { filled += produced }
                }
                let consumed = inputCount - Int(state.pointee.avail_in)
                position += consumed
                if result < 0 {
                    throw GzipDataError(offset: Int64(position), reason: IsalInflater.describe(result))
                }
                remaining -= Int64(produced)
                // ISA-L goes on past a full output buffer through blocks that add no output,
                // so a member end it reports may lie in the next chunk (an empty final block
                // after the point, for one).
                if remaining == 0 && !endsWithMember {
                    guard flush() else { return ChunkEnd(bitOffset: Int64(position) * 8) }
                    return ChunkEnd(bitOffset: end, insideMember: true)
                }

                if state.pointee.block_state == ISAL_BLOCK_FINISH {
                    // The member's final block ended. ISA-L reads ahead in whole bytes; the
                    // whole bytes left in its bit buffer belong to the trailer.
                    let trailer = position - Int(state.pointee.read_in_length / 8)
                    guard trailer + GzipMemberHeader.trailerSize <= input.count else {
                        throw GzipDataError(offset: Int64(input.count), kind: .truncated, reason: "inside the 8-byte gzip trailer at offset \(trailer)")
                    }
                    let crc = readLittleEndian32(input, at: trailer)
                    let size = readLittleEndian32(input, at: trailer + 4)
                    if remaining == 0 && end <= Int64(trailer) * 8 {
                        // The next point has no window but lies inside this member, before the
                        // final block's end (an index with sparse windows, such as rapidgzip's,
                        // leaves out windows that nothing refers to). The next chunk decodes
                        // this member's end.
                        guard flush() else { return ChunkEnd(bitOffset: Int64(trailer) * 8) }
                        return ChunkEnd(bitOffset: end, insideMember: true)
                    }
                    handOn(.memberEnd(crc: crc, size: size, trailerOffset: Int64(trailer)))
                    let next = trailer + GzipMemberHeader.trailerSize
                    let header = try GzipMemberHeader.parse(input, at: next)
                    // Pieces wait for a full block, unless the chunk ends here or its output is
                    // placed (`commit` pushed the member's `.placed` pieces already).
                    if header == nil || placed != nil || pending.count > 64 {
                        guard flush() else { return ChunkEnd(bitOffset: Int64(trailer) * 8) }
                    }
                    guard let header else {
                        let rest = UnsafeRawBufferPointer(rebasing: input[next...])
                        return ChunkEnd(bitOffset: Int64(input.count) * 8,
                                        trailingGarbage: stream.trailingGarbage(in: rest, at: next))
                    }
                    isal_inflate_reset(state)
                    position = next + header.length
                    if remaining == 0 {
                        let deflateStart = Int64(position) * 8
                        if deflateStart == end {
                            guard flush() else { return ChunkEnd(bitOffset: Int64(next) * 8) }
                            return ChunkEnd(bitOffset: end)
                        }
                        guard deflateStart < end else {
                            throw GzipDataError(offset: end / 8, reason: "the next access point (bit \(end)) lies between two members, inside a trailer or header")
                        }
                        // The point lies further on. Only empty members may come first, since
                        // the chunk has all its output, so decoding goes on without output
                        // space. A member with output stops there, and the writer rejects it.
                        finalCallDone = false
                    }
                    continue
                }
                if consumed == 0 && produced == 0 && remaining > 0 {
                    throw GzipDataError(offset: Int64(input.count), kind: .truncated, reason: "inside deflate data")
                }
            }
        } catch {
            _ = flush()
            throw error
        }
    }
}

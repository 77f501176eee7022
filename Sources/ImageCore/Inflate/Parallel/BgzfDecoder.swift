// BgzfDecoder: decodes a run of whole BGZF members with libdeflate.
//
// A BGZF member gives its size in its header (BSIZE) and its output size in its trailer
// (ISIZE, at most 64 KiB). So one call decodes its deflate data into space of exactly
// that size, the whole-buffer case libdeflate is built for. On the test machine,
// libdeflate-gunzip decoded the bgzip output of the data-heavy image in 1.7 s to 2.0 s
// of CPU time, and igzip (ISA-L) in 2.9 s to 3.0 s. Probably ISA-L's table setup per
// deflate block weighs more in members of 64 KiB (not measured).
//
// bgzip compresses every 64 KiB of zeros into the same bytes, and a member's output
// depends on its deflate data alone (each member starts without history). So when a
// member's deflate data equals that of the last member that gave only zeros, and its
// trailer gives the same size, it is handed on as a hole without decoding or scanning.
//
// Consecutive members fill one pooled 1 MiB block; their pieces (zero blocks as holes,
// as in `ZeroBlocks`) and member ends go to the stream together. The worker computes the
// CRC-32 of each piece, and the writer checks every member's CRC-32 and ISIZE.

import CLibdeflate

struct BgzfDecoder: Sendable {
    let file: MappedFile
    let blocks: OutputBlockPool

    /// The maximum output of one BGZF member, which the format sets.
    static let maximumMemberOutput = 1 << 16

    /// Decodes the members from byte `start` to byte `end` of the input, which
    /// `BgzfPlan` found to be BGZF members with at most `maximumMemberOutput` bytes
    /// of output each, pushing their pieces into `stream`.
    func decode(from start: Int, to end: Int, into stream: ChunkStream) throws -> ChunkEnd {
        precondition(blocks.blockSize >= Self.maximumMemberOutput, "Bug in imgtool: blocks smaller than a BGZF member")
        let input = file.bytes
        guard let decompressor = libdeflate_alloc_decompressor() else {
            throw GzipDataError(offset: Int64(start), reason: "libdeflate could not allocate a decompressor (out of memory)")
        }
        defer { libdeflate_free_decompressor(decompressor) }

        var block = blocks.take()
        var filled = 0
        var pieces: [OutputPiece] = []
        var position = start
        // The deflate data of the last member whose output was all zeros, and its size.
        var zeroMember: (data: UnsafeRawBufferPointer, outputSize: UInt32)?
        while position < end {
            // Members with little output, or holes, would otherwise pile up pieces until
            // the block fills.
            if pieces.count >= 256 {
                guard stream.push(contentsOf: pieces) else { return ChunkEnd(bitOffset: Int64(position) * 8) }
                pieces.removeAll(keepingCapacity: true)
            }
            guard let header = try GzipMemberHeader.parse(input, at: position), let size = header.bgzfMemberSize,
                  size > header.length + GzipMemberHeader.trailerSize, size <= end - position else {
                throw GzipDataError(offset: Int64(position), reason: "no BGZF member starts here")
            }
            let deflateStart = position + header.length
            let trailer = position + size - GzipMemberHeader.trailerSize
            let crc = readLittleEndian32(input, at: trailer)
            let outputSize = readLittleEndian32(input, at: trailer + 4)
            guard outputSize <= Self.maximumMemberOutput else {
                throw GzipDataError(offset: Int64(trailer + 4), reason: "the BGZF member's trailer gives \(outputSize) bytes of output, more than the format's 65536")
            }
            let data = UnsafeRawBufferPointer(rebasing: input[deflateStart..<trailer])
            if let zeroMember, zeroMember.outputSize == outputSize, zeroMember.data.elementsEqual(data) {
                pieces.append(.hole(Int64(outputSize)))
                pieces.append(.memberEnd(crc: crc, size: outputSize, trailerOffset: Int64(trailer)))
                position += size
                continue
            }
            if block.bytes.count - filled < Int(outputSize) {
                guard stream.push(contentsOf: pieces) else { return ChunkEnd(bitOffset: Int64(position) * 8) }
                pieces.removeAll(keepingCapacity: true)
                if stream.isAbandoned { return ChunkEnd(bitOffset: Int64(position) * 8) }
                block = blocks.take()
                filled = 0
            }
            var consumed = 0
            var produced = 0
            let result = libdeflate_deflate_decompress_ex(
                decompressor, input.baseAddress! + deflateStart, trailer - deflateStart,
                block.bytes.baseAddress! + filled, Int(outputSize), &consumed, &produced)
            // A wrong BSIZE puts the trailer elsewhere, and then the deflate data ends
            // before it, runs past it, or overflows the ISIZE read there. gzip ignores
            // BSIZE, so the caller decodes this member and the rest of the file as plain
            // gzip members. Only deflate data that is invalid without the bound fails here.
            guard result == LIBDEFLATE_SUCCESS, consumed == trailer - deflateStart else {
                if result == LIBDEFLATE_BAD_DATA, Self.isInvalidDeflate(input, from: deflateStart, decompressor) {
                    throw GzipDataError(offset: Int64(deflateStart), reason: "invalid deflate data in the BGZF member at offset \(position)")
                }
                guard stream.push(contentsOf: pieces) else { return ChunkEnd(bitOffset: Int64(position) * 8) }
                return ChunkEnd(bitOffset: Int64(position) * 8, bgzfMemberMismatch: true)
            }
            let piecesBefore = pieces.count
            ZeroBlocks.append(block, filled..<filled + produced, to: &pieces)
            filled += produced
            if produced > 0, produced == Int(outputSize), pieces.count == piecesBefore + 1,
               case .hole = pieces[piecesBefore] {
                zeroMember = (data, outputSize)
            }
            pieces.append(.memberEnd(crc: crc, size: outputSize, trailerOffset: Int64(trailer)))
            position += size
        }
        guard stream.push(contentsOf: pieces) else { return ChunkEnd(bitOffset: Int64(position) * 8) }
        return ChunkEnd(bitOffset: Int64(end) * 8)
    }

    /// Returns whether the deflate data at byte `start` of `input` is invalid when decoded
    /// up to the end of the input, with room for one member's output. Data that needs
    /// more room is not known to be invalid.
    private static func isInvalidDeflate(_ input: UnsafeRawBufferPointer, from start: Int,
                                         _ decompressor: OpaquePointer) -> Bool {
        let output = UnsafeMutableRawBufferPointer.allocate(byteCount: maximumMemberOutput, alignment: 64)
        defer { output.deallocate() }
        var consumed = 0
        var produced = 0
        let result = libdeflate_deflate_decompress_ex(decompressor, input.baseAddress! + start, input.count - start,
                                                      output.baseAddress!, output.count, &consumed, &produced)
        return result == LIBDEFLATE_BAD_DATA
    }
}

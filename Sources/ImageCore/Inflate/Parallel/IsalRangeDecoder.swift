// IsalRangeDecoder: decodes the part of a speculative chunk whose window is known with
// ISA-L, and stops at the block boundary where the Swift decoder would stop.
//
// Neither the output length nor the end of a speculative chunk is known in advance. It
// ends at the first block boundary at or after `stopAt` whose header the block finder
// accepts, because the next range's worker starts at the first such candidate. ISA-L
// cannot stop at a bit offset, so it gets its input only up to and including the byte
// that contains the next candidate C (`BlockFinder.find` from `stopAt` on). It then decodes
// every block that ends at or before C and runs out of input in the next one:
//   - when C is a block boundary, it runs out in the header at C, which it cannot read
//     from at most 8 bits (a dynamic header needs 17 or more, a stored one 35 or more).
//     On running out inside a header, `read_header_stateful` restores the bit buffer
//     (`read_in`, `read_in_length`) to the header's start, keeps the bytes after it in
//     `tmp_in_buffer` (`tmp_in_size`) and sets `ISAL_BLOCK_HDR`, so the header starts at
//     bit `(bytes handed in - tmp_in_size) * 8 - read_in_length`;
//   - otherwise it runs out inside a block (or inside the header of a boundary before C
//     that the finder did not accept), and the input grows to the next candidate.
// The chunk stops only when ISA-L waits for a header (`ISAL_BLOCK_HDR`, or
// `ISAL_BLOCK_NEW_HDR` before it tried one) that starts exactly at C. From a real
// boundary with the real window ISA-L waits for headers only at real boundaries, and
// every real boundary the finder accepts is a candidate, so the first candidate where
// it waits is the first acceptable boundary. (A chunk from a false start is thrown away
// by the writer, which takes only chunks that start where the previous one ended.)
//
// Bits past the input read as zeros to ISA-L. On a valid stream that never makes it fail
// where more input would have let it go on. Deflate's codes are canonical, so a real
// code's prefix filled with zeros is a used code, and a cut header's repeat counts come
// out smallest. ISA-L decodes up to three symbols per table lookup, but only the last of
// them may be other than a literal, so the end-of-block code before C needs no later bit.
//
// A speculative chunk's file offset is unknown until the writer reaches it, so its
// output waits in pooled blocks, and the writer copies it into the sparse writer's
// aligned buffers. Once the writer reached the chunk and its output is final
// (`ChunkStream.placeOutput(from:)`), ISA-L decodes the rest into buffers lent to the
// sparse writer at their file offsets (`PlacedChunkOutput`), as index chunks do, and
// that copy goes away. Placed bytes never pass through the writer, so the chunk hands
// it the last 32 KiB (`.window`) after them.

import CIsal

struct IsalRangeDecoder: Sendable {
    let file: MappedFile
    /// The memory ISA-L decodes into; its block size is the output of one call.
    let blocks: OutputBlockPool
    /// The size of the file's byte ranges in bits, when the finder's searches are limited
    /// (see `BlockFinder.searchLimit`).
    var rangeBits: Int64?
    /// The buffers to place output in once the writer gave the chunk its offset; nil
    /// when the sink cannot take placed output.
    var placement: PlacementPool?

    enum Start {
        /// At a gzip member header (the first chunk).
        case memberHeader(Int64)
        /// At a block boundary with the 32 KiB before it (or less at a member's start).
        /// `mayStop`: the chunk may end right here when the boundary qualifies.
        case block(bitOffset: Int64, window: [UInt8], mayStop: Bool)
        /// Right after the end of a member's final block: its trailer follows.
        case afterFinalBlock(bitOffset: Int64)
        /// At a block boundary whose window is unknown: zeros replace it, and a
        /// `.guessedWindow` piece makes the writer correct the first bytes (`WindowRepair`).
        case guessedWindow(bitOffset: Int64)
    }

    private static let zeroWindow = [UInt8](repeating: 0, count: ByteOutput.history)

    /// The outcome of a stretch of decoding.
    enum Leg {
        /// The chunk ended.
        case end(ChunkEnd)
        /// The output turned into zero runs (or back into data, for byte mode): the other
        /// decoder goes on from this block boundary, after output that ends with `window`.
        case switchAt(bitOffset: Int64, window: [UInt8])

        /// The chunk's end, for a decode that was not allowed to switch.
        var end: ChunkEnd {
            guard case .end(let end) = self else { preconditionFailure("Bug in imgtool: a decoder switched although it was told not to") }
            return end
        }
    }

    /// Decodes from `start` until the first block boundary at or after `stopAt` whose
    /// header the block finder accepts, or to the end of the data, pushing pieces into
    /// `stream`. Member ends on the way are handled as in `SpeculativeDecoder`: the
    /// trailer is handed on as `.memberEnd` and decoding goes on with the next member.
    /// - Parameter announce: push `.chunkStart` first (false when marker mode did).
    /// - Parameter switches: hand over to byte mode (`.switchAt`) at the next acceptable
    ///   block boundary before `stopAt` once a call's output expanded more than
    ///   `zeroHeavyRatio` times and ended in 32 KiB of zeros, because byte mode keeps
    ///   zero runs as holes without producing them.
    func decode(from start: Start, stopAt: Int64, announce: Bool, switches: Bool = false,
                into stream: ChunkStream) throws -> Leg {
        var recent = RecentOutput()
        let end = try decode(from: start, stopAt: stopAt, announce: announce, switches: switches, recent: &recent,
                             into: stream)
        if recent.placedSinceWindowSent {
            // When the stream was abandoned, nothing reads the end or the window.
            _ = stream.push(.window(recent.window()))
        }
        if let end { return .end(end) }
        return .switchAt(bitOffset: recent.boundary, window: recent.window())
    }

    /// `decode`, returning nil for a switch to byte mode at `recent.boundary`.
    private func decode(from start: Start, stopAt: Int64, announce: Bool, switches: Bool, recent: inout RecentOutput,
                        into stream: ChunkStream) throws -> ChunkEnd? {
        let input = file.bytes
        let state = UnsafeMutablePointer<inflate_state>.allocate(capacity: 1)
        defer { state.deallocate() }
        isal_inflate_init(state)
        let finder = DeflateDecoder(input: input)
        let endOfData = Int64(input.count) * 8
        var boundaries = BoundarySearch(finder: finder)

        // The next input byte for ISA-L.
        var position: Int
        // Candidates are searched from here on.
        var searchFrom = stopAt
        switch start {
        case .memberHeader(let bitOffset):
            let offset = Int(bitOffset / 8)
            guard let header = try GzipMemberHeader.parse(input, at: offset) else {
                throw GzipDataError(offset: Int64(offset), reason: "no gzip member starts here")
            }
            if announce { guard stream.push(.chunkStart(bitOffset)) else { return ChunkEnd(bitOffset: bitOffset) } }
            position = offset + header.length
            searchFrom = max(stopAt, Int64(position) * 8 + 1)
        case .block(let bitOffset, let window, let mayStop):
            guard bitOffset >= 0, bitOffset < endOfData else {
                throw GzipDataError(offset: bitOffset / 8, reason: "the chunk start at bit \(bitOffset) lies outside the file")
            }
            recent.seed(window)
            if announce { guard stream.push(.chunkStart(bitOffset)) else { return ChunkEnd(bitOffset: bitOffset) } }
            if mayStop, bitOffset >= stopAt, accepts(bitOffset, finder: finder) { return ChunkEnd(bitOffset: bitOffset) }
            searchFrom = max(stopAt, bitOffset + 1)
            position = IsalChunkDecoder.prime(state, at: bitOffset, window: window, in: input)
        case .guessedWindow(let bitOffset):
            guard stream.push(.chunkStart(bitOffset)), stream.push(.guessedWindow) else { return ChunkEnd(bitOffset: bitOffset) }
            recent.seed(Self.zeroWindow)
            searchFrom = max(stopAt, bitOffset + 1)
            position = IsalChunkDecoder.prime(state, at: bitOffset, window: Self.zeroWindow, in: input)
        case .afterFinalBlock(let bitOffset):
            if announce { guard stream.push(.chunkStart(bitOffset)) else { return ChunkEnd(bitOffset: bitOffset) } }
            switch try finishMember(endingAt: bitOffset, stream: stream) {
            case .chunkEnd(let end):
                return end
            case .nextMember(let header, let deflateStart):
                let bit = Int64(deflateStart) * 8
                if BlockFinder.endsChunk(memberHeader: header, deflateStart: bit, stopAt: stopAt, finder: finder) {
                    return ChunkEnd(bitOffset: bit)
                }
                position = deflateStart
                searchFrom = max(stopAt, bit + 1)
            }
        }

        // ISA-L gets the input before this byte offset. Up to `stopAt` no boundary can end
        // the chunk, so all whole bytes before it go in at once.
        var handedEnd = max(position, Int(min(Int64(input.count), stopAt / 8)))
        // The candidate the input ends at, if any.
        var candidate: Int64?
        // Set once the output turned into zero runs: a candidate before `stopAt` where a
        // block starts is where byte mode takes over.
        var switching = false
        while true {
            if stream.isAbandoned { return ChunkEnd(bitOffset: Int64(position) * 8) }
            let ran = try run(state, from: &position, to: handedEnd, stream: stream, recent: &recent,
                              detectsZeroRuns: switches && !switching)
            if ran == .abandoned { return ChunkEnd(bitOffset: Int64(position) * 8) }
            if ran == .zeroRuns {
                // Candidates in the bits already in ISA-L's bit buffer could be passed unseen,
                // so the search starts after the input it was given. Without a candidate before
                // `stopAt`, ISA-L decodes on to the chunk's end.
                switching = true
                searchFrom = min(searchFrom, Int64(position) * 8)
                let limit = min(stopAt, endOfData, searchFrom + BlockFinder.searchLimit)
                if let next = boundaries.next(from: searchFrom, before: limit) {
                    candidate = next
                    handedEnd = max(position, Int(next / 8) + 1)
                }
                continue
            }
            let blockState = state.pointee.block_state
            if blockState == ISAL_BLOCK_FINISH {
                // The member's final block ended. ISA-L reads ahead in whole bytes, so the
                // bits left in its buffer are the padding to the next byte and the trailer.
                let end = Int64(position) * 8 - Int64(state.pointee.read_in_length)
                switch try finishMember(endingAt: end, stream: stream) {
                case .chunkEnd(let end):
                    return end
                case .nextMember(let header, let deflateStart):
                    let bit = Int64(deflateStart) * 8
                    if BlockFinder.endsChunk(memberHeader: header, deflateStart: bit, stopAt: stopAt, finder: finder) {
                        return ChunkEnd(bitOffset: bit)
                    }
                    isal_inflate_reset(state)
                    recent.reset()
                    position = deflateStart
                    searchFrom = max(stopAt, bit + 1)
                    handedEnd = max(position, Int(min(Int64(input.count), stopAt / 8)))
                    candidate = nil
                    switching = false
                    continue
                }
            }
            // The input is used up.
            if let candidate, blockState == ISAL_BLOCK_HDR || blockState == ISAL_BLOCK_NEW_HDR {
                let header = Int64(position - Int(state.pointee.tmp_in_size)) * 8 - Int64(state.pointee.read_in_length)
                if header == candidate {
                    guard switching, candidate < stopAt else { return ChunkEnd(bitOffset: candidate) }
                    recent.boundary = candidate
                    return nil
                }
            }
            if handedEnd >= input.count {
                throw GzipDataError(offset: Int64(input.count), kind: .truncated, reason: "inside deflate data")
            }
            // Candidates before the bit ISA-L has decoded to can no longer be stopped at.
            let decodedTo = Int64(position - Int(state.pointee.tmp_in_size)) * 8 - Int64(state.pointee.read_in_length)
            let from = max(searchFrom, candidate.map { $0 + 1 } ?? searchFrom, decodedTo)
            // The next range's worker searches only the start of its range for a header,
            // so this search gives up there too. Otherwise a file of blocks larger than a
            // range (igzip -0 writes such) would be searched bit by bit to its end. The
            // chunk then takes in that range whole and searches the next one. A search
            // from before `stopAt` gives up at the same place. Such a search follows a
            // switch to byte mode that found no block start near the zero runs, and it
            // once went on to the end of the file: 37% of the CPU time on a gzip -6
            // member followed by an igzip -0 member with zero runs.
            var limit = endOfData
            var nextRange: Int64?
            if let rangeBits, stopAt < endOfData {
                let rangeStart = stopAt + max(0, from - stopAt) / rangeBits * rangeBits
                limit = min(endOfData, rangeStart + BlockFinder.searchLimit)
                nextRange = rangeStart + rangeBits
            }
            if from < limit, let next = boundaries.next(from: from, before: limit) {
                candidate = next
                handedEnd = max(handedEnd, Int(next / 8) + 1)
            } else if let nextRange, nextRange < endOfData {
                candidate = nil
                searchFrom = nextRange
                handedEnd = max(handedEnd, Int(nextRange / 8))
            } else {
                candidate = nil
                handedEnd = input.count
            }
        }
    }

    private enum RunResult {
        /// The input is used up, ISA-L can make no progress, or the member ended.
        case done
        case abandoned
        case zeroRuns
    }

    /// Calls `isal_inflate` with the input from `position` to `end` until it has used
    /// it up (or can make no progress) or the member ended, pushing the output. With
    /// `detectsZeroRuns`, returns `.zeroRuns` early once a full call's output was more
    /// than `zeroHeavyRatio` times its input and ended in zeros (`endsInZeros`).
    private func run(_ state: UnsafeMutablePointer<inflate_state>, from position: inout Int, to end: Int,
                     stream: ChunkStream, recent: inout RecentOutput, detectsZeroRuns: Bool) throws -> RunResult {
        let base = file.bytes.baseAddress!.assumingMemoryBound(to: UInt8.self)
        while true {
            let inputCount = min(max(0, end - position), Int(Int32.max))
            state.pointee.next_in = UnsafeMutablePointer(mutating: base + position)
            state.pointee.avail_in = UInt32(inputCount)
            var block: OutputBlock?
            var placed: PlacedChunkOutput?
            let space: UnsafeMutableRawBufferPointer
            if let placement, let offset = stream.placementOffset {
                let output = PlacedChunkOutput(pool: placement, offset: offset)
                space = output.space(limit: placement.pieceSize)
                placed = output
            } else {
                if recent.fillingBlock == nil || recent.filled == blocks.blockSize {
                    recent.fillingBlock = blocks.take()
                    recent.filled = 0
                }
                let pooled = recent.fillingBlock!
                space = UnsafeMutableRawBufferPointer(rebasing: pooled.bytes[recent.filled...])
                block = pooled
            }
            state.pointee.next_out = space.baseAddress!.assumingMemoryBound(to: UInt8.self)
            state.pointee.avail_out = UInt32(space.count)
            let result = isal_inflate(state)
            let full = state.pointee.avail_out == 0
            let produced = space.count - Int(state.pointee.avail_out)
            let consumed = inputCount - Int(state.pointee.avail_in)
            // Checked before the output goes to the writer, which may reuse placed buffers.
            let zeroRuns = detectsZeroRuns && full && Int64(produced) > ParallelGzipInflater.zeroHeavyRatio * Int64(max(1, consumed))
                && Self.endsInZeros(UnsafeRawBufferPointer(rebasing: space[..<produced]))
            position += consumed
            stream.reportInput(Int64(position))
            if result < 0 {
                _ = placed?.commit(0, into: stream)
                throw GzipDataError(offset: Int64(position), reason: IsalInflater.describe(result))
            }
            if let placed {
                // The buffer goes to the writer thread, so the window's bytes are copied first.
                recent.append(copying: UnsafeRawBufferPointer(rebasing: space[..<produced]))
                guard placed.commit(produced, into: stream) else { return .abandoned }
            } else if let block {
                let range = recent.filled..<recent.filled + produced
                recent.filled += produced
                guard ZeroBlocks.emit(block, range, into: stream) else { return .abandoned }
                recent.append(block, range)
            }
            if state.pointee.block_state == ISAL_BLOCK_FINISH { return .done }
            if zeroRuns { return .zeroRuns }
            // `avail_in` is 32 bits wide: more than 2 GiB of input takes several calls.
            if !full && (position >= end || consumed == 0 && produced == 0) { return .done }
        }
    }

    /// Returns whether the last 32 KiB of `output` (all of it when shorter) are zeros.
    /// Output that expands well but ends in another byte is a run of that byte, which
    /// byte mode would write out byte by byte, so it stays with ISA-L.
    static func endsInZeros(_ output: UnsafeRawBufferPointer) -> Bool {
        let count = min(output.count, ByteOutput.history)
        guard count > 0 else { return false }
        return isal_zero_detect(UnsafeMutableRawPointer(mutating: output.baseAddress! + (output.count - count)), count) == 0
    }

    private enum MemberEnd {
        case chunkEnd(ChunkEnd)
        /// The byte offsets where the next member's header and its deflate data start.
        case nextMember(header: Int, deflateStart: Int)
    }

    /// Reads the trailer after a final block that ends at bit `end`, pushes
    /// `.memberEnd`, and finds the next member, as `SpeculativeDecoder` does.
    private func finishMember(endingAt end: Int64, stream: ChunkStream) throws -> MemberEnd {
        let input = file.bytes
        // The trailer starts at the next byte boundary after the final block.
        let trailer = Int((end + 7) / 8)
        guard trailer + GzipMemberHeader.trailerSize <= input.count else {
            throw GzipDataError(offset: Int64(input.count), kind: .truncated, reason: "inside the 8-byte gzip trailer at offset \(trailer)")
        }
        let crc = readLittleEndian32(input, at: trailer)
        let size = readLittleEndian32(input, at: trailer + 4)
        guard stream.push(.memberEnd(crc: crc, size: size, trailerOffset: Int64(trailer))) else {
            return .chunkEnd(ChunkEnd(bitOffset: end))
        }
        let next = trailer + GzipMemberHeader.trailerSize
        guard let header = try GzipMemberHeader.parse(input, at: next) else {
            let rest = UnsafeRawBufferPointer(rebasing: input[next...])
            return .chunkEnd(ChunkEnd(bitOffset: Int64(input.count) * 8,
                                      trailingGarbage: stream.trailingGarbage(in: rest, at: next)))
        }
        return .nextMember(header: next, deflateStart: next + header.length)
    }

    /// Returns whether a block the finder accepts starts at `bitOffset` (see
    /// `BlockFinder.acceptsBoundary`).
    private func accepts(_ bitOffset: Int64, finder: DeflateDecoder) -> Bool {
        finder.seek(toBit: bitOffset)
        return BlockFinder.acceptsBoundary(finder)
    }
}

/// The last 32 KiB of a range decoder's output, kept as references to its blocks (or
/// copies of placed output), and the block boundary where byte mode takes over.
struct RecentOutput {
    private enum Part {
        case block(OutputBlock, Range<Int>)
        case bytes([UInt8])

        var count: Int {
            switch self {
            case .block(_, let range): range.count
            case .bytes(let bytes): bytes.count
            }
        }
    }

    /// The window the decoder started with, until its own output is 32 KiB long.
    private var start: [UInt8] = []
    private var parts: [Part] = []
    private var count = 0
    var boundary: Int64 = 0
    /// Output went to the file directly since the writer last got the window (`.window`).
    var placedSinceWindowSent = false
    /// The pooled block ISA-L decodes into, and how many of its bytes are used. The calls
    /// after one that stopped early (at a member's end, or at the end of its input) fill
    /// the rest, so a file of small members does not take a block per member, which the
    /// stream budget counts whole.
    var fillingBlock: OutputBlock?
    var filled = 0

    mutating func seed(_ window: [UInt8]) {
        start = window
    }

    mutating func append(_ block: OutputBlock, _ range: Range<Int>) {
        guard !range.isEmpty else { return }
        append(.block(block, range))
    }

    /// Appends placed output, of which it keeps a copy of the last 32 KiB.
    mutating func append(copying bytes: UnsafeRawBufferPointer) {
        placedSinceWindowSent = true
        guard !bytes.isEmpty else { return }
        append(.bytes(Array(bytes.suffix(ByteOutput.history))))
    }

    private mutating func append(_ part: Part) {
        parts.append(part)
        count += part.count
        while let first = parts.first, count - first.count >= ByteOutput.history {
            count -= first.count
            parts.removeFirst()
        }
        if count >= ByteOutput.history { start = [] }
    }

    /// Forgets the output, at the start of a member.
    mutating func reset() {
        start = []
        parts = []
        count = 0
    }

    /// Returns the last 32 KiB (fewer at the start of a member).
    func window() -> [UInt8] {
        var result = start
        for part in parts {
            switch part {
            case .block(let block, let range): result += block.bytes[range]
            case .bytes(let bytes): result += bytes
            }
        }
        return Array(result.suffix(ByteOutput.history))
    }
}

/// The block starts that the finder accepts, searched for without passing the same bits
/// twice. Every member end of a chunk starts a new search from the member's start. In a
/// file of 64 KiB members, searching the same bits again for each member took 68% of the
/// CPU time, and two threads took five times as long as one.
struct BoundarySearch {
    let finder: DeflateDecoder
    /// Bits that earlier searches passed without finding an accepted block start.
    private(set) var searched: Range<Int64> = 0..<0
    /// The bits all searches examined, for tests.
    private(set) var bitsExamined: Int64 = 0

    init(finder: DeflateDecoder) {
        self.finder = finder
    }

    /// Returns the first bit offset in `start..<limit` where the finder accepts a block
    /// start (`BlockFinder.find`), or nil.
    mutating func next(from start: Int64, before limit: Int64) -> Int64? {
        let from = searched.contains(start) ? searched.upperBound : start
        guard from < limit else { return nil }
        let found = BlockFinder.find(in: finder, from: from, before: limit)
        let end = found ?? limit
        bitsExamined += end - from
        searched = from == searched.upperBound ? searched.lowerBound..<end : from..<end
        return found
    }
}

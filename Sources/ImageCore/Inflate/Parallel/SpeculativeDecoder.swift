// SpeculativeDecoder: decodes one chunk of a single gzip stream without an index.
//
// The file is cut into byte ranges. The worker for range i (i > 0) searches from the
// range's first bit for a deflate block header (`BlockFinder`) and decodes from there
// in marker mode, with the unknown 32 KiB window as markers. A header that turns out to
// be false (a decode error before any output was handed on) moves the search on by one
// bit. Then, with `usesIsal`:
//   - once two blocks decoded cleanly, and unless they expand like zero runs, ISA-L
//     decodes the chunk again from the header on, with zeros as its window
//     (`IsalRangeDecoder`, `.guessedWindow`). The writer then corrects the bytes that
//     came from the wrong window (`WindowRepair`);
//   - when the last 32 KiB of marker output contain no marker first, the window is
//     known. ISA-L then decodes the rest of the chunk from the end of the current
//     block, or byte mode does (with zero runs as holes) when the output so far is
//     mostly zero runs;
//   - when, at a block's end, the last 32 KiB are all one marker, the chunk started
//     inside a run of one window byte. Byte mode goes on with zeros as the window
//     after a `.guessedZeroRun` piece. The writer corrects the output when the byte
//     is not zero. This path applies without `usesIsal` too.
// Without `usesIsal`, byte mode decodes everything after the marker stretch. Every chunk
// stops at the first block boundary at or after the next range's first bit whose header
// the finder would accept, so a correct guess by worker i + 1 starts exactly where
// worker i stops. The writer checks that, replaces the markers with the bytes they
// stand for, and decodes a range again from the known window when the guess was wrong.

import CIsal

/// A block boundary where a chunk may stop: the next block is one the finder searches
/// for (not final; dynamic, or stored with zero padding).
enum BlockFinder {
    /// The bits from a range's start that speculative decoding searches for a block
    /// header (256 KiB of input). zlib's blocks hold at most 16 Ki to 64 Ki symbols, tens
    /// of KiB compressed, and the ranges of the test images found a header within
    /// 43 KiB. A range without a header that close to its start lies inside one huge
    /// block, and searching on bit by bit would cost more than decoding it.
    static let searchLimit: Int64 = 2 << 20

    /// The first bit offset in `from..<limit` where a plausible non-final dynamic or
    /// stored block header starts; the header, its code lengths and its tables must
    /// all be valid.
    static func find(in decoder: DeflateDecoder, from start: Int64, before limit: Int64) -> Int64? {
        let input = decoder.input
        let count = decoder.inputCount
        var offset = max(0, start)
        let end = min(limit, Int64(count - 8) * 8)
        while offset < end {
            let byte = Int(offset >> 3)
            let word = UInt64(littleEndian: UnsafeRawPointer(input + byte).loadUnaligned(as: UInt64.self)) >> UInt64(offset & 7)
            if quickCheck(word, bitOffset: offset) {
                decoder.seek(toBit: offset)
                if (try? decoder.readBlockHeader()) != nil, !decoder.isFinalBlock { return offset }
            }
            offset += 1
        }
        return nil
    }

    /// Rejects most bit offsets from the first 57 bits alone: BFINAL 0, BTYPE 2 with
    /// HLIT <= 29, HDIST <= 29 and a code-length code that is neither over-subscribed
    /// nor incomplete, or BTYPE 0 with zero padding and a length that matches its
    /// complement.
    @inline(__always)
    static func quickCheck(_ word: UInt64, bitOffset: Int64) -> Bool {
        switch word & 7 {
        case 4:
            guard (word >> 3) & 31 <= 29, (word >> 8) & 31 <= 29 else { return false }
            // `word` holds at least 57 valid bits: the lengths of the first 13 code-length
            // codes. With more codes only over-subscription can be ruled out here.
            let declared = Int((word >> 13) & 15) + 4
            let codeLengthCount = min(declared, 13)
            var left = 0
            var counts = (0, 0, 0, 0, 0, 0, 0, 0)
            withUnsafeMutableBytes(of: &counts) { raw in
                let slots = raw.bindMemory(to: Int.self)
                for index in 0..<codeLengthCount {
                    slots[Int((word >> UInt64(17 + 3 * index)) & 7)] += 1
                }
                left = 1
                for length in 1...7 {
                    left = left * 2 - slots[length]
                    if left < 0 { return }
                }
            }
            return declared > 13 ? left >= 0 : left == 0
        case 0:
            // Zero padding, then LEN and its complement NLEN (at most 42 bits in all).
            let padding = Int((8 - (bitOffset + 3) % 8) % 8)
            let lengths = word >> UInt64(3 + padding)
            return (word >> 3) & ((1 << UInt64(padding)) - 1) == 0 && (lengths ^ (lengths >> 16)) & 0xffff == 0xffff
        default:
            return false
        }
    }

    /// Returns whether decoding from the bit offsets `first` and `second` of `input` gives
    /// the same blocks: they are equal, or both start stored-block headers whose padding
    /// ends at the same byte, so both read the same LEN, NLEN and data. A search finds the
    /// earliest such offset: up to 2 bits before the real header when the top bits of the
    /// byte before it are zero, which happens every second time or so in stored data.
    static func startsSameBlock(_ first: Int64, _ second: Int64, in input: UnsafeRawBufferPointer) -> Bool {
        if first == second { return true }
        guard let firstWord = loadWord(at: first, in: input), let secondWord = loadWord(at: second, in: input),
              firstWord & 7 == 0, secondWord & 7 == 0,
              quickCheck(firstWord, bitOffset: first), quickCheck(secondWord, bitOffset: second) else { return false }
        return (first + 3 + 7) / 8 == (second + 3 + 7) / 8
    }

    /// Loads the 64 bits of `input` from `bitOffset` on; nil when fewer than 8 bytes follow.
    private static func loadWord(at bitOffset: Int64, in input: UnsafeRawBufferPointer) -> UInt64? {
        guard bitOffset >= 0, Int(bitOffset >> 3) + 8 <= input.count else { return nil }
        return UInt64(littleEndian: input.loadUnaligned(fromByteOffset: Int(bitOffset >> 3), as: UInt64.self))
            >> UInt64(bitOffset & 7)
    }

    /// Returns whether a chunk that reached the member whose header starts at byte
    /// `memberHeader` and whose deflate data starts at bit `deflateStart` stops there
    /// (at `deflateStart`). A member whose header lies at or after `stopAt` always
    /// ends the chunk, because the next range's worker may start at it
    /// (`SpeculativeDecoder.memberStart`). Any other member must begin with a block
    /// that the finder accepts, at or after `stopAt`.
    static func endsChunk(memberHeader: Int, deflateStart: Int64, stopAt: Int64, finder: DeflateDecoder) -> Bool {
        if Int64(memberHeader) * 8 >= stopAt { return true }
        guard deflateStart >= stopAt else { return false }
        finder.seek(toBit: deflateStart)
        return acceptsBoundary(finder)
    }

    /// True when a block that may start a chunk begins at the decoder's position.
    static func acceptsBoundary(_ decoder: DeflateDecoder) -> Bool {
        let offset = decoder.bitPosition
        guard offset >= 0, Int(offset >> 3) + 8 <= decoder.inputCount else { return false }
        let word = UInt64(littleEndian: UnsafeRawPointer(decoder.input + Int(offset >> 3)).loadUnaligned(as: UInt64.self))
            >> UInt64(offset & 7)
        return quickCheck(word, bitOffset: offset)
    }
}

/// Decodes chunks of one gzip file with the Swift decoder; one instance per call.
struct SpeculativeDecoder: Sendable {
    let file: MappedFile
    /// Decode the part of a chunk whose window is known with ISA-L, except for index
    /// chunks (`anyBoundary`) and zero runs; see `IsalRangeDecoder`.
    var usesIsal = false
    /// The memory ISA-L decodes into.
    var blocks = OutputBlockPool(blockSize: OutputBlockPool.defaultBlockSize, maximumFree: 0)

    /// The size of the file's byte ranges in bits; see `BlockFinder.searchLimit`.
    var rangeBits: Int64?
    /// The buffers ISA-L decodes into once the writer gave the chunk its file offset
    /// (see `IsalRangeDecoder.placement`).
    var placement: PlacementPool?

    /// Bytes per output piece of the Swift decoder: large enough that per-piece costs
    /// vanish, small enough that pieces flow to the writer steadily.
    static let pieceSize = 1 << 20

    private var isal: IsalRangeDecoder {
        IsalRangeDecoder(file: file, blocks: blocks, rangeBits: rangeBits, placement: placement)
    }

    enum Start {
        /// At a gzip member header (chunk 0).
        case memberHeader(Int64)
        /// At a block boundary with the window known (a range decoded again).
        case known(bitOffset: Int64, window: [UInt8])
        /// Somewhere at or after this bit offset, found by searching.
        case search(Int64)
    }

    /// Decodes one chunk into `stream`; the first piece is `.chunkStart` with the bit
    /// offset decoding started at (omitted when no block boundary was found, in which
    /// case the end says `foundStart == false`).
    /// - Parameter anyBoundary: stop at the first block boundary at or after `stopAt`
    ///   whatever block follows (index chunks, whose next point is such a boundary),
    ///   instead of the first one the block finder would accept.
    func decode(from start: Start, stopAt: Int64, anyBoundary: Bool = false, into stream: ChunkStream) throws -> ChunkEnd {
        let decoder = DeflateDecoder(input: file.bytes)
        switch start {
        case .memberHeader(let bitOffset):
            let position = Int(bitOffset / 8)
            guard let header = try GzipMemberHeader.parse(file.bytes, at: position) else {
                throw GzipDataError(offset: Int64(position), reason: "no gzip member starts here")
            }
            if usesIsal && !anyBoundary {
                return try decodeSwitching(.isal(.memberHeader(bitOffset), announce: true), stopAt: stopAt, stream: stream)
            }
            guard stream.push(.chunkStart(bitOffset)) else { return ChunkEnd(bitOffset: bitOffset) }
            decoder.seek(toBit: Int64(position + header.length) * 8)
            return try decodeBytes(decoder, window: [], stopAt: stopAt, anyBoundary: anyBoundary, stream: stream).end
        case .known(let bitOffset, let window):
            if usesIsal && !anyBoundary {
                return try decodeSwitching(.isal(.block(bitOffset: bitOffset, window: window, mayStop: false), announce: true),
                                           stopAt: stopAt, stream: stream)
            }
            guard stream.push(.chunkStart(bitOffset)) else { return ChunkEnd(bitOffset: bitOffset) }
            decoder.seek(toBit: bitOffset)
            return try decodeBytes(decoder, window: window, stopAt: stopAt, anyBoundary: anyBoundary, stream: stream).end
        case .search(let from):
            var searchFrom = from
            var markerValues = 0
            let searchEnd = rangeBits == nil ? stopAt : min(stopAt, from + BlockFinder.searchLimit)
            // A gzip member needs no window, so a range that reaches one before any block
            // the finder accepts starts there.
            var member = usesIsal ? memberStart(from: searchFrom, before: searchEnd) : nil
            while true {
                let found = BlockFinder.find(in: decoder, from: searchFrom, before: searchEnd)
                if let member, found.map({ member.deflateStart <= $0 }) ?? true {
                    Log.debug("speculative", "range at bit \(from): gzip member at byte \(member.header)")
                    guard stream.push(.chunkStart(member.deflateStart)) else { return ChunkEnd(bitOffset: member.deflateStart) }
                    return try decodeSwitching(.isal(.memberHeader(Int64(member.header) * 8), announce: false),
                                               stopAt: stopAt, stream: stream)
                }
                guard let candidate = found else { break }
                if stream.isAbandoned { return ChunkEnd(bitOffset: candidate) }
                decoder.seek(toBit: candidate)
                let outcome: MarkerOutcome
                do {
                    if usesIsal, try probeIsData(decoder, startingAt: candidate, stopAt: stopAt) {
                        Log.debug("speculative", "range at bit \(from): start \(candidate) after \(candidate - from) bits, data: ISA-L goes on with a guessed window")
                        return try decodeSwitching(.isal(.guessedWindow(bitOffset: candidate), announce: true), stopAt: stopAt,
                                                   stream: stream)
                    }
                    decoder.seek(toBit: candidate)
                    outcome = try decodeMarkers(decoder, startingAt: candidate, stopAt: stopAt, stream: stream, values: &markerValues)
                } catch is SpeculationFailed {
                    searchFrom = candidate + 1
                    if let start = member, start.deflateStart < searchFrom {
                        member = memberStart(from: searchFrom, before: searchEnd)
                    }
                    continue
                }
                Log.debug("speculative", "range at bit \(from): start \(candidate) after \(candidate - from) bits, \(markerValues) marker-mode values")
                // Output that expands this much is mostly zero runs, which byte mode turns
                // into holes without producing them. ISA-L decodes everything else faster.
                let compressed = max(1, (decoder.bitPosition - candidate) / 8)
                let continuesWithIsal = usesIsal && Int64(markerValues) / compressed <= ParallelGzipInflater.zeroHeavyRatio
                switch outcome {
                case .finished(let end):
                    return end
                case .windowCopies(let markers):
                    Log.debug("speculative", "range at bit \(from): 32 KiB that only copy the window at bit \(decoder.bitPosition): byte mode goes on with zeros as the window")
                    guard stream.push(.guessedZeroRun(bitOffset: decoder.bitPosition, markers: markers)) else {
                        return ChunkEnd(bitOffset: decoder.bitPosition)
                    }
                    let zeros = [UInt8](repeating: 0, count: ByteOutput.history)
                    guard usesIsal else {
                        return try decodeBytes(decoder, window: zeros, stopAt: stopAt, stream: stream, continuing: true).end
                    }
                    // Output after the guess may be wrong until the writer's repair ends,
                    // and placed output is never corrected, so none is placed.
                    return try decodeSwitching(.bytes(decoder, window: zeros, insideBlock: false), stopAt: stopAt,
                                               stream: stream, places: false)
                case .data:
                    return try decodeSwitching(.isal(.guessedWindow(bitOffset: candidate), announce: true), stopAt: stopAt,
                                               stream: stream)
                case .clean(let window):
                    if continuesWithIsal { return try handOver(decoder, window: window, stopAt: stopAt, stream: stream) }
                    if usesIsal {
                        return try decodeSwitching(.bytes(decoder, window: window, insideBlock: false), stopAt: stopAt,
                                                   stream: stream)
                    }
                    return try decodeBytes(decoder, window: window, stopAt: stopAt, stream: stream, continuing: true).end
                case .cleanInsideBlock(let window):
                    if continuesWithIsal {
                        guard let after = try finishBlock(decoder, window: window, stream: stream) else {
                            return ChunkEnd(bitOffset: decoder.bitPosition)
                        }
                        return try handOver(decoder, window: after, stopAt: stopAt, stream: stream)
                    }
                    if usesIsal {
                        return try decodeSwitching(.bytes(decoder, window: window, insideBlock: true), stopAt: stopAt,
                                                   stream: stream)
                    }
                    return try decodeBytes(decoder, window: window, stopAt: stopAt, stream: stream, continuing: true,
                                           insideBlock: true).end
                }
            }
            var end = ChunkEnd(bitOffset: stopAt)
            end.foundStart = false
            return end
        }
    }

    private enum MarkerOutcome {
        /// The chunk ended while still in marker mode.
        case finished(ChunkEnd)
        /// 32 KiB of marker-free output were reached at a block boundary: the window.
        case clean([UInt8])
        /// The same inside a block, which byte mode must finish.
        case cleanInsideBlock([UInt8])
        /// The first blocks decoded cleanly, expand less than zero runs, and nothing was
        /// handed on yet: ISA-L decodes the chunk from its start with a guessed window.
        case data
        /// At a block boundary, each of the last 32 KiB of output (`markers`) copies a
        /// byte of the unknown window. Such a run of one byte or of a short pattern never
        /// clears, so marker mode would go on to the chunk's end. On an 8 GiB image of
        /// zeros, 2 threads took 11 s that way and 1 thread 0.5 s. gzip -1 copies a zero
        /// run from 258 bytes back or more, so its markers differ.
        case windowCopies([UInt16])
    }

    private struct SpeculationFailed: Error {}

    /// The maximum output `nextBlockDecodes` checks. The Swift decoder is slower than
    /// ISA-L, which decodes the block again anyway, so the check stays short.
    static let probeOutput = 64 << 10

    /// Blocks marker mode decodes from a candidate before ISA-L may take over with a
    /// guessed window.
    static let blocksBeforeGuessing = 2

    /// Decodes in marker mode until the output is clean, the chunk ends, or an error
    /// shows the start was false (thrown). Output is handed on in pieces of markers, the
    /// first one preceded by `.chunkStart`; an error after the first piece is real.
    private func decodeMarkers(_ decoder: DeflateDecoder, startingAt candidate: Int64, stopAt: Int64,
                               stream: ChunkStream, values: inout Int) throws -> MarkerOutcome {
        let history = ByteOutput.history
        let (output, capacity) = Self.markerBuffer()
        defer { output.deallocate() }
        var position = history
        var flushed = history
        var started = false
        var first = true
        var blocks = 0

        func flush() throws {
            if !started {
                guard stream.push(.chunkStart(candidate)) else { throw AbandonedError() }
                started = true
            }
            if position > flushed {
                let piece = [UInt16](UnsafeBufferPointer(start: output + flushed, count: position - flushed))
                guard stream.push(.markers(piece)) else { throw AbandonedError() }
                values += piece.count
            }
            if position > history {
                output.update(from: output + (position - history), count: history)
                position = history
            }
            flushed = position
        }

        do {
            while true {
                if !first, decoder.bitPosition >= stopAt, BlockFinder.acceptsBoundary(decoder) {
                    try flush()
                    return .finished(ChunkEnd(bitOffset: decoder.bitPosition))
                }
                first = false
                do {
                    try decoder.readBlockHeader()
                    while case .outputFull = try decoder.decodeMarkers(into: output, position: &position, capacity: capacity) {
                        // Blocks of zeros run to megabytes, so cleanness is also checked
                        // inside a block; byte mode then finishes the block.
                        if let window = cleanWindow(output, position: position) {
                            try flush()
                            return .cleanInsideBlock(window)
                        }
                        try flush()
                    }
                } catch let error as DeflateError {
                    // Before any output was handed on, an error means a false start.
                    if !started { throw SpeculationFailed() }
                    throw Self.dataError(error, decoder: decoder, inputCount: file.count)
                }
                if decoder.isFinalBlock {
                    // The member ends: the next member needs no history.
                    try flush()
                    return .clean([])
                }
                if values + position - flushed >= history, let markers = Self.windowCopies(output, position: position) {
                    try flush()
                    return .windowCopies(markers)
                }
                if let window = cleanWindow(output, position: position) {
                    // A false start's first block can end where a header parses but the
                    // data after it does not. ISA-L would then fail right after the
                    // chunk started, and the writer would decode the whole range again.
                    if !started, !nextBlockDecodes(at: decoder.bitPosition) { throw SpeculationFailed() }
                    try flush()
                    return .clean(window)
                }
                blocks += 1
                if usesIsal, !started, blocks >= Self.blocksBeforeGuessing {
                    // Garbage bits decode into symbols until they happen to hit an
                    // end-of-block code, but rarely into a valid header after it. Once
                    // a few blocks decoded cleanly, unless they expand like zero runs,
                    // ISA-L with a guessed window beats marker mode; the writer corrects
                    // the guess.
                    let compressed = max(1, (decoder.bitPosition - candidate) / 8)
                    if Int64(position - history) / compressed <= ParallelGzipInflater.zeroHeavyRatio { return .data }
                }
            }
        } catch is AbandonedError {
            return .finished(ChunkEnd(bitOffset: decoder.bitPosition))
        }
    }

    private struct AbandonedError: Error {}

    /// Allocates marker-mode output: the unknown 32 KiB window as markers 256 + i, then
    /// room for one piece. The caller deallocates it.
    private static func markerBuffer() -> (UnsafeMutablePointer<UInt16>, capacity: Int) {
        let history = ByteOutput.history
        let capacity = history + Self.pieceSize
        let output = UnsafeMutablePointer<UInt16>.allocate(capacity: capacity)
        for index in 0..<history { output[index] = UInt16(256 + index) }
        return (output, capacity)
    }

    /// Returns the first gzip member whose header starts at a byte in `from..<limit`
    /// (bits) and whose deflate data ISA-L decodes without an error for its first
    /// 64 KiB of output (or to its end). The result is the header's byte offset and
    /// the bit offset of its deflate data. The bytes 1f 8b 08 also occur inside
    /// compressed data, and a false header rarely decodes that far without a reference
    /// before its start.
    func memberStart(from: Int64, before limit: Int64) -> (header: Int, deflateStart: Int64)? {
        let input = file.bytes
        var offset = Int((from + 7) / 8)
        // Headers start at bytes before bit `limit`, which may be Int64.max.
        let end = Int(min(Int64(input.count), (limit - 1) / 8 + 1))
        while offset < end {
            guard let magic = UnsafeRawBufferPointer(rebasing: input[offset..<end]).firstIndex(of: 0x1f) else { return nil }
            offset += magic
            defer { offset += 1 }
            guard offset + 2 < input.count, input[offset + 1] == 0x8b, input[offset + 2] == 8,
                  let header = try? GzipMemberHeader.parse(input, at: offset),
                  Self.decodesAsMember(input, deflateStart: offset + header.length) else { continue }
            return (offset, Int64(offset + header.length) * 8)
        }
        return nil
    }

    /// Returns whether ISA-L decodes the deflate data at byte `start` of `input`, with
    /// no history, for 64 KiB of output or to the end of its final block.
    private static func decodesAsMember(_ input: UnsafeRawBufferPointer, deflateStart start: Int) -> Bool {
        let state = UnsafeMutablePointer<inflate_state>.allocate(capacity: 1)
        defer { state.deallocate() }
        isal_inflate_init(state)
        let output = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 64)
        defer { output.deallocate() }
        state.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress!.assumingMemoryBound(to: UInt8.self) + start)
        state.pointee.avail_in = UInt32(min(input.count - start, 1 << 24))
        state.pointee.next_out = output.baseAddress!.assumingMemoryBound(to: UInt8.self)
        state.pointee.avail_out = UInt32(output.count)
        let result = isal_inflate(state)
        return result >= 0 && (state.pointee.avail_out == 0 || state.pointee.block_state == ISAL_BLOCK_FINISH)
    }

    /// Decodes the first `blocksBeforeGuessing` blocks from `candidate` in marker mode
    /// without handing anything on. Returns true when they expand like data (at most
    /// `zeroHeavyRatio` times), so ISA-L can decode the chunk with a guessed window.
    /// `decodeMarkers` can decide that only while it has handed on nothing. Blocks of
    /// repetitive text fill its first 1 MiB piece before two blocks end, so chunks whose
    /// markers never clear stayed in marker mode to their end. On a 600 MB text file from
    /// gzip -9, two threads then took 2.8 times as long as one (2-core test machine).
    /// Returns false when marker mode should decide (zero runs, a clean window, a member
    /// end, or `stopAt` first), and throws `SpeculationFailed` for a false start.
    private func probeIsData(_ decoder: DeflateDecoder, startingAt candidate: Int64, stopAt: Int64) throws -> Bool {
        let history = ByteOutput.history
        let (output, capacity) = Self.markerBuffer()
        defer { output.deallocate() }
        var position = history
        var values = 0

        func expandsLikeData() -> Bool {
            let compressed = max(1, (decoder.bitPosition - candidate) / 8)
            return Int64(values + position - history) / compressed <= ParallelGzipInflater.zeroHeavyRatio
        }

        do throws(DeflateError) {
            for block in 0..<Self.blocksBeforeGuessing {
                if block > 0, decoder.bitPosition >= stopAt { return false }
                try decoder.readBlockHeader()
                while case .outputFull = try decoder.decodeMarkers(into: output, position: &position, capacity: capacity) {
                    if cleanWindow(output, position: position) != nil || !expandsLikeData() { return false }
                    // Only the last 32 KiB matter for the next values.
                    values += position - history
                    output.update(from: output + (position - history), count: history)
                    position = history
                }
                if decoder.isFinalBlock || cleanWindow(output, position: position) != nil { return false }
            }
        } catch {
            throw SpeculationFailed()
        }
        return expandsLikeData()
    }

    /// Returns whether the block at `bitOffset` decodes in marker mode without an error,
    /// to its end or for `probeOutput` values.
    private func nextBlockDecodes(at bitOffset: Int64) -> Bool {
        let probe = DeflateDecoder(input: file.bytes)
        probe.seek(toBit: bitOffset)
        let (output, capacity) = Self.markerBuffer()
        defer { output.deallocate() }
        var position = ByteOutput.history
        do throws(DeflateError) {
            try probe.readBlockHeader()
            _ = try probe.decodeMarkers(into: output, position: &position,
                                        capacity: min(capacity, position + Self.probeOutput))
        } catch {
            return false
        }
        return true
    }

    /// Returns the last 32 KiB of marker-mode output when every value is a marker, or nil
    /// when one is a literal byte. The caller makes sure that they are output: before
    /// 32 KiB of output, the window's own markers fill the rest of the buffer.
    private static func windowCopies(_ output: UnsafeMutablePointer<UInt16>, position: Int) -> [UInt16]? {
        let last = UnsafeBufferPointer(start: output + position - ByteOutput.history, count: ByteOutput.history)
        var smallest = UInt16.max
        for value in last { smallest = min(smallest, value) }
        return smallest >= 256 ? Array(last) : nil
    }

    /// The last 32 KiB of marker-mode output as bytes when none of it is a marker.
    private func cleanWindow(_ output: UnsafeMutablePointer<UInt16>, position: Int) -> [UInt8]? {
        let history = ByteOutput.history
        guard position >= 2 * history else { return nil }
        let last = UnsafeBufferPointer(start: output + position - history, count: history)
        var combined: UInt16 = 0
        for value in last { combined |= value }
        guard combined < 256 else { return nil }
        return last.map { UInt8(truncatingIfNeeded: $0) }
    }

    static func dataError(_ error: DeflateError, decoder: DeflateDecoder, inputCount: Int) -> GzipDataError {
        let offset = min(Int64(inputCount), decoder.bitPosition / 8)
        switch error {
        case .truncated:
            return GzipDataError(offset: offset, kind: .truncated, reason: "inside deflate data")
        case .invalid(let reason):
            return GzipDataError(offset: offset, reason: "invalid deflate data (\(reason))")
        }
    }

    /// Continues with ISA-L at the decoder's position, a block boundary after output that
    /// ends with `window`.
    private func handOver(_ decoder: DeflateDecoder, window: [UInt8], stopAt: Int64, stream: ChunkStream) throws -> ChunkEnd {
        let start: IsalRangeDecoder.Start = decoder.isFinalBlock
            ? .afterFinalBlock(bitOffset: decoder.bitPosition)
            : .block(bitOffset: decoder.bitPosition, window: window, mayStop: true)
        return try decodeSwitching(.isal(start, announce: false), stopAt: stopAt, stream: stream)
    }

    /// The start of the rest of a chunk, and the decoder for it.
    private enum Onward {
        case isal(IsalRangeDecoder.Start, announce: Bool)
        /// Byte mode from the decoder's position (`decodeBytes` with `continuing`).
        case bytes(DeflateDecoder, window: [UInt8], insideBlock: Bool)
    }

    /// Decodes the rest of a chunk from `first` on, with ISA-L for data and byte mode
    /// for stretches of zero runs, switching between them at block boundaries.
    /// Without `places`, ISA-L hands all output to the writer instead of placing it.
    private func decodeSwitching(_ first: Onward, stopAt: Int64, stream: ChunkStream, places: Bool = true) throws -> ChunkEnd {
        var next = first
        var isal = self.isal
        if !places { isal.placement = nil }
        while true {
            let leg: IsalRangeDecoder.Leg
            switch next {
            case .isal(let start, let announce):
                leg = try isal.decode(from: start, stopAt: stopAt, announce: announce, switches: true, into: stream)
            case .bytes(let decoder, let window, let insideBlock):
                leg = try decodeBytes(decoder, window: window, stopAt: stopAt, stream: stream, continuing: true,
                                      insideBlock: insideBlock, handsBack: true)
            }
            switch (leg, next) {
            case (.end(let end), _):
                return end
            case (.switchAt(let bitOffset, let window), .isal):
                let decoder = DeflateDecoder(input: file.bytes)
                decoder.seek(toBit: bitOffset)
                next = .bytes(decoder, window: window, insideBlock: false)
            case (.switchAt(let bitOffset, let window), .bytes):
                next = .isal(.block(bitOffset: bitOffset, window: window, mayStop: true), announce: false)
            }
        }
    }

    /// Decodes the rest of the block that marker mode stopped in, in byte mode with holes.
    /// Returns the last 32 KiB of output, or nil when the stream was abandoned.
    private func finishBlock(_ decoder: DeflateDecoder, window: [UInt8], stream: ChunkStream) throws -> [UInt8]? {
        let output = byteOutput(window: window, decoder: decoder, stream: stream)
        do throws(DeflateError) {
            while case .outputFull = try decoder.decodeBytes(into: output) {
                try output.flush()
            }
            // Before `finish`, which hands on a pending hole and leaves it out of the window.
            let after = output.window()
            try output.finish()
            return after
        } catch {
            if stream.isAbandoned { return nil }
            throw Self.dataError(error, decoder: decoder, inputCount: file.count)
        }
    }

    /// Makes a byte-mode output buffer after `window` that hands its pieces to `stream`,
    /// each data piece with its CRC-32, and reports the input `decoder` reached with each.
    private func byteOutput(window: [UInt8], decoder: DeflateDecoder, stream: ChunkStream) -> ByteOutput {
        window.withUnsafeBufferPointer { buffer in
            ByteOutput(window: buffer, pieceSize: Self.pieceSize) { piece throws(DeflateError) in
                var piece = piece
                if case .data(let bytes, _) = piece { piece = .data(bytes, crc: crc32Of(bytes)) }
                stream.reportInput(decoder.bitPosition / 8)
                guard stream.push(piece) else { throw .invalid("abandoned") }
                return
            }
        }
    }

    /// Decodes in byte mode with holes from the decoder's position until the first
    /// acceptable block boundary at or after `stopAt`, or the end of the data.
    /// `continuing` is true when marker mode already decoded up to here and the final
    /// block of a member may just have ended. With `handsBack`, returns `.switchAt` at
    /// the end of a block before `stopAt` whose output was data, not zero runs (at most
    /// a quarter of `zeroHeavyRatio` times its input), for ISA-L to go on.
    private func decodeBytes(_ decoder: DeflateDecoder, window: [UInt8], stopAt: Int64, anyBoundary: Bool = false,
                             stream: ChunkStream, continuing: Bool = false, insideBlock: Bool = false,
                             handsBack: Bool = false) throws -> IsalRangeDecoder.Leg {
        let output = byteOutput(window: window, decoder: decoder, stream: stream)
        let input = file.bytes
        var first = !continuing
        var memberEnded = continuing && !insideBlock && decoder.isFinalBlock
        var resumeBlock = insideBlock
        var lastBlockIsData = false
        do {
            while true {
                if memberEnded {
                    try output.finish()
                    // The trailer starts at the next byte boundary after the final block.
                    let trailer = Int((decoder.bitPosition + 7) / 8)
                    guard trailer + GzipMemberHeader.trailerSize <= input.count else {
                        throw GzipDataError(offset: Int64(input.count), kind: .truncated, reason: "inside the 8-byte gzip trailer at offset \(trailer)")
                    }
                    let crc = readLittleEndian32(input, at: trailer)
                    let size = readLittleEndian32(input, at: trailer + 4)
                    guard stream.push(.memberEnd(crc: crc, size: size, trailerOffset: Int64(trailer))) else {
                        return .end(ChunkEnd(bitOffset: decoder.bitPosition))
                    }
                    let next = trailer + GzipMemberHeader.trailerSize
                    guard let header = try GzipMemberHeader.parse(input, at: next) else {
                        let rest = UnsafeRawBufferPointer(rebasing: input[next...])
                        return .end(ChunkEnd(bitOffset: Int64(input.count) * 8,
                                             trailingGarbage: stream.trailingGarbage(in: rest, at: next)))
                    }
                    decoder.seek(toBit: Int64(next + header.length) * 8)
                    output.resetHistory()
                    memberEnded = false
                    first = false
                    lastBlockIsData = false
                    if !anyBoundary, Int64(next) * 8 >= stopAt {
                        try output.finish()
                        return .end(ChunkEnd(bitOffset: decoder.bitPosition))
                    }
                }
                if !first, !resumeBlock, decoder.bitPosition >= stopAt, anyBoundary || BlockFinder.acceptsBoundary(decoder) {
                    try output.finish()
                    return .end(ChunkEnd(bitOffset: decoder.bitPosition))
                }
                if handsBack, lastBlockIsData, !resumeBlock, decoder.bitPosition < stopAt {
                    // Before `finish`, which hands on a pending hole and leaves it out of the window.
                    let window = output.window()
                    try output.finish()
                    return .switchAt(bitOffset: decoder.bitPosition, window: window)
                }
                first = false
                let blockStart = decoder.bitPosition
                let outputBefore = output.produced
                let holesBefore = output.holeBytes
                if resumeBlock {
                    resumeBlock = false
                } else {
                    try decoder.readBlockHeader()
                }
                while true {
                    let progress = try decoder.decodeBytes(into: output)
                    if case .blockEnd = progress { break }
                    try output.flush()
                }
                memberEnded = decoder.isFinalBlock
                let blockInput = max(1, (decoder.bitPosition - blockStart) / 8)
                let blockOutput = output.produced - outputBefore
                let blockBytes = blockOutput - (output.holeBytes - holesBefore)
                // An empty block is neither data nor zeros. pigz output has many; counted
                // as data, they handed its zero runs back to ISA-L, which wrote them out.
                // A block that wrote most of its output is data too, however well it
                // compressed: a run of a byte other than zero is copied here byte by
                // byte, several times slower than ISA-L copies it.
                if blockOutput > 0 {
                    lastBlockIsData = blockOutput / blockInput <= ParallelGzipInflater.zeroHeavyRatio / 4
                        || blockBytes > blockOutput / 2
                }
            }
        } catch let error as DeflateError {
            if stream.isAbandoned { return .end(ChunkEnd(bitOffset: decoder.bitPosition)) }
            throw Self.dataError(error, decoder: decoder, inputCount: input.count)
        }
    }

}

/// Reads the little-endian 32-bit value at `offset`, as in a gzip trailer.
func readLittleEndian32(_ input: UnsafeRawBufferPointer, at offset: Int) -> UInt32 {
    UInt32(input[offset]) | UInt32(input[offset + 1]) << 8 | UInt32(input[offset + 2]) << 16 | UInt32(input[offset + 3]) << 24
}

/// CRC-32 of `bytes`.
func crc32Of(_ bytes: [UInt8]) -> UInt32 {
    bytes.withUnsafeBytes { crc32Of($0) }
}

/// CRC-32 of `buffer`, with ISA-L's folding CRC, which is several times faster than
/// zlib's on the writer's thread (the tests check it against zlib's).
func crc32Of(_ buffer: UnsafeRawBufferPointer) -> UInt32 {
    guard let start = buffer.baseAddress else { return 0 }
    return crc32_gzip_refl(0, start.assumingMemoryBound(to: UInt8.self), UInt64(buffer.count))
}

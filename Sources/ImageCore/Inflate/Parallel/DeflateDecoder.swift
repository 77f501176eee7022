// DeflateDecoder: a deflate decoder in Swift with two output modes.
//
// zlib cannot decode from the middle of a stream without the 32 KiB that precede it, and
// it always materialises every output byte. This decoder adds what parallel decoding of
// disk images needs:
//   - marker mode: output is 16-bit; values 0...255 are bytes and 256 + i stands for
//     byte i of the unknown 32 KiB window before the start. Decoding can start at any
//     block boundary; the markers are replaced once the previous chunk's last 32 KiB is
//     known;
//   - byte mode with holes: when a match copies from history that is all zeros, its
//     length is added to a pending hole instead of written, so gigabytes of zeros cost
//     one table lookup per 258 bytes and are handed on as `hole` pieces.
// One decoder belongs to one thread; it is not thread-safe.

/// The reason a block-decoding call returned.
enum BlockProgress {
    /// The block's end-of-block code was read.
    case blockEnd
    /// The output buffer is full; flush it and call again to continue the block.
    case outputFull
}

final class DeflateDecoder {
    let input: UnsafePointer<UInt8>
    let inputCount: Int

    // Bit reader: `bitBuffer` holds `bitCount` unread bits, least significant first;
    // `nextByte` is the next byte to load. Bytes past the end read as zero and count in
    // `nextByte`, so a position past the end reveals truncation.
    var bitBuffer: UInt64 = 0
    var bitCount: Int = 0
    var nextByte: Int = 0

    let literalTable = HuffmanTable()
    let distanceTable = HuffmanTable()
    private let fixedLiterals = HuffmanTable()
    private let fixedDistances = HuffmanTable()
    private let codeLengthTable = HuffmanTable()
    private let lengths = UnsafeMutablePointer<UInt8>.allocate(capacity: 320)
    /// True while the current block uses `fixedLiterals` and `fixedDistances`.
    private var usesFixedTables = false
    /// Bytes left in the current stored block.
    var storedRemaining = 0
    /// True once the final block's header was read.
    var isFinalBlock = false

    /// Copies of `DeflateConstants.lengthTable` and `distanceTable` (32 entries each; the
    /// unused ones are 0), so the hot loops index plain memory.
    private let lengthEntries = UnsafeMutablePointer<UInt32>.allocate(capacity: 32)
    private let distanceEntries = UnsafeMutablePointer<UInt32>.allocate(capacity: 32)

    init(input: UnsafeRawBufferPointer) {
        self.input = input.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? UnsafePointer(bitPattern: 1)!
        inputCount = input.count
        lengthEntries.initialize(repeating: 0, count: 32)
        distanceEntries.initialize(repeating: 0, count: 32)
        for (index, entry) in DeflateConstants.lengthTable.enumerated() { lengthEntries[index] = entry }
        for (index, entry) in DeflateConstants.distanceTable.enumerated() { distanceEntries[index] = entry }
        lengths.initialize(repeating: 0, count: 320)
        // The fixed literal/length code (RFC 1951, section 3.2.6).
        for symbol in 0..<144 { lengths[symbol] = 8 }
        for symbol in 144..<256 { lengths[symbol] = 9 }
        for symbol in 256..<280 { lengths[symbol] = 7 }
        for symbol in 280..<288 { lengths[symbol] = 8 }
        _ = fixedLiterals.build(lengths, count: 288, allowsSingleCode: false)
        // 32 codes of 5 bits make the fixed distance code complete; symbols 30 and 31
        // have codes but are invalid, which `readMatch` checks.
        for symbol in 0..<32 { lengths[symbol] = 5 }
        _ = fixedDistances.build(lengths, count: 32, allowsSingleCode: true)
    }

    deinit {
        lengths.deallocate()
        lengthEntries.deallocate()
        distanceEntries.deallocate()
    }

    // MARK: Bit reader

    /// The bit offset of the next unread bit.
    var bitPosition: Int64 { Int64(nextByte) * 8 - Int64(bitCount) }

    /// True when decoding has read past the end of the input.
    var isPastEnd: Bool { bitPosition > Int64(inputCount) * 8 }

    func seek(toBit offset: Int64) {
        nextByte = Int(offset / 8)
        bitBuffer = 0
        bitCount = 0
        refill()
        consume(Int(offset % 8))
    }

    @inline(__always)
    func refill() {
        if nextByte + 8 <= inputCount {
            let word = UInt64(littleEndian: UnsafeRawPointer(input + nextByte).loadUnaligned(as: UInt64.self))
            bitBuffer |= word &<< UInt64(bitCount)
            nextByte += (63 - bitCount) >> 3
            bitCount |= 56
        } else {
            while bitCount <= 56 {
                if nextByte < inputCount { bitBuffer |= UInt64(input[nextByte]) &<< UInt64(bitCount) }
                nextByte += 1
                bitCount += 8
            }
        }
    }

    @inline(__always)
    func bits(_ count: Int) -> Int { Int(bitBuffer & ((1 << UInt64(count)) - 1)) }

    @inline(__always)
    func consume(_ count: Int) {
        bitBuffer >>= UInt64(count)
        bitCount -= count
    }

    // MARK: Block headers

    /// Reads a block header at the current position and prepares its tables.
    /// `requireNonFinal` rejects final blocks (the block finder's guess never is one).
    func readBlockHeader() throws(DeflateError) {
        refill()
        isFinalBlock = bits(1) == 1
        let type = (bitBuffer >> 1) & 3
        consume(3)
        switch type {
        case 0:
            consume(bitCount & 7)
            refill()
            let length = bits(16)
            let complement = Int((bitBuffer >> 16) & 0xffff)
            consume(32)
            guard length == complement ^ 0xffff else { throw .invalid("invalid stored block lengths") }
            storedRemaining = length
            usesFixedTables = false
        case 1:
            usesFixedTables = true
            storedRemaining = -1
        case 2:
            try readDynamicTables()
            usesFixedTables = false
            storedRemaining = -1
        default:
            throw .invalid("invalid block type")
        }
        if isPastEnd { throw .truncated }
    }

    private func readDynamicTables() throws(DeflateError) {
        let literalCount = bits(5) + 257
        let distanceCount = ((bitBuffer >> 5) & 31) + 1
        let codeLengthCount = Int((bitBuffer >> 10) & 15) + 4
        consume(14)
        guard literalCount <= 286, distanceCount <= 30 else { throw .invalid("too many length or distance symbols") }
        for position in 0..<19 { lengths[position] = 0 }
        refill()
        for position in 0..<codeLengthCount {
            if bitCount < 3 { refill() }
            lengths[DeflateConstants.codeLengthOrder[position]] = UInt8(bits(3))
            consume(3)
        }
        guard codeLengthTable.build(lengths, count: 19, allowsSingleCode: false) else {
            throw .invalid("invalid code lengths set")
        }
        let total = literalCount + Int(distanceCount)
        var position = 0
        let codeEntries = codeLengthTable.entries
        let codeMask = codeLengthTable.mask
        while position < total {
            refill()
            let entry = codeEntries[Int(bitBuffer & codeMask)]
            let length = Int(entry >> 16)
            guard length > 0 else { throw .invalid("invalid code lengths set") }
            consume(length)
            let symbol = Int(entry & 0xffff)
            if symbol < 16 {
                lengths[position] = UInt8(symbol)
                position += 1
                continue
            }
            var repeated: UInt8 = 0
            var count: Int
            switch symbol {
            case 16:
                guard position > 0 else { throw .invalid("invalid bit length repeat") }
                repeated = lengths[position - 1]
                count = 3 + bits(2)
                consume(2)
            case 17:
                count = 3 + bits(3)
                consume(3)
            default:
                count = 11 + bits(7)
                consume(7)
            }
            guard position + count <= total else { throw .invalid("invalid bit length repeat") }
            for _ in 0..<count {
                lengths[position] = repeated
                position += 1
            }
        }
        guard lengths[256] != 0 else { throw .invalid("invalid code -- missing end-of-block") }
        guard literalTable.build(lengths, count: literalCount, allowsSingleCode: true) else {
            throw .invalid("invalid literal/lengths set")
        }
        guard distanceTable.build(lengths + literalCount, count: Int(distanceCount), allowsSingleCode: true) else {
            throw .invalid("invalid distances set")
        }
        if isPastEnd { throw .truncated }
    }

    // MARK: Marker mode

    /// Decodes symbols of the current block into 16-bit output at `output[position...]`
    /// until the block ends or fewer than 258 values of room are left. `position` counts
    /// the 32768 window markers in front, so every distance up to 32768 is in range.
    func decodeMarkers(into output: UnsafeMutablePointer<UInt16>, position: inout Int, capacity: Int)
        throws(DeflateError) -> BlockProgress {
        if storedRemaining >= 0 {
            while storedRemaining > 0 {
                guard position < capacity else { return .outputFull }
                let count = min(storedRemaining, capacity - position)
                try readStored(count) { bytes in
                    for index in 0..<count { output[position + index] = UInt16(bytes[index]) }
                }
                position += count
                storedRemaining -= count
            }
            return .blockEnd
        }
        // The bit reader's state lives in locals for the loop: class properties would
        // cost an exclusivity check per access.
        var bitBuffer = self.bitBuffer
        var bitCount = self.bitCount
        var nextByte = self.nextByte
        let input = self.input
        let inputCount = self.inputCount
        defer {
            self.bitBuffer = bitBuffer
            self.bitCount = bitCount
            self.nextByte = nextByte
        }
        func refillLocal() {
            if nextByte + 8 <= inputCount {
                let word = UInt64(littleEndian: UnsafeRawPointer(input + nextByte).loadUnaligned(as: UInt64.self))
                bitBuffer |= word &<< UInt64(bitCount)
                nextByte += (63 - bitCount) >> 3
                bitCount |= 56
            } else {
                while bitCount <= 56 {
                    if nextByte < inputCount { bitBuffer |= UInt64(input[nextByte]) &<< UInt64(bitCount) }
                    nextByte += 1
                    bitCount += 8
                }
            }
        }
        func consumeLocal(_ count: Int) {
            bitBuffer >>= UInt64(count)
            bitCount -= count
        }
        var isPastEndLocal: Bool { Int64(nextByte) * 8 - Int64(bitCount) > Int64(inputCount) * 8 }
        let literals = usesFixedTables ? fixedLiterals : literalTable
        let distances = usesFixedTables ? fixedDistances : distanceTable
        let literalEntries = literals.entries, literalMask = literals.mask
        let distanceCodes = distances.entries, distanceMask = distances.mask
        let lengthTable = lengthEntries, distanceTable = distanceEntries
        var out = position
        defer { position = out }
        // Room for one match plus the 3-value overshoot of the 4-value copy steps.
        let limit = capacity - 262
        while out <= limit {
            refillLocal()
            let entry = literalEntries[Int(bitBuffer & literalMask)]
            let codeLength = Int(entry >> 16)
            guard codeLength > 0 else { throw .invalid("invalid literal/length code") }
            consumeLocal(codeLength)
            let symbol = Int(entry & 0xffff)
            if symbol < 256 {
                output[out] = UInt16(symbol)
                out += 1
                continue
            }
            if symbol == 256 {
                if isPastEndLocal { throw .truncated }
                return .blockEnd
            }
            let lengthIndex = symbol - 257
            guard lengthIndex < 29 else { throw .invalid("invalid literal/length code") }
            let lengthEntry = lengthTable[lengthIndex]
            let lengthExtra = Int(lengthEntry >> 16)
            let length = Int(lengthEntry & 0xffff) + Int(bitBuffer & ((1 << UInt64(lengthExtra)) - 1))
            bitBuffer >>= UInt64(lengthExtra)
            bitCount -= lengthExtra
            let distanceCode = distanceCodes[Int(bitBuffer & distanceMask)]
            let distanceLength = Int(distanceCode >> 16)
            let distanceSymbol = Int(distanceCode & 0xffff)
            guard distanceLength > 0, distanceSymbol < 30 else { throw .invalid("invalid distance code") }
            bitBuffer >>= UInt64(distanceLength)
            bitCount -= distanceLength
            let distanceEntry = distanceTable[distanceSymbol]
            let distanceExtra = Int(distanceEntry >> 16)
            let distance = Int(distanceEntry & 0xffff) + Int(bitBuffer & ((1 << UInt64(distanceExtra)) - 1))
            bitBuffer >>= UInt64(distanceExtra)
            bitCount -= distanceExtra
            guard distance <= out else { throw .invalid("invalid distance too far back") }
            let source = output + (out - distance)
            let target = output + out
            if distance >= 4 {
                // 4-value (8-byte) steps; the room above `limit` takes the overshoot.
                var offset = 0
                while offset < length {
                    UnsafeMutableRawPointer(target + offset).storeBytes(
                        of: UnsafeRawPointer(source + offset).loadUnaligned(as: UInt64.self), as: UInt64.self)
                    offset += 4
                }
            } else {
                for index in 0..<length { target[index] = source[index] }
            }
            out += length
        }
        if isPastEndLocal { throw .truncated }
        return .outputFull
    }

    /// Hands `count` bytes of the current stored block to `body`, then advances.
    private func readStored(_ count: Int, _ body: (UnsafePointer<UInt8>) -> Void) throws(DeflateError) {
        // A stored block's bytes are byte-aligned: return the whole bytes still in the
        // bit buffer to the input first.
        let start = nextByte - bitCount / 8
        guard start + count <= inputCount else { throw .truncated }
        body(input + start)
        nextByte = start + count
        bitBuffer = 0
        bitCount = 0
    }

    // MARK: Byte mode with holes

    /// Decodes symbols of the current block into `output` until the block ends or the
    /// buffer reaches its flush mark.
    func decodeBytes(into output: ByteOutput) throws(DeflateError) -> BlockProgress {
        if storedRemaining >= 0 {
            while storedRemaining > 0 {
                if output.hole > 0 { try output.materializeHole() }
                let room = output.flushMark - output.position
                guard room > 0 else { return .outputFull }
                let count = min(storedRemaining, room)
                try readStored(count) { bytes in output.append(bytes, count: count) }
                storedRemaining -= count
            }
            return .blockEnd
        }
        // The bit reader's state lives in locals for the loop: class properties would
        // cost an exclusivity check per access.
        var bitBuffer = self.bitBuffer
        var bitCount = self.bitCount
        var nextByte = self.nextByte
        let input = self.input
        let inputCount = self.inputCount
        defer {
            self.bitBuffer = bitBuffer
            self.bitCount = bitCount
            self.nextByte = nextByte
        }
        func refillLocal() {
            if nextByte + 8 <= inputCount {
                let word = UInt64(littleEndian: UnsafeRawPointer(input + nextByte).loadUnaligned(as: UInt64.self))
                bitBuffer |= word &<< UInt64(bitCount)
                nextByte += (63 - bitCount) >> 3
                bitCount |= 56
            } else {
                while bitCount <= 56 {
                    if nextByte < inputCount { bitBuffer |= UInt64(input[nextByte]) &<< UInt64(bitCount) }
                    nextByte += 1
                    bitCount += 8
                }
            }
        }
        func consumeLocal(_ count: Int) {
            bitBuffer >>= UInt64(count)
            bitCount -= count
        }
        var isPastEndLocal: Bool { Int64(nextByte) * 8 - Int64(bitCount) > Int64(inputCount) * 8 }
        let literals = usesFixedTables ? fixedLiterals : literalTable
        let distances = usesFixedTables ? fixedDistances : distanceTable
        let literalEntries = literals.entries, literalMask = literals.mask
        let distanceCodes = distances.entries, distanceMask = distances.mask
        let lengthTable = lengthEntries, distanceTable = distanceEntries
        let base = output.base
        var out = output.position
        var hole = output.hole
        var zeros = output.trailingZeros
        var historyStart = output.historyStart
        let flushMark = output.flushMark
        func store() {
            output.position = out
            output.hole = hole
            output.trailingZeros = zeros
        }
        func load() {
            out = output.position
            hole = output.hole
            zeros = output.trailingZeros
            historyStart = output.historyStart
        }
        defer { store() }
        // Hands on a hole that reached `ByteOutput.holePieceLimit`. Bits past the end
        // of the input read as zeros, and where the all-zero code is a zero match they
        // decode as a zero run without end, so the end is checked here.
        func handOnLongHole() throws(DeflateError) {
            if isPastEndLocal { throw .truncated }
            // The bit position is stored first, because the piece's receiver may read it
            // (`SpeculativeDecoder` reports it as progress).
            self.bitBuffer = bitBuffer
            self.bitCount = bitCount
            self.nextByte = nextByte
            store()
            try output.materializeHole()
            load()
        }
        while out < flushMark {
            refillLocal()
            let entry = literalEntries[Int(bitBuffer & literalMask)]
            let codeLength = Int(entry >> 16)
            guard codeLength > 0 else { throw .invalid("invalid literal/length code") }
            consumeLocal(codeLength)
            let symbol = Int(entry & 0xffff)
            if symbol < 256 {
                if symbol == 0 {
                    zeros += 1
                    if hole > 0 {
                        hole += 1
                        if hole >= ByteOutput.holePieceLimit { try handOnLongHole() }
                        continue
                    }
                    base[out] = 0
                    out += 1
                    continue
                }
                if hole > 0 {
                    store()
                    try output.materializeHole()
                    load()
                }
                base[out] = UInt8(truncatingIfNeeded: symbol)
                out += 1
                zeros = 0
                continue
            }
            if symbol == 256 {
                if isPastEndLocal { throw .truncated }
                return .blockEnd
            }
            let lengthIndex = symbol - 257
            guard lengthIndex < 29 else { throw .invalid("invalid literal/length code") }
            let lengthEntry = lengthTable[lengthIndex]
            let lengthExtra = Int(lengthEntry >> 16)
            let length = Int(lengthEntry & 0xffff) + Int(bitBuffer & ((1 << UInt64(lengthExtra)) - 1))
            bitBuffer >>= UInt64(lengthExtra)
            bitCount -= lengthExtra
            let distanceCode = distanceCodes[Int(bitBuffer & distanceMask)]
            let distanceLength = Int(distanceCode >> 16)
            let distanceSymbol = Int(distanceCode & 0xffff)
            guard distanceLength > 0, distanceSymbol < 30 else { throw .invalid("invalid distance code") }
            bitBuffer >>= UInt64(distanceLength)
            bitCount -= distanceLength
            let distanceEntry = distanceTable[distanceSymbol]
            let distanceExtra = Int(distanceEntry >> 16)
            let distance = Int(distanceEntry & 0xffff) + Int(bitBuffer & ((1 << UInt64(distanceExtra)) - 1))
            bitBuffer >>= UInt64(distanceExtra)
            bitCount -= distanceExtra
            if zeros >= distance {
                // The source is all zeros: the match adds zeros, kept as a hole.
                hole += length
                zeros += length
                if hole >= ByteOutput.holePieceLimit { try handOnLongHole() }
                continue
            }
            if hole > 0 {
                store()
                try output.materializeHole()
                load()
            }
            guard distance <= out - historyStart else { throw .invalid("invalid distance too far back") }
            let source = base + (out - distance)
            let target = base + out
            if distance >= 8 {
                // 8-byte steps may write up to 7 bytes past the match; the buffer has
                // room above the flush mark, and later output overwrites them. Each step
                // reads bytes at least 8 back, which earlier steps already wrote.
                var offset = 0
                while offset < length {
                    UnsafeMutableRawPointer(target + offset).storeBytes(
                        of: UnsafeRawPointer(source + offset).loadUnaligned(as: UInt64.self), as: UInt64.self)
                    offset += 8
                }
            } else {
                for index in 0..<length { target[index] = source[index] }
            }
            out += length
            if base[out - 1] != 0 {
                zeros = 0
            } else {
                var count = 1
                while count < length && base[out - 1 - count] == 0 { count += 1 }
                zeros = count
            }
        }
        if isPastEndLocal { throw .truncated }
        return .outputFull
    }
}

/// The byte-mode output buffer: 32 KiB of history, then output not yet handed on, then
/// room for one more piece. `hole` zero bytes logically follow `position` without being
/// written; `trailingZeros` counts the zero bytes at the logical end (hole included).
final class ByteOutput {
    static let history = 32768
    /// The hole size at which a pending hole is handed on, although the zero run may go
    /// on. A piece may exceed it by less than one 258-byte match. Without pieces, the
    /// writer would update no progress and check no cancellation until the run ends,
    /// and an abandoned worker would not stop before then either.
    static let holePieceLimit = 64 << 20
    let pieceSize: Int
    let base: UnsafeMutablePointer<UInt8>
    let capacity: Int
    /// Output from `flushed` to `position` has not been handed on yet.
    var flushed: Int
    var position: Int
    /// Bytes before `historyStart` are not output of this stream (no match may reach them).
    var historyStart: Int
    /// Int is 64-bit on every platform imgtool builds for, so a hole may pass 4 GiB.
    var hole = 0
    var trailingZeros = 0
    /// Output bytes handed on so far, holes included.
    private(set) var handedOn: Int64 = 0
    /// Zero bytes handed on as hole pieces so far.
    private(set) var handedOnHoles: Int64 = 0
    /// Decoding stops for a flush once `position` reaches this mark; the room above it
    /// takes one match (258) or one materialised hole (32 KiB).
    let flushMark: Int
    private let emit: (OutputPiece) throws(DeflateError) -> Void

    /// - Parameter window: the history before the first output byte (at most 32 KiB),
    ///   or empty at the start of a member.
    init(window: UnsafeBufferPointer<UInt8>, pieceSize: Int, emit: @escaping (OutputPiece) throws(DeflateError) -> Void) {
        self.pieceSize = pieceSize
        capacity = Self.history + pieceSize + Self.history + 258
        base = .allocate(capacity: capacity)
        flushMark = Self.history + pieceSize
        let count = min(window.count, Self.history)
        position = Self.history
        historyStart = Self.history - count
        if count > 0 {
            (base + historyStart).update(from: window.baseAddress! + (window.count - count), count: count)
        }
        var zeros = 0
        while zeros < count && base[position - 1 - zeros] == 0 { zeros += 1 }
        trailingZeros = zeros
        flushed = position
        self.emit = emit
    }

    deinit { base.deallocate() }

    /// Starts a new member: no history is reachable any more.
    func resetHistory() {
        historyStart = position
        trailingZeros = 0
    }

    func append(_ bytes: UnsafePointer<UInt8>, count: Int) {
        (base + position).update(from: bytes, count: count)
        position += count
        var zeros = 0
        while zeros < count && bytes[count - 1 - zeros] == 0 { zeros += 1 }
        trailingZeros = zeros == count ? trailingZeros + count : zeros
    }

    /// Writes the pending hole into the buffer, or, when it is longer than the window,
    /// hands it on as a hole piece and leaves 32 KiB of zeros as history.
    func materializeHole() throws(DeflateError) {
        guard hole > 0 else { return }
        if hole > Self.history {
            try flush()
            try emit(.hole(Int64(hole)))
            handedOn += Int64(hole)
            handedOnHoles += Int64(hole)
            base.update(repeating: 0, count: Self.history)
            position = Self.history
            flushed = position
            historyStart = 0
        } else {
            (base + position).update(repeating: 0, count: hole)
            position += hole
        }
        hole = 0
    }

    /// Hands on the output since the last flush and keeps the last 32 KiB as history.
    func flush() throws(DeflateError) {
        if position > flushed {
            let count = position - flushed
            let bytes = [UInt8](UnsafeBufferPointer(start: base + flushed, count: count))
            try emit(.data(bytes, crc: 0))
            handedOn += Int64(count)
        }
        if position > Self.history {
            let keep = Self.history
            base.update(from: base + (position - keep), count: keep)
            historyStart = max(0, historyStart - (position - keep))
            position = keep
        }
        flushed = position
    }

    /// Hands on everything, the pending hole included.
    func finish() throws(DeflateError) {
        try flush()
        if hole > 0 {
            try emit(.hole(Int64(hole)))
            handedOn += Int64(hole)
            handedOnHoles += Int64(hole)
            hole = 0
        }
    }

    /// All output so far: handed on, waiting, and the pending hole.
    var produced: Int64 { handedOn + Int64(position - flushed + hole) }

    /// The zero bytes of `produced` that were never written: hole pieces handed on and
    /// the pending hole. Holes of at most 32 KiB are written as zeros and not counted.
    var holeBytes: Int64 { handedOnHoles + Int64(hole) }

    /// Returns the last 32 KiB of output (fewer at the start of a stream).
    func window() -> [UInt8] {
        var result = [UInt8](UnsafeBufferPointer(start: base + historyStart, count: position - historyStart))
        if hole > 0 {
            result += repeatElement(0, count: min(hole, Self.history))
        }
        return Array(result.suffix(Self.history))
    }
}

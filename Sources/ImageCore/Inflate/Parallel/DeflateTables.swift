// Huffman decoding tables and the fixed tables of deflate (RFC 1951, section 3.2).

/// Invalid or truncated deflate data found by the Swift decoder.
enum DeflateError: Error {
    case invalid(String)
    case truncated
}

/// A canonical Huffman code as one lookup table indexed by the next `bits` input bits
/// (least significant bit first, as deflate packs codes). Each entry holds the symbol in
/// its low 16 bits and the code length above; length 0 marks bits that start no code.
/// The table is owned by one decoder and is not thread-safe.
final class HuffmanTable {
    /// Deflate's longest code is 15 bits, so the table never exceeds 2^15 entries.
    static let maximumBits = 15
    let entries: UnsafeMutablePointer<UInt32>
    private(set) var bits = 1
    var mask: UInt64 { (1 << UInt64(bits)) - 1 }

    init() {
        entries = .allocate(capacity: 1 << Self.maximumBits)
        entries.initialize(repeating: 0, count: 1 << Self.maximumBits)
    }

    deinit { entries.deallocate() }

    /// Builds the code from `count` code lengths. Over-subscribed codes are invalid, and
    /// so are incomplete ones unless `allowsSingleCode` and only one code of length 1 is
    /// used (zlib accepts the same set). Returns false for an invalid code.
    func build(_ lengths: UnsafePointer<UInt8>, count: Int, allowsSingleCode: Bool) -> Bool {
        withUnsafeTemporaryAllocation(of: Int.self, capacity: 32) { scratch in
            scratch.initialize(repeating: 0)
            return build(lengths, count: count, allowsSingleCode: allowsSingleCode,
                         lengthCounts: scratch.baseAddress!, nextCode: scratch.baseAddress! + 16)
        }
    }

    private func build(_ lengths: UnsafePointer<UInt8>, count: Int, allowsSingleCode: Bool,
                       lengthCounts: UnsafeMutablePointer<Int>, nextCode: UnsafeMutablePointer<Int>) -> Bool {
        var longest = 0
        for symbol in 0..<count {
            let length = Int(lengths[symbol])
            lengthCounts[length] += 1
            longest = max(longest, length)
        }
        lengthCounts[0] = 0
        var left = 1
        for length in 1...15 {
            left <<= 1
            left -= lengthCounts[length]
            if left < 0 { return false }
        }
        if longest == 0 {
            // No codes at all: legal for the distance code of a block of literals only.
            bits = 1
            entries[0] = 0
            entries[1] = 0
            return allowsSingleCode
        }
        if left > 0 && !(allowsSingleCode && longest == 1) { return false }
        bits = longest
        let size = 1 << longest
        if left > 0 { entries.update(repeating: 0, count: size) }
        var code = 0
        for length in 1...15 {
            code = (code + lengthCounts[length - 1]) << 1
            nextCode[length] = code
        }
        for symbol in 0..<count {
            let length = Int(lengths[symbol])
            guard length > 0 else { continue }
            let assigned = nextCode[length]
            nextCode[length] += 1
            let reversed = Int(UInt16(truncatingIfNeeded: assigned).bitReversed >> (16 - length))
            let entry = UInt32(symbol) | UInt32(length) << 16
            var index = reversed
            while index < size {
                entries[index] = entry
                index += 1 << length
            }
        }
        return true
    }
}

/// Base values and extra bits of length symbols 257...285 and distance symbols 0...29.
enum DeflateConstants {
    static let lengthBase: [UInt16] = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99,
                                       115, 131, 163, 195, 227, 258]
    static let lengthExtra: [UInt8] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0]
    static let distanceBase: [UInt16] = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025,
                                         1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577]
    static let distanceExtra: [UInt8] = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12,
                                         12, 13, 13]
    /// The order in which a dynamic block stores the code lengths of the code-length code.
    static let codeLengthOrder: [Int] = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15]

    /// Packed per length symbol: base in the low 16 bits, extra bits above.
    static let lengthTable: [UInt32] = (0..<29).map { UInt32(lengthBase[$0]) | UInt32(lengthExtra[$0]) << 16 }
    static let distanceTable: [UInt32] = (0..<30).map { UInt32(distanceBase[$0]) | UInt32(distanceExtra[$0]) << 16 }
}

extension UInt16 {
    /// The bits in reverse order (bit 0 becomes bit 15).
    var bitReversed: UInt16 {
        var value = self
        value = (value & 0x5555) << 1 | (value >> 1) & 0x5555
        value = (value & 0x3333) << 2 | (value >> 2) & 0x3333
        value = (value & 0x0f0f) << 4 | (value >> 4) & 0x0f0f
        return value << 8 | value >> 8
    }
}

// Incremental UTF-8 validation: a text message may be split across frames anywhere,
// even inside a code point, so the validator keeps its state between fragments.
// Follows the well-formed byte sequences of Unicode 15, table 3-7: no overlong forms,
// no surrogates (ED A0..BF), nothing above U+10FFFF.

public struct UTF8Validator: Sendable {
    /// Continuation bytes still expected for the current code point.
    private var pending = 0
    /// The allowed range of the next byte, narrower than 80...BF right after some leads.
    private var nextLow: UInt8 = 0x80
    private var nextHigh: UInt8 = 0xBF

    public init() {}

    /// Feeds `bytes`; returns false as soon as they cannot be part of valid UTF-8.
    public mutating func feed<Bytes: Sequence<UInt8>>(_ bytes: Bytes) -> Bool {
        for byte in bytes {
            if pending > 0 {
                guard byte >= nextLow, byte <= nextHigh else { return false }
                pending -= 1
                nextLow = 0x80
                nextHigh = 0xBF
                continue
            }
            switch byte {
            case 0x00...0x7F: continue
            case 0xC2...0xDF: pending = 1
            case 0xE0: pending = 2; nextLow = 0xA0
            case 0xE1...0xEC, 0xEE...0xEF: pending = 2
            case 0xED: pending = 2; nextHigh = 0x9F
            case 0xF0: pending = 3; nextLow = 0x90
            case 0xF1...0xF3: pending = 3
            case 0xF4: pending = 3; nextHigh = 0x8F
            default: return false
            }
        }
        return true
    }

    /// Whether the input so far ends on a code point boundary.
    public var isComplete: Bool { pending == 0 }

    /// Whether `bytes` are complete, valid UTF-8.
    public static func isValid<Bytes: Sequence<UInt8>>(_ bytes: Bytes) -> Bool {
        var validator = UTF8Validator()
        return validator.feed(bytes) && validator.isComplete
    }
}

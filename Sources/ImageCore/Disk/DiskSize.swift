// DiskSize: the sizes a user gives for a RAW disk, parsed exactly.
//
// Accepted text: a byte count ("4294967296") or a number with a binary unit, K, M, G, T
// or KiB, MiB, GiB, TiB (powers of 1024, any letter case), with an optional decimal
// fraction ("4.5G"). Whitespace and invisible format characters (U+200B, U+FEFF)
// anywhere are rejected, and the error names them, because they are easy to miss in a
// pasted size. The byte count is computed in integer arithmetic, rounded up to the next
// whole byte, then up to a multiple of 512 (the sector size a RAW disk is read in).
// Anything past Int64.max after rounding is rejected.

/// A disk size in bytes, a multiple of 512, with the text it came from.
public struct DiskSize: Sendable, Equatable, CustomStringConvertible {
    /// The size in bytes; always a multiple of `sectorSize`.
    public let bytes: Int64
    /// The exact byte count the text named, before rounding up to `sectorSize`.
    public let requestedBytes: Int64
    /// The text as given, for messages.
    public let text: String

    /// The unit every size is rounded up to.
    public static let sectorSize: Int64 = 512

    /// The accepted forms, quoted in every rejection.
    public static let acceptedForms =
        "a byte count (\"10737418240\") or a number with K, M, G or T (or KiB, MiB, GiB, TiB; powers of 1024, any case), decimals allowed (\"4.5G\")"

    /// True when `bytes` differs from `requestedBytes` because of rounding up to 512.
    public var wasRounded: Bool { bytes != requestedBytes }

    public var description: String { "\(bytes) bytes" }

    /// Parses the command line's form: a bare number is a byte count.
    public init(parsing text: String) throws(InvalidArgumentError) {
        try self.init(parsing: text, bareNumberMultiplier: 1)
    }

    /// A size of exactly `bytes`, which must be a non-negative multiple of 512.
    public init(bytes: Int64) {
        precondition(bytes >= 0 && bytes % DiskSize.sectorSize == 0, "Bug in imgtool: disk size \(bytes) is not a multiple of 512")
        self.bytes = bytes
        self.requestedBytes = bytes
        self.text = String(bytes)
    }

    /// Parses the size argument of the middleware's `vm.raw_resize`: a bare number counts
    /// GiB (the old interface took whole GiB), a number with a unit is read as on the
    /// command line. Returns nil for "0", for any other zero value and for empty text,
    /// which all mean "keep the current size"; the old implementation emptied the disk.
    /// Text of only whitespace is rejected like any other whitespace, with a remedy that
    /// names the forms that keep the size.
    public static func parseResizeRequest(_ text: String) throws(InvalidArgumentError) -> DiskSize? {
        if text.isEmpty { return nil }
        let size: DiskSize
        do {
            size = try DiskSize(parsing: text, bareNumberMultiplier: 1 << 30)
        } catch var error {
            if text.allSatisfy(\.isWhitespace) {
                error.remedy = "send an empty string or \"0\" to keep the current size, or a size such as \"20\""
            }
            throw error
        }
        return size.requestedBytes == 0 ? nil : size
    }

    /// Throws when `text` contains whitespace or an invisible format character (such as
    /// U+200B ZERO WIDTH SPACE or U+FEFF, a byte order mark), naming the first one and
    /// where it is, with the text without them as the fix. The check is per Unicode scalar,
    /// because a format character such as U+200D joins the character before it.
    private static func rejectWhitespace(in text: String) throws(InvalidArgumentError) {
        func isBlank(_ scalar: Unicode.Scalar) -> Bool {
            scalar.properties.isWhitespace || scalar.properties.generalCategory == .format
        }
        let scalars = Array(text.unicodeScalars)
        guard let index = scalars.firstIndex(where: isBlank) else { return }
        let scalar = scalars[index]
        let name: String
        switch scalar {
        case " ": name = "a space"
        case "\t": name = "a tab"
        default:
            let hex = String(scalar.value, radix: 16, uppercase: true)
            name = "U+" + String(repeating: "0", count: max(0, 4 - hex.count)) + hex
        }
        let place: String
        if index == 0 {
            place = "at the start"
        } else if scalars[(index + 1)...].allSatisfy(isBlank) {
            place = "at the end"
        } else {
            place = "inside"
        }
        let isWhitespace = scalar.properties.isWhitespace
        var trimmed = String.UnicodeScalarView()
        trimmed.append(contentsOf: scalars.filter { !isBlank($0) })
        let remedy = trimmed.isEmpty ? "give a size such as '10G'"
            : "remove the \(isWhitespace ? "whitespace" : "invisible characters"): '\(String(trimmed))'"
        let kind = isWhitespace ? "whitespace" : "an invisible format character"
        throw InvalidArgumentError(argument: "size", value: text,
                                   reason: "a size cannot contain \(kind), found \(name) \(place)", remedy: remedy)
    }

    private init(parsing text: String, bareNumberMultiplier: UInt64) throws(InvalidArgumentError) {
        func reject(_ reason: String) -> InvalidArgumentError {
            InvalidArgumentError(argument: "size", value: text, reason: "\(reason), expected \(DiskSize.acceptedForms)")
        }

        try Self.rejectWhitespace(in: text)
        let utf8 = Array(text.utf8)
        guard !utf8.isEmpty else { throw reject("the size is empty") }
        if utf8[0] == UInt8(ascii: "-") { throw reject("a size cannot be negative") }

        // Split into integer digits, fraction digits and the unit suffix.
        var index = 0
        var integerDigits: [UInt8] = []
        while index < utf8.count, isDigit(utf8[index]) {
            integerDigits.append(utf8[index] - UInt8(ascii: "0"))
            index += 1
        }
        var fractionDigits: [UInt8] = []
        if index < utf8.count, utf8[index] == UInt8(ascii: ".") {
            index += 1
            while index < utf8.count, isDigit(utf8[index]) {
                fractionDigits.append(utf8[index] - UInt8(ascii: "0"))
                index += 1
            }
            if fractionDigits.isEmpty { throw reject("a decimal point must be followed by digits") }
        }
        guard !integerDigits.isEmpty else { throw reject("the size must start with a digit") }
        let unit = String(decoding: utf8[index...], as: UTF8.self)

        guard let multiplier = Self.multiplier(ofUnit: unit, bareNumber: bareNumberMultiplier) else {
            throw reject("unknown unit '\(unit)'")
        }

        // Integer part times the unit, checking overflow at every step.
        var whole: UInt64 = 0
        for digit in integerDigits {
            let (times10, overflow1) = whole.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times10.addingReportingOverflow(UInt64(digit))
            if overflow1 || overflow2 { throw reject("the size exceeds the maximum of \(Int64.max) bytes") }
            whole = sum
        }
        let (scaled, overflow) = whole.multipliedReportingOverflow(by: multiplier)
        if overflow { throw reject("the size exceeds the maximum of \(Int64.max) bytes") }

        // Fraction times the unit, rounded up to a whole byte. Trailing zeros carry no value;
        // 19 significant decimals would overflow 10^n in 64 bits.
        while fractionDigits.last == 0 { fractionDigits.removeLast() }
        guard fractionDigits.count <= 18 else { throw reject("more than 18 decimal places") }
        var fractionBytes: UInt64 = 0
        if !fractionDigits.isEmpty {
            var numerator: UInt64 = 0
            var denominator: UInt64 = 1
            for digit in fractionDigits {
                numerator = numerator * 10 + UInt64(digit)
                denominator *= 10
            }
            // numerator < denominator, so the quotient is below `multiplier` and the high
            // word of the product is below `denominator`, as dividingFullWidth requires.
            let product = numerator.multipliedFullWidth(by: multiplier)
            let (quotient, remainder) = denominator.dividingFullWidth(product)
            fractionBytes = quotient + (remainder > 0 ? 1 : 0)
        }

        let (requested, overflow3) = scaled.addingReportingOverflow(fractionBytes)
        guard !overflow3, requested <= UInt64(Int64.max) else {
            throw reject("the size exceeds the maximum of \(Int64.max) bytes")
        }
        let sector = UInt64(Self.sectorSize)
        let rounded = (requested + sector - 1) / sector * sector
        guard rounded <= UInt64(Int64.max) else {
            throw reject("the size rounded up to a multiple of 512 exceeds the maximum of \(Int64.max) bytes")
        }

        self.requestedBytes = Int64(requested)
        self.bytes = Int64(rounded)
        self.text = text
    }

    /// Returns the multiplier for a unit suffix, or nil for an unknown one.
    private static func multiplier(ofUnit unit: String, bareNumber: UInt64) -> UInt64? {
        // lowercased() maps some non-ASCII letters to ASCII ones (the Kelvin sign U+212A
        // to "k"), so only ASCII units reach it.
        guard unit.utf8.allSatisfy({ $0 < 0x80 }) else { return nil }
        switch unit.lowercased() {
        case "": return bareNumber
        case "k", "kib": return 1 << 10
        case "m", "mib": return 1 << 20
        case "g", "gib": return 1 << 30
        case "t", "tib": return 1 << 40
        default: return nil
        }
    }
}

private func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }

// GzipMemberHeader: the header of one gzip member (RFC 1952, section 2.3).
//
//     +---+---+---+---+---+---+---+---+---+---+
//     |ID1|ID2|CM |FLG|     MTIME     |XFL|OS |   ID1 ID2 = 1f 8b, CM = 8 (deflate)
//     +---+---+---+---+---+---+---+---+---+---+
//     then, by FLG bit: FEXTRA (2) XLEN and XLEN bytes of subfields, FNAME (3) and
//     FCOMMENT (4) zero-terminated strings, FHCRC (1) a 2-byte CRC; bits 5-7 are
//     reserved and must be zero. The deflate data follows, then an 8-byte trailer:
//     CRC-32 of the member's output and ISIZE (its length modulo 2^32), little-endian.
//
// BGZF (samtools) members carry an FEXTRA subfield 'B' 'C' of length 2 holding BSIZE,
// the member's total size minus 1, which gives every member boundary without decoding.

/// The parts of a member header that parallel decoding needs.
struct GzipMemberHeader {
    /// Bytes from the member's first byte to its deflate data.
    var length: Int
    /// The member's total size from a BGZF `BC` subfield, when present.
    var bgzfMemberSize: Int?

    static let trailerSize = 8

    /// Parses the header at `offset`. Returns nil when the bytes there do not start with
    /// the gzip magic; throws when they do but the header is invalid or cut short.
    static func parse(_ input: UnsafeRawBufferPointer, at offset: Int) throws(GzipDataError) -> GzipMemberHeader? {
        // A lone 0x1f at the very end is the first byte of a member cut short.
        if offset + 1 == input.count, input[offset] == 0x1f {
            throw GzipDataError(offset: Int64(input.count), kind: .truncated, reason: "inside the header of the gzip member at offset \(offset)")
        }
        guard offset + 2 <= input.count, input[offset] == 0x1f, input[offset + 1] == 0x8b else { return nil }
        func need(_ count: Int, _ position: Int) throws(GzipDataError) {
            guard position + count <= input.count else {
                throw GzipDataError(offset: Int64(input.count), kind: .truncated, reason: "inside the header of the gzip member at offset \(offset)")
            }
        }
        try need(10, offset)
        guard input[offset + 2] == 8 else {
            throw GzipDataError(offset: Int64(offset), reason: "compression method \(input[offset + 2]) is not deflate (8)")
        }
        let flags = input[offset + 3]
        guard flags & 0xe0 == 0 else {
            throw GzipDataError(offset: Int64(offset), reason: "the header's FLG byte 0x\(String(flags, radix: 16)) has a reserved bit set")
        }
        var position = offset + 10
        var bgzfSize: Int?
        if flags & 0x04 != 0 {
            try need(2, position)
            let extraLength = Int(input[position]) | Int(input[position + 1]) << 8
            position += 2
            try need(extraLength, position)
            var field = position
            while field + 4 <= position + extraLength {
                let fieldLength = Int(input[field + 2]) | Int(input[field + 3]) << 8
                if input[field] == 0x42, input[field + 1] == 0x43, fieldLength == 2, field + 6 <= position + extraLength {
                    bgzfSize = (Int(input[field + 4]) | Int(input[field + 5]) << 8) + 1
                }
                field += 4 + fieldLength
            }
            position += extraLength
        }
        for flag: UInt8 in [0x08, 0x10] where flags & flag != 0 {
            while true {
                try need(1, position)
                position += 1
                if input[position - 1] == 0 { break }
            }
        }
        if flags & 0x02 != 0 {
            // FHCRC: the low 16 bits of the CRC-32 of the header bytes before it.
            try need(2, position)
            let stored = UInt16(input[position]) | UInt16(input[position + 1]) << 8
            let computed = UInt16(truncatingIfNeeded: crc32Of(UnsafeRawBufferPointer(rebasing: input[offset..<position])))
            guard stored == computed else {
                throw GzipDataError(offset: Int64(position), reason: "header CRC-16 is 0x\(String(stored, radix: 16)) but the header bytes give 0x\(String(computed, radix: 16))")
            }
            position += 2
        }
        return GzipMemberHeader(length: position - offset, bgzfMemberSize: bgzfSize)
    }
}

/// Invalid or truncated gzip data at a byte offset of the input. Public entry points
/// turn it into `InflateError` (`inflateError`), the error every gzip decoder throws.
struct GzipDataError: Error {
    enum Kind {
        case corrupt, truncated
    }

    var path: String
    var offset: Int64
    var kind: Kind
    var reason: String

    init(path: String = "", offset: Int64, kind: Kind = .corrupt, reason: String) {
        self.path = path
        self.offset = offset
        self.kind = kind
        self.reason = reason
    }

    var inflateError: InflateError {
        switch kind {
        case .corrupt: return .corrupt(path: path, offset: offset, reason: reason)
        case .truncated: return .truncated(path: path, offset: offset, context: "(\(reason))")
        }
    }

    func at(path: String) -> GzipDataError {
        var copy = self
        copy.path = path
        return copy
    }
}

// The gzip member header and trailer (RFC 1952, section 2.3).
//
// One member on disk:
//
//   +---+---+---+---+---+---+---+---+---+---+
//   |ID1|ID2|CM |FLG|     MTIME     |XFL|OS |   10 bytes, always present
//   +---+---+---+---+---+---+---+---+---+---+
//   | XLEN  | XLEN bytes of subfields...    |   if FLG.FEXTRA (0x04)
//   +---+---+---+---+---+---+---+---+---+---+
//   | file name, zero-terminated (Latin-1)  |   if FLG.FNAME (0x08)
//   +---+---+---+---+---+---+---+---+---+---+
//   | comment, zero-terminated (Latin-1)    |   if FLG.FCOMMENT (0x10)
//   +---+---+---+---+---+---+---+---+---+---+
//   | CRC16 |                                   if FLG.FHCRC (0x02): the low 16 bits of
//   +---+---+                                   the CRC-32 of every header byte before it
//   | raw deflate data ...                  |
//   +---+---+---+---+---+---+---+---+
//   |     CRC32     |     ISIZE     |           CRC-32 of the member's output, and its
//   +---+---+---+---+---+---+---+---+           length modulo 2^32, both little-endian
//
// ID1 ID2 are 1f 8b; CM 8 is deflate, the only method defined. FLG bit 0x01 (FTEXT) is a
// hint with no effect on decoding; bits 0x20, 0x40 and 0x80 are reserved and must be zero.
// An FEXTRA subfield is SI1 SI2 LEN(2, little-endian) followed by LEN bytes. BGZF (the
// blocked gzip of htslib and bgzip) puts a subfield `BC` with LEN 2 holding the member's
// total size minus 1 in every member.
//
// The parser reads from a byte buffer and either returns a complete header, returns nil
// when the buffer ends before the header does (the caller reads more and calls again), or
// throws. It trusts no length before checking it against the bytes it has.

import CZlib

/// One FEXTRA subfield of a gzip header.
public struct GzipExtraSubfield: Sendable, Equatable {
    /// The two identifier bytes SI1 and SI2, for example `BC` for BGZF.
    public var identifier: [UInt8]
    public var data: [UInt8]
}

/// A parsed gzip member header.
public struct GzipHeader: Sendable, Equatable {
    public static let magic: [UInt8] = [0x1f, 0x8b]
    public static let deflateMethod: UInt8 = 8
    /// Size of the fixed part: ID1 ID2 CM FLG MTIME(4) XFL OS.
    public static let fixedLength = 10
    /// Size of the member trailer: CRC32 and ISIZE.
    public static let trailerLength = 8

    public static let flagText: UInt8 = 0x01
    public static let flagHeaderCRC: UInt8 = 0x02
    public static let flagExtra: UInt8 = 0x04
    public static let flagName: UInt8 = 0x08
    public static let flagComment: UInt8 = 0x10
    public static let reservedFlags: UInt8 = 0xe0

    /// The FLG byte.
    public var flags: UInt8
    /// MTIME: seconds since the Unix epoch, or 0 when not recorded.
    public var modificationTime: UInt32
    /// XFL: 2 for maximum compression, 4 for fastest, as a hint.
    public var extraFlags: UInt8
    /// OS: the file system the member was made on (3 is Unix, 255 unknown).
    public var operatingSystem: UInt8
    /// The raw FEXTRA field, or nil when FLG.FEXTRA is clear.
    public var extraField: [UInt8]?
    /// The FEXTRA subfields, when the field splits into whole subfields; empty otherwise.
    public var extraSubfields: [GzipExtraSubfield]
    /// FNAME without its terminating zero, as stored (Latin-1).
    public var fileName: [UInt8]?
    /// FCOMMENT without its terminating zero, as stored (Latin-1).
    public var comment: [UInt8]?
    /// Bytes from ID1 up to the first byte of deflate data.
    public var length: Int

    /// True when FLG.FHCRC is set; the header CRC was verified by `parse`.
    public var hasHeaderCRC: Bool { flags & Self.flagHeaderCRC != 0 }

    /// The member's total size in bytes from a BGZF `BC` subfield, or nil when absent.
    public var bgzfMemberSize: Int? {
        guard let block = extraSubfields.first(where: { $0.identifier == [0x42, 0x43] }),
              block.data.count == 2 else { return nil }
        return (Int(block.data[0]) | Int(block.data[1]) << 8) + 1
    }

    /// Parses the header at the start of `bytes`.
    /// - Returns: the header, or nil when `bytes` ends before the header does.
    /// - Throws: `GzipHeaderError` when the bytes are not a valid gzip header; its
    ///   `offset` is relative to the start of `bytes`.
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws(GzipHeaderError) -> GzipHeader? {
        // Check what is there before asking for more, so a non-gzip input fails at once.
        if bytes.count >= 1, bytes[0] != magic[0] || (bytes.count >= 2 && bytes[1] != magic[1]) {
            throw GzipHeaderError(offset: 0, problem: .notGzip(Array(bytes.prefix(2))))
        }
        if bytes.count >= 3, bytes[2] != deflateMethod {
            throw GzipHeaderError(offset: 2, problem: .unsupportedMethod(bytes[2]))
        }
        if bytes.count >= 4, bytes[3] & reservedFlags != 0 {
            throw GzipHeaderError(offset: 3, problem: .reservedFlags(bytes[3]))
        }
        guard bytes.count >= fixedLength else { return nil }

        let flags = bytes[3]
        var header = GzipHeader(
            flags: flags,
            modificationTime: UInt32(bytes[4]) | UInt32(bytes[5]) << 8 | UInt32(bytes[6]) << 16 | UInt32(bytes[7]) << 24,
            extraFlags: bytes[8], operatingSystem: bytes[9],
            extraField: nil, extraSubfields: [], fileName: nil, comment: nil, length: 0)
        var position = fixedLength

        if flags & flagExtra != 0 {
            guard bytes.count >= position + 2 else { return nil }
            let extraLength = Int(bytes[position]) | Int(bytes[position + 1]) << 8
            position += 2
            guard bytes.count >= position + extraLength else { return nil }
            let extra = Array(bytes[position ..< position + extraLength])
            header.extraField = extra
            header.extraSubfields = splitSubfields(extra)
            position += extraLength
        }
        if flags & flagName != 0 {
            guard let end = zeroIndex(in: bytes, from: position) else { return nil }
            header.fileName = Array(bytes[position ..< end])
            position = end + 1
        }
        if flags & flagComment != 0 {
            guard let end = zeroIndex(in: bytes, from: position) else { return nil }
            header.comment = Array(bytes[position ..< end])
            position = end + 1
        }
        if flags & flagHeaderCRC != 0 {
            guard bytes.count >= position + 2 else { return nil }
            let stored = UInt16(bytes[position]) | UInt16(bytes[position + 1]) << 8
            let computed = UInt16(truncatingIfNeeded: crc32(0, bytes.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                                            UInt32(position)))
            if stored != computed {
                throw GzipHeaderError(offset: position, problem: .headerCRCMismatch(stored: stored, computed: computed))
            }
            position += 2
        }
        header.length = position
        return header
    }

    /// Splits FEXTRA into subfields; returns [] when the lengths do not tile the field
    /// exactly, because RFC 1952 decoders must accept any content there.
    private static func splitSubfields(_ extra: [UInt8]) -> [GzipExtraSubfield] {
        var subfields: [GzipExtraSubfield] = []
        var position = 0
        while position < extra.count {
            guard extra.count - position >= 4 else { return [] }
            let length = Int(extra[position + 2]) | Int(extra[position + 3]) << 8
            guard extra.count - position - 4 >= length else { return [] }
            subfields.append(GzipExtraSubfield(identifier: [extra[position], extra[position + 1]],
                                               data: Array(extra[position + 4 ..< position + 4 + length])))
            position += 4 + length
        }
        return subfields
    }

    private static func zeroIndex(in bytes: UnsafeRawBufferPointer, from start: Int) -> Int? {
        var index = start
        while index < bytes.count {
            if bytes[index] == 0 { return index }
            index += 1
        }
        return nil
    }
}

/// The CRC-32 and ISIZE fields that end a gzip member.
public struct GzipTrailer: Sendable, Equatable {
    /// CRC-32 (IEEE 802.3, reflected) of the member's uncompressed data.
    public var crc: UInt32
    /// The member's uncompressed length modulo 2^32.
    public var inputSize: UInt32

    /// Reads the trailer from the first 8 bytes of `bytes`, which must hold them.
    public init(_ bytes: UnsafeRawBufferPointer) {
        precondition(bytes.count >= GzipHeader.trailerLength, "Bug in imgtool: gzip trailer read from \(bytes.count) bytes")
        crc = bytes.loadUnaligned(fromByteOffset: 0, as: UInt32.self).littleEndian
        inputSize = bytes.loadUnaligned(fromByteOffset: 4, as: UInt32.self).littleEndian
    }
}

/// Why bytes are not a valid gzip header, at an offset relative to the header's start.
public struct GzipHeaderError: Error, Sendable, Equatable {
    public enum Problem: Sendable, Equatable {
        /// The first bytes are not 1f 8b; carries the bytes found.
        case notGzip([UInt8])
        /// CM is not 8 (deflate).
        case unsupportedMethod(UInt8)
        /// FLG has one of the reserved bits 0x20, 0x40, 0x80 set.
        case reservedFlags(UInt8)
        /// The FHCRC field does not match the header's bytes.
        case headerCRCMismatch(stored: UInt16, computed: UInt16)
    }

    public var offset: Int
    public var problem: Problem

    /// A sentence for messages, without the file name or offset.
    public var reason: String {
        switch problem {
        case .notGzip(let found):
            return "expected the gzip magic bytes 1f 8b, found \(hexString(found))"
        case .unsupportedMethod(let method):
            return "compression method \(method) is not deflate (8), the only method gzip defines"
        case .reservedFlags(let flags):
            return "header flag byte 0x\(hexByte(flags)) has reserved bits (0x\(hexByte(flags & GzipHeader.reservedFlags))) set"
        case .headerCRCMismatch(let stored, let computed):
            return "header CRC-16 is 0x\(String(stored, radix: 16)) but the header bytes give 0x\(String(computed, radix: 16))"
        }
    }
}

/// `1f 8b 08`-style text for bytes in messages.
func hexString(_ bytes: [UInt8]) -> String {
    bytes.isEmpty ? "no bytes" : bytes.map(hexByte).joined(separator: " ")
}

func hexByte(_ byte: UInt8) -> String {
    byte < 16 ? "0" + String(byte, radix: 16) : String(byte, radix: 16)
}

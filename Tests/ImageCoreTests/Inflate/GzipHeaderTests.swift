// GzipHeader.parse on hand-built headers: every optional field, the header CRC, reserved
// flags, and inputs that end early.

import Foundation
import Testing
import CZlib
@testable import ImageCore

@Suite struct GzipHeaderTests {
    /// A header with the given FLG and optional fields, and a valid CRC-16 when FHCRC is set.
    private func header(flags: UInt8, extra: [UInt8]? = nil, name: String? = nil, comment: String? = nil) -> [UInt8] {
        var bytes: [UInt8] = [0x1f, 0x8b, 8, flags, 0x78, 0x56, 0x34, 0x12, 0, 3]
        if let extra { bytes += [UInt8(extra.count & 0xff), UInt8(extra.count >> 8)] + extra }
        if let name { bytes += Array(name.utf8) + [0] }
        if let comment { bytes += Array(comment.utf8) + [0] }
        if flags & GzipHeader.flagHeaderCRC != 0 {
            let crc = UInt32(crc32(0, bytes, UInt32(bytes.count)))
            bytes += [UInt8(crc & 0xff), UInt8((crc >> 8) & 0xff)]
        }
        return bytes
    }

    private func parse(_ bytes: [UInt8]) throws(GzipHeaderError) -> GzipHeader? {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 1)
        defer { buffer.deallocate() }
        buffer.copyBytes(from: bytes)
        return try GzipHeader.parse(UnsafeRawBufferPointer(buffer))
    }

    @Test func fixedHeaderParses() throws {
        let parsed = try #require(try parse(header(flags: 0)))
        #expect(parsed.length == 10)
        #expect(parsed.modificationTime == 0x1234_5678)
        #expect(parsed.operatingSystem == 3)
    }

    @Test func allOptionalFieldsParse() throws {
        let extra: [UInt8] = [0x41, 0x42, 2, 0, 9, 9]
        let bytes = header(flags: 0x1f, extra: extra, name: "disk.img", comment: "built today")
        let parsed = try #require(try parse(bytes))
        #expect(parsed.length == bytes.count)
        #expect(parsed.extraField == extra)
        #expect(parsed.extraSubfields == [GzipExtraSubfield(identifier: [0x41, 0x42], data: [9, 9])])
        #expect(parsed.fileName == Array("disk.img".utf8))
        #expect(parsed.comment == Array("built today".utf8))
        #expect(parsed.hasHeaderCRC)
    }

    @Test func bgzfSubfieldGivesMemberSize() throws {
        // BSIZE 0x001b is the total member size minus 1: the 28-byte empty BGZF member.
        let parsed = try #require(try parse(header(flags: GzipHeader.flagExtra, extra: [0x42, 0x43, 2, 0, 0x1b, 0])))
        #expect(parsed.bgzfMemberSize == 28)
    }

    @Test func malformedSubfieldsAreKeptRaw() throws {
        // LEN 9 runs past XLEN: RFC 1952 decoders accept any FEXTRA content.
        let extra: [UInt8] = [0x41, 0x42, 9, 0, 1]
        let parsed = try #require(try parse(header(flags: GzipHeader.flagExtra, extra: extra)))
        #expect(parsed.extraField == extra)
        #expect(parsed.extraSubfields.isEmpty)
    }

    @Test func wrongHeaderCRCIsRejected() throws {
        var bytes = header(flags: GzipHeader.flagHeaderCRC | GzipHeader.flagName, name: "x")
        bytes[bytes.count - 1] ^= 0x01
        #expect(throws: GzipHeaderError.self) { _ = try parse(bytes) }
        do {
            _ = try parse(bytes)
        } catch {
            // The CRC-16 field follows the 10 fixed bytes and the 2-byte name field.
            #expect(error.offset == 12)
        }
    }

    @Test(arguments: [UInt8(0x20), 0x40, 0x80])
    func reservedFlagIsRejected(bit: UInt8) throws {
        #expect(throws: GzipHeaderError(offset: 3, problem: .reservedFlags(bit))) { _ = try parse(header(flags: bit)) }
    }

    @Test func otherMethodIsRejected() throws {
        var bytes = header(flags: 0)
        bytes[2] = 7
        #expect(throws: GzipHeaderError(offset: 2, problem: .unsupportedMethod(7))) { _ = try parse(bytes) }
    }

    @Test func everyPrefixNeedsMoreBytes() throws {
        let bytes = header(flags: 0x1e, extra: [1, 2, 3], name: "name", comment: "comment")
        for length in 0..<bytes.count {
            #expect(try parse(Array(bytes.prefix(length))) == nil, "prefix of \(length) bytes")
        }
    }

    @Test func textFlagIsAccepted() throws {
        let parsed = try #require(try parse(header(flags: GzipHeader.flagText)))
        #expect(parsed.flags == GzipHeader.flagText)
    }

    @Test func headerWithAllFieldsInflates() throws {
        // The same deflate data behind a header with every field: the decoder must skip
        // exactly the header's bytes.
        let plain = try gzip("payload")
        let body = Array(plain.dropFirst(10))
        let input = header(flags: 0x1f, extra: [0x42, 0x43, 2, 0, 0, 0], name: "n", comment: "c") + body
        let (output, _) = try inflateInMemory(input)
        #expect(output == Array("payload".utf8))
    }
}

// The inflation cases that real files contain and other decoders got wrong, each with
// its exact expected result, through the file-to-file entry point.

import Foundation
import Testing
@testable import ImageCore

@Suite struct DecompressCasesTests {
    /// Inflates `input` from a file into a new RAW file; returns the RAW path and summary.
    private func inflate(_ input: [UInt8], in scratch: ScratchDirectory,
                         engine: DeflateEngine = .isal) throws -> (raw: String, summary: DecompressSummary) {
        let source = scratch.file("input")
        let raw = scratch.file("disk.raw")
        try writeFile(source, input)
        let summary = try Decompressor.decompress(source: source, destination: raw,
                                                  options: DecompressOptions(engine: engine))
        return (raw, summary)
    }

    @Test(arguments: DeflateEngine.allCases)
    func twoMembersGiveBothOutputs(engine: DeflateEngine) throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let (raw, summary) = try inflate(try gzip("foo") + gzip("bar"), in: scratch, engine: engine)
        #expect(try readFile(raw) == Array("foobar".utf8))
        #expect(summary.members == 2)
    }

    @Test(arguments: DeflateEngine.allCases)
    func emptyMemberThenHello(engine: DeflateEngine) throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let input = bytes(hex: """
            1f8b 0800 0000 0000 02ff 0300 0000 0000 0000 0000
            1f8b 0800 0000 0000 02ff cb48 cdc9 c907 0086 a610 3605 0000 00
            """)
        #expect(input.count == 45)
        let (raw, summary) = try inflate(input, in: scratch, engine: engine)
        #expect(try readFile(raw) == Array("hello".utf8))
        #expect(summary.members == 2)
        #expect(summary.warnings.isEmpty)
    }

    @Test func emptyMembersInMiddleAndAtEnd() throws {
        let input = try gzip("ab") + emptyGzipMember + gzip("cd") + emptyGzipMember
        let (output, summary) = try inflateInMemory(input)
        #expect(output == Array("abcd".utf8))
        #expect(summary.members == 4)
    }

    @Test func trailingZeroPaddingIsAccepted() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let (raw, summary) = try inflate(try gzip("abc") + [UInt8](repeating: 0, count: 10), in: scratch)
        #expect(try readFile(raw) == Array("abc".utf8))
        #expect(summary.warnings.isEmpty)
    }

    @Test func trailingGarbageIsWarning() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let member = try gzip("abc")
        let (raw, summary) = try inflate(member + Array("\n \n\n\n\n \n".utf8), in: scratch)
        #expect(try readFile(raw) == Array("abc".utf8))
        #expect(summary.warnings.count == 1)
        // The 8 trailing bytes start right after the 23-byte member.
        #expect(summary.warnings.first?.contains("8 bytes of trailing data at offset \(member.count)") == true)
    }

    @Test func bgzipFileGivesAllLines() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let input = try compress(Array((1...10).map { "\($0)\n" }.joined().utf8), with: "bgzip -c")
        // bgzip ends every file with its 28-byte empty member.
        #expect(Array(input.suffix(28)) == bytes(hex: """
            1f8b 0804 0000 0000 00ff 0600 4243 0200 1b00 0300 0000 0000 0000 0000
            """))
        let (raw, summary) = try inflate(input, in: scratch)
        #expect(try String(contentsOfFile: raw, encoding: .utf8) == "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n")
        #expect(summary.members == 2)
    }

    @Test func emptyInputGivesEmptyFile() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let (raw, summary) = try inflate(try gzip(""), in: scratch)
        #expect(fileSize(raw) == 0)
        #expect(summary.bytesWritten == 0)
    }

    @Test func xzEmptyStreamAfterStream() throws {
        let emptyStream = bytes(hex: """
            fd37 7a58 5a00 0004 e6d6 b446 0000 0000 1cdf 4421 1fb6 f37d 0100 0000 0004 595a
            """)
        #expect(emptyStream.count == 32)
        let first = try compress(Array("payload".utf8), with: "xz -c")
        let (output, summary) = try inflateInMemory(first + emptyStream)
        #expect(output == Array("payload".utf8))
        #expect(summary.format == .xz)
    }

    @Test func xzFourPaddingBytesAccepted() throws {
        let stream = try compress(Array("payload".utf8), with: "xz -c")
        let (output, _) = try inflateInMemory(stream + [0, 0, 0, 0])
        #expect(output == Array("payload".utf8))
    }

    @Test func xzFivePaddingBytesRejected() throws {
        let stream = try compress(Array("payload".utf8), with: "xz -c")
        #expect(throws: InflateError.self) { _ = try inflateInMemory(stream + [0, 0, 0, 0, 0]) }
    }

    @Test func xzTrailingGarbageRejected() throws {
        // Unlike gzip, xz defines no trailing data: xz(1) rejects it, and so does imgtool.
        let stream = try compress(Array("payload".utf8), with: "xz -c")
        #expect(throws: InflateError.self) { _ = try inflateInMemory(stream + Array("garbage!".utf8)) }
    }

    @Test func xzFewBytesAfterStreamNamed() throws {
        // Fewer than 12 bytes after a stream look to liblzma like a cut stream header.
        let stream = try compress(Array("payload".utf8), with: "xz -c")
        for extra in [[UInt8(0x0a)], Array("garbage!".utf8), [0x41, 0, 0, 0], Array(repeating: 0x41, count: 11)] {
            let error = #expect(throws: InflateError.self) { _ = try inflateInMemory(stream + extra) }
            guard case .corrupt(_, let offset, let reason)? = error else {
                Issue.record("\(extra.count) bytes after the stream gave \(String(describing: error))")
                continue
            }
            #expect(offset == Int64(stream.count))
            #expect(reason.contains(extra.count == 1 ? "(1 byte) are too few" : "(\(extra.count) bytes) are too few"))
            #expect(reason.contains("cut it to \(stream.count) bytes"))
        }
    }

    @Test func xzStrayBytesFormingFooterNamed() throws {
        // With the "YZ" that ends every footer, the first 10 of these 11 bytes form a
        // second valid footer: its CRC-32 over the next six bytes matches, its flags byte
        // is 0 and it ends in "YZ". The offset must still be the end of the real stream.
        let stray: [UInt8] = [0x1F, 0x1D, 0x8B, 0x5A, 0x02, 0x00, 0x00, 0x00, 0x59, 0x5A, 0x51]
        let stream = try compress(Array("payload".utf8), with: "xz -c")
        let error = #expect(throws: InflateError.self) { _ = try inflateInMemory(stream + stray) }
        guard case .corrupt(_, let offset, let reason)? = error else {
            Issue.record("stray bytes gave \(String(describing: error))")
            return
        }
        #expect(offset == Int64(stream.count))
        #expect(reason.contains("(11 bytes) are too few"))
        #expect(reason.contains("cut it to \(stream.count) bytes"))
    }

    @Test func xzManyStrayBytesNamed() throws {
        // Twelve or more bytes are read as a stream header, which they are not.
        let stream = try compress(Array("payload".utf8), with: "xz -c")
        for (padding, stray) in [(0, 12), (0, 40), (4, 20), (8, 12)] {
            let input = stream + Array(repeating: 0, count: padding) + Array(repeating: 0x41, count: stray)
            let error = #expect(throws: InflateError.self) { _ = try inflateInMemory(input) }
            guard case .corrupt(_, let offset, let reason)? = error else {
                Issue.record("\(padding) padding and \(stray) stray bytes gave \(String(describing: error))")
                continue
            }
            #expect(offset == Int64(stream.count + padding))
            #expect(reason.contains("do not start an xz stream"))
            #expect(reason.contains("cut it to \(stream.count) bytes"))
        }
    }

    @Test func xzZerosOutsidePaddingGroupNamed() throws {
        // Zero bytes that do not fill a group of four are stray bytes too, alone or before
        // other bytes: liblzma fails on the first byte after them.
        let stream = try compress(Array("payload".utf8), with: "xz -c")
        for (zeros, stray) in [(1, 0), (3, 0), (5, 0), (7, 0), (1, 1), (2, 5), (3, 12), (6, 20), (41, 8)] {
            let input = stream + Array(repeating: 0, count: zeros) + Array(repeating: 0x41, count: stray)
            let error = #expect(throws: InflateError.self) { _ = try inflateInMemory(input) }
            guard case .corrupt(_, let offset, let reason)? = error else {
                Issue.record("\(zeros) zero and \(stray) stray bytes gave \(String(describing: error))")
                continue
            }
            #expect(offset == Int64(stream.count + zeros / 4 * 4), "\(zeros) zero and \(stray) stray bytes")
            #expect(reason.contains("fewer than the four of a padding group"), "\(zeros) zero and \(stray) stray bytes")
            #expect(reason.contains("cut it to \(stream.count) bytes"), "\(zeros) zero and \(stray) stray bytes")
        }
    }

    @Test func xzStrayBytesAfterLongPaddingNamed() throws {
        // Padding may be longer than a footer and a header together.
        let stream = try compress(Array("payload".utf8), with: "xz -c")
        let twoStreams = stream + stream
        for (first, padding, stray) in [(stream, 48, 5), (stream, 1000, 12), (stream, 4096, 3), (twoStreams, 0, 7)] {
            let input = first + Array(repeating: 0, count: padding) + Array(repeating: 0x41, count: stray)
            let error = #expect(throws: InflateError.self) { _ = try inflateInMemory(input) }
            guard case .corrupt(_, let offset, let reason)? = error else {
                Issue.record("\(padding) padding and \(stray) stray bytes gave \(String(describing: error))")
                continue
            }
            #expect(offset == Int64(first.count + padding))
            #expect(reason.contains("cut it to \(first.count) bytes"))
        }
    }

    @Test func xzStrayBytesAfterVeryLongPaddingNamed() throws {
        // The padding run is counted across reads of any size, however long it is.
        let stream = try compress(Array("payload".utf8), with: "xz -c")
        let cases: [(padding: Int, stray: Int, pieceSize: Int, problem: String)] = [
            (4100, 5, 1 << 20, "(5 bytes) are too few"),
            (4100, 12, 7, "do not start an xz stream"),
            (40, 11, 1, "(11 bytes) are too few"),
            (100_000, 1, 4096, "(1 byte) are too few"),
            (100_000, 12, 1 << 20, "do not start an xz stream"),
            (3 << 20, 40, 1 << 20, "do not start an xz stream"),
        ]
        for (padding, stray, pieceSize, problem) in cases {
            let label = "\(padding) padding and \(stray) stray bytes in pieces of \(pieceSize)"
            let input = stream + Array(repeating: 0, count: padding) + Array(repeating: 0x41, count: stray)
            let error = #expect(throws: InflateError.self) { _ = try inflateInMemory(input, pieceSize: pieceSize) }
            guard case .corrupt(_, let offset, let reason)? = error else {
                Issue.record("\(label) gave \(String(describing: error))")
                continue
            }
            #expect(offset == Int64(stream.count + padding), "\(label)")
            #expect(reason.contains(problem), "\(label)")
            #expect(reason.contains("cut it to \(stream.count) bytes"), "\(label)")
        }
    }

    @Test func xzZerosAfterVeryLongPaddingNamed() throws {
        // 1 to 3 zero bytes past the last full group, alone or before another byte.
        let stream = try compress(Array("payload".utf8), with: "xz -c")
        for (zeros, stray, pieceSize) in [(4097, 0, 1 << 20), (4099, 1, 1000), (100_002, 0, 4096), (100_003, 1, 1 << 20)] {
            let label = "\(zeros) zero and \(stray) stray bytes in pieces of \(pieceSize)"
            let input = stream + Array(repeating: 0, count: zeros) + Array(repeating: 0x41, count: stray)
            let error = #expect(throws: InflateError.self) { _ = try inflateInMemory(input, pieceSize: pieceSize) }
            guard case .corrupt(_, let offset, let reason)? = error else {
                Issue.record("\(label) gave \(String(describing: error))")
                continue
            }
            #expect(offset == Int64(stream.count + zeros / 4 * 4), "\(label)")
            #expect(reason.contains("fewer than the four of a padding group"), "\(label)")
            #expect(reason.contains("cut it to \(stream.count) bytes"), "\(label)")
        }
    }

    @Test func xzVeryLongPaddingThenStreamDecodes() throws {
        let stream = try compress(Array("payload".utf8), with: "xz -c")
        let input = stream + Array(repeating: 0, count: 100_000) + stream
        let (output, _) = try inflateInMemory(input, pieceSize: 4096)
        #expect(output == Array("payloadpayload".utf8))
    }

    @Test func xzDamagedNextHeaderNotStray() throws {
        // A second stream whose header is damaged after its magic bytes is damage, not
        // bytes to cut off.
        let stream = try compress(Array("payload".utf8), with: "xz -c")
        var second = stream
        second[7] ^= 0xFF
        let error = #expect(throws: InflateError.self) { _ = try inflateInMemory(stream + second) }
        guard case .corrupt(_, _, let reason)? = error else {
            Issue.record("a damaged second header gave \(String(describing: error))")
            return
        }
        #expect(!reason.contains("cut it to"))
    }

    @Test func xzPaddingThenCutHeaderTruncated() throws {
        // Stream padding may sit between two streams, so a second stream cut inside its
        // header after the padding is a truncated file, not bytes to cut off.
        let stream = try compress(Array("payload".utf8), with: "xz -c")
        for (padding, headerBytes) in [(4, 3), (4, 6), (4, 7), (8, 2)] {
            let input = stream + Array(repeating: 0, count: padding) + stream.prefix(headerBytes)
            let error = #expect(throws: InflateError.self) { _ = try inflateInMemory(input) }
            guard case .truncated? = error else {
                Issue.record("\(padding) padding and \(headerBytes) header bytes gave \(String(describing: error))")
                continue
            }
        }
    }

    @Test func xzCutStreamStillTruncated() throws {
        let stream = try compress(Array("payload".utf8), with: "xz -c")
        // Cut inside the stream, or inside the header of a second stream.
        for input in [stream.dropLast(1), stream.dropLast(5), stream.dropLast(13), stream + stream.prefix(4)] {
            let error = #expect(throws: InflateError.self) { _ = try inflateInMemory(Array(input)) }
            guard case .truncated? = error else {
                Issue.record("\(input.count) bytes gave \(String(describing: error))")
                continue
            }
        }
    }

    @Test(.enabled(if: ProcessInfo.processInfo.environment["IMGTOOL_LARGE_TESTS"] == "1"))
    func zerosPast4GiBKeepTheirSize() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let size: Int64 = 4_294_967_301
        let source = scratch.file("zeros.gz")
        try shell("head -c \(size) /dev/zero | gzip -1 -c > '\(source)'")
        // ISIZE is the length modulo 2^32: 4,294,967,301 - 4,294,967,296 = 5.
        let trailer = Array(try readFile(source).suffix(4))
        #expect(trailer == [5, 0, 0, 0])
        let raw = scratch.file("disk.raw")
        let summary = try Decompressor.decompress(source: source, destination: raw, options: DecompressOptions())
        #expect(fileSize(raw) == size)
        #expect(summary.bytesWritten == size)
        // All zeros: nothing but metadata should be allocated.
        #expect(allocatedBytes(raw) < 1 << 20)
    }

    @Test func reservedFlagBitsRejected() throws {
        for bit: UInt8 in [0x20, 0x40, 0x80] {
            var input = try gzip("abc")
            input[3] |= bit
            #expect(throws: InflateError.self) { _ = try inflateInMemory(input) }
            do {
                _ = try inflateInMemory(input)
            } catch let error as InflateError {
                #expect(error.description.contains("reserved bits"))
            }
        }
    }

    @Test func dataZerosDataIsSparse() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let payload = [UInt8](repeating: 0xaa, count: 4096) + [UInt8](repeating: 0, count: 1 << 20)
            + [UInt8](repeating: 0xbb, count: 4096)
        let (raw, _) = try inflate(try compress(payload, with: "gzip -c"), in: scratch)
        expectEqualBytes(try readFile(raw), payload)
        // Two 4 KiB data blocks; a filesystem with larger blocks may round up once each.
        #expect(allocatedBytes(raw) >= 8192)
        #expect(allocatedBytes(raw) <= 2 * 65536)
    }

    @Test func trailingZerosKeepFullLength() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let payload = [UInt8](repeating: 0x5a, count: 1 << 20) + [UInt8](repeating: 0, count: 1 << 20)
        let (raw, _) = try inflate(try compress(payload, with: "gzip -c"), in: scratch)
        #expect(fileSize(raw) == 2 << 20)
        expectEqualBytes(try readFile(raw), payload)
    }

    @Test func seekIndexOptionsRejectXz() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let source = scratch.file("input.xz")
        try writeFile(source, try compress(Array("abc".utf8), with: "xz -c"))
        let index = scratch.file("input.gzidx")
        // --index-out used to decode the xz file and leave no index, with success.
        #expect(throws: InvalidArgumentError.self) {
            _ = try Decompressor.decompress(source: source, destination: scratch.file("one.raw"),
                                            options: DecompressOptions(indexOutput: index))
        }
        var options = DecompressOptions(index: GzipIndex(compressedSize: 0, uncompressedSize: 0, spacing: 65536, points: []))
        options.indexPath = index
        #expect(throws: InvalidArgumentError.self) {
            _ = try Decompressor.decompress(source: source, destination: scratch.file("two.raw"), options: options)
        }
        #expect(try directoryNames(scratch.path) == ["input.xz"])
    }

    @Test func existingTargetIsUnchanged() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let source = scratch.file("input.gz")
        let raw = scratch.file("disk.raw")
        try writeFile(source, try compress([UInt8](repeating: 0, count: 65536), with: "gzip -c"))
        let original = [UInt8](repeating: 0xff, count: 65536)
        try writeFile(raw, original)
        #expect(throws: TargetExistsError.self) {
            _ = try Decompressor.decompress(source: source, destination: raw, options: DecompressOptions())
        }
        expectEqualBytes(try readFile(raw), original)
        #expect(try directoryNames(scratch.path) == ["disk.raw", "input.gz"])
    }

    @Test func existingSymbolicLinkIsRejected() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let source = scratch.file("input.gz")
        try writeFile(source, try gzip("abc"))
        try FileManager.default.createSymbolicLink(atPath: scratch.file("link.raw"), withDestinationPath: scratch.file("missing"))
        #expect(throws: TargetExistsError.self) {
            _ = try Decompressor.decompress(source: source, destination: scratch.file("link.raw"), options: DecompressOptions())
        }
        #expect(!pathExists(scratch.file("missing")))
    }

    @Test func unknownFormatNamesWhatWasFound() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let source = scratch.file("image.gz")
        try writeFile(source, Array("BZh91AY&SY".utf8))
        do {
            _ = try Decompressor.decompress(source: source, destination: scratch.file("disk.raw"), options: DecompressOptions())
            Issue.record("bzip2 data was accepted")
        } catch let error as InflateError {
            #expect(error.description.contains("bzip2"))
            #expect(error.category == .invalidData)
        }
        #expect(try directoryNames(scratch.path) == ["image.gz"])
    }

    @Test func directorySourceIsRejected() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        #expect(throws: InvalidArgumentError.self) {
            _ = try Decompressor.decompress(source: scratch.path, destination: scratch.file("disk.raw"), options: DecompressOptions())
        }
        #expect(try directoryNames(scratch.path) == [])
    }

    @Test func missingTargetDirectoryNamesPath() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let source = scratch.file("input.gz")
        try writeFile(source, try gzip("abc"))
        do {
            _ = try Decompressor.decompress(source: source, destination: scratch.file("missing/disk.raw"), options: DecompressOptions())
            Issue.record("a target in a missing directory was accepted")
        } catch let error as SystemError {
            #expect(error.path == scratch.file("missing"))
            #expect(error.errno == .noEntry)
            #expect(error.remedy != nil)
        }
    }

    @Test func emptySourceIsRejected() throws {
        #expect(throws: InflateError.unsupportedFormat(path: "memory.gz", found: "the file is empty")) {
            _ = try inflateInMemory([])
        }
    }

    @Test func corruptChecksumNamesMember() throws {
        let first = try gzip("first")
        var second = try gzip("second")
        second[second.count - 8] ^= 0xff
        #expect(throws: InflateError.self) { _ = try inflateInMemory(first + second) }
        do {
            _ = try inflateInMemory(first + second)
        } catch let error as InflateError {
            guard case .checksumMismatch(_, let memberOffset, _, _) = error else {
                Issue.record("expected a checksum mismatch, got \(error)")
                return
            }
            #expect(memberOffset == Int64(first.count))
        }
    }

    @Test func wrongSizeIsRejected() throws {
        var input = try gzip("abc")
        input[input.count - 4] = 4
        #expect(throws: InflateError.sizeMismatch(path: "memory.gz", memberOffset: 0, stored: 4, computed: 3)) {
            _ = try inflateInMemory(input)
        }
    }
}

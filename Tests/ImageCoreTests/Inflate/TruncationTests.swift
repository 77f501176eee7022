// Every proper prefix of a valid compressed file is an error, never a short success, and
// the file-to-file entry point leaves no RAW file behind.

import Foundation
import Testing
@testable import ImageCore

@Suite struct TruncationTests {
    /// Asserts that decoding `prefix` throws `InflateError.truncated` or `.corrupt` (a cut
    /// inside a deflate block can make the remaining bits decode as an invalid code).
    private func expectRejected(_ prefix: [UInt8], engine: DeflateEngine, pieceSize: Int = 1 << 20,
                                sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            let (output, _) = try inflateInMemory(prefix, engine: engine, pieceSize: pieceSize)
            Issue.record("a \(prefix.count)-byte prefix was accepted with \(output.count) output bytes",
                         sourceLocation: sourceLocation)
        } catch let error as InflateError {
            switch error {
            case .truncated, .corrupt, .unsupportedFormat: break
            default: Issue.record("a \(prefix.count)-byte prefix gave \(error)", sourceLocation: sourceLocation)
            }
        } catch {
            Issue.record("a \(prefix.count)-byte prefix threw \(error)", sourceLocation: sourceLocation)
        }
    }

    @Test(arguments: DeflateEngine.allCases)
    func everyPrefixOfSmallGzipFails(engine: DeflateEngine) throws {
        let input = try gzip("abc") + gzip("hello, hello, hello")
        for length in 1..<input.count where length != 23 {
            expectRejected(Array(input.prefix(length)), engine: engine)
        }
    }

    @Test func prefixAtMemberBoundarySucceeds() throws {
        // A cut exactly between two members leaves a valid file holding the first member.
        let first = try gzip("abc")
        let (output, _) = try inflateInMemory(first)
        #expect(output == Array("abc".utf8))
    }

    @Test(arguments: DeflateEngine.allCases)
    func prefixesOfMultiBlockGzipFail(engine: DeflateEngine) throws {
        // About 600 KiB of mixed data gives several deflate blocks, so cuts land inside
        // blocks, between them, before the final one and inside the trailer.
        let input = try compress(mixedPayload(seed: 7, size: 600_000), with: "gzip -6 -c")
        var cuts = Array(stride(from: 1, to: input.count, by: max(1, input.count / 150)))
        cuts += (1...8).map { input.count - $0 }
        for length in cuts {
            expectRejected(Array(input.prefix(length)), engine: engine, pieceSize: 4099)
        }
    }

    @Test func everyPrefixOfXzFails() throws {
        let input = try compress(mixedPayload(seed: 8, size: 20_000), with: "xz -T2 -c")
        for length in stride(from: 1, to: input.count, by: max(1, input.count / 300)) {
            expectRejected(Array(input.prefix(length)), engine: .isal)
        }
        expectRejected(Array(input.dropLast()), engine: .isal)
    }

    @Test func truncationReportsEndOffset() throws {
        let input = try gzip("some text to compress")
        let prefix = Array(input.dropLast(3))
        #expect(throws: InflateError.truncated(
            path: "memory.gz", offset: Int64(prefix.count),
            context: "inside the 8-byte trailer of the gzip member at offset 0")) {
            _ = try inflateInMemory(prefix)
        }
    }

    @Test(arguments: [1, 2, 3])
    func truncatedFileLeavesNoRaw(threads: Int) throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let payload = mixedPayload(seed: 9, size: 300_000)
        for compressor in ["gzip -c", "xz -T2 -c"] {
            let input = try compress(payload, with: compressor)
            for length in [10, input.count / 2, input.count - 5] {
                let source = scratch.file("cut")
                try writeFile(source, Array(input.prefix(length)))
                #expect(throws: InflateError.self, "\(compressor) cut to \(length) bytes") {
                    _ = try Decompressor.decompress(source: source, destination: scratch.file("disk.raw"),
                                                    options: DecompressOptions(threads: threads))
                }
                #expect(try directoryNames(scratch.path) == ["cut"], "\(compressor) cut to \(length) bytes")
            }
        }
    }
}

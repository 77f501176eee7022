import Foundation
import Testing
@testable import ImageCore

/// The thread counts every correctness check runs at.
private let threadCounts = [1, 2, 3, 4, 8]

/// A real gzip member holding `text`, made by `gzip -n`.
private func gzipMember(_ text: String) throws -> [UInt8] {
    [UInt8](try runProcess("gzip", ["-n", "-c"], input: Data(text.utf8)).standardOutput)
}

@Suite("Parallel gzip inflation")
struct ParallelInflateTests {
    /// Decodes `compressed` at every thread count and returns the outputs.
    private func decodeAtEveryThreadCount(_ compressed: [UInt8], name: String, minimumChunkInput: Int = 64) throws
        -> [(Int, Result<[UInt8], any Error>)] {
        let scratch = try ScratchDirectory(name)
        defer { scratch.remove() }
        let path = scratch.file(name + ".gz")
        try writeFile(path, compressed)
        return threadCounts.map { threads in
            (threads, Result { try parallelOutput(path, threads: threads, minimumChunkInput: minimumChunkInput).0 })
        }
    }

    @Test("two members give both payloads")
    func twoMembers() throws {
        let input = try gzipMember("foo") + gzipMember("bar")
        for (threads, result) in try decodeAtEveryThreadCount(input, name: "two") {
            #expect(try result.get() == Array("foobar".utf8), "threads \(threads)")
        }
    }

    @Test("empty member then hello")
    func emptyMemberFirst() throws {
        let input = bytes(hex: """
            1f8b 0800 0000 0000 02ff 0300 0000 0000 0000 0000
            1f8b 0800 0000 0000 02ff cb48 cdc9 c907 0086 a610 3605 0000 00
            """)
        #expect(input.count == 45)
        for (threads, result) in try decodeAtEveryThreadCount(input, name: "empty") {
            #expect(try result.get() == Array("hello".utf8), "threads \(threads)")
        }
    }

    @Test("zero padding after the last member")
    func zeroPadding() throws {
        let input = try gzipMember("abc") + [UInt8](repeating: 0, count: 10)
        for (threads, result) in try decodeAtEveryThreadCount(input, name: "padding") {
            #expect(try result.get() == Array("abc".utf8), "threads \(threads)")
        }
    }

    @Test("trailing text is ignored")
    func trailingText() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let path = scratch.file("trailing.gz")
        try writeFile(path, try gzipMember("abc") + Array("\n \n\n\n\n \n".utf8))
        for threads in threadCounts {
            let (output, result) = try parallelOutput(path, threads: threads, minimumChunkInput: 64)
            #expect(output == Array("abc".utf8), "threads \(threads)")
            // "\n \n\n\n\n \n" is 8 bytes.
            #expect(result.trailingGarbage == 8, "threads \(threads)")
        }
    }

    @Test("BGZF members decode in parallel")
    func bgzf() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let small = try compressFile(Array((1...10).map { "\($0)\n" }.joined().utf8), with: "bgzip -c", in: scratch, name: "seq")
        for threads in threadCounts {
            #expect(try parallelOutput(small, threads: threads).0 == Array("1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n".utf8))
        }
        // bgzip writes members of at most 64 KiB of input: 3 MiB gives about 50 members,
        // which 64 KiB chunks of compressed input spread over several workers.
        let payload = compressibleBytes(3 << 20)
        let large = try compressFile(payload, with: "bgzip -c", in: scratch, name: "large")
        for threads in threadCounts {
            let (output, result) = try parallelOutput(large, threads: threads, minimumChunkInput: 64 << 10)
            expectEqualBytes(output, payload, "threads \(threads)")
            #expect(result.strategy == .bgzfMembers)
            #expect(result.chunks > 1)
        }
    }

    @Test("empty input gives empty output")
    func emptyPayload() throws {
        for (threads, result) in try decodeAtEveryThreadCount(try gzipMember(""), name: "nothing") {
            #expect(try result.get().isEmpty, "threads \(threads)")
        }
    }

    @Test("reserved flag bits are rejected")
    func reservedFlags() throws {
        for flag: UInt8 in [0x20, 0x40, 0x80] {
            var input = try gzipMember("abc")
            input[3] |= flag
            for (threads, result) in try decodeAtEveryThreadCount(input, name: "flags") {
                #expect(throws: InflateError.self, "threads \(threads)") { try result.get() }
            }
        }
    }

    @Test("every truncation fails")
    func truncations() throws {
        // Two members, so cuts fall inside the first member, between the members' bytes,
        // inside the second header, its deflate data and its trailer.
        let input = try gzipMember(String(repeating: "truncate me ", count: 40)) + gzipMember("second member")
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let firstLength = try gzipMember(String(repeating: "truncate me ", count: 40)).count
        for length in 1..<input.count where length != firstLength {
            let path = scratch.file("cut-\(length).gz")
            try writeFile(path, Array(input[0..<length]))
            for threads in threadCounts {
                #expect(throws: InflateError.self, "length \(length), threads \(threads)") {
                    try parallelOutput(path, threads: threads, minimumChunkInput: 16)
                }
            }
        }
    }

    @Test("truncation names the end offset")
    func truncationEndOffset() throws {
        // Cuts inside the second member's header and inside each member's trailer: the
        // error gives the file's end as its offset, as the sequential decoder's does.
        let first = try gzipMember(String(repeating: "truncate me ", count: 40))
        let input = try first + gzipMember("second member")
        let cuts = [first.count - 5, first.count - 1, first.count + 1, first.count + 6, input.count - 3]
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        for length in cuts {
            let path = scratch.file("cut-\(length).gz")
            try writeFile(path, Array(input[0..<length]))
            for threads in threadCounts {
                do {
                    _ = try parallelOutput(path, threads: threads, minimumChunkInput: 16)
                    Issue.record("length \(length), threads \(threads): accepted")
                } catch InflateError.truncated(_, let offset, _) {
                    #expect(offset == Int64(length), "length \(length), threads \(threads)")
                } catch {
                    Issue.record("length \(length), threads \(threads): \(error)")
                }
            }
        }
    }

    @Test("round trips through real compressors")
    func roundTrips() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let payloads: [(String, [UInt8])] = [
            ("text", compressibleBytes(512 << 10)),
            ("random", randomBytes(256 << 10)),
            ("zeros", [UInt8](repeating: 0, count: 2 << 20)),
            ("mixed", [UInt8](repeating: 0xaa, count: 4096) + [UInt8](repeating: 0, count: 1 << 20)
                + [UInt8](repeating: 0xbb, count: 4096)),
        ]
        let compressors = ["gzip -6", "gzip -1", "gzip -9", "pigz -p 2", "pigz -i -p 2", "bgzip -c", "igzip -0 -c", "igzip -3 -c"]
        for (name, payload) in payloads {
            for compressor in compressors {
                let path = try compressFile(payload, with: compressor, in: scratch, name: name)
                expectEqualBytes(try referenceOutput(path), payload, "\(compressor) \(name)")
                for threads in threadCounts {
                    let output = try parallelOutput(path, threads: threads, minimumChunkInput: 16 << 10).0
                    expectEqualBytes(output, payload, "\(compressor) \(name) threads \(threads)")
                }
            }
        }
    }

    @Test("fixed-Huffman and stored blocks")
    func fixedAndStoredBlocks() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let payload = compressibleBytes(300 << 10) + randomBytes(100 << 10)
        // Python's zlib with Z_FIXED writes only fixed-Huffman blocks; level 0 only
        // stored blocks (wbits 31 selects the gzip wrapper).
        for (name, arguments) in [("fixed", "9, 8, 31, 9, zlib.Z_FIXED"), ("stored", "0, 8, 31")] {
            let plain = scratch.file(name + ".raw")
            let path = scratch.file(name + ".gz")
            try writeFile(plain, payload)
            let script = "import zlib,sys; c=zlib.compressobj(\(arguments)); d=open(sys.argv[1],'rb').read(); "
                + "open(sys.argv[2],'wb').write(c.compress(d)+c.flush())"
            #expect(try runProcess("python3", ["-c", script, plain, path]).status == 0)
            expectEqualBytes(try referenceOutput(path), payload, "\(name)")
            for threads in threadCounts {
                expectEqualBytes(try parallelOutput(path, threads: threads).0, payload, "\(name) threads \(threads)")
                let index = try GzipIndexBuilder.build(path: path, spacing: 65536)
                expectEqualBytes(try parallelOutput(path, threads: threads, index: index).0, payload, "\(name) indexed, threads \(threads)")
            }
        }
    }

    @Test("runs of tiny members")
    func tinyMembers() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        var input: [UInt8] = []
        var expected: [UInt8] = []
        for number in 0..<300 {
            let text = "member \(number)\n"
            input += try gzipMember(text)
            expected += Array(text.utf8)
        }
        let path = scratch.file("tiny.gz")
        try writeFile(path, input)
        for threads in threadCounts {
            let (output, result) = try parallelOutput(path, threads: threads, minimumChunkInput: 256)
            expectEqualBytes(output, expected, "threads \(threads)")
            #expect(result.members == 300, "threads \(threads)")
        }
    }

    @Test("indexed decoding at every thread count")
    func indexed() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let payload = compressibleBytes(2 << 20) + [UInt8](repeating: 0, count: 2 << 20) + randomBytes(512 << 10)
        for compressor in ["gzip -6", "igzip -0 -c", "pigz -p 2"] {
            let path = try compressFile(payload, with: compressor, in: scratch, name: "indexed")
            let index = try GzipIndexBuilder.build(path: path, spacing: 128 << 10)
            for threads in threadCounts {
                let (output, result) = try parallelOutput(path, threads: threads, index: index)
                expectEqualBytes(output, payload, "\(compressor) threads \(threads)")
                #expect(result.chunks == index.points.count - 1, "\(compressor) threads \(threads)")
            }
        }
    }

    @Test("index of another file is rejected")
    func mismatchedIndex() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let first = try compressFile(compressibleBytes(1 << 20), with: "gzip -6", in: scratch, name: "first")
        let second = try compressFile(compressibleBytes(1 << 20, seed: 99), with: "gzip -6", in: scratch, name: "second")
        var index = try GzipIndexBuilder.build(path: first, spacing: 65536)
        index.compressedSize = fileSize(second)
        #expect(throws: (any Error).self) { try parallelOutput(second, threads: 2, index: index) }
    }

    @Test("CRC mismatch is reported")
    func crcMismatch() throws {
        var input = try gzipMember("checksum")
        input[input.count - 8] ^= 1
        for (threads, result) in try decodeAtEveryThreadCount(input, name: "crc") {
            #expect(throws: InflateError.self, "threads \(threads)") { try result.get() }
        }
    }
}

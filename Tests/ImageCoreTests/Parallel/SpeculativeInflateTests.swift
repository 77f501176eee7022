import CZlib
import Foundation
import Testing
@testable import ImageCore

@Suite("Speculative single-stream inflation")
struct SpeculativeInflateTests {
    /// Ranges of 16 KiB make a few hundred KiB of compressed data span many chunks, so
    /// the block finder, marker mode and the writer's checks all run.
    private let rangeSize = 16 << 10

    @Test("block finder stress on random, text and zeros")
    func blockFinderStress() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let payloads: [(String, [UInt8])] = [
            ("random", randomBytes(256 << 10)),
            ("text", compressibleBytes(512 << 10)),
            // gzip -6 compresses 8 MiB of zeros to about 8 KiB, so 4 KiB ranges split it.
            ("zeros", [UInt8](repeating: 0, count: 8 << 20)),
            ("mixed", compressibleBytes(256 << 10) + [UInt8](repeating: 0, count: 2 << 20) + randomBytes(128 << 10)
                + compressibleBytes(256 << 10, seed: 3)),
        ]
        for (name, payload) in payloads {
            for level in ["-1", "-6", "-9"] {
                let path = try compressFile(payload, with: "gzip \(level)", in: scratch, name: name)
                let ranges = name == "zeros" ? 4096 : rangeSize
                for threads in [2, 3, 4, 8] {
                    let (output, result) = try parallelOutput(path, threads: threads, minimumChunkInput: ranges)
                    expectEqualBytes(output, payload, "\(name) gzip \(level) threads \(threads)")
                    // Without a block start near the second range's start, one chunk is decoded.
                    if fileSize(path) > Int64(ranges) {
                        #expect([.speculative, .singleChunk].contains(result.strategy),
                                "\(name) gzip \(level) threads \(threads)")
                    }
                }
            }
        }
    }

    @Test("block finder returns every dynamic block boundary")
    func finderFindsBoundaries() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        // Letters drawn at random compress about 1.7:1, so 1 MiB gives a dozen blocks.
        let letters = randomBytes(1 << 20).map { 97 + $0 % 26 }
        let path = try compressFile(letters, with: "gzip -6", in: scratch, name: "letters")
        // Spacing 1 puts an access point at every block boundary.
        let index = try GzipIndexBuilder.build(path: path, spacing: 1)
        let file = try MappedFile(path: path)
        let decoder = DeflateDecoder(input: file.bytes)
        let boundaries = index.points.dropFirst().dropLast().map(\.compressedBitOffset)
        #expect(boundaries.count > 5)
        for boundary in boundaries {
            decoder.seek(toBit: boundary)
            guard (try? decoder.readBlockHeader()) != nil, !decoder.isFinalBlock else { continue }
            #expect(BlockFinder.find(in: decoder, from: boundary, before: boundary + 1) == boundary)
        }
    }

    @Test("zero runs become holes")
    func zeroRunsAsHoles() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        // 4 KiB of aa, 8 MiB of zeros, 4 KiB of bb: almost all of the zeros must arrive as
        // holes; only the ends of the run and of each marker-mode stretch are bytes.
        let payload = [UInt8](repeating: 0xaa, count: 4096) + [UInt8](repeating: 0, count: 8 << 20)
            + [UInt8](repeating: 0xbb, count: 4096)
        let path = try compressFile(payload, with: "gzip -6", in: scratch, name: "holes")
        for threads in [1, 2, 4] {
            let sink = MemorySink()
            _ = try ParallelGzipInflater.decompress(path: path, into: sink, threads: threads, minimumChunkInput: 1 << 20)
            expectEqualBytes(sink.bytes, payload, "threads \(threads)")
            #expect(sink.holeBytes >= Int64(7 << 20), "threads \(threads)")
        }
    }

    @Test("CRC of zero runs without zeros")
    func zeroCRC() throws {
        for count in [1, 2, 3, 7, 1000, 32768, 1 << 20, 5_000_001] {
            let zeros = [UInt8](repeating: 0, count: count)
            let expected = zeros.withUnsafeBufferPointer { UInt32(crc32(0, $0.baseAddress, UInt32(count))) }
            #expect(ZeroCRC.crc(ofZeros: Int64(count)) == expected, "\(count) zeros")
        }
    }

    @Test("the writer's CRC-32 equals zlib's")
    func writerCRC() throws {
        let data = randomBytes(3 << 20)
        for count in [0, 1, 15, 16, 17, 4099, 65_536, 1 << 20, 3 << 20] {
            let bytes = Array(data.prefix(count))
            let expected = bytes.withUnsafeBufferPointer { UInt32(crc32(0, $0.baseAddress, UInt32(count))) }
            #expect(crc32Of(bytes) == expected, "\(count) bytes")
        }
    }

    @Test("truncations fail with many chunks")
    func truncations() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let payload = compressibleBytes(200 << 10) + [UInt8](repeating: 0, count: 1 << 20) + randomBytes(32 << 10)
        let path = try compressFile(payload, with: "gzip -6", in: scratch, name: "whole")
        let whole = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        // Every 9973rd length (a prime, so cuts land at all bit phases) and the last 16.
        let lengths = Array(stride(from: 1, to: whole.count, by: 9973)) + Array(whole.count - 16..<whole.count)
        for length in lengths {
            let cut = scratch.file("cut.gz")
            try? FileManager.default.removeItem(atPath: cut)
            try writeFile(cut, Array(whole[0..<length]))
            for threads in [1, 2, 3, 4, 8] {
                #expect(throws: InflateError.self, "length \(length), threads \(threads)") {
                    try parallelOutput(cut, threads: threads, minimumChunkInput: rangeSize)
                }
            }
        }
    }

    @Test("corruption inside a chunk is reported")
    func corruption() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let payload = compressibleBytes(256 << 10)
        let path = try compressFile(payload, with: "gzip -6", in: scratch, name: "good")
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        // Flip bits in the middle of the deflate data: decoding must fail (an invalid
        // code or a CRC mismatch), never return different bytes.
        for offset in stride(from: bytes.count / 3, to: bytes.count - 100, by: bytes.count / 5) {
            bytes[offset] ^= 0x5a
        }
        let bad = scratch.file("bad.gz")
        try writeFile(bad, bytes)
        for threads in [1, 2, 4] {
            #expect(throws: InflateError.self, "threads \(threads)") {
                try parallelOutput(bad, threads: threads, minimumChunkInput: rangeSize)
            }
        }
    }
}

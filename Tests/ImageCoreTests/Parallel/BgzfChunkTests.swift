// Chunks of BGZF members: how they are planned from the members' sizes, and how their
// output reaches the chunk stream. Also the block start search of chunks that cross
// many member ends.

import Foundation
import Testing
@testable import ImageCore

@Suite("BGZF chunks")
struct BgzfChunkTests {
    /// Returns the output of a stream's pieces, with holes as zeros, the number of
    /// distinct blocks they refer to, and the number of member ends.
    private func collect(_ stream: ChunkStream) -> (output: [UInt8], blocks: Int, members: Int) {
        let (pieces, _) = stream.take(timeLimit: 0)
        var blocks = Set<ObjectIdentifier>()
        var members = 0
        var output: [UInt8] = []
        for piece in pieces {
            switch piece {
            case .block(let block, let range, _):
                blocks.insert(ObjectIdentifier(block))
                output += UnsafeRawBufferPointer(rebasing: block.bytes[range])
            case .hole(let count): output += [UInt8](repeating: 0, count: Int(count))
            case .memberEnd: members += 1
            default: break
            }
        }
        return (output, blocks.count, members)
    }

    @Test("members share blocks, zeros skipped")
    func membersShareBlocks() throws {
        // bgzip members hold at most 64 KiB of output. Each took a 1 MiB block of its own,
        // which the stream budget counted whole, so a worker ahead of the writer stopped
        // after 16 members, and two threads decoded no faster than one.
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let payload = compressibleBytes(3 << 20) + [UInt8](repeating: 0, count: 16 << 20) + compressibleBytes(1 << 20, seed: 3)
        let file = try MappedFile(path: try compressFile(payload, with: "bgzip -c", in: scratch, name: "members"))
        let decoder = BgzfDecoder(file: file, blocks: OutputBlockPool.forStreams(64 << 20))
        let stream = ChunkStream(budget: 64 << 20)
        let end = try decoder.decode(from: 0, to: file.count, into: stream)
        #expect(end.bitOffset == Int64(file.count) * 8)
        let (output, blocks, members) = collect(stream)
        expectEqualBytes(output, payload)
        #expect(members >= 320, "\(members) members")
        // 4 MiB of data fill four blocks; of the 256 zero members only the first is
        // decoded. With a block per member, or zero members decoded, it took hundreds.
        #expect(blocks <= 6, "20 MiB of output took \(blocks) blocks of 1 MiB")
    }

    @Test("ISA-L chunk members share blocks")
    func isalMembersShareBlocks() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        var bytes: [UInt8] = []
        var payload: [UInt8] = []
        for number in 0..<200 {
            let member = compressibleBytes(20_000, seed: UInt64(number + 1))
            payload += member
            bytes += try compress(member, with: "gzip -c -n")
        }
        let path = scratch.file("members.gz")
        try writeFile(path, bytes)
        let decoder = IsalChunkDecoder(file: try MappedFile(path: path), blocks: OutputBlockPool.forStreams(64 << 20))
        let stream = ChunkStream(budget: 64 << 20)
        _ = try decoder.decode(from: .memberHeader(0), length: nil, end: .max, endsWithMember: false, into: stream)
        let (output, blocks, members) = collect(stream)
        expectEqualBytes(output, payload)
        #expect(members == 200)
        #expect(blocks <= 5, "4 MB of output in 200 members took \(blocks) blocks of 1 MiB")
    }

    @Test("chunk output stays within the limit")
    func chunkOutputLimit() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let file = try MappedFile(path: try compressFile(compressibleBytes(6 << 20), with: "bgzip -c", in: scratch, name: "members"))
        // Chunks of compressed input alone would be one chunk: the file is smaller than
        // the minimum input.
        let plan = BgzfPlan(file.bytes, threads: 2, minimumChunkInput: 64 << 20, outputLimit: 1 << 20)
        #expect(plan.chunks.count >= 6, "\(plan.chunks.count) chunks")
        #expect(plan.chunks.first?.start == 0)
        #expect(plan.chunks.last?.end == file.count)
        #expect(plan.chunks.allSatisfy { $0.members })
        for (chunk, next) in zip(plan.chunks, plan.chunks.dropFirst()) {
            #expect(chunk.end == next.start)
        }
    }

    @Test("data after the members: own chunk")
    func tailAfterMembers() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let first = compressibleBytes(300_000)
        let bgzf = try compressFile(first, with: "bgzip -c", in: scratch, name: "first")
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: bgzf)))
        let membersEnd = bytes.count
        bytes += try gzip("plain gzip member\n")
        let path = scratch.file("mixed.gz")
        try writeFile(path, bytes)
        let mapped = try MappedFile(path: path)
        let plan = BgzfPlan(mapped.bytes, threads: 2, minimumChunkInput: 1 << 20, outputLimit: 8 << 20)
        #expect(plan.chunks.last?.members == false)
        #expect(plan.chunks.last?.start == membersEnd)
        for threads in [1, 2, 3] {
            let (output, result) = try parallelOutput(path, threads: threads)
            expectEqualBytes(output, first + Array("plain gzip member\n".utf8), "threads \(threads)")
            #expect(result.strategy == .bgzfMembers)
        }
    }

    @Test("ISIZE over 64 KiB fails")
    func oversizedTrailer() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let path = try compressFile(compressibleBytes(500_000), with: "bgzip -c", in: scratch, name: "members")
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        // ISIZE of the first member (its size from BSIZE at offset 16) becomes 70000.
        let size = Int(bytes[16]) | Int(bytes[17]) << 8 + 1
        let isize = size - 4
        bytes[isize] = 0x70; bytes[isize + 1] = 0x11; bytes[isize + 2] = 0x01; bytes[isize + 3] = 0
        try writeFile(path, bytes)
        for threads in [1, 2] {
            #expect(throws: InflateError.self, "threads \(threads)") { _ = try parallelOutput(path, threads: threads) }
        }
    }

    @Test("corrupt member error names offset")
    func corruptMember() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let path = try compressFile(compressibleBytes(500_000), with: "bgzip -c", in: scratch, name: "members")
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        // The first member's deflate data starts after its 18-byte header; its first
        // byte becomes a reserved block type (BTYPE 11).
        bytes[18] |= 0x06
        try writeFile(path, bytes)
        for threads in [1, 2] {
            do {
                _ = try parallelOutput(path, threads: threads)
                Issue.record("threads \(threads): a corrupt member decoded")
            } catch let error as InflateError {
                #expect("\(error)".contains("offset 18"), "threads \(threads): \(error)")
            }
        }
    }

    @Test("wrong BSIZE decodes as gzip does")
    func wrongMemberSize() throws {
        // gzip -dc and sequential decoding from a pipe ignore BSIZE and accept these
        // files, so the BGZF path, which finds each trailer by BSIZE, must accept them too.
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let payload = compressibleBytes(300_000)
        let path = try compressFile(payload, with: "bgzip -c", in: scratch, name: "members")
        let original = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        // Member offsets from each header's BSIZE (bytes 16 and 17, the size minus 1).
        var starts: [Int] = []
        var offset = 0
        while offset < original.count {
            starts.append(offset)
            offset += (Int(original[offset + 16]) | Int(original[offset + 17]) << 8) + 1
        }
        #expect(starts.count >= 5, "\(starts.count) members")
        func withBSIZE(ofMember number: Int, plus delta: Int) -> [UInt8] {
            var bytes = original
            let start = starts[number]
            let bsize = (Int(bytes[start + 16]) | Int(bytes[start + 17]) << 8) + delta
            bytes[start + 16] = UInt8(bsize & 0xff)
            bytes[start + 17] = UInt8(bsize >> 8)
            return bytes
        }
        let secondSize = starts[2] - starts[1]
        let cases: [(name: String, bytes: [UInt8])] = [
            // BSIZE covers the second member too, so the next header parses: the
            // member's deflate data then ends before the trailer BSIZE gives.
            ("first member spans two", withBSIZE(ofMember: 0, plus: secondSize)),
            // The deflate data runs past the trailer BSIZE gives.
            ("second member 1 byte short", withBSIZE(ofMember: 1, plus: -1)),
            ("last data member 1 byte short", withBSIZE(ofMember: starts.count - 2, plus: -1)),
        ]
        for (name, bytes) in cases {
            let casePath = scratch.file("\(name).gz")
            try writeFile(casePath, bytes)
            for threads in [1, 2, 3] {
                let (output, _) = try parallelOutput(casePath, threads: threads)
                expectEqualBytes(output, payload, "\(name), threads \(threads)")
            }
        }
    }
}

@Suite("Block start search")
struct BoundarySearchTests {
    @Test("searches from member starts pass each bit once")
    func eachBitOnce() throws {
        // Members of 64 KiB of text: a search starts at every member's start, as a chunk
        // does after each member end, and each one gives the first accepted start after it.
        var bytes: [UInt8] = []
        var memberStarts: [Int64] = []
        for number in 0..<24 {
            memberStarts.append(Int64(bytes.count) * 8 + 80)
            bytes += try compress(compressibleBytes(65536, seed: UInt64(number + 1)), with: "gzip -c -n")
        }
        try bytes.withUnsafeBytes { input in
            let limit = Int64(input.count) * 8
            var search = BoundarySearch(finder: DeflateDecoder(input: input))
            for start in memberStarts {
                let expected = BlockFinder.find(in: DeflateDecoder(input: input), from: start, before: limit)
                #expect(search.next(from: start, before: limit) == expected, "from bit \(start)")
            }
            #expect(search.bitsExamined <= limit, "\(search.bitsExamined) bits examined in a file of \(limit)")
        }
    }
}

@Suite("Speculative chunks at member starts")
struct MemberStartTests {
    @Test("ranges start at gzip members")
    func rangesStartAtMembers() throws {
        // Members of 8 KiB of text hold one final block each, which the block finder never
        // accepts, so every range found no start and was decoded again by the writer.
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        var bytes: [UInt8] = []
        var payload: [UInt8] = []
        for number in 0..<160 {
            let member = compressibleBytes(8192, seed: UInt64(number + 1))
            payload += member
            bytes += try compress(member, with: "gzip -c -n")
        }
        let path = scratch.file("members.gz")
        try writeFile(path, bytes)

        // A range from 100 KB on starts at the deflate data of the first member after it
        // (`gzip -n` writes 10-byte headers).
        let file = try MappedFile(path: path)
        let from: Int64 = 100_000 * 8
        let stream = ChunkStream(budget: 64 << 20)
        let decoder = SpeculativeDecoder(file: file, usesIsal: true)
        let end = try decoder.decode(from: .search(from), stopAt: from + (64 << 13), into: stream)
        // The pipeline records the end; without it a range that found no start would leave
        // `waitForStart` waiting.
        stream.finish(.success(end))
        let start = try #require(stream.waitForStart(), "the range found no start")
        #expect(start % 8 == 0)
        let startByte = Int(start / 8) - 10
        #expect(startByte >= 100_000)
        #expect(Array(bytes[startByte..<startByte + 3]) == [0x1f, 0x8b, 0x08], "the start at bit \(start) follows no member header")
        stream.abandon()

        for threads in [2, 3] {
            let (output, result) = try parallelOutput(path, threads: threads, minimumChunkInput: 16 << 10)
            expectEqualBytes(output, payload, "threads \(threads)")
            #expect(result.strategy == .speculative, "threads \(threads)")
            #expect(result.chunks > 2, "threads \(threads)")
            #expect(result.rangesDecodedAgain == 0, "threads \(threads): \(result.rangesDecodedAgain) ranges decoded again")
        }
    }
}

// The budget of a chunk stream bounds the memory its waiting pieces keep alive. A piece
// of ISA-L output refers to part of a pooled block, and keeps the whole block.

import Foundation
import Synchronization
import Testing
@testable import ImageCore

@Suite("Parallel chunk stream budget")
struct ParallelStreamBudgetTests {
    @Test("small pieces of large blocks")
    func smallPiecesOfBlocks() throws {
        let blockSize = 1 << 20
        let budget = 4 << 20
        let pool = OutputBlockPool(blockSize: blockSize, maximumFree: 0)
        let stream = ChunkStream(budget: budget)
        let pushed = Atomic<Int>(0)
        // Each piece is the first 4 KiB of its own block, as when ISA-L's output is
        // mostly zero blocks, which become holes.
        let worker = Thread {
            for _ in 0..<64 {
                guard stream.push(.block(pool.take(), 0..<4096, crc: 0)) else { return }
                pushed.add(1, ordering: .relaxed)
            }
        }
        worker.start()
        // The worker blocks once the waiting blocks exceed the budget.
        let deadline = Date().addingTimeInterval(5)
        var last = -1
        while Date() < deadline {
            let count = pushed.load(ordering: .relaxed)
            if count == 64 || count == last { break }
            last = count
            Thread.sleep(forTimeInterval: 0.2)
        }
        let waiting = pushed.load(ordering: .relaxed)
        stream.abandon()
        #expect(waiting * blockSize <= budget + blockSize,
                "\(waiting) pieces of 1 MiB blocks wait in a stream with a budget of 4 MiB")
    }
}

@Suite("BGZF chunks")
struct BgzfChunkTests {
    /// bgzip output of `bytes` mapped for decoding, in `scratch`.
    private func bgzf(_ bytes: [UInt8], in scratch: ScratchDirectory) throws -> MappedFile {
        try MappedFile(path: try compressFile(bytes, with: "bgzip -c", in: scratch, name: "members"))
    }

    @Test("members share output blocks")
    func membersShareBlocks() throws {
        // bgzip members hold at most 64 KiB of output. Each took a 1 MiB block of its own,
        // which the stream budget counted whole, so a worker ahead of the writer stopped
        // after 16 members, and two threads decoded no faster than one.
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let payload = compressibleBytes(4 << 20)
        let file = try bgzf(payload, in: scratch)
        let decoder = IsalChunkDecoder(file: file, blocks: OutputBlockPool.forStreams(64 << 20))
        let stream = ChunkStream(budget: 64 << 20)
        let end = try decoder.decode(from: .memberHeader(0), length: nil, end: .max, endsWithMember: false, into: stream)
        #expect(end.bitOffset == Int64(file.count) * 8)
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
        expectEqualBytes(output, payload)
        #expect(members > 64, "\(members) members")
        #expect(blocks.count <= 5, "4 MiB of output took \(blocks.count) blocks of 1 MiB")
    }

    @Test("chunks end before their output outgrows the limit")
    func chunkOutputLimit() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let file = try bgzf(compressibleBytes(6 << 20), in: scratch)
        // Chunks of compressed input alone would be one chunk: the file is smaller than
        // the minimum input.
        let plan = BgzfPlan(file.bytes, threads: 2, minimumChunkInput: 64 << 20, outputLimit: 1 << 20)
        #expect(plan.chunks.count >= 6, "\(plan.chunks.count) chunks")
        #expect(plan.chunks.first?.start == 0)
        #expect(plan.chunks.last?.stop == nil)
        for (chunk, next) in zip(plan.chunks, plan.chunks.dropFirst()) {
            #expect(chunk.stop == next.start)
        }
    }
}

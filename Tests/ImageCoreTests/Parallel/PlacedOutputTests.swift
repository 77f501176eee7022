// Index chunks, and speculative chunks once the writer reached them, lend their buffers to
// the sparse writer, which writes them at their file offsets (`PlacedChunkOutput`). These
// tests decode into real files and compare them with `gzip -dc`, with buffer and chunk
// boundaries inside 4 KiB blocks and next to holes.

import Foundation
import Synchronization
import Testing
@testable import ImageCore

@Suite("Index output written in place")
struct PlacedOutputTests {
    /// Data, odd-length zero runs and data again: chunk and buffer boundaries then fall
    /// inside blocks, next to holes, and inside zero runs.
    private func payload() -> [UInt8] {
        compressibleBytes((1 << 20) + 123) + [UInt8](repeating: 0, count: 70_001) + randomBytes(300_007)
            + [UInt8](repeating: 0, count: (1 << 20) + 5) + compressibleBytes(500_000) + [UInt8](repeating: 0, count: 777)
    }

    /// Creates the file `output`, runs `decode` into a SparseFileWriter on it and finishes the
    /// writer, or cancels it if either step throws. Returns the file's bytes, its allocated
    /// size and the result of `decode`.
    private func decodeThroughWriter(into output: String,
                                     decode: (SparseFileWriter) throws -> ParallelInflateResult) throws
        -> (bytes: [UInt8], allocated: Int64, result: ParallelInflateResult) {
        let descriptor = try FileDescriptor.open(output, flags: O_RDWR | O_CREAT | O_EXCL, mode: 0o600)
        defer { try? descriptor.close() }
        let writer = try SparseFileWriter(descriptor: descriptor, path: output)
        let result: ParallelInflateResult
        do {
            result = try decode(writer)
            try writer.finish()
        } catch {
            writer.cancel()
            throw error
        }
        let allocated = try descriptor.status().allocatedBytes
        return ([UInt8](try Data(contentsOf: URL(fileURLWithPath: output))), allocated, result)
    }

    /// Decodes `path` with `index` into a new file in `directory`, and returns the file's
    /// bytes and allocated size.
    private func decodeToFile(_ path: String, index: GzipIndex, threads: Int, pieceSize: Int,
                              directory: String) throws -> (bytes: [UInt8], allocated: Int64) {
        let decoded = try decodeThroughWriter(into: "\(directory)/out-\(threads)-\(pieceSize).raw") { writer in
            try ParallelGzipInflater.decompress(path: path, into: writer, threads: threads, index: index,
                                                placementPieceSize: pieceSize)
        }
        return (decoded.bytes, decoded.allocated)
    }

    /// Decodes `path` without an index, split into `rangesPerThread` ranges per thread,
    /// into a new file in `directory`; returns the file's bytes and the decode's counts.
    private func decodeSpeculativelyToFile(_ path: String, threads: Int, rangesPerThread: Int, pieceSize: Int,
                                           directory: String) throws -> (bytes: [UInt8], result: ParallelInflateResult) {
        let name = URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
        let output = "\(directory)/\(name)-speculative-\(threads)-\(rangesPerThread)-\(pieceSize).raw"
        let decoded = try decodeThroughWriter(into: output) { writer in
            try ParallelGzipInflater.decompress(path: path, into: writer, threads: threads,
                                                minimumChunkInput: 16 << 10, rangesPerThread: rangesPerThread,
                                                placementPieceSize: pieceSize)
        }
        return (decoded.bytes, decoded.result)
    }

    /// Records of random bytes, each repeated after some text. Matches keep reaching back
    /// to the record before, so a chunk decoded with a guessed window stays wrong for
    /// long, and its output may be placed only after the writer corrected it.
    private func repeatedRecords() -> [UInt8] {
        var bytes: [UInt8] = []
        for number in 0..<120 {
            let record = randomBytes(12 << 10, seed: UInt64(number) + 500)
            bytes += record + compressibleBytes(5 << 10, seed: UInt64(number)) + record
        }
        return bytes
    }

    @Test("speculative chunks place their output once the writer reached them", arguments: [2, 3, 4, 8])
    func speculativeEqualsReference(threads: Int) throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let first = payload()
        let members = [first, repeatedRecords(), compressibleBytes(900_001, seed: 5) + [UInt8](repeating: 0, count: 300_000)]
        var joined: [UInt8] = []
        for (number, part) in members.enumerated() {
            let path = try compressFile(part, with: number == 1 ? "gzip -9" : "gzip -6", in: scratch, name: "part\(number)")
            joined += [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        }
        let single = try compressFile(first, with: "gzip -6", in: scratch, name: "single")
        let multiple = scratch.file("members.gz")
        try writeFile(multiple, joined)
        for path in [single, multiple] {
            let reference = try referenceOutput(path)
            for (rangesPerThread, pieceSize) in [(8, 20_000), (24, 4 << 20)] {
                let (output, result) = try decodeSpeculativelyToFile(path, threads: threads, rangesPerThread: rangesPerThread,
                                                                     pieceSize: pieceSize, directory: scratch.path)
                let label = "\(path), \(rangesPerThread) ranges per thread, piece size \(pieceSize)"
                #expect(result.strategy == .speculative, "\(label)")
                expectEqualBytes(output, reference, "\(label)")
                // Chunk 0's offset is known at once, so some output is always placed.
                #expect(result.placedBytes > 0, "\(label)")
            }
        }
    }

    @Test("a corrupt stream fails a speculative decode that places output")
    func speculativeCorrupt() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let path = try compressFile(compressibleBytes(3 << 20), with: "gzip -6", in: scratch, name: "text")
        var damaged = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        damaged[damaged.count * 3 / 4] ^= 0x55
        try writeFile(path, damaged)
        #expect(throws: (any Error).self) {
            _ = try decodeSpeculativelyToFile(path, threads: 2, rangesPerThread: 8, pieceSize: 20_000,
                                              directory: scratch.path)
        }
    }

    @Test("one thread decodes a single stream as one chunk")
    func oneThreadOneChunk() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let bytes = payload() + [UInt8](repeating: 0, count: 8 << 20) + compressibleBytes(3 << 20, seed: 4)
        let path = try compressFile(bytes, with: "gzip -6", in: scratch, name: "mixed")
        let raw = scratch.file("one-thread.raw")
        let options = DecompressOptions(threads: 1, splitSingleStream: true)
        // The sequential path gives the same file, so the routing is checked directly:
        // one thread takes the parallel decoder for a single stream and for BGZF.
        let bgzf = try compressFile(compressibleBytes(100_000), with: "bgzip -c", in: scratch, name: "bgzf")
        for (source, expected) in [(path, true), (bgzf, true)] {
            let head = [UInt8](try Data(contentsOf: URL(fileURLWithPath: source)).prefix(64))
            let routed = head.withUnsafeBytes { Decompressor.decodesInParallel($0, options) }
            #expect(routed == expected, "\(source)")
        }
        let withoutSplitting = DecompressOptions(threads: 1)
        let head = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)).prefix(64))
        #expect(!head.withUnsafeBytes { Decompressor.decodesInParallel($0, withoutSplitting) })
        let summary = try Decompressor.decompress(source: path, destination: raw, options: options)
        #expect(summary.bytesWritten == Int64(bytes.count))
        expectEqualBytes([UInt8](try Data(contentsOf: URL(fileURLWithPath: raw))), bytes)
        // The zero runs stay holes.
        let descriptor = try FileDescriptor.open(raw, flags: O_RDONLY)
        defer { try? descriptor.close() }
        #expect(try descriptor.status().allocatedBytes <= Int64(bytes.count) - (8 << 20))
    }

    @Test("progress moves within a chunk")
    func progressWithinChunk() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let path = try compressFile(compressibleBytes(24 << 20, seed: 9), with: "gzip -6", in: scratch, name: "text")
        let updates = Mutex<[ProgressUpdate]>([])
        let reporter = ProgressReporter(step: "inflate", interval: .zero) { update in
            updates.withLock { $0.append(update) }
        }
        let (_, _, result) = try decodeThroughWriter(into: scratch.file("progress.raw")) { writer in
            try ParallelGzipInflater.decompress(path: path, into: writer, threads: 1, progress: reporter)
        }
        #expect(result.chunks == 1)
        let total = Int64(try Data(contentsOf: URL(fileURLWithPath: path)).count)
        let between = updates.withLock { $0.filter { $0.completed > 0 && $0.completed < total } }
        #expect(between.count >= 2, "\(between.count) updates between the start and the end")
    }

    @Test("output equals gzip -dc", arguments: [1, 2, 3, 4, 8])
    func equalsReference(threads: Int) throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let bytes = payload()
        let path = try compressFile(bytes, with: "gzip -6", in: scratch, name: "mixed")
        let index = try GzipIndexBuilder.build(path: path, spacing: 64 << 10, sink: MemorySink())
        #expect(index.points.count > 8)
        let reference = try referenceOutput(path)
        // 20,000 bytes is no multiple of 4 KiB, so every buffer ends inside a block.
        for pieceSize in [20_000, 4 << 20] {
            let (output, allocated) = try decodeToFile(path, index: index, threads: threads, pieceSize: pieceSize,
                                                       directory: scratch.path)
            expectEqualBytes(output, reference, "piece size \(pieceSize)")
            // The 1 MiB zero run stays a hole.
            #expect(allocated <= Int64(output.count) - (1 << 20) + 8192, "piece size \(pieceSize)")
        }
    }

    @Test("runs of a byte other than zero stay with ISA-L", arguments: [1, 2, 4])
    func nonZeroRuns(threads: Int) throws {
        // A run of "A" expands like a zero run, but byte mode copies it byte by byte. One run
        // follows text and the other a zero run. ISA-L's output is placed, byte mode's never.
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let run = 12 << 20
        let bytes = compressibleBytes(1 << 20, seed: 21) + [UInt8](repeating: 0x41, count: run)
            + compressibleBytes(500_000, seed: 22) + [UInt8](repeating: 0, count: 16 << 20)
            + [UInt8](repeating: 0x41, count: run) + compressibleBytes(300_000, seed: 23)
        let path = try compressFile(bytes, with: "gzip -6", in: scratch, name: "runs")
        let index = try GzipIndexBuilder.build(path: path, spacing: 1 << 20, sink: MemorySink())
        for indexed in [false, true] {
            let label = "threads \(threads), \(indexed ? "with" : "without") an index"
            let output = scratch.file("runs-\(threads)-\(indexed).raw")
            let decoded = try decodeThroughWriter(into: output) { writer in
                try ParallelGzipInflater.decompress(path: path, into: writer, threads: threads,
                                                    index: indexed ? index : nil)
            }
            expectEqualBytes(decoded.bytes, bytes, "\(label)")
            #expect(decoded.allocated <= Int64(bytes.count) - (16 << 20) + 16384, "the zero run is a hole: \(label)")
            // ISA-L decodes both runs but for a block or a chunk at the start of each: 16.4 MB
            // to 26.9 MB were placed in all, against 5.8 MB to 12.6 MB with byte mode. (A
            // worker ahead of the writer places nothing, so two threads place the least.)
            #expect(decoded.result.placedBytes >= 14 << 20, "\(decoded.result.placedBytes) bytes placed: \(label)")
        }
    }

    @Test("members ending inside chunks")
    func multipleMembers() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let first = compressibleBytes(700_001, seed: 3)
        let second = randomBytes(200_003) + [UInt8](repeating: 0, count: 9000)
        let third = compressibleBytes(400_000, seed: 11)
        var joined: [UInt8] = []
        for (number, part) in [first, second, third].enumerated() {
            let path = try compressFile(part, with: number == 1 ? "gzip -1" : "gzip -9", in: scratch, name: "part\(number)")
            joined += [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        }
        let path = scratch.file("members.gz")
        try writeFile(path, joined)
        let index = try GzipIndexBuilder.build(path: path, spacing: 48 << 10, sink: MemorySink())
        for threads in [1, 2, 4] {
            let (output, _) = try decodeToFile(path, index: index, threads: threads, pieceSize: 10_000,
                                               directory: scratch.path)
            expectEqualBytes(output, first + second + third, "threads \(threads)")
        }
    }

    @Test("ramfs without O_DIRECT gets the same output",
          .enabled(if: ScratchMount.isPossible, "mounting a ramfs needs root with CAP_SYS_ADMIN"))
    func withoutDirectIO() throws {
        // ramfs rejects O_DIRECT, so every write goes through the page cache.
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let bytes = payload()
        let path = try compressFile(bytes, with: "gzip -6", in: scratch, name: "mixed")
        let index = try GzipIndexBuilder.build(path: path, spacing: 64 << 10, sink: MemorySink())
        let mount = try ScratchMount(type: "ramfs")
        defer { mount.unmount() }
        let (output, _) = try decodeToFile(path, index: index, threads: 2, pieceSize: 20_000, directory: mount.path)
        expectEqualBytes(output, bytes)
        let (speculative, _) = try decodeSpeculativelyToFile(path, threads: 2, rangesPerThread: 8, pieceSize: 20_000,
                                                             directory: mount.path)
        expectEqualBytes(speculative, bytes)
    }

    @Test("a full file system fails the decode",
          .enabled(if: ScratchMount.isPossible, "mounting a tmpfs needs root with CAP_SYS_ADMIN"))
    func noSpace() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let bytes = randomBytes(3 << 20)
        let path = try compressFile(bytes, with: "gzip -6", in: scratch, name: "random")
        let index = try GzipIndexBuilder.build(path: path, spacing: 256 << 10, sink: MemorySink())
        let mount = try ScratchMount(type: "tmpfs", options: "size=1m")
        defer { mount.unmount() }
        #expect {
            _ = try decodeToFile(path, index: index, threads: 2, pieceSize: 64 << 10, directory: mount.path)
        } throws: { error in
            (error as? SystemError)?.errno == .noSpace
        }
    }

    @Test("a writer with data keeps the copy path")
    func writerWithData() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let bytes = compressibleBytes(1 << 20)
        let path = try compressFile(bytes, with: "gzip -6", in: scratch, name: "text")
        let index = try GzipIndexBuilder.build(path: path, spacing: 64 << 10, sink: MemorySink())
        let prefix: [UInt8] = [1, 2, 3, 4, 5]
        let (output, _, _) = try decodeThroughWriter(into: scratch.file("prefixed.raw")) { writer in
            try prefix.withUnsafeBytes { try writer.write($0) }
            return try ParallelGzipInflater.decompress(path: path, into: writer, threads: 2, index: index)
        }
        expectEqualBytes(output, prefix + bytes)
    }

    @Test("a corrupt chunk fails the decode")
    func corruptChunk() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let bytes = compressibleBytes(2 << 20)
        let path = try compressFile(bytes, with: "gzip -6", in: scratch, name: "text")
        let index = try GzipIndexBuilder.build(path: path, spacing: 64 << 10, sink: MemorySink())
        var damaged = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        damaged[damaged.count / 2] ^= 0x55
        try writeFile(path, damaged)
        #expect(throws: (any Error).self) {
            _ = try decodeToFile(path, index: index, threads: 2, pieceSize: 20_000, directory: scratch.path)
        }
    }
}

/// `PlacementPool.waitingTime` sums the time workers waited for a free buffer. These tests
/// make a thread wait for certain, through the pool's `beforeWait` hook, instead of
/// timing anything. The pool allocates its buffers as workers need them.
@Suite("Placement pool")
struct PlacementPoolTests {
    /// Runs `body` with a pool of `count` buffers that lends them to a sparse writer on a
    /// new file.
    private func withPool(count: Int, _ body: (PlacementPool) throws -> Void) throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let path = scratch.file("placed.raw")
        let descriptor = try FileDescriptor.open(path, flags: O_RDWR | O_CREAT | O_EXCL, mode: 0o600)
        defer { try? descriptor.close() }
        let writer = try SparseFileWriter(descriptor: descriptor, path: path)
        defer { writer.cancel() }
        try body(PlacementPool(target: writer.placement(), count: count, pieceSize: 4096))
    }

    @Test("a thread that waited for a buffer adds to it")
    func waitAddsTime() throws {
        try withPool(count: 2) { pool in
            let first = pool.take()
            _ = pool.take()
            #expect(pool.waitingTime == .zero)

            let waiting = DispatchSemaphore(value: 0)
            pool.beforeWait = { waiting.signal() }
            let tookBuffer = DispatchSemaphore(value: 0)
            let taker = Thread {
                _ = pool.take()
                tookBuffer.signal()
            }
            taker.start()
            // The hook runs under the pool's lock, so `giveBack` gets the lock only once
            // the other thread waits.
            waiting.wait()
            pool.giveBack(first.index)
            tookBuffer.wait()

            #expect(pool.waitingTime > .zero)
        }
    }

    @Test("it stays zero when no thread waited")
    func noWaitNoTime() throws {
        try withPool(count: 2) { pool in
            let waits = LockedLines()
            pool.beforeWait = { waits.append("wait") }
            let first = pool.take()
            let second = pool.take()
            pool.giveBack(first.index)
            pool.giveBack(second.index)
            _ = pool.take()
            _ = pool.take()

            #expect(waits.all.isEmpty)
            #expect(pool.waitingTime == .zero)
        }
    }

    @Test("a buffer is allocated only when none is free")
    func allocatesOnDemand() throws {
        try withPool(count: 3) { pool in
            #expect(pool.allocated == 0)
            let first = pool.take()
            pool.giveBack(first.index)
            let again = pool.take()
            #expect(again.index == first.index)
            #expect(pool.allocated == 1)
            let second = pool.take()
            let third = pool.take()
            #expect(Set([again.index, second.index, third.index]).count == 3)
            #expect(pool.allocated == 3)
            pool.giveBack(second.index)
            _ = pool.take()
            #expect(pool.allocated == 3)
        }
    }

    @Test("an indexed decode may hold more buffers than a speculative one")
    func bufferCounts() {
        #expect(PlacementPool.bufferCount(threads: 2, indexed: true) == PlacementPool.minimumIndexBuffers)
        #expect(PlacementPool.bufferCount(threads: 2, indexed: false) == 2 * PlacementPool.buffersPerThread)
        #expect(PlacementPool.bufferCount(threads: 64, indexed: true) == 64 * PlacementPool.buffersPerThread)
    }
}

// The parallel decoders and the index builder read a memory-mapped input. When another
// process truncates the file meanwhile, reads past its new end would raise SIGBUS and
// end the process, leaving the temporary RAW file behind. `MappedFile` registers its map
// with CMapGuard, whose handler puts zeros in place of the lost pages. These tests
// truncate the file after mapping it and check that every path fails with
// `InflateError.inputShrank`, whatever the zeros made the decoder do.

import Foundation
import Testing
@testable import ImageCore

@Suite("Mapped inputs that shrink")
struct ShrunkInputTests {
    private static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

    @Test("read past the end gives zeros")
    func readPastEnd() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let path = scratch.file("pages")
        let size = 3 * Self.pageSize + 100
        try writeFile(path, [UInt8](repeating: 0xab, count: size))
        let file = try MappedFile(path: path)
        #expect(file.bytes[size - 1] == 0xab)
        #expect(!file.lostPage)
        try file.checkUnchanged()

        #expect(truncate(path, off_t(Self.pageSize)) == 0)
        #expect(file.bytes[Self.pageSize - 1] == 0xab, "the page still inside the file keeps its data")
        #expect(file.bytes[2 * Self.pageSize + 7] == 0, "a lost page reads as zeros")
        #expect(file.lostPage)
        #expect(throws: InflateError.inputShrank(path: path, mappedSize: Int64(size), size: Int64(Self.pageSize))) {
            try file.checkUnchanged()
        }
        let message = "\(InflateError.inputShrank(path: path, mappedSize: Int64(size), size: Int64(Self.pageSize)))"
        #expect(message.contains("shrank from \(size) bytes to \(Self.pageSize) bytes"))
    }

    @Test("cut inside the last page")
    func cutInsideLastPage() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let path = scratch.file("short")
        try writeFile(path, [UInt8](repeating: 0xcd, count: Self.pageSize + 10))
        let file = try MappedFile(path: path)
        #expect(truncate(path, off_t(Self.pageSize + 7)) == 0)
        #expect(file.bytes[Self.pageSize + 8] == 0)
        #expect(!file.lostPage)
        #expect(throws: InflateError.inputShrank(path: path, mappedSize: Int64(Self.pageSize + 10),
                                                 size: Int64(Self.pageSize + 7))) {
            try file.checkUnchanged()
        }
    }

    @Test("cut and grown back before the check")
    func grownBackAfterFault() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let path = scratch.file("regrown")
        let size = 3 * Self.pageSize
        try writeFile(path, [UInt8](repeating: 0x5a, count: size))
        let file = try MappedFile(path: path)
        #expect(truncate(path, off_t(Self.pageSize)) == 0)
        #expect(file.bytes[2 * Self.pageSize] == 0, "a lost page reads as zeros")
        #expect(truncate(path, off_t(size)) == 0)
        #expect(file.lostPage)

        let expected = InflateError.inputShrank(path: path, mappedSize: Int64(size), size: Int64(size))
        #expect(throws: expected) { try file.checkUnchanged() }
        let message = "\(expected)"
        #expect(!message.contains("shrank from \(size) bytes to \(size) bytes"), "\(message)")
        #expect(message.contains("has \(size) bytes now"), "\(message)")
        #expect(expected.remedy?.contains("disk") == true, "a read error of the disk also raises SIGBUS")
    }

    @Test("hundreds of maps all guarded")
    func manyMaps() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let path = scratch.file("shared")
        try writeFile(path, [UInt8](repeating: 0x33, count: 2 * Self.pageSize))
        // The service maps one file per running vm.decompress_gzip job and does not limit
        // how many run at once, so the guard must not run out of slots.
        let maps = try (0..<300).map { _ in try MappedFile(path: path) }
        let unguarded = maps.count(where: { !$0.isGuarded })
        #expect(unguarded == 0, "an unguarded map ends the process with SIGBUS once the file shrinks")
        guard unguarded == 0 else { return }

        #expect(truncate(path, off_t(Self.pageSize)) == 0)
        for (number, map) in maps.enumerated() {
            #expect(map.bytes[Self.pageSize] == 0, "map \(number)")
            #expect(map.lostPage, "map \(number)")
        }
    }

    @Test("fault marks only its own map")
    func separateMaps() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let first = scratch.file("first")
        let second = scratch.file("second")
        try writeFile(first, [UInt8](repeating: 1, count: 2 * Self.pageSize))
        try writeFile(second, [UInt8](repeating: 2, count: 2 * Self.pageSize))
        let firstMap = try MappedFile(path: first)
        let secondMap = try MappedFile(path: second)
        #expect(truncate(second, 0) == 0)
        #expect(secondMap.bytes[Self.pageSize] == 0)
        #expect(secondMap.lostPage)
        #expect(!firstMap.lostPage, "a fault in one map marks only that map")
        #expect(firstMap.bytes[Self.pageSize] == 1)
    }

    /// Writes a gzip file of a few MB that splits into several ranges and returns its path.
    private func sample(in scratch: ScratchDirectory, with command: String = "gzip -6") throws -> String {
        let payload = compressibleBytes(3 << 20) + [UInt8](repeating: 0, count: 2 << 20) + randomBytes(1 << 20)
            + compressibleBytes(2 << 20, seed: 11)
        return try compressFile(payload, with: command, in: scratch, name: command.filter(\.isLetter))
    }

    /// Expects decoding `path`, cut to `keep` bytes after it was mapped, to fail with
    /// `inputShrank` in every way the parallel decoder splits it.
    private func expectShrankError(_ path: String, keep: Int64, index: GzipIndex?) throws {
        let size = fileSize(path)
        let original = try Data(contentsOf: URL(fileURLWithPath: path))
        for threads in [1, 2, 4] {
            let file = try MappedFile(path: path)
            #expect(truncate(path, off_t(keep)) == 0)
            #expect(throws: InflateError.inputShrank(path: path, mappedSize: size, size: keep),
                    "\(threads) threads, index: \(index != nil)") {
                _ = try ParallelGzipInflater.decompress(file: file, into: MemorySink(), threads: threads, index: index,
                                                        budget: 1 << 20, minimumChunkInput: 64 << 10,
                                                        rangesPerThread: 4)
            }
            try original.write(to: URL(fileURLWithPath: path))
        }
    }

    @Test("single stream cut after mapping", arguments: [0, 1, 2])
    func singleStream(cut: Int) throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let path = try sample(in: scratch)
        let size = fileSize(path)
        // Cut at the start, in the middle, and inside the trailer.
        let keep = [0, size / 2, size - 3][cut]
        try expectShrankError(path, keep: keep, index: nil)
        let index = try GzipIndexBuilder.build(path: path, spacing: 256 << 10, sink: MemorySink())
        try expectShrankError(path, keep: keep, index: index)
    }

    @Test("BGZF file cut after mapping")
    func bgzf() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let path = try sample(in: scratch, with: "bgzip -c")
        try expectShrankError(path, keep: fileSize(path) / 3, index: nil)
    }

    @Test("index builder input cut")
    func indexBuilder() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let path = try sample(in: scratch)
        let size = fileSize(path)
        let file = try MappedFile(path: path)
        #expect(truncate(path, off_t(size / 2)) == 0)
        #expect(throws: InflateError.inputShrank(path: path, mappedSize: size, size: size / 2)) {
            _ = try GzipIndexBuilder.build(file: file, spacing: 256 << 10, sink: MemorySink())
        }
    }

    @Test("restored file decodes exactly")
    func unchangedAfterShrink() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let path = try sample(in: scratch)
        let reference = try referenceOutput(path)
        try expectShrankError(path, keep: fileSize(path) / 2, index: nil)
        for threads in [1, 2] {
            let (output, _) = try parallelOutput(path, threads: threads, minimumChunkInput: 64 << 10)
            expectEqualBytes(output, reference, "\(threads) threads")
        }
    }
}

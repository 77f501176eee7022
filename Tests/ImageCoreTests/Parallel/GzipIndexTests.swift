import Foundation
import Synchronization
import Testing
@testable import ImageCore

@Suite("GZIDX seek index")
struct GzipIndexTests {
    /// Makes an index with a window-less first point, one windowed point at a bit offset that
    /// is not a byte boundary, and the end point.
    private func sampleIndex() -> GzipIndex {
        GzipIndex(compressedSize: 1000, uncompressedSize: 5000, spacing: 4096, points: [
            GzipAccessPoint(compressedBitOffset: 10 * 8, uncompressedOffset: 0, window: nil),
            GzipAccessPoint(compressedBitOffset: 400 * 8 + 5, uncompressedOffset: 4100, window: randomBytes(32768)),
            GzipAccessPoint(compressedBitOffset: 1000 * 8, uncompressedOffset: 5000, window: nil),
        ])
    }

    @Test("serialized layout")
    func serializedLayout() throws {
        let bytes = sampleIndex().serialized()
        // 35 header bytes, 3 points of 18 bytes, one 32 KiB window.
        #expect(bytes.count == 35 + 3 * 18 + 32768)
        #expect(Array(bytes[0..<5]) == Array("GZIDX".utf8))
        #expect(bytes[5] == 1)
        // Bit 3205 is bit 5 of byte 400: stored as byte 401 with 3 bits taken from byte 400.
        let second = 35 + 18
        #expect(bytes[second] == 145)
        #expect(bytes[second + 1] == 1)
        #expect(bytes[second + 16] == 3)
        #expect(bytes[second + 17] == 1)
    }

    @Test("round trip keeps every field")
    func roundTrip() throws {
        let index = sampleIndex()
        let parsed = try GzipIndex(parsing: index.serialized(), path: "sample.gzidx")
        #expect(parsed == index)
    }

    @Test("loaded file keeps every field")
    func loadedFile() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let index = sampleIndex()
        let path = scratch.file("sample.gzidx")
        try index.write(to: path)
        let loaded = try GzipIndex(contentsOf: path)
        #expect(loaded == index)
        #expect(loaded.points.map(\.hasWindow) == [false, true, false])
    }

    @Test("truncated index file is rejected")
    func truncatedFile() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let bytes = sampleIndex().serialized()
        for length in [0, 34, 35 + 3 * 18 + 100, bytes.count - 1] {
            let path = scratch.file("cut-\(length).gzidx")
            try writeFile(path, Array(bytes[0..<length]))
            #expect(throws: GzipIndexError.self) { try GzipIndex(contentsOf: path) }
        }
    }

    @Test("truncated index is rejected")
    func truncated() throws {
        let bytes = sampleIndex().serialized()
        for length in [0, 4, 34, 35 + 17, 35 + 3 * 18 + 100, bytes.count - 1] {
            #expect(throws: GzipIndexError.self) { try GzipIndex(parsing: Array(bytes[0..<length]), path: "cut.gzidx") }
        }
    }

    @Test("bad magic, window size and order are rejected")
    func invalidFields() throws {
        var bytes = sampleIndex().serialized()
        bytes[0] = 0x47 ^ 0xff
        #expect(throws: GzipIndexError.self) { try GzipIndex(parsing: bytes, path: "magic.gzidx") }

        bytes = sampleIndex().serialized()
        // The window size field (offset 27, little-endian) becomes 0x4000 = 16384.
        bytes[28] = 0x40
        #expect(throws: GzipIndexError.self) { try GzipIndex(parsing: bytes, path: "window.gzidx") }

        var unsorted = sampleIndex()
        unsorted.points.swapAt(0, 1)
        #expect(throws: GzipIndexError.self) { try GzipIndex(parsing: unsorted.serialized(), path: "order.gzidx") }

        // A point count of 0x0fffffff needs 4.5 GiB of points, far more than the file holds.
        var huge = sampleIndex().serialized()
        huge[31] = 0xff
        huge[32] = 0xff
        huge[33] = 0xff
        huge[34] = 0x0f
        #expect(throws: GzipIndexError.self) { try GzipIndex(parsing: huge, path: "count.gzidx") }
    }

    @Test("built index matches the file")
    func builtIndex() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let payload = compressibleBytes(3 << 20)
        let path = try compressFile(payload, with: "gzip -6", in: scratch, name: "text")
        let sink = MemorySink()
        let index = try GzipIndexBuilder.build(path: path, spacing: 256 << 10, sink: sink)
        expectEqualBytes(sink.bytes, payload)
        #expect(index.uncompressedSize == Int64(payload.count))
        #expect(index.compressedSize == fileSize(path))
        // 3 MiB at one point per 256 KiB or more: between 3 and 13 points with the
        // first and the end point.
        #expect(index.points.count >= 3)
        #expect(index.points.count <= 14)
        for point in index.points where point.window != nil {
            let offset = Int(point.uncompressedOffset)
            expectEqualBytes(point.window!, Array(payload[max(0, offset - 32768)..<offset]))
        }
    }

    @Test("rapidgzip imports imgtool's index")
    func rapidgzipImports() throws {
        guard toolAvailable("rapidgzip") else { return }
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let payload = compressibleBytes(2 << 20) + randomBytes(1 << 20) + [UInt8](repeating: 0, count: 2 << 20)
        let path = try compressFile(payload, with: "gzip -6", in: scratch, name: "mixed")
        let index = try GzipIndexBuilder.build(path: path, spacing: 512 << 10)
        try index.write(to: scratch.file("mixed.gzidx"))
        let result = try runProcess("rapidgzip", ["-d", "-c", "-P", "2", "--import-index", scratch.file("mixed.gzidx"), path])
        #expect(result.status == 0)
        expectEqualBytes([UInt8](result.standardOutput), payload)
    }

    @Test("imgtool decodes with rapidgzip's index")
    func rapidgzipExports() throws {
        guard toolAvailable("rapidgzip") else { return }
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let payload = compressibleBytes(6 << 20) + [UInt8](repeating: 0, count: 3 << 20) + randomBytes(3 << 20)
        let path = try compressFile(payload, with: "gzip -6", in: scratch, name: "mixed")
        let exported = scratch.file("rapid.gzidx")
        let result = try runProcess("rapidgzip", ["-P", "2", "--chunk-size", "512", "--export-index", exported, "-d", "-c", path])
        #expect(result.status == 0)
        let index = try GzipIndex(contentsOf: exported)
        #expect(index.points.count > 3)
        for threads in [1, 2, 4] {
            let (output, decoded) = try parallelOutput(path, threads: threads, index: index)
            expectEqualBytes(output, payload, "threads \(threads)")
            #expect(decoded.strategy == .index)
        }
    }

    @Test("window-less point inside a member is not a member start")
    func windowlessPointInsideMember() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        // igzip -0 ends the member with a point at its final block's end. Random data
        // has no matches, so no point needs its window: an index with sparse windows
        // (rapidgzip's) stores none, as for a member start.
        let payload = randomBytes(3 << 20)
        let path = try compressFile(payload, with: "igzip -0", in: scratch, name: "random")
        var index = try GzipIndexBuilder.build(path: path, spacing: 256 << 10)
        #expect(index.points.count >= 2)
        for number in index.points.indices { index.points[number].window = nil }
        for threads in [1, 2] {
            let (output, decoded) = try parallelOutput(path, threads: threads, index: index)
            expectEqualBytes(output, payload, "threads \(threads)")
            #expect(decoded.members == 1)
        }
    }

    /// Writes a gzip file of the members `parts`, each compressed with `gzip -6`, and
    /// returns its path.
    private func concatenatedMembers(_ parts: [[UInt8]], in scratch: ScratchDirectory) throws -> String {
        var joined: [UInt8] = []
        for (number, part) in parts.enumerated() {
            let path = try compressFile(part, with: "gzip -6", in: scratch, name: "member\(number)")
            joined += try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        }
        let path = scratch.file("members.gz")
        try writeFile(path, joined)
        return path
    }

    /// Returns `index` without the points before the start of member `member`'s deflate data
    /// (its `member`-th window-less point), with the output offsets moved so that the
    /// member starts at 0: an index that lies by leaving out whole members.
    private func indexSkipping(before member: Int, of index: GzipIndex, keepFirst: Bool) -> GzipIndex {
        let starts = index.points.filter { $0.window == nil }
        let start = starts[member]
        var points = index.points.filter { $0.compressedBitOffset >= start.compressedBitOffset }
        for number in points.indices { points[number].uncompressedOffset -= start.uncompressedOffset }
        if keepFirst { points.insert(index.points[0], at: 0) }
        return GzipIndex(compressedSize: index.compressedSize, uncompressedSize: index.uncompressedSize - start.uncompressedOffset,
                         spacing: index.spacing, points: points)
    }

    @Test("first point past a member")
    func indexSkippingFirstMember() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let path = try concatenatedMembers([compressibleBytes(100_000), compressibleBytes(3 << 20, seed: 3)], in: scratch)
        let index = try GzipIndexBuilder.build(path: path, spacing: 1 << 20)
        // Point 0 is member 0's deflate start; the first point is now member 1's.
        let lying = indexSkipping(before: 1, of: index, keepFirst: false)
        #expect(lying.points[0].uncompressedOffset == 0)
        for threads in [1, 2] {
            #expect(throws: (any Error).self, "threads \(threads)") { _ = try parallelOutput(path, threads: threads, index: lying) }
        }
    }

    @Test("index with only the end point")
    func indexWithOnlyEndPoint() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let payload = compressibleBytes(1 << 20)
        let path = try compressFile(payload, with: "gzip -6", in: scratch, name: "text")
        var index = try GzipIndexBuilder.build(path: path, spacing: 256 << 10)
        // The end point lies at the end of the file, so no point is left to start from.
        index.points = [index.points.last!]
        let (output, _) = try parallelOutput(path, threads: 2, index: index)
        expectEqualBytes(output, payload)
    }

    @Test("point skipping a member")
    func indexSkippingMiddleMember() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let path = try concatenatedMembers([[], compressibleBytes(100_000), compressibleBytes(3 << 20, seed: 3)], in: scratch)
        let index = try GzipIndexBuilder.build(path: path, spacing: 1 << 20)
        // Member 0 is empty, and the next point is member 2's start at output offset 0:
        // decoding member 0 ends there by its length, and member 1 would be skipped.
        let lying = indexSkipping(before: 2, of: index, keepFirst: true)
        for threads in [1, 2] {
            #expect(throws: (any Error).self, "threads \(threads)") { _ = try parallelOutput(path, threads: threads, index: lying) }
        }
    }

    @Test("point past an empty member")
    func pointPastEmptyMember() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let parts = [compressibleBytes(100_000), [], compressibleBytes(3 << 20, seed: 3)]
        let path = try concatenatedMembers(parts, in: scratch)
        var index = try GzipIndexBuilder.build(path: path, spacing: 1 << 20)
        // rapidgzip leaves out the point at an empty member's start: the chunk before it
        // then ends at the start of the member after the empty one.
        let starts = index.points.filter { $0.window == nil }
        index.points.removeAll { $0 == starts[1] }
        for threads in [1, 2] {
            let (output, decoded) = try parallelOutput(path, threads: threads, index: index)
            expectEqualBytes(output, parts.flatMap { $0 }, "threads \(threads)")
            #expect(decoded.strategy == .index)
        }
    }

    @Test("index that is no regular file")
    func indexNotRegularFile() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let fifo = scratch.file("fifo.gzidx")
        #expect(mkfifo(fifo, 0o600) == 0)
        // Opening a FIFO for reading waits for a writer; the index must not wait.
        for path in [fifo, scratch.path] {
            #expect {
                try GzipIndex(contentsOf: path)
            } throws: { error in
                let text = (error as? any ImageError)?.description ?? ""
                return text.contains(path) && text.contains("not a regular file") && !text.contains("could not be completed")
            }
        }
        #expect {
            try GzipIndex(contentsOf: scratch.file("missing.gzidx"))
        } throws: { error in
            let text = (error as? any ImageError)?.description ?? ""
            return text.contains("missing.gzidx") && !text.contains("could not be completed")
        }
    }

    @Test("index command writes a usable index")
    func indexCommand() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let payload = compressibleBytes(1 << 20)
        let path = try compressFile(payload, with: "gzip -6", in: scratch, name: "cli")
        let imgtool = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent(".build/debug/imgtool").path
        guard FileManager.default.isExecutableFile(atPath: imgtool) else { return }
        let first = try runProcess(imgtool, ["index", path, "--spacing", "65536"])
        #expect(first.status == 0)
        let index = try GzipIndex(contentsOf: path + ".gzidx")
        #expect(index.uncompressedSize == Int64(payload.count))
        // A second run must not replace the index: exit code 73.
        let second = try runProcess(imgtool, ["index", path])
        #expect(second.status == 73)
    }

    @Test("decompress writes and uses an index")
    func decompressIndexOptions() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let payload = compressibleBytes(1 << 20) + [UInt8](repeating: 0, count: 1 << 20)
        let path = try compressFile(payload, with: "gzip -6", in: scratch, name: "image")
        let imgtool = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent(".build/debug/imgtool").path
        guard FileManager.default.isExecutableFile(atPath: imgtool) else { return }

        let index = scratch.file("image.gzidx")
        let first = try runProcess(imgtool, ["decompress", "--progress", "none", "--index-out", index, path, scratch.file("one.raw")])
        #expect(first.status == 0)
        #expect(try sha256sum(scratch.file("one.raw")) == sha256sum(scratch.file("image.raw")))
        #expect(pathExists(index))

        let second = try runProcess(imgtool, ["decompress", "--progress", "none", "--threads", "2", "--index", index, path,
                                              scratch.file("two.raw")])
        #expect(second.status == 0)
        #expect(try sha256sum(scratch.file("two.raw")) == sha256sum(scratch.file("image.raw")))

        // An existing index path is never replaced, and no RAW file appears: exit 73.
        let third = try runProcess(imgtool, ["decompress", "--progress", "none", "--index-out", index, path,
                                             scratch.file("three.raw")])
        #expect(third.status == 73)
        #expect(!pathExists(scratch.file("three.raw")))

        // An index of another file is rejected before anything is published.
        let other = try compressFile(randomBytes(4096), with: "gzip -6", in: scratch, name: "other")
        let fourth = try runProcess(imgtool, ["decompress", "--progress", "none", "--index", index, other,
                                              scratch.file("four.raw")])
        #expect(fourth.status == 2)
        #expect(!pathExists(scratch.file("four.raw")))
        #expect(fourth.standardError.contains("invalid gzip index '\(index)'"), "\(fourth.standardError)")

        // An index whose point leads into the wrong place of the right file: the error
        // names the index, since the file itself is fine.
        var moved = try GzipIndexBuilder.build(path: path, spacing: 64 << 10)
        let inner = try #require(moved.points.firstIndex(where: { $0.window != nil }))
        moved.points[inner].compressedBitOffset += 8
        let movedPath = scratch.file("moved.gzidx")
        try moved.write(to: movedPath)
        let fifth = try runProcess(imgtool, ["decompress", "--progress", "none", "--threads", "2", "--index", movedPath, path,
                                             scratch.file("five.raw")])
        #expect(fifth.status == 2)
        #expect(!pathExists(scratch.file("five.raw")))
        #expect(fifth.standardError.contains("decoded with the index '\(movedPath)'"), "\(fifth.standardError)")
    }

    /// Decompresses `source` into `raw` with `indexOutput` set to `index`, and calls
    /// `atEnd` from the final progress update, which comes after decoding and before
    /// anything is published.
    private func decompressWithIndex(_ source: String, raw: String, index: String,
                                     cancellation: CancellationToken? = nil,
                                     atEnd: @escaping @Sendable () -> Void) throws -> DecompressSummary {
        let options = DecompressOptions(progress: { update in
            if update.completed == update.total { atEnd() }
        }, cancellation: cancellation, indexOutput: index)
        return try Decompressor.decompress(source: source, destination: raw, options: options)
    }

    /// Returns the path of a gzip file of `count` compressible bytes in `scratch`, the
    /// only file there.
    private func gzipSource(_ count: Int, in scratch: ScratchDirectory) throws -> String {
        let source = try compressFile(compressibleBytes(count), with: "gzip -6", in: scratch, name: "image")
        try FileManager.default.removeItem(atPath: scratch.file("image.raw"))
        return source
    }

    @Test("index output published with RAW")
    func indexOutputPublishedWithRaw() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let source = try gzipSource(1 << 20, in: scratch)
        let raw = scratch.file("disk.raw")
        let index = scratch.file("image.gzidx")
        let summary = try decompressWithIndex(source, raw: raw, index: index, atEnd: {})
        expectEqualBytes(try readFile(raw), compressibleBytes(1 << 20))
        let written = try GzipIndex(contentsOf: index)
        #expect(written.uncompressedSize == 1 << 20)
        #expect(written == summary.index)
        #expect(try directoryNames(scratch.path) == ["disk.raw", "image.gz", "image.gzidx"])
    }

    /// ENOSPC while writing the index names the --index-out path, as it names RAW's path
    /// for RAW, and not the temporary file that is gone after the error.
    @Test("full file system names the index path",
          .enabled(if: ScratchMount.isPossible, "mounting a tmpfs needs root with CAP_SYS_ADMIN"))
    func fullFileSystemNamesIndexPath() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let mount = try ScratchMount(type: "tmpfs", options: "size=1m")
        defer { mount.unmount() }
        // dd stops with ENOSPC once the tmpfs is full.
        _ = try runProcess("/bin/dd", ["if=/dev/zero", "of=\(mount.file("filler"))", "bs=64k"])
        let source = try gzipSource(1 << 20, in: scratch)
        let raw = scratch.file("disk.raw")
        let index = mount.file("image.gzidx")

        #expect {
            _ = try decompressWithIndex(source, raw: raw, index: index, atEnd: {})
        } throws: { error in
            guard let error = error as? SystemError else { return false }
            return error.errno == .noSpace && error.path == index
        }
        #expect(try directoryNames(mount.path) == ["filler"])
        #expect(!pathExists(raw))
    }

    /// A file that another process creates at one of the two targets while decoding. When
    /// RAW appears, publishing RAW fails, and the index must not stay behind either. When
    /// the index appears, RAW is published first, then removed again because the index
    /// cannot be. Either way only the other process's file is left beside the source.
    @Test("target appearing leaves only that file", arguments: [
        ("disk.raw", ["disk.raw", "image.gz"]),
        ("image.gzidx", ["image.gz", "image.gzidx"]),
    ])
    func targetAppearingLeavesOnlyThatFile(appearingName: String, expectedNames: [String]) throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let source = try gzipSource(1 << 20, in: scratch)
        let raw = scratch.file("disk.raw")
        let index = scratch.file("image.gzidx")
        let appearing = scratch.file(appearingName)
        #expect(throws: TargetExistsError.self) {
            _ = try decompressWithIndex(source, raw: raw, index: index, atEnd: {
                if !pathExists(appearing) { try? writeFile(appearing, Array("other".utf8)) }
            })
        }
        #expect(try readFile(appearing) == Array("other".utf8))
        #expect(try directoryNames(scratch.path) == expectedNames)
    }

    @Test("cancelled index output leaves no file")
    func cancelledIndexOutputLeavesNoFile() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let source = try gzipSource(1 << 20, in: scratch)
        let token = CancellationToken()
        #expect(throws: CancelledError.self) {
            _ = try decompressWithIndex(source, raw: scratch.file("disk.raw"), index: scratch.file("image.gzidx"),
                                        cancellation: token, atEnd: { token.cancel() })
        }
        #expect(try directoryNames(scratch.path) == ["image.gz"])
    }

    @Test("existing index output rejected before decoding")
    func existingIndexOutputRejected() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let source = try gzipSource(65536, in: scratch)
        let index = scratch.file("image.gzidx")
        try writeFile(index, Array("other".utf8))
        let decoded = Atomic<Bool>(false)
        #expect(throws: TargetExistsError.self) {
            _ = try decompressWithIndex(source, raw: scratch.file("disk.raw"), index: index, atEnd: {
                decoded.store(true, ordering: .relaxed)
            })
        }
        let decodedBeforeRejection = decoded.load(ordering: .relaxed)
        #expect(!decodedBeforeRejection)
        #expect(try readFile(index) == Array("other".utf8))
        #expect(try directoryNames(scratch.path) == ["image.gz", "image.gzidx"])
    }

    /// An index path that names RAW, also through `./` or a linked directory. Publishing
    /// the index after RAW could only fail, so the run is rejected before decoding.
    @Test("index output naming RAW rejected", arguments: ["disk.raw", "./disk.raw", "linked/disk.raw"])
    func indexOutputNamingRawRejected(indexName: String) throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let source = try gzipSource(65536, in: scratch)
        try FileManager.default.createSymbolicLink(atPath: scratch.file("linked"), withDestinationPath: scratch.path)
        let raw = scratch.file("disk.raw")
        let index = scratch.file(indexName)
        let decoded = Atomic<Bool>(false)
        let error = #expect(throws: InvalidArgumentError.self) {
            _ = try decompressWithIndex(source, raw: raw, index: index, atEnd: {
                decoded.store(true, ordering: .relaxed)
            })
        }
        let decodedBeforeRejection = decoded.load(ordering: .relaxed)
        #expect(!decodedBeforeRejection)
        #expect(error?.argument == "--index-out")
        #expect(error?.value == index)
        #expect(try directoryNames(scratch.path) == ["image.gz", "linked"])
    }

    /// A FIFO source is rejected without opening it: opening waits for a writer, which
    /// may never come, and a writer that came would lose its data.
    @Test("index output rejects FIFO unopened")
    func indexOutputRejectsFifoUnopened() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let fifo = scratch.file("image.gz")
        try #require(mkfifo(fifo, 0o600) == 0)
        let returned = Atomic<Bool>(false)
        let openedBeforeReturn = Atomic<Bool>(false)
        let writerDone = DispatchSemaphore(value: 0)
        // Opening the write end waits until the FIFO is opened for reading.
        Thread {
            let descriptor = open(fifo, O_WRONLY)
            if !returned.load(ordering: .sequentiallyConsistent) {
                openedBeforeReturn.store(true, ordering: .sequentiallyConsistent)
            }
            if descriptor >= 0 { close(descriptor) }
            writerDone.signal()
        }.start()

        let error = #expect(throws: InvalidArgumentError.self) {
            _ = try Decompressor.decompress(source: fifo, destination: scratch.file("disk.raw"),
                                            options: DecompressOptions(indexOutput: scratch.file("image.gzidx")))
        }
        returned.store(true, ordering: .sequentiallyConsistent)
        // A reader that does not wait lets the writer thread's open return.
        let reader = open(fifo, O_RDONLY | O_NONBLOCK)
        writerDone.wait()
        if reader >= 0 { close(reader) }

        let sourceOpened = openedBeforeReturn.load(ordering: .sequentiallyConsistent)
        #expect(!sourceOpened)
        #expect(error?.argument == "--index-out")
        #expect(try directoryNames(scratch.path) == ["image.gz"])
    }

    /// The index builder maps the source file, so a stream input is rejected instead of
    /// being decoded without an index.
    @Test("index output rejects stream input")
    func indexOutputRejectsStreamInput() throws {
        let input = MemoryInput(try gzip("abc"))
        let options = DecompressOptions(indexOutput: "/nonexistent/image.gzidx")
        #expect(throws: InvalidArgumentError.self) {
            _ = try Decompressor.decode(input: input, into: MemorySink(), options: options)
        }
    }

    @Test("index used with stream input warns")
    func indexWithStreamInputWarns() throws {
        let input = MemoryInput(try gzip("abc"))
        var options = DecompressOptions(index: sampleIndex())
        options.indexPath = "other.gzidx"
        options.logsWarnings = false

        let summary = try Decompressor.decode(input: input, into: MemorySink(), options: options)

        #expect(summary.bytesWritten == 3)
        #expect(summary.warnings.count == 1)
        #expect(summary.warnings.first?.contains("without the seek index 'other.gzidx'") == true)
    }

    @Test("builder names xz source")
    func builderNamesXzSource() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let path = try compressFile(compressibleBytes(4096), with: "xz -c", in: scratch, name: "image")

        #expect {
            _ = try GzipIndexBuilder.build(path: path)
        } throws: { error in
            guard let error = error as? InvalidArgumentError else { return false }
            return error.value == path && error.reason == "it is xz, and a seek index exists only for gzip"
        }
    }

    @Test("builder names raw source")
    func builderNamesRawSource() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let path = scratch.file("disk.raw")
        try writeFile(path, [UInt8](repeating: 0, count: 4096))

        #expect {
            _ = try GzipIndexBuilder.build(path: path)
        } throws: { error in
            guard let error = error as? InvalidArgumentError else { return false }
            return error.value == path && error.reason.hasPrefix("it is not gzip: found zero bytes")
        }
    }

    @Test("builder reports trailing data")
    func builderReportsTrailingData() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let payload = compressibleBytes(1 << 20)
        let path = try compressFile(payload, with: "gzip -6", in: scratch, name: "text")
        let compressedSize = fileSize(path)
        try writeFile(path, try readFile(path) + Array("GARBAGE".utf8))

        let built = try GzipIndexBuilder.build(file: try MappedFile(path: path), spacing: 256 << 10)

        #expect(built.index.uncompressedSize == Int64(payload.count))
        #expect(built.warnings == ["'\(path)': ignored 7 bytes of trailing data at offset \(compressedSize) "
                                   + "after the last gzip member"])
    }

    @Test("builder accepts trailing zeros silently")
    func builderAcceptsTrailingZeros() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let path = try compressFile(compressibleBytes(1 << 20), with: "gzip -6", in: scratch, name: "text")
        try writeFile(path, try readFile(path) + [UInt8](repeating: 0, count: 512))

        let built = try GzipIndexBuilder.build(file: try MappedFile(path: path), spacing: 256 << 10)

        #expect(built.warnings.isEmpty)
    }

    @Test("--index-out keeps the trailing data warning")
    func indexOutputKeepsWarning() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let payload = compressibleBytes(1 << 20)
        let source = try compressFile(payload, with: "gzip -6", in: scratch, name: "text")
        let compressedSize = fileSize(source)
        try writeFile(source, try readFile(source) + Array("GARBAGE".utf8))
        let destination = scratch.file("out.raw")
        let options = DecompressOptions(threads: 1, indexOutput: scratch.file("out.gzidx"), splitSingleStream: true)

        let summary = try Decompressor.decompress(source: source, destination: destination, options: options)

        #expect(try readFile(destination) == payload)
        #expect(summary.warnings == ["'\(source)': ignored 7 bytes of trailing data at offset \(compressedSize) "
                                     + "after the last gzip member"])
    }
}

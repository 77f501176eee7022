// WriteBehind on its own: pieces of any size at any offset land where they belong,
// through O_DIRECT or the page cache, and the hasher receives exactly the submitted bytes.

import Foundation
import Synchronization
import Testing
@testable import ImageCore
#if canImport(Glibc)
import Glibc
#endif

/// The last length a writer reported, shared with its writer thread.
private final class ReportedLength: Sendable {
    let value = Atomic<Int64>(0)
}

@Suite struct WriteBehindTests {
    /// Bytes that differ from one position to the next, so a misplaced piece shows.
    private func pattern(_ count: Int, seed: UInt8) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed)) }
    }

    /// Submits `pieces` one after the other from `start`, drains, and returns the last
    /// length the writer reported.
    private func submit(_ pieces: [[UInt8]], from start: Int64, to writer: WriteBehind,
                        reported: ReportedLength) throws -> Int64 {
        var offset = start
        for piece in pieces {
            try piece.withUnsafeBytes { try writer.submit($0, at: offset) }
            offset += Int64(piece.count)
        }
        try writer.drain()
        return reported.value.load(ordering: .relaxed)
    }

    private func check(directory: String) throws {
        let path = "\(directory)/part"
        let part = try FileDescriptor.open(path, flags: O_RDWR | O_CREAT | O_EXCL, mode: 0o644)
        defer { try? part.close() }
        // An unaligned prefix, as a resumed download leaves it.
        let prefix = pattern(5000, seed: 1)
        try prefix.withUnsafeBytes { try part.writeAll($0, at: 0) }

        let hasher = SHA256()
        let reported = ReportedLength()
        let writer = WriteBehind(part: part, hasher: hasher) { length in
            reported.value.store(length, ordering: .relaxed)
        }
        defer { writer.stop() }
        writer.reset(writtenLength: Int64(prefix.count))

        let sizes = [1, 4095, 70_000, WriteBehind.bufferSize + 3, 2 * WriteBehind.bufferSize, 12_345]
        let pieces = sizes.enumerated().map { pattern($0.element, seed: UInt8($0.offset + 2)) }
        let body = pieces.flatMap { $0 }
        let length = try submit(pieces, from: Int64(prefix.count), to: writer, reported: reported)

        #expect(length == Int64(prefix.count + body.count))
        expectEqualBytes(try readFile(path), prefix + body)
        #expect(hasher.finalize() == SHA256.hash(body))

        // A rewind, as for a 206 that starts before the end of the partial file.
        let cut = 1_234_567
        try part.truncate(to: Int64(cut))
        writer.reset(writtenLength: Int64(cut))
        hasher.reset()
        let prefixAfterCut = Array((prefix + body)[..<cut])
        hasher.update(prefixAfterCut)
        let tail = pattern(3 * WriteBehind.bufferSize + 17, seed: 40)
        let lengthAfterCut = try submit([tail], from: Int64(cut), to: writer, reported: reported)

        #expect(lengthAfterCut == Int64(cut + tail.count))
        expectEqualBytes(try readFile(path), prefixAfterCut + tail)
        #expect(hasher.finalize() == SHA256.hash(prefixAfterCut + tail))
    }

    /// On a slow link a partly filled buffer is written after `maximumFillTime`, so
    /// progress and the inflation that follows the file do not wait for 1 MiB.
    @Test func partialBufferIsWrittenWhenStale() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let part = try FileDescriptor.open(scratch.file("part"), flags: O_RDWR | O_CREAT | O_EXCL, mode: 0o644)
        defer { try? part.close() }
        let reported = ReportedLength()
        let writer = WriteBehind(part: part, hasher: SHA256()) { length in
            reported.value.store(length, ordering: .relaxed)
        }
        defer { writer.stop() }

        let bytes = pattern(10, seed: 3)
        try bytes.withUnsafeBytes { try writer.submit($0, at: 0) }
        Thread.sleep(forTimeInterval: 0.3)
        writer.flushIfStale()
        let deadline = Date().addingTimeInterval(5)
        while reported.value.load(ordering: .relaxed) < 10 && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.01)
        }

        #expect(reported.value.load(ordering: .relaxed) == 10)
        expectEqualBytes(try readFile(scratch.file("part")), bytes)
    }

    @Test func piecesLandInPlaceOnDisk() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        try check(directory: scratch.path)
    }

    /// tmpfs takes O_DIRECT on some kernels and rejects it on others; either way the
    /// bytes must be the same.
    @Test func piecesLandInPlaceOnTmpfs() throws {
        var status = stat()
        guard stat("/dev/shm", &status) == 0 else { return }
        var template = Array("/dev/shm/imgtool-test-writebehind-XXXXXX".utf8CString)
        guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else { return }
        let directory = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try check(directory: directory)
    }
}

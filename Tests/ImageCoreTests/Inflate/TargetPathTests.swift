// Target paths: the RAW file is created exactly where the kernel resolves the path or
// not at all, an existing target is rejected before the source is opened, and failures
// on the target's directory include a remedy.

import Foundation
import Testing
@testable import ImageCore

@Suite struct TargetPathTests {
    /// Writes `gzip("abc")` as `input.gz` in `scratch` and inflates it to `destination`.
    private func inflate(to destination: String, in scratch: ScratchDirectory) throws -> DecompressSummary {
        let source = scratch.file("input.gz")
        try writeFile(source, try gzip("abc"))
        return try Decompressor.decompress(source: source, destination: destination, options: DecompressOptions())
    }

    /// `path` relative to the current directory, which path libraries resolve
    /// differently from absolute paths (they merge dot segments into the base).
    private func relative(_ path: String) -> String {
        let depth = FileManager.default.currentDirectoryPath.split(separator: "/").count
        return String(repeating: "../", count: depth) + path.drop(while: { $0 == "/" })
    }

    @Test func dotDotAfterMissingDirectoryIsRejected() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        // The kernel resolves `missing/..` only when `missing` exists, as `cat > PATH` does.
        #expect(throws: SystemError.self) {
            _ = try inflate(to: relative(scratch.file("missing/../disk.raw")), in: scratch)
        }
        #expect(try directoryNames(scratch.path) == ["input.gz"])
    }

    @Test func dotAfterMissingDirectoryIsRejected() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        #expect(throws: (any Error).self) {
            _ = try inflate(to: relative(scratch.file("missing/.")), in: scratch)
        }
        #expect(try directoryNames(scratch.path) == ["input.gz"])
    }

    @Test func emptyTargetPathIsRejected() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        #expect(throws: InvalidArgumentError.self) {
            _ = try inflate(to: "", in: scratch)
        }
    }

    @Test func longMultibyteNameIsAccepted() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        // 127 two-byte characters: 254 bytes, within the 255-byte limit of a file name.
        let name = String(repeating: "é", count: 127)
        let summary = try inflate(to: scratch.file(name), in: scratch)
        #expect(summary.bytesWritten == 3)
        #expect(try readFile(scratch.file(name)) == Array("abc".utf8))
    }
}

@Suite struct TargetErrorRemedyTests {
    @Test func targetUnderFileGivesRemedy() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let source = scratch.file("input.gz")
        try writeFile(source, try gzip("abc"))
        do {
            _ = try Decompressor.decompress(source: source, destination: scratch.file("input.gz/disk.raw"),
                                            options: DecompressOptions())
            Issue.record("a target under a regular file was accepted")
        } catch let error as SystemError {
            #expect(error.errno == .notDirectory)
            #expect(error.remedy != nil)
        }
    }

    // A read-only mount or a full quota needs root to set up, so these check the
    // messages that such failures produce.
    @Test(arguments: [EROFS, EDQUOT, ENAMETOOLONG])
    func writeFailureGivesRemedy(code: Int32) {
        let error = SystemError("create temporary file in", path: "/mnt/tank/vms", errno: Errno(rawValue: code))
        #expect(error.remedy != nil)
    }
}

@Suite struct TargetCheckOrderTests {
    @Test func existingTargetRejectedBeforeSourceOpens() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let source = scratch.file("pipe")
        #expect(mkfifo(source, 0o600) == 0)
        try writeFile(scratch.file("disk.raw"), [0xff])
        // Opening a FIFO for reading waits for a writer. Without a check of the target
        // first, that wait lasts until this thread opens the FIFO for writing 2 s later.
        let writer = Thread {
            Thread.sleep(forTimeInterval: 2)
            let descriptor = open(source, O_WRONLY | O_NONBLOCK)
            if descriptor >= 0 { close(descriptor) }
        }
        writer.start()
        let started = ContinuousClock.now
        #expect(throws: TargetExistsError.self) {
            _ = try Decompressor.decompress(source: source, destination: scratch.file("disk.raw"), options: DecompressOptions())
        }
        #expect(ContinuousClock.now - started < .seconds(1))
    }
}

// Some file systems reject `mmap` of a regular file with ENODEV, sysfs among them. The
// parallel decoders need the map, but the sequential decoder reads the file like a pipe,
// so a decode without --index-out falls back to it. These tests make `MappedFile` fail
// for one path through `MappedFile.simulatedMapFailures`.

import Foundation
import Testing
@testable import ImageCore

@Suite("Inputs that cannot be memory-mapped")
struct UnmappableInputTests {
    /// Data, a zero run that the writer keeps as a hole, and data again.
    private func payload() -> [UInt8] {
        compressibleBytes(2 << 20) + [UInt8](repeating: 0, count: 1 << 20) + randomBytes(300_007)
    }

    /// Runs `body` while mapping `path` fails with `errno`.
    private func whileMapFails<T>(_ path: String, with errno: Errno, _ body: () throws -> T) rethrows -> T {
        MappedFile.simulatedMapFailures.withLock { $0[path] = errno }
        defer { _ = MappedFile.simulatedMapFailures.withLock { $0.removeValue(forKey: path) } }
        return try body()
    }

    @Test("ENODEV falls back to the sequential decoder", arguments: [1, 2])
    func fallsBackToSequential(threads: Int) throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let bytes = payload()
        let source = try compressFile(bytes, with: "gzip -6", in: scratch, name: "image")
        let destination = scratch.file("out.raw")
        // The options of `imgtool decompress` and, with one thread, of vm.decompress_gzip.
        let options = DecompressOptions(threads: threads, splitSingleStream: true)

        let summary = try whileMapFails(source, with: .noDevice) {
            try Decompressor.decompress(source: source, destination: destination, options: options)
        }

        expectEqualBytes(try readFile(destination), bytes)
        #expect(summary.bytesWritten == Int64(bytes.count))
        #expect(summary.members == 1)
        // The fallback is one of the summary's warnings, which the service logs with the
        // caller's paths instead of the /proc/self/fd/N names it hands to ImageCore.
        #expect(summary.warnings.count == 1)
        #expect(summary.warnings.first?.hasPrefix("'\(source)': its file system does not support memory maps") == true)
    }

    @Test("ENODEV warning returned with logging off")
    func fallbackWarningReturnedNotLogged() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let source = try compressFile(payload(), with: "gzip -6", in: scratch, name: "image")
        var options = DecompressOptions(threads: 2, splitSingleStream: true)
        options.logsWarnings = false

        let summary = try whileMapFails(source, with: .noDevice) {
            try Decompressor.decompress(source: source, destination: scratch.file("out.raw"), options: options)
        }

        #expect(summary.warnings.count == 1)
        #expect(summary.warnings.first?.contains("decoded sequentially") == true)
    }

    @Test("ENODEV with --index decodes without the index")
    func indexGoesUnused() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let bytes = payload()
        let source = try compressFile(bytes, with: "gzip -6", in: scratch, name: "image")
        let index = try GzipIndexBuilder.build(path: source, spacing: 1 << 20)
        #expect(index.points.count > 2)
        let destination = scratch.file("out.raw")
        var options = DecompressOptions(threads: 2, index: index, splitSingleStream: true)
        options.indexPath = scratch.file("image.gzidx")

        let summary = try whileMapFails(source, with: .noDevice) {
            try Decompressor.decompress(source: source, destination: destination, options: options)
        }

        expectEqualBytes(try readFile(destination), bytes)
        #expect(summary.bytesWritten == Int64(bytes.count))
    }

    @Test("ENODEV with --index-out fails and names the file")
    func indexOutputFails() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let source = try compressFile(payload(), with: "gzip -6", in: scratch, name: "image")
        let destination = scratch.file("out.raw")
        let indexOutput = scratch.file("out.gzidx")
        let options = DecompressOptions(threads: 1, indexOutput: indexOutput, splitSingleStream: true)

        let error = whileMapFails(source, with: .noDevice) {
            #expect(throws: SystemError.self) {
                try Decompressor.decompress(source: source, destination: destination, options: options)
            }
        }

        #expect(error?.errno == .noDevice)
        #expect(error?.path == source)
        #expect("\(error.map { "\($0)" } ?? "")".contains("'\(source)'"))
        #expect(error?.remedy?.contains("copy the file to a local disk") == true)
        #expect(error?.remedy?.contains("--index-out") == true)
        #expect(error?.remedy?.contains("'\(indexOutput)'") == true)
        #expect(!pathExists(destination))
        #expect(!pathExists(indexOutput))
        #expect(try directoryNames(scratch.path) == ["image.gz", "image.raw"])
    }

    @Test("other mmap errors still fail the decode")
    func otherErrorsFail() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let source = try compressFile(payload(), with: "gzip -6", in: scratch, name: "image")
        let destination = scratch.file("out.raw")
        let options = DecompressOptions(threads: 1, splitSingleStream: true)

        let error = whileMapFails(source, with: Errno(rawValue: ENOMEM)) {
            #expect(throws: SystemError.self) {
                try Decompressor.decompress(source: source, destination: destination, options: options)
            }
        }

        #expect(error?.errno == Errno(rawValue: ENOMEM))
        #expect(error?.path == source)
        #expect(!pathExists(destination))
    }

    @Test("a sysfs file rejects mmap with ENODEV",
          .enabled(if: FileManager.default.fileExists(atPath: "/sys/kernel/mm/transparent_hugepage/enabled")))
    func sysfsRejectsMap() throws {
        let path = "/sys/kernel/mm/transparent_hugepage/enabled"
        let error = #expect(throws: SystemError.self) { try MappedFile(path: path) }
        #expect(error?.errno == .noDevice)
        #expect(error?.path == path)
        #expect(error?.remedy == MappedFile.unmappableRemedy)
    }
}

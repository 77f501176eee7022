// Tests of `imgtool resize` argument handling, through the built binary.

import Foundation
import Testing

@Suite struct ResizeCommandTests {
    /// Creates an empty file in a fresh temporary directory; returns the directory.
    private func makeDirectory(with file: String) throws -> URL {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("imgtool-resize-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        #expect(FileManager.default.createFile(atPath: directory.appendingPathComponent(file).path, contents: nil))
        return directory
    }

    private func size(_ path: String) throws -> Int64 {
        (try FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.int64Value ?? -1
    }

    @Test func pathLikeNegativeNumberAfterSeparator() throws {
        let directory = try makeDirectory(with: "-5.raw")
        defer { try? FileManager.default.removeItem(at: directory) }
        let disk = directory.appendingPathComponent("-5.raw").path

        let result = try runImgtool(["resize", "--", "-5.raw", "1M"], in: directory)
        #expect(result.status == 0, "\(result.error)")
        #expect(try size(disk) == 1 << 20)
    }

    @Test func controlCharactersInErrorAreEscaped() throws {
        let result = try runImgtool(["resize", "/nonexistent.raw", "10\u{1B}[31m\nG"])
        #expect(result.status == 64)
        #expect(result.error.contains(#"invalid size '10\u{1B}[31m\u{A}G'"#))
        #expect(!result.error.contains("\u{1B}"))
    }

    @Test func controlCharactersInPathAreEscaped() throws {
        let name = "a\ngrew \u{1B}[2Kb.raw"
        let directory = try makeDirectory(with: name)
        defer { try? FileManager.default.removeItem(at: directory) }

        let result = try runImgtool(["resize", name, "1M"], in: directory)
        #expect(result.status == 0, "\(result.error)")
        #expect(result.output == #"grew 'a\u{A}grew \u{1B}[2Kb.raw' from 0 to 1048576 bytes"# + "\n")
        #expect(try size(directory.appendingPathComponent(name).path) == 1 << 20)
    }

    @Test func negativeSizeKeepsItsPlace() throws {
        let directory = try makeDirectory(with: "disk.raw")
        defer { try? FileManager.default.removeItem(at: directory) }
        let disk = directory.appendingPathComponent("disk.raw").path

        let result = try runImgtool(["resize", disk, "-1G", "--shrink"])
        #expect(result.status == 64)
        #expect(result.error.contains("invalid size '-1G': a size cannot be negative"))
        #expect(try size(disk) == 0)
    }

    @Test func sizeWithWhitespaceIsRejected() throws {
        let directory = try makeDirectory(with: "disk.raw")
        defer { try? FileManager.default.removeItem(at: directory) }
        let disk = directory.appendingPathComponent("disk.raw").path

        for text in [" 10G", "10G ", "\t10G"] {
            let result = try runImgtool(["resize", disk, text])
            #expect(result.status == 64, "\(text.debugDescription): \(result.error)")
            #expect(result.error.contains("whitespace"), "\(result.error)")
            #expect(result.error.contains("hint: remove the whitespace: '10G'"), "\(result.error)")
        }
        #expect(try size(disk) == 0)
    }
}

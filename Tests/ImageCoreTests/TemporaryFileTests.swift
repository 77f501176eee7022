import Foundation
import Testing
@testable import ImageCore

@Suite struct TemporaryFileTests {
    /// Calls `body` with a new scratch directory, the path of its `disk.raw` and a temporary
    /// file for that path that contains "data", then removes the directory. `label` names
    /// the directory after the calling test.
    private func withWrittenFile(_ label: String = #function,
                                 _ body: (ScratchDirectory, String, TemporaryFile) throws -> Void) throws {
        let scratch = try ScratchDirectory(label)
        defer { scratch.remove() }
        let target = scratch.file("disk.raw")
        let file = try TemporaryFile(for: target)
        try Array("data".utf8).withUnsafeBytes { try file.descriptor.writeAll($0, at: 0) }
        try body(scratch, target, file)
    }

    @Test func publishCreatesFinalFile() throws {
        try withWrittenFile { scratch, target, file throws in
            #expect(!pathExists(target))
            try file.publish()
            #expect(try String(contentsOfFile: target, encoding: .utf8) == "data")
            let leftovers = try FileManager.default.contentsOfDirectory(atPath: scratch.path)
            #expect(leftovers == ["disk.raw"])
        }
    }

    @Test func existingTargetIsRejectedUntouched() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let target = scratch.file("disk.raw")
        try Data([0xff, 0xff]).write(to: URL(fileURLWithPath: target))
        #expect(throws: TargetExistsError.self) { _ = try TemporaryFile(for: target) }
        #expect(try Data(contentsOf: URL(fileURLWithPath: target)) == Data([0xff, 0xff]))
    }

    @Test func targetCreatedDuringWriteIsNotReplaced() throws {
        try withWrittenFile { scratch, target, file throws in
            try Data("other".utf8).write(to: URL(fileURLWithPath: target))
            #expect(throws: TargetExistsError.self) { try file.publish() }
            #expect(try String(contentsOfFile: target, encoding: .utf8) == "other")
            let leftovers = try FileManager.default.contentsOfDirectory(atPath: scratch.path)
            #expect(leftovers == ["disk.raw"])
        }
    }

    /// A signal that arrives while publish fsyncs the file must leave no file. Before,
    /// `imgtool decompress` exited 0 with RAW in place after SIGTERM there.
    @Test func cancellationDuringFileSyncLeavesNoFile() throws {
        try withWrittenFile { scratch, _, file throws in
            let token = CancellationToken()
            token.cancel()
            #expect(throws: CancelledError.self) { try file.publish(cancellation: token, operation: "inflate") }
            #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path).isEmpty)
        }
    }

    /// The same during the directory fsync after the rename: the published name goes.
    @Test func cancellationDuringDirectorySyncRemovesPublishedFile() throws {
        try withWrittenFile { scratch, _, file throws in
            let token = CancellationToken()
            file.beforeDirectorySync = { token.cancel() }
            #expect(throws: CancelledError.self) { try file.publish(cancellation: token, operation: "inflate") }
            #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path).isEmpty)
        }
    }

    @Test func withdrawRemovesPublishedFile() throws {
        try withWrittenFile { scratch, target, file throws in
            try file.publish()
            #expect(pathExists(target))
            file.withdraw()
            #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path).isEmpty)
        }
    }

    /// A file that another process put under the final name after publishing is not ours.
    @Test func withdrawKeepsReplacedFile() throws {
        try withWrittenFile { scratch, target, file throws in
            try file.publish()
            let other = scratch.file("other")
            try Data("other".utf8).write(to: URL(fileURLWithPath: other))
            #expect(rename(other, target) == 0)
            file.withdraw()
            #expect(try String(contentsOfFile: target, encoding: .utf8) == "other")
        }
    }

    @Test func withdrawBeforePublishKeepsTemporaryFile() throws {
        try withWrittenFile { scratch, _, file throws in
            file.withdraw()
            #expect(pathExists(file.temporaryPath))
            file.discard()
            #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path).isEmpty)
        }
    }

    @Test func discardRemovesTemporaryFile() throws {
        try withWrittenFile { scratch, _, file throws in
            #expect(pathExists(file.temporaryPath))
            file.discard()
            #expect(!pathExists(file.temporaryPath))
            #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path).isEmpty)
        }
    }

    @Test func danglingSymlinkTargetIsRejected() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let target = scratch.file("disk.raw")
        try FileManager.default.createSymbolicLink(atPath: target, withDestinationPath: scratch.file("nowhere"))
        #expect(throws: TargetExistsError.self) { _ = try TemporaryFile(for: target) }
        #expect(!pathExists(scratch.file("nowhere")))
    }

    @Test func sameFinalPathComparesDirectoryAndName() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        try FileManager.default.createDirectory(atPath: scratch.file("other"), withIntermediateDirectories: false)
        try FileManager.default.createSymbolicLink(atPath: scratch.file("linked"), withDestinationPath: scratch.path)
        let raw = try TemporaryFile(for: scratch.file("disk.raw"))
        let throughLink = try TemporaryFile(for: scratch.file("linked/disk.raw"))
        let otherDirectory = try TemporaryFile(for: scratch.file("other/disk.raw"))
        let otherName = try TemporaryFile(for: scratch.file("disk.gzidx"))
        defer {
            for file in [raw, throughLink, otherDirectory, otherName] { file.discard() }
        }
        #expect(raw.hasSameFinalPath(as: throughLink))
        #expect(!raw.hasSameFinalPath(as: otherDirectory))
        #expect(!raw.hasSameFinalPath(as: otherName))
    }
}

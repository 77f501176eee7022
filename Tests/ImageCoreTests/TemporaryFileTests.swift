import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif
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

    /// A failed fsync names the path the caller asked for, not the temporary name that
    /// the cleanup removes, and leaves no file.
    @Test func fileSyncFailureNamesFinalPath() throws {
        try withWrittenFile { scratch, target, file throws in
            let temporaryPath = file.temporaryPath
            file.fileSyncFault = { () throws(Errno) in throw Errno(rawValue: EIO) }
            let error = #expect(throws: SystemError.self) { try file.publish() }
            #expect(error?.path == target)
            #expect(error?.errno == Errno(rawValue: EIO))
            #expect(error?.description == "fsync the new file for '\(target)' failed: \(Errno(rawValue: EIO))")
            #expect(error?.description.contains(temporaryPath) == false)
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
    /// Returns a pid for which `kill(pid, 0)` finds no process. Pids above
    /// `/proc/sys/kernel/pid_max` (at most 2^22 on Linux) are never assigned.
    private func unusedPID() -> pid_t {
        let pid = pid_t.max
        let result = kill(pid, 0)
        let error = errno
        #expect(result == -1)
        #expect(error == ESRCH)
        return pid
    }

    /// Writes `bytes` bytes into a new file `name` in `scratch` and returns its path.
    private func writeLeftover(_ name: String, in scratch: ScratchDirectory, bytes: Int = 3) throws -> String {
        let path = scratch.file(name)
        try Data(repeating: 7, count: bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    @Test func removeStaleRemovesOtherTargetsLeftovers() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let leftover = try writeLeftover(".other.raw.imgtool-\(unusedPID())-17.tmp", in: scratch, bytes: 4096)

        let removed = TemporaryFile.removeStale(inDirectoryOf: scratch.file("disk.raw"), subsystem: "test")

        #expect(removed == [leftover])
        #expect(!pathExists(leftover))
    }

    /// A writer in another PID namespace has a pid that looks dead here, but holds the
    /// flock on its file. The lock is taken here through a second descriptor.
    @Test func removeStaleKeepsLockedFile() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let leftover = try writeLeftover(".disk.raw.imgtool-\(unusedPID())-18.tmp", in: scratch)
        let holder = try FileDescriptor.open(leftover, flags: O_RDONLY)
        defer { try? holder.close() }
        try holder.lock(exclusive: true, wait: false)

        let removed = TemporaryFile.removeStale(inDirectoryOf: scratch.file("disk.raw"), subsystem: "test")

        #expect(removed.isEmpty)
        #expect(pathExists(leftover))
    }

    @Test func removeStaleKeepsLiveTemporaryFile() throws {
        try withWrittenFile { scratch, _, file throws in
            let removed = TemporaryFile.removeStale(inDirectoryOf: scratch.file("other.raw"), subsystem: "test")
            #expect(removed.isEmpty)
            #expect(pathExists(file.temporaryPath))
        }
    }

    /// Only regular files with the exact temporary name form are candidates.
    @Test func removeStaleKeepsOtherFiles() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let pid = unusedPID()
        let fifo = scratch.file(".pipe.imgtool-\(pid)-19.tmp")
        #expect(mkfifo(fifo, 0o600) == 0)
        let link = scratch.file(".link.imgtool-\(pid)-20.tmp")
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: scratch.file("nowhere"))
        let lookalikes = try [
            writeLeftover("disk.raw.imgtool-\(pid)-21.tmp", in: scratch),
            writeLeftover(".disk.raw.imgtool-\(pid)-21.tmp.bak", in: scratch),
            writeLeftover(".disk.raw.imgtool-\(pid)x-21.tmp", in: scratch),
            writeLeftover(".imgtool-\(pid)-21.tmp", in: scratch),
        ] + [fifo, link]

        let removed = TemporaryFile.removeStale(inDirectoryOf: scratch.file("disk.raw"), subsystem: "test")

        #expect(removed.isEmpty)
        for path in lookalikes {
            #expect((try? linkStatus(path)) != nil, "'\(path)' was removed")
        }
    }

    @Test func newTemporaryFileHoldsLock() throws {
        try withWrittenFile { _, _, file throws in
            let other = try FileDescriptor.open(file.temporaryPath, flags: O_RDONLY)
            defer { try? other.close() }
            #expect(throws: Errno.wouldBlock) { try other.lock(exclusive: true, wait: false) }
        }
    }
}

// TemporaryFile: write a file under a temporary name, then publish it atomically.
//
// The temporary file sits in the target's directory (so the rename stays on one
// filesystem) as `.<name>.imgtool-<pid>-<random>.tmp`, created with O_EXCL. `publish`
// fsyncs the file, renames it with renameat2(RENAME_NOREPLACE) so an existing target is
// never replaced (falling back to link+unlink where the filesystem lacks that flag), and
// fsyncs the directory. Until then nothing exists under the final name. The pid in the
// name and an exclusive flock held while the file is open let a later run tell a dead
// process's leftovers (`removeStale`) from a live one's.
// `withdraw` removes a published file again when a later step of the same result fails.
//
// Every live temporary path is also recorded in `TemporaryFileRegistry`, so a front end
// that receives SIGINT or SIGTERM can remove them before it exits.

#if canImport(Glibc)
import Glibc
#endif
import CSystem
import Foundation
import Synchronization

/// The target of a new file already exists; nothing was written to it.
public struct TargetExistsError: ImageError {
    public var path: String
    public var kind: String

    public init(path: String, kind: String) {
        self.path = path
        self.kind = kind
    }

    public var category: FailureCategory { .targetExists }
    public var description: String { "'\(path)' already exists (\(kind)); it was not modified" }
    public var remedy: String? { "choose a path that does not exist yet, or remove the existing one yourself" }
}

public final class TemporaryFile {
    /// The path the file will have once published.
    public let finalPath: String
    /// The temporary path, in the same directory.
    public let temporaryPath: String
    /// The open descriptor of the temporary file (read-write).
    public let descriptor: FileDescriptor

    private let directory: FileDescriptor
    private let finalName: String
    private let temporaryName: String
    private var isOpen = true
    /// The directory stays open after `publish`, so that `withdraw` removes the name
    /// from the directory the file was published in.
    private var directoryIsOpen = true
    /// The identity of the file after a successful `publish`, until `withdraw` removes it.
    private var published: FileStatus?

    /// Creates the temporary file for `finalPath`.
    /// - Parameter mustNotExist: when true (the default), an existing `finalPath` of any
    ///   kind (file, link, device, directory) throws `TargetExistsError` before anything
    ///   is created.
    public init(for finalPath: String, mode: mode_t = 0o644, mustNotExist: Bool = true) throws {
        guard !finalPath.isEmpty else {
            throw InvalidArgumentError(argument: "path", value: finalPath, reason: "it is empty",
                                       remedy: "give the path of the file to create")
        }
        let (directoryPath, name) = Self.split(finalPath)
        guard !name.isEmpty, name != ".", name != ".." else {
            throw InvalidArgumentError(argument: "path", value: finalPath, reason: "it names a directory, not a file",
                                       remedy: "give the path of the file to create")
        }
        if mustNotExist, let existing = try Self.status(of: finalPath) {
            throw TargetExistsError(path: finalPath, kind: existing.kindDescription)
        }

        let directory: FileDescriptor
        do {
            directory = try FileDescriptor.open(directoryPath, flags: O_RDONLY | O_DIRECTORY)
        } catch {
            throw SystemError("open directory", path: directoryPath, errno: error)
        }

        var created: (FileDescriptor, String)?
        var lastError = Errno.exists
        for _ in 0..<16 where created == nil {
            let candidate = ".\(Self.namePrefix(name)).imgtool-\(getpid())-\(UInt32.random(in: .min ... .max)).tmp"
            do {
                let fd = try FileDescriptor.open(candidate, flags: O_RDWR | O_CREAT | O_EXCL, mode: mode,
                                                 relativeTo: directory)
                if Self.lockNewFile(fd, path: candidate) {
                    created = (fd, candidate)
                } else {
                    try? fd.close()
                }
            } catch {
                lastError = error
                if error != .exists { break }
            }
        }
        guard let (descriptor, temporaryName) = created else {
            try? directory.close()
            throw SystemError("create temporary file in", path: directoryPath, errno: lastError)
        }

        self.finalPath = finalPath
        self.finalName = name
        self.directory = directory
        self.descriptor = descriptor
        self.temporaryName = temporaryName
        self.temporaryPath = directoryPath == "/" ? "/\(temporaryName)" : "\(directoryPath)/\(temporaryName)"
        TemporaryFileRegistry.shared.insert(temporaryPath)
    }

    deinit {
        if isOpen { discard() }
        if directoryIsOpen { try? directory.close() }
    }

    /// Takes the exclusive flock that marks the new file `fd` as in use until it is
    /// closed, so that `removeStale` keeps it even where the pid in its name looks dead.
    /// Returns false when a `removeStale` in another process removed the name before the
    /// lock was taken. That process finds no process with this pid only when it runs in
    /// another PID namespace. The caller then tries another name.
    private static func lockNewFile(_ fd: FileDescriptor, path: String) -> Bool {
        do {
            // Waits only while a `removeStale` holds the lock to check and remove the file.
            try fd.lock(exclusive: true, wait: true)
        } catch {
            // NOTE: without the lock (flock unsupported, as on some network filesystems)
            // only the pid protects the file. `removeStale` needs the lock too, so it
            // cannot remove the file on such a filesystem either.
            Log.debug("output", "flock on new temporary file '\(path)' failed: \(error)")
            return true
        }
        guard let status = try? fd.status() else { return true }
        return status.linkCount > 0
    }

    /// Makes the file visible under `finalPath`: fsync, rename, fsync of the directory.
    /// - Parameters:
    ///   - replacing: when false (the default) an existing target is never replaced, and
    ///     `TargetExistsError` is thrown with the temporary file removed. When true, the
    ///     rename replaces the target atomically (for configuration files).
    ///   - cancellation: checked after each fsync, because a signal may arrive during
    ///     one, which can take seconds for a large file. A cancelled token throws
    ///     `CancelledError` naming `operation` and leaves no file. The temporary file is
    ///     removed, or after the rename the published name, as long as it still names
    ///     this file.
    public func publish(replacing: Bool = false, cancellation: CancellationToken? = nil,
                        operation: String = "publish") throws {
        precondition(isOpen, "Bug in imgtool: TemporaryFile published twice or after discard")
        do {
            try fileSyncFault?()
            try descriptor.sync()
        } catch {
            discard()
            // The temporary name is gone after `discard`, so the error names the file the
            // caller asked for.
            throw SystemError("fsync the new file for", path: finalPath, errno: error)
        }
        if let cancellation, cancellation.isCancelled {
            discard()
            throw CancelledError(operation)
        }
        let written = try? descriptor.status()

        do {
            if replacing {
                _ = try retryingInterrupts { renameat(directory.rawValue, temporaryName, directory.rawValue, finalName) }
            } else {
                try renameWithoutReplacing()
            }
        } catch {
            if error == .exists {
                let kind = (try? Self.status(of: finalPath))??.kindDescription ?? "file"
                discard()
                throw TargetExistsError(path: finalPath, kind: kind)
            }
            discard()
            throw SystemError("rename to", path: finalPath, errno: error)
        }

        TemporaryFileRegistry.shared.remove(temporaryPath)
        isOpen = false
        try? descriptor.close()
        published = written
        beforeDirectorySync?()
        do {
            try directory.sync()
        } catch {
            throw SystemError("fsync directory of", path: finalPath, errno: error)
        }
        if let cancellation, cancellation.isCancelled {
            withdraw()
            throw CancelledError(operation)
        }
    }

    /// Removes the published file again, for a caller whose later step failed (for
    /// example publishing a second file that belongs to the same result). The name is
    /// removed only while it still names the file this object wrote, so a file that
    /// replaced it meanwhile stays. Does nothing before `publish` or a second time.
    public func withdraw() {
        guard let written = published else { return }
        published = nil
        if let current = try? Self.status(of: finalPath),
           current.device == written.device, current.inode == written.inode {
            _ = unlinkat(directory.rawValue, finalName, 0)
            try? directory.sync()
        }
    }

    /// Returns whether `other` would be published under the same name in the same
    /// directory, however the two paths spell it (`./`, a linked directory). Two such
    /// files cannot both be published.
    public func hasSameFinalPath(as other: TemporaryFile) -> Bool {
        guard finalName == other.finalName else { return false }
        guard let mine = try? directory.status(), let theirs = try? other.directory.status() else {
            return finalPath == other.finalPath
        }
        return mine.device == theirs.device && mine.inode == theirs.inode
    }

    /// Runs right before the directory fsync in `publish`; tests use it to cancel there.
    var beforeDirectorySync: (() -> Void)?

    /// Runs right before the file fsync in `publish`. An error it throws counts as a
    /// failed fsync. Tests use it because a real file cannot be made to fail fsync.
    var fileSyncFault: (() throws(Errno) -> Void)?

    /// Removes the temporary file. Safe to call more than once.
    public func discard() {
        guard isOpen else { return }
        isOpen = false
        _ = unlinkat(directory.rawValue, temporaryName, 0)
        TemporaryFileRegistry.shared.remove(temporaryPath)
        try? descriptor.close()
        try? directory.close()
        directoryIsOpen = false
    }

    private func renameWithoutReplacing() throws(Errno) {
        let renamed = imgtool_renameat2(directory.rawValue, temporaryName, directory.rawValue, finalName,
                                        IMGTOOL_RENAME_NOREPLACE)
        if renamed == 0 { return }
        let error = Errno.current
        // Filesystems without RENAME_NOREPLACE answer EINVAL (or ENOSYS on old kernels);
        // link(2) also fails with EEXIST when the target exists, so it is equally safe.
        guard error == .invalidArgument || error == .noSystemCall else { throw error }
        _ = try retryingInterrupts { linkat(directory.rawValue, temporaryName, directory.rawValue, finalName, 0) }
        _ = unlinkat(directory.rawValue, temporaryName, 0)
    }

    /// Splits `path` at its last slash into the directory and the name, exactly as given.
    /// URL removes `..` and `.` from a relative path as text, which names another file
    /// than the kernel does when the directory before `..` is missing or a link.
    private static func split(_ path: String) -> (directory: String, name: String) {
        guard let slash = path.lastIndex(of: "/") else { return (".", path) }
        let directory = String(path[..<slash])
        return (directory.isEmpty ? "/" : directory, String(path[path.index(after: slash)...]))
    }

    /// Returns the start of `name` that goes into temporary names: at most 160 bytes of
    /// UTF-8, so the temporary name stays within the 255-byte limit of a file name.
    private static func namePrefix(_ name: String) -> String {
        var prefix = ""
        var byteCount = 0
        for character in name {
            byteCount += character.utf8.count
            if byteCount > 160 { break }
            prefix.append(character)
        }
        return prefix
    }

    private static func status(of path: String) throws -> FileStatus? {
        do {
            return try linkStatus(path)
        } catch {
            throw SystemError("inspect", path: path, errno: error)
        }
    }

    /// Removes the temporary files that imgtool processes which no longer run (killed
    /// with SIGKILL, for example) left in the directory of `finalPath`, whatever target
    /// they were for. A file is removed only when no process with the pid in its name
    /// exists and a non-blocking exclusive flock on it succeeds. A live `TemporaryFile`
    /// holds that lock, which also protects a writer in another PID namespace, whose pid
    /// means nothing here. Logs each removal with its size at info level under
    /// `subsystem`. Returns the paths removed.
    @discardableResult
    public static func removeStale(inDirectoryOf finalPath: String, subsystem: String) -> [String] {
        let directoryPath = split(finalPath).directory
        guard let directory = try? FileDescriptor.open(directoryPath, flags: O_RDONLY | O_DIRECTORY) else { return [] }
        defer { try? directory.close() }
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directoryPath) else { return [] }

        var removed: [String] = []
        for name in names {
            guard let pid = writerPID(inTemporaryName: name), pid != getpid() else { continue }
            guard kill(pid, 0) == -1, Errno.current == Errno(rawValue: ESRCH) else { continue }
            guard let status = removeIfUnlocked(name, in: directory) else { continue }
            let path = directoryPath == "/" ? "/\(name)" : "\(directoryPath)/\(name)"
            // A file with another name left keeps its blocks, so its size was not freed.
            let size = status.linkCount > 1 ? "\(status.size) bytes, not freed: the file has another name"
                : "\(status.size) bytes"
            Log.info(subsystem, "removed '\(path)' (\(size)), left by an imgtool process that no longer runs")
            removed.append(path)
        }
        return removed
    }

    /// Returns the pid in `name` when `name` has the form of a temporary file name,
    /// `.<target>.imgtool-<pid>-<random>.tmp`, and nil otherwise.
    static func writerPID(inTemporaryName name: String) -> pid_t? {
        guard name.hasPrefix("."), name.hasSuffix(".tmp") else { return nil }
        let stem = name.dropLast(".tmp".count)
        // The last marker, because the target's name may contain ".imgtool-" itself.
        guard let marker = stem.range(of: ".imgtool-", options: .backwards),
              stem.distance(from: stem.startIndex, to: marker.lowerBound) >= 2 else { return nil }
        let fields = stem[marker.upperBound...].split(separator: "-", omittingEmptySubsequences: false)
        guard fields.count == 2, fields.allSatisfy({ !$0.isEmpty && $0.allSatisfy(\.isASCII) && $0.allSatisfy(\.isNumber) }),
              let pid = pid_t(fields[0]), pid > 0, UInt32(fields[1]) != nil else { return nil }
        return pid
    }

    /// Removes the regular file `name` in `directory` when a non-blocking exclusive flock
    /// on it succeeds, and returns its status from before the removal. Returns nil, and
    /// keeps the file, for anything else: a lock held elsewhere, another file type, a name
    /// that changed meanwhile.
    private static func removeIfUnlocked(_ name: String, in directory: FileDescriptor) -> FileStatus? {
        // Checked before the open, because opening a device can have effects of its own.
        guard let before = statusAt(name, in: directory), before.isRegularFile else { return nil }
        // O_NOFOLLOW: a symbolic link swapped in after the check fails with ELOOP.
        guard let candidate = try? FileDescriptor.open(name, flags: O_RDONLY | O_NOFOLLOW | O_NONBLOCK,
                                                       relativeTo: directory) else { return nil }
        defer { try? candidate.close() }
        guard let status = try? candidate.status(), status.isRegularFile else { return nil }
        do {
            try candidate.lock(exclusive: true, wait: false)
        } catch {
            return nil
        }
        // The name may have been given to another file since the open.
        guard let current = statusAt(name, in: directory),
              current.device == status.device, current.inode == status.inode else { return nil }
        guard unlinkat(directory.rawValue, name, 0) == 0 else { return nil }
        return status
    }

    /// Returns the status of `name` in `directory` without following a symbolic link, or
    /// nil when it cannot be read.
    private static func statusAt(_ name: String, in directory: FileDescriptor) -> FileStatus? {
        var info = stat()
        guard fstatat(directory.rawValue, name, &info, AT_SYMLINK_NOFOLLOW) == 0 else { return nil }
        return FileStatus(info)
    }
}

/// The temporary files that exist right now in this process, so that a signal handler
/// can remove them before the process exits.
public final class TemporaryFileRegistry: Sendable {
    public static let shared = TemporaryFileRegistry()
    private let paths = Mutex<Set<String>>([])

    public func insert(_ path: String) { _ = paths.withLock { $0.insert(path) } }
    public func remove(_ path: String) { _ = paths.withLock { $0.remove(path) } }

    /// Unlinks every registered file; returns how many were removed.
    @discardableResult
    public func removeAll() -> Int {
        let all = paths.withLock { paths -> Set<String> in
            defer { paths.removeAll() }
            return paths
        }
        return all.reduce(0) { count, path in unlink(path) == 0 ? count + 1 : count }
    }
}

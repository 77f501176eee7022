// RawDisk: grow or shrink a RAW disk file in place.
//
// Growing uses ftruncate(2), which leaves a hole: constant time and no allocation, whatever
// the size. With `preallocate`, fallocate(2) mode 0 reserves blocks for the whole disk
// instead, so the guest cannot later hit ENOSPC on the host. Some filesystems cannot
// reserve blocks (some ZFS and NFS versions, ramfs): fallocate fails there with
// EOPNOTSUPP, EINVAL or ENOSYS, and the resize falls back to ftruncate and reports it. Nothing here ever writes
// zeros block by block: on a 1 TiB disk that would take hours.
//
// The file is opened read-write (glibc's posix_fallocate emulation needs to read) and
// locked with flock(LOCK_EX | LOCK_NB) for the duration, so two resizes never interleave.

#if canImport(Glibc)
import Glibc
#endif

/// The way a resize allocated the disk's space.
public enum AllocationOutcome: Sendable, Equatable {
    /// The size changed with ftruncate; new space is a hole (or the file shrank).
    case sparse
    /// fallocate reserved blocks for the whole disk.
    case preallocated
    /// `preallocate` was requested but the filesystem cannot reserve blocks (the errno it
    /// returned); the size changed with ftruncate instead.
    case fellBackToSparse(Errno)
    /// The size did not change, so nothing was done.
    case unchanged
}

/// The outcome of `RawDisk.resize`: sizes before and after, and how space was allocated.
public struct ResizeResult: Sendable, Equatable {
    public var path: String
    public var oldSize: Int64
    public var newSize: Int64
    public var allocation: AllocationOutcome
    /// True when the requested size was rounded up to a multiple of 512.
    public var wasRounded: Bool
    /// The exact size requested before rounding.
    public var requestedBytes: Int64

    public var grew: Bool { newSize > oldSize }
    public var shrank: Bool { newSize < oldSize }
}

/// A resize that was not attempted or failed; the file's size is unchanged.
public enum DiskError: ImageError, Equatable {
    /// The path is not a regular file (a directory, a device, a FIFO, ...).
    case notRegularFile(path: String, kind: String)
    /// The new size is smaller than the current one and shrinking was not allowed.
    case shrinkRejected(path: String, currentSize: Int64, requestedSize: Int64)
    /// Another process holds the file's lock: a resize, or an imgtool run writing the
    /// file as a `TemporaryFile`.
    case busy(path: String)

    public var category: FailureCategory {
        switch self {
        case .notRegularFile, .shrinkRejected: return .usage
        case .busy: return .failure
        }
    }

    public var description: String {
        switch self {
        case let .notRegularFile(path, kind):
            return "cannot resize '\(path)': it is a \(kind), not a regular file"
        case let .shrinkRejected(path, current, requested):
            return "cannot shrink '\(path)' from \(current) to \(requested) bytes: shrinking destroys the data past the new end"
        case let .busy(path):
            return "cannot resize '\(path)': another process holds its lock"
        }
    }

    public var remedy: String? {
        switch self {
        case .notRegularFile: return "give the path of a RAW disk file"
        case .shrinkRejected: return "give a size at least as large as the current one, or allow shrinking (imgtool resize --shrink) if the data past the new end can be lost"
        case .busy: return "wait until the other resize, or the imgtool run still writing this file, has finished, and try again"
        }
    }
}

public enum RawDisk {
    /// Errors from fallocate(2) that mean "this filesystem cannot reserve blocks", after
    /// which a sparse ftruncate is the right fallback.
    static let unsupportedAllocationErrors: Set<Errno> = [.notSupported, .invalidArgument, .noSystemCall]

    /// Sets the size of the RAW disk at `path` to `size.bytes`.
    ///
    /// - Parameters:
    ///   - preallocate: reserve blocks for the whole disk with fallocate(2) mode 0, falling
    ///     back to ftruncate(2) where the filesystem cannot (reported in the result).
    ///   - allowShrink: permit a smaller size; otherwise a smaller size throws
    ///     `DiskError.shrinkRejected`. The same size is always a no-op.
    /// - Throws: `DiskError` for a non-regular file, a rejected shrink or a held lock.
    ///   `SystemError` for a failed system call, after which the size is the old one.
    public static func resize(path: String, to size: DiskSize, preallocate: Bool = false,
                              allowShrink: Bool = false) throws -> ResizeResult {
        // Check the type before opening: opening a device or a FIFO read-write has effects
        // of its own (a FIFO's reader sees a writer come and go, a watchdog device starts
        // its timer). The check after the open below catches a file swapped in between.
        var info = stat()
        if stat(path, &info) == 0, !FileStatus(info).isRegularFile {
            throw DiskError.notRegularFile(path: path, kind: FileStatus(info).kindDescription)
        }

        let descriptor: FileDescriptor
        do {
            // O_NONBLOCK keeps a FIFO from blocking the open; it has no effect on files.
            descriptor = try FileDescriptor.open(path, flags: O_RDWR | O_NONBLOCK)
        } catch {
            if error == .isDirectory { throw DiskError.notRegularFile(path: path, kind: "directory") }
            throw SystemError("open", path: path, errno: error)
        }
        defer { try? descriptor.close() }

        let status: FileStatus
        do {
            status = try descriptor.status()
        } catch {
            throw SystemError("inspect", path: path, errno: error)
        }
        guard status.isRegularFile else { throw DiskError.notRegularFile(path: path, kind: status.kindDescription) }

        do {
            try descriptor.lock(exclusive: true, wait: false)
        } catch {
            if error == .wouldBlock { throw DiskError.busy(path: path) }
            throw SystemError("lock", path: path, errno: error)
        }
        defer { try? descriptor.unlock() }
        return try resize(lockedDescriptor: descriptor, path: path, to: size, preallocate: preallocate,
                          allowShrink: allowShrink)
    }

    /// Sets the size of the regular file open as `descriptor`, on which the caller holds
    /// an exclusive flock, as `resize(path:to:preallocate:allowShrink:)` does. `path`
    /// names the file in messages. `TemporaryFile` holds that lock on its file, so a
    /// second flock through another descriptor would fail.
    static func resize(lockedDescriptor descriptor: FileDescriptor, path: String, to size: DiskSize,
                       preallocate: Bool = false, allowShrink: Bool = false) throws -> ResizeResult {
        // Read the size again under the lock: another process may have changed it.
        let oldSize: Int64
        do {
            oldSize = try descriptor.status().size
        } catch {
            throw SystemError("inspect", path: path, errno: error)
        }
        var result = ResizeResult(path: path, oldSize: oldSize, newSize: size.bytes, allocation: .unchanged,
                                  wasRounded: size.wasRounded, requestedBytes: size.requestedBytes)
        if size.bytes == oldSize { return result }
        if size.bytes < oldSize, !allowShrink {
            throw DiskError.shrinkRejected(path: path, currentSize: oldSize, requestedSize: size.bytes)
        }

        if preallocate, size.bytes > oldSize {
            do {
                try descriptor.allocate(offset: 0, length: size.bytes)
                try sync(descriptor, path: path)
                result.allocation = .preallocated
                Log.info("disk", "preallocated '\(path)' from \(oldSize) to \(size.bytes) bytes")
                return result
            } catch let error as Errno where unsupportedAllocationErrors.contains(error) {
                result.allocation = .fellBackToSparse(error)
                Log.info("disk", "fallocate on '\(path)' failed with \(error); growing it sparse instead")
            } catch let error as Errno {
                restoreSize(of: descriptor, to: oldSize, path: path)
                throw SystemError("reserve \(size.bytes) bytes for", path: path, errno: error)
            }
        } else {
            result.allocation = .sparse
        }

        do {
            try descriptor.truncate(to: size.bytes)
        } catch {
            restoreSize(of: descriptor, to: oldSize, path: path)
            throw SystemError("set the size to \(size.bytes) bytes of", path: path, errno: error)
        }
        try sync(descriptor, path: path)
        Log.info("disk", "resized '\(path)' from \(oldSize) to \(size.bytes) bytes")
        return result
    }

    /// Applies the size argument of the middleware's `vm.raw_resize` (see
    /// `DiskSize.parseResizeRequest`): a bare number counts GiB, and zero or empty text
    /// keeps the current size. It never shrinks: a smaller size throws
    /// `DiskError.shrinkRejected`.
    public static func applyResizeRequest(path: String, request: String, preallocate: Bool = false) throws -> ResizeResult {
        guard let size = try DiskSize.parseResizeRequest(request) else {
            // stat(2), not lstat: resize follows a symlink to the disk, so this check does too.
            var info = stat()
            guard stat(path, &info) == 0 else { throw SystemError("inspect", path: path, errno: .current) }
            let current = FileStatus(info)
            guard current.isRegularFile else { throw DiskError.notRegularFile(path: path, kind: current.kindDescription) }
            return ResizeResult(path: path, oldSize: current.size, newSize: current.size, allocation: .unchanged,
                                wasRounded: false, requestedBytes: current.size)
        }
        return try resize(path: path, to: size, preallocate: preallocate, allowShrink: false)
    }

    private static func sync(_ descriptor: FileDescriptor, path: String) throws {
        do {
            try descriptor.sync()
        } catch {
            throw SystemError("fsync", path: path, errno: error)
        }
    }

    /// Puts the size back after a failed fallocate or ftruncate. Some filesystems (ext4)
    /// extend the size piece by piece while fallocate allocates, so a failure can leave the
    /// file partly grown.
    private static func restoreSize(of descriptor: FileDescriptor, to size: Int64, path: String) {
        guard let current = try? descriptor.status().size, current != size else { return }
        do {
            try descriptor.truncate(to: size)
        } catch {
            Log.error("disk", "could not restore the size of '\(path)' to \(size) bytes: \(error)")
        }
    }
}

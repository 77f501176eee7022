// FileDescriptor: a typed file descriptor over the POSIX calls ImageCore uses.
//
// Every call retries EINTR (through `retryingInterrupts`) and throws `Errno` for anything
// the environment can cause. Callers wrap the `Errno` in a `SystemError` that names the
// path and the operation. EBADF means a descriptor was used after close, which is a bug:
// it traps instead of throwing.

#if canImport(Glibc)
import Glibc
#endif
import CSystem

public struct FileDescriptor: Hashable, Sendable {
    public let rawValue: Int32

    public init(rawValue: Int32) { self.rawValue = rawValue }

    /// Opens `path` relative to `directory` (AT_FDCWD by default) with `openat(2)`.
    /// `O_CLOEXEC` is always added.
    public static func open(
        _ path: String, flags: Int32, mode: mode_t = 0o644, relativeTo directory: FileDescriptor? = nil
    ) throws(Errno) -> FileDescriptor {
        let base = directory?.rawValue ?? AT_FDCWD
        let fd = try retryingInterrupts { openat(base, path, flags | O_CLOEXEC, mode) }
        return FileDescriptor(rawValue: fd)
    }

    /// Closes the descriptor (`close(2)`). EINTR is not retried: on Linux the descriptor is
    /// already released when close returns, and retrying could close a reused number.
    /// Opens `path` read-only and checks that it is a regular file. O_NONBLOCK keeps the
    /// open of a FIFO from waiting for a writer; reads of a regular file ignore it.
    /// - Parameters:
    ///   - argument: the option or operand that named the path, for the error.
    ///   - remedy: what to give instead of something that is no regular file.
    /// - Throws: `SystemError` when the open or fstat fails, `InvalidArgumentError` for
    ///   anything but a regular file.
    static func openRegularFile(_ path: String, argument: String, remedy: String) throws -> (FileDescriptor, FileStatus) {
        let descriptor: FileDescriptor
        do {
            descriptor = try FileDescriptor.open(path, flags: O_RDONLY | O_NONBLOCK)
        } catch {
            throw SystemError("open", path: path, errno: error)
        }
        let status: FileStatus
        do {
            status = try descriptor.status()
        } catch {
            try? descriptor.close()
            throw SystemError("inspect", path: path, errno: error)
        }
        guard status.isRegularFile else {
            try? descriptor.close()
            throw InvalidArgumentError(argument: argument, value: path,
                                       reason: "it is a \(status.kindDescription), not a regular file", remedy: remedy)
        }
        return (descriptor, status)
    }

    public func close() throws(Errno) {
        if Glibc.close(rawValue) == -1 {
            let error = Errno.current
            checkNotBadDescriptor(error)
            if error != .interrupted { throw error }
        }
    }

    /// Reads up to `buffer.count` bytes at `offset` (`pread(2)`); returns 0 at end of file.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws(Errno) -> Int {
        guard buffer.count > 0 else { return 0 }
        do {
            return try retryingInterrupts { pread(rawValue, buffer.baseAddress, buffer.count, off_t(offset)) }
        } catch {
            checkNotBadDescriptor(error)
            throw error
        }
    }

    /// Reads up to `buffer.count` bytes at the current offset (`read(2)`); returns 0 at end.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
        guard buffer.count > 0 else { return 0 }
        do {
            return try retryingInterrupts { Glibc.read(rawValue, buffer.baseAddress, buffer.count) }
        } catch {
            checkNotBadDescriptor(error)
            throw error
        }
    }

    /// Fills `buffer` from `offset` unless end of file comes first; returns the count read.
    public func readFully(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws(Errno) -> Int {
        var done = 0
        while done < buffer.count {
            let count = try read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]),
                                 at: offset + Int64(done))
            if count == 0 { break }
            done += count
        }
        return done
    }

    /// Writes all of `bytes` at `offset` with `pwrite(2)`, continuing after short writes.
    public func writeAll(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws(Errno) {
        var done = 0
        while done < bytes.count {
            let remaining = UnsafeRawBufferPointer(rebasing: bytes[done...])
            let count: Int
            do {
                count = try retryingInterrupts {
                    pwrite(rawValue, remaining.baseAddress, remaining.count, off_t(offset + Int64(done)))
                }
            } catch {
                checkNotBadDescriptor(error)
                throw error
            }
            done += count
        }
    }

    /// Writes all of `bytes` at the current offset with `write(2)`.
    public func writeAll(_ bytes: UnsafeRawBufferPointer) throws(Errno) {
        var done = 0
        while done < bytes.count {
            let remaining = UnsafeRawBufferPointer(rebasing: bytes[done...])
            done += try retryingInterrupts { Glibc.write(rawValue, remaining.baseAddress, remaining.count) }
        }
    }

    /// Sets the file's size (`ftruncate(2)`); growing leaves a hole.
    public func truncate(to size: Int64) throws(Errno) {
        _ = try retryingInterrupts { ftruncate(rawValue, off_t(size)) }
    }

    /// Reserves `length` bytes from `offset` (`fallocate(2)` mode 0), extending the size.
    public func allocate(offset: Int64, length: Int64) throws(Errno) {
        _ = try retryingInterrupts { imgtool_fallocate(rawValue, 0, offset, length) }
    }

    /// Flushes data and metadata to stable storage (`fsync(2)`).
    public func sync() throws(Errno) {
        _ = try retryingInterrupts { fsync(rawValue) }
    }

    /// The file's status (`fstat(2)`).
    public func status() throws(Errno) -> FileStatus {
        var info = stat()
        _ = try retryingInterrupts { fstat(rawValue, &info) }
        return FileStatus(info)
    }

    /// Takes or waits for an advisory lock on the whole file (`flock(2)`).
    /// With `wait` false, a lock held elsewhere throws EWOULDBLOCK.
    public func lock(exclusive: Bool = true, wait: Bool = true) throws(Errno) {
        let operation = (exclusive ? LOCK_EX : LOCK_SH) | (wait ? 0 : LOCK_NB)
        _ = try retryingInterrupts { flock(rawValue, operation) }
    }

    /// Releases a lock taken with `lock` (`flock(2)` LOCK_UN).
    public func unlock() throws(Errno) {
        _ = try retryingInterrupts { flock(rawValue, LOCK_UN) }
    }

    private func checkNotBadDescriptor(_ error: Errno) {
        precondition(error != .badFileDescriptor, "Bug in imgtool: file descriptor \(rawValue) used after close")
    }
}

/// The fields of `struct stat` that ImageCore reads.
public struct FileStatus: Sendable {
    public var size: Int64
    /// Bytes allocated on disk: `st_blocks` counts 512-byte units on Linux whatever the
    /// filesystem's block size.
    public var allocatedBytes: Int64
    public var blockSize: Int64
    public var mode: mode_t
    public var device: UInt64
    public var inode: UInt64
    public var userID: uid_t
    /// The number of names (hard links) the file has (`st_nlink`).
    public var linkCount: UInt64

    init(_ info: stat) {
        size = Int64(info.st_size)
        allocatedBytes = Int64(info.st_blocks) * 512
        blockSize = Int64(info.st_blksize)
        mode = info.st_mode
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
        userID = info.st_uid
        linkCount = UInt64(info.st_nlink)
    }

    public var isRegularFile: Bool { (mode & S_IFMT) == S_IFREG }
    public var isDirectory: Bool { (mode & S_IFMT) == S_IFDIR }
    public var isSymbolicLink: Bool { (mode & S_IFMT) == S_IFLNK }

    /// A word for the file type, for error messages ("directory", "symbolic link", ...).
    public var kindDescription: String {
        switch mode & S_IFMT {
        case S_IFREG: return "regular file"
        case S_IFDIR: return "directory"
        case S_IFLNK: return "symbolic link"
        case S_IFBLK: return "block device"
        case S_IFCHR: return "character device"
        case S_IFIFO: return "FIFO"
        case S_IFSOCK: return "socket"
        default: return "file of unknown type"
        }
    }
}

/// The status of `path` without following a final symbolic link (`lstat(2)`), or nil when
/// nothing exists there.
public func linkStatus(_ path: String) throws(Errno) -> FileStatus? {
    var info = stat()
    if lstat(path, &info) == 0 { return FileStatus(info) }
    let error = Errno.current
    if error == .noEntry { return nil }
    throw error
}

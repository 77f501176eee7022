// PathGuard: accepts paths from callers only inside the pools root.
//
// A caller's path may be absolute (then it must lie under the root) or relative to the
// root. The file is opened with openat2(2) and RESOLVE_BENEATH relative to a descriptor
// of the root, so the kernel rejects `..` and symbolic links that resolve outside the
// root (EXDEV), and magic links with RESOLVE_NO_MAGICLINKS. The check and the use are
// the same open: ImageCore then receives `/proc/self/fd/N`, which names the file that
// was checked, so a symlink swapped in after the check changes nothing.

#if canImport(Glibc)
import Glibc
#endif
import CSystem
import ImageCore

/// A caller's path after the check: an open descriptor and the name to hand to ImageCore.
public final class CheckedPath: Sendable {
    /// The path as the caller gave it, for messages.
    public let displayPath: String
    /// The path relative to the pools root, without `.` or `..` components.
    public let relativePath: String
    /// The path ImageCore opens: `/proc/self/fd/N` for an existing file, or
    /// `/proc/self/fd/N/name` for a file to create in the checked directory N.
    public let usablePath: String
    private let descriptor: Int32
    /// Tokens of the `Log` path aliases that show the caller's names in log lines.
    private let logAliasTokens: [Int]

    /// `directoryAlias` names the checked directory of a file to create (its
    /// `/proc/self/fd/N` and the caller's directory), so that log lines about temporary
    /// files beside it name the caller's directory too.
    init(displayPath: String, relativePath: String, usablePath: String, descriptor: Int32,
         directoryAlias: (path: String, name: String)? = nil) {
        self.displayPath = displayPath
        self.relativePath = relativePath
        self.usablePath = usablePath
        self.descriptor = descriptor
        var tokens = [Log.addPathAlias(usablePath, shownAs: displayPath)]
        if let directoryAlias {
            tokens.append(Log.addPathAlias(directoryAlias.path, shownAs: directoryAlias.name))
        }
        self.logAliasTokens = tokens
    }

    // The aliases go before the descriptor closes, because its number is then free for
    // another file.
    deinit {
        for token in logAliasTokens { Log.removePathAlias(token) }
        _ = close(descriptor)
    }

    /// Replaces the usable path in `text` (an error message from ImageCore) with the
    /// caller's path, so messages name what the caller sent. An occurrence followed by a
    /// digit is another descriptor's path (`/proc/self/fd/7` in `/proc/self/fd/70/x`)
    /// and stays unchanged.
    public func translate(_ text: String) -> String {
        replacingPath(usablePath, with: displayPath, in: text)
    }
}

public final class PathGuard: Sendable {
    /// The pools root, absolute, without a trailing slash.
    public let root: String
    private let rootDescriptor: Int32

    /// Opens the pools root. Throws when it is not an existing directory.
    public init(root: String) throws {
        var normalized = root
        while normalized.count > 1, normalized.hasSuffix("/") { normalized.removeLast() }
        guard normalized.hasPrefix("/") else {
            throw InvalidArgumentError(argument: "--pools-root", value: root, reason: "not an absolute path")
        }
        let fd = Glibc.open(normalized, openPathOnly | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemError("open pools root", path: normalized, errno: .current) }
        self.root = normalized
        self.rootDescriptor = fd
    }

    deinit { _ = close(rootDescriptor) }

    /// Returns the absolute path of a checked file, for files that record it (device.map).
    public func absolutePath(of path: CheckedPath) -> String {
        root == "/" ? "/" + path.relativePath : root + "/" + path.relativePath
    }

    /// Returns the path relative to the root after the checks that need no file system access.
    public func relativePath(_ value: String, argument: String) throws(RPCError) -> String {
        guard !value.isEmpty else { throw RPCError.invalidParameter(argument, "the path is empty") }
        guard !value.utf8.contains(0) else { throw RPCError.invalidParameter(argument, "the path contains a NUL byte") }
        var relative = value
        if value == root {
            relative = "."
        } else if value.hasPrefix("/") {
            let prefix = root == "/" ? "/" : root + "/"
            guard value.hasPrefix(prefix) else {
                throw RPCError.invalidParameter(argument, "'\(value)' is outside the pools root \(root); give a path under \(root)")
            }
            relative = String(value.dropFirst(prefix.count))
        }
        let components = relative.split(separator: "/", omittingEmptySubsequences: true)
        if components.contains("..") {
            throw RPCError.invalidParameter(argument, "'\(value)' contains '..'; give a path under \(root) without '..'")
        }
        return components.isEmpty ? "." : components.joined(separator: "/")
    }

    /// Opens an existing regular file under the root, for reading or for writing.
    public func existingFile(_ value: String, argument: String, writable: Bool = false) throws(RPCError) -> CheckedPath {
        let relative = try relativePath(value, argument: argument)
        // relativePath drops a trailing slash, which would turn 'disk.raw/' into the file.
        guard !value.hasSuffix("/") else {
            throw RPCError.invalidParameter(argument, "'\(value)' ends with '/', so it names a directory; give the path of a regular file")
        }
        let flags = UInt64(writable ? O_RDWR : O_RDONLY) | UInt64(O_NONBLOCK | O_CLOEXEC | O_NOCTTY)
        let fd = try open(relative, flags: flags, value: value, argument: argument)
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let error = Errno.current
            _ = close(fd)
            throw RPCError.call(error.rawValue, RPCError.errnoName(error.rawValue), "inspect '\(value)' failed: \(error)")
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            _ = close(fd)
            let kind = FileStatusKind.describe(info.st_mode)
            throw RPCError.invalidParameter(argument, "'\(value)' is a \(kind), not a regular file")
        }
        return CheckedPath(displayPath: value, relativePath: relative, usablePath: "/proc/self/fd/\(fd)", descriptor: fd)
    }

    /// Checks a file that is to be created: its directory must exist under the root and
    /// nothing may exist under its name yet.
    public func newFile(_ value: String, argument: String) throws(RPCError) -> CheckedPath {
        let relative = try relativePath(value, argument: argument)
        guard relative != ".", !value.hasSuffix("/") else {
            throw RPCError.invalidParameter(argument, "'\(value)' names a directory; give the path of the file to create")
        }
        let parts = relative.split(separator: "/")
        let name = String(parts.last!)
        let parent = parts.count > 1 ? parts.dropLast().joined(separator: "/") : "."
        guard name != "." else { throw RPCError.invalidParameter(argument, "'\(value)' names a directory") }
        // The file itself is expected to be missing, so a missing directory is named as such.
        var directory = "."
        if let slash = value.lastIndex(of: "/") {
            directory = String(value[...slash])
            // Every slash before the name separates it, as in 'tank//disk.raw'.
            while directory.count > 1, directory.hasSuffix("/") { directory.removeLast() }
        }
        let missing = "the directory '\(directory)' does not exist under the pools root \(root); "
            + "create it first or give a path in an existing directory"
        let fd = try open(parent, flags: UInt64(openPathOnly | O_DIRECTORY | O_CLOEXEC), value: value, argument: argument,
                          missingMessage: missing)
        var info = stat()
        if fstatat(fd, name, &info, AT_SYMLINK_NOFOLLOW) == 0 {
            _ = close(fd)
            let kind = FileStatusKind.describe(info.st_mode)
            throw RPCError.call(EEXIST, "EEXIST", "'\(value)' already exists (\(kind)); it was not modified. Choose a path that does not exist yet")
        }
        // Only a missing name is free to create. A name that is too long, for example,
        // would otherwise fail only later in the job.
        let lookup = errno
        guard lookup == ENOENT else {
            _ = close(fd)
            let reason = lookup == ENAMETOOLONG ? "its name is longer than the file system allows (255 bytes)"
                : "it cannot be looked up (\(Errno(rawValue: lookup)))"
            throw RPCError.invalidParameter(argument, "'\(value)': \(reason); give another name")
        }
        return CheckedPath(displayPath: value, relativePath: relative, usablePath: "/proc/self/fd/\(fd)/\(name)", descriptor: fd,
                           directoryAlias: ("/proc/self/fd/\(fd)", directory))
    }

    /// Opens `relative` beneath the root. `missingMessage` replaces the message for ENOENT.
    private func open(_ relative: String, flags: UInt64, value: String, argument: String,
                      missingMessage: String? = nil) throws(RPCError) -> Int32 {
        let resolve = UInt64(IMGTOOL_RESOLVE_BENEATH | IMGTOOL_RESOLVE_NO_MAGICLINKS)
        var attempts = 0
        while true {
            let fd = imgtool_openat2(rootDescriptor, relative, flags, 0, resolve)
            if fd >= 0 { return fd }
            let error = Errno.current
            attempts += 1
            // openat2 returns EAGAIN when a concurrent rename may have raced the lookup.
            if error == .interrupted || (error == .wouldBlock && attempts < 16) { continue }
            switch error.rawValue {
            case EXDEV:
                throw RPCError.invalidParameter(argument, "'\(value)' leads outside the pools root \(root) through a symbolic link")
            case ELOOP:
                throw RPCError.invalidParameter(argument, "'\(value)' has too many levels of symbolic links")
            case ENOENT:
                throw RPCError.invalidParameter(argument, missingMessage ?? "'\(value)' does not exist under the pools root \(root)")
            case ENOTDIR:
                throw RPCError.invalidParameter(argument, "a component of '\(value)' is not a directory")
            case EISDIR:
                throw RPCError.invalidParameter(argument, "'\(value)' is a directory, not a regular file")
            case ENAMETOOLONG:
                throw RPCError.invalidParameter(argument, "'\(value)' is longer than the system allows (4096 bytes in all, "
                                                    + "255 bytes per name); give a shorter path")
            default:
                throw RPCError.call(error.rawValue, RPCError.errnoName(error.rawValue), "open '\(value)' failed: \(error)")
            }
        }
    }
}

/// O_PATH (Linux 2.6.39, value from <asm-generic/fcntl.h>), which Glibc hides without
/// _GNU_SOURCE: a descriptor that locates a file without opening it for I/O.
let openPathOnly: Int32 = 0o10000000

enum FileStatusKind {
    static func describe(_ mode: mode_t) -> String {
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

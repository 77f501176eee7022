// Errno: a typed errno value, and the one place that retries EINTR.

#if canImport(Glibc)
import Glibc
#endif

/// An `errno` value. Any Int32 fits, so an unknown code from the kernel or from another
/// process is carried, never trapped on.
public struct Errno: Error, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: Int32

    public init(rawValue: Int32) { self.rawValue = rawValue }

    /// The calling thread's current `errno`.
    public static var current: Errno { Errno(rawValue: errno) }

    /// The C library's text for this value (`strerror`), with the symbolic name where known,
    /// for example `No space left on device (ENOSPC)`.
    public var description: String {
        let text = String(cString: strerror(rawValue))
        if let name = Errno.symbolicNames[rawValue] { return "\(text) (\(name))" }
        return "\(text) (errno \(rawValue))"
    }

    public static let interrupted = Errno(rawValue: EINTR)
    public static let exists = Errno(rawValue: EEXIST)
    public static let noEntry = Errno(rawValue: ENOENT)
    public static let noSpace = Errno(rawValue: ENOSPC)
    public static let noDevice = Errno(rawValue: ENODEV)
    public static let notSupported = Errno(rawValue: EOPNOTSUPP)
    public static let invalidArgument = Errno(rawValue: EINVAL)
    public static let noSystemCall = Errno(rawValue: ENOSYS)
    public static let wouldBlock = Errno(rawValue: EAGAIN)
    public static let badFileDescriptor = Errno(rawValue: EBADF)
    public static let crossDevice = Errno(rawValue: EXDEV)
    public static let tooManyLinks = Errno(rawValue: ELOOP)
    public static let permissionDenied = Errno(rawValue: EACCES)
    public static let notPermitted = Errno(rawValue: EPERM)
    public static let isDirectory = Errno(rawValue: EISDIR)
    public static let notDirectory = Errno(rawValue: ENOTDIR)
    public static let readOnlyFileSystem = Errno(rawValue: EROFS)
    public static let quotaExceeded = Errno(rawValue: EDQUOT)
    public static let nameTooLong = Errno(rawValue: ENAMETOOLONG)
    public static let fileTooLarge = Errno(rawValue: EFBIG)

    static let symbolicNames: [Int32: String] = [
        EPERM: "EPERM", ENOENT: "ENOENT", EINTR: "EINTR", EIO: "EIO", EBADF: "EBADF",
        EAGAIN: "EAGAIN", ENOMEM: "ENOMEM", EACCES: "EACCES", EEXIST: "EEXIST",
        EXDEV: "EXDEV", ENOTDIR: "ENOTDIR", EISDIR: "EISDIR", EINVAL: "EINVAL",
        EFBIG: "EFBIG", ENOSPC: "ENOSPC", EROFS: "EROFS", ELOOP: "ELOOP",
        ENAMETOOLONG: "ENAMETOOLONG", ENOSYS: "ENOSYS", EOPNOTSUPP: "EOPNOTSUPP",
        EDQUOT: "EDQUOT", ETXTBSY: "ETXTBSY", EPIPE: "EPIPE", ECONNRESET: "ECONNRESET",
        ECONNREFUSED: "ECONNREFUSED", ETIMEDOUT: "ETIMEDOUT", EADDRINUSE: "EADDRINUSE",
        ENOTEMPTY: "ENOTEMPTY", ENODEV: "ENODEV",
        // EWOULDBLOCK is not listed: on Linux it equals EAGAIN, and a duplicate key traps.
    ]
}

/// Runs `body` until it does not fail with EINTR. `body` returns -1 and sets `errno` on
/// failure, as system calls do; any other failure is thrown as an `Errno`.
@inline(__always)
func retryingInterrupts<T: FixedWidthInteger>(_ body: () -> T) throws(Errno) -> T {
    while true {
        let result = body()
        if result != -1 { return result }
        let error = Errno.current
        if error != .interrupted { throw error }
    }
}

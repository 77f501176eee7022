// How ImageCore reports failure.
//
// Each domain (inflation, output files, downloads, disks, GRUB, ...) has its own error
// type whose cases carry the values a user needs to act. All of them conform to
// `ImageError`, which adds the category a front end maps to an exit code or an RPC
// error, and a sentence that says what to do next.

/// The class of a failure: front ends turn it into an exit code (the CLI) or an error
/// name (the service). The raw values are the CLI's documented exit codes.
public enum FailureCategory: Int32, Sendable, CaseIterable {
    /// The environment failed: I/O error, permission, no space.
    case failure = 1
    /// The input data is invalid: a corrupt or truncated stream, a checksum mismatch.
    case invalidData = 2
    /// The network or a server failed after every retry.
    case network = 3
    /// The command line or the call's arguments are invalid (sysexits EX_USAGE).
    case usage = 64
    /// The target already exists and was left untouched (sysexits EX_CANTCREAT).
    case targetExists = 73
    /// The operation was cancelled (SIGINT, SIGTERM or a job abort).
    case cancelled = 130
}

/// An error from ImageCore. `description` is one line, `<what failed>: <why>`, without a
/// leading program name; `remedy` says what to do next when there is something to say.
public protocol ImageError: Error, CustomStringConvertible, Sendable {
    var category: FailureCategory { get }
    var remedy: String? { get }
}

extension ImageError {
    public var remedy: String? { nil }
}

/// A system call failed on a path. The message names the operation, the path and errno.
public struct SystemError: ImageError {
    public var operation: String
    public var path: String
    public var errno: Errno
    public var remedy: String?

    public init(_ operation: String, path: String, errno: Errno, remedy: String? = nil) {
        self.operation = operation
        self.path = path
        self.errno = errno
        self.remedy = remedy ?? SystemError.defaultRemedy(for: errno)
    }

    public var category: FailureCategory { .failure }

    public var description: String { "\(operation) '\(path)' failed: \(errno)" }

    static func defaultRemedy(for errno: Errno) -> String? {
        switch errno {
        case .noSpace: return "free space on that filesystem or choose another directory"
        case .permissionDenied, .notPermitted: return "check the permissions of the path and its directories"
        case .noEntry: return "check that the path and its parent directory exist"
        case .notDirectory: return "check the path: a part of it before the last '/' is a file, not a directory"
        case .readOnlyFileSystem: return "choose a directory on a writable filesystem, or remount this one read-write"
        case .quotaExceeded: return "free space within the quota, raise the quota, or choose another directory"
        case .nameTooLong: return "use a shorter name: at most 255 bytes per name and 4096 bytes per path"
        case .fileTooLarge:
            return "the size is over the filesystem's maximum file size: give a smaller size, or use a filesystem that allows larger files"
        default: return nil
        }
    }
}

/// The operation stopped because it was cancelled; nothing was published.
public struct CancelledError: ImageError {
    public var operation: String
    public init(_ operation: String) { self.operation = operation }
    public var category: FailureCategory { .cancelled }
    public var description: String { "\(operation): cancelled" }
}

/// An argument is invalid: names the argument, the value and the accepted forms.
public struct InvalidArgumentError: ImageError {
    public var argument: String
    public var value: String
    public var reason: String
    public var remedy: String?

    public init(argument: String, value: String, reason: String, remedy: String? = nil) {
        self.argument = argument
        self.value = value
        self.reason = reason
        self.remedy = remedy
    }

    public var category: FailureCategory { .usage }
    public var description: String { "invalid \(argument) '\(value)': \(reason)" }
}

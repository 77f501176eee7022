// The errors a download reports. Each names the URL or file and what to do next.

/// The network or the server failed, after every retry when the failure was transient.
public struct DownloadNetworkError: ImageError {
    public var url: String
    /// The last failure, in plain words ("connection closed after 1048576 of 5242880 bytes").
    public var reason: String
    /// Attempts made, the first one included.
    public var attempts: Int
    public var remedy: String?

    public init(url: String, reason: String, attempts: Int, remedy: String? = nil) {
        self.url = url
        self.reason = reason
        self.attempts = attempts
        self.remedy = remedy
    }

    public var category: FailureCategory { .network }
    public var description: String {
        let tries = attempts == 1 ? "" : " (after \(attempts) attempts)"
        return "download of \(redactingPassword(in: url)) failed\(tries): \(reason)"
    }
}

/// The file is larger than `DownloadOptions.maximumSize`, as announced by the server or
/// as received from a body without a length.
public struct DownloadTooLargeError: ImageError {
    public var url: String
    public var limit: Int64
    /// The length the server announced, or nil when the body had none and grew past
    /// `limit`. Such a body is removed with its partial file.
    public var announced: Int64?

    public init(url: String, limit: Int64, announced: Int64?) {
        self.url = url
        self.limit = limit
        self.announced = announced
    }

    public var category: FailureCategory { .network }
    public var description: String {
        let size = announced.map { "the server announced \($0) bytes, more than" } ?? "the body has no announced length and grew past"
        return "download of \(redactingPassword(in: url)) stopped: \(size) the limit of \(limit) bytes"
    }
    public var remedy: String? {
        "check the URL; if the file really is that large, raise the limit (imgtool fetch --max-size)"
    }
}

/// NAME.part no longer names the file that was downloaded and verified, so that file
/// cannot be given its final name.
public struct PartialFileReplacedError: ImageError {
    public var path: String

    public init(path: String) {
        self.path = path
    }

    public var category: FailureCategory { .failure }
    public var description: String {
        "'\(path)' was replaced or removed by another program during the download, so the verified file was not published"
    }
    public var remedy: String? {
        "make sure nothing else writes in that directory, then fetch again"
    }
}

/// An HTTP status that retrying will not change (404, 403, ...).
public struct HTTPStatusError: ImageError {
    public var url: String
    public var statusCode: Int

    public init(url: String, statusCode: Int) {
        self.url = url
        self.statusCode = statusCode
    }

    public var category: FailureCategory { .network }
    public var description: String { "download of \(redactingPassword(in: url)) failed: the server responded with HTTP \(statusCode)" }
    public var remedy: String? {
        switch statusCode {
        case 404, 410: return "check the URL; the file is not on that server"
        case 401, 403: return "the server denies access to that URL; check the URL or the server's permissions"
        default: return nil
        }
    }
}

/// The downloaded or existing file does not have the expected SHA-256.
public struct ChecksumMismatchError: ImageError {
    public var path: String
    public var expected: SHA256Digest
    public var actual: SHA256Digest
    public var url: String?

    public init(path: String, expected: SHA256Digest, actual: SHA256Digest, url: String? = nil) {
        self.path = path
        self.expected = expected
        self.actual = actual
        self.url = url
    }

    public var category: FailureCategory { .invalidData }
    public var description: String {
        let source = url.map { " downloaded from \(redactingPassword(in: $0))" } ?? ""
        return "checksum mismatch for '\(path)'\(source): expected SHA-256 \(expected.hex), got \(actual.hex)"
    }
    public var remedy: String? {
        url == nil ? "the file is not the expected one; fetch it again with --force"
            : "both downloads differed from the expected SHA-256; check the URL and the published checksum"
    }
}

/// A checksum file was read but lists no entry for the file.
public struct ChecksumNotListedError: ImageError {
    public var fileName: String
    public var checksumURL: String
    /// The file names the checksum file does list, for the message.
    public var listed: [String]

    public init(fileName: String, checksumURL: String, listed: [String]) {
        self.fileName = fileName
        self.checksumURL = checksumURL
        self.listed = listed
    }

    public var category: FailureCategory { .invalidData }
    public var description: String { "no checksum for \(fileName) in \(redactingPassword(in: checksumURL))" }
    public var remedy: String? {
        if listed.isEmpty { return "that file lists no SHA-256 entries; check the checksum URL" }
        // Control characters (a NUL, a stray CR) are escaped: printed raw, a listed name
        // would look exactly like the one that was not found.
        let names = listed.prefix(5).map { name in
            name.unicodeScalars.map { $0.properties.generalCategory == .control ? $0.escaped(asASCII: true) : String($0) }.joined()
        }.joined(separator: ", ")
        return "it lists \(names)\(listed.count > 5 ? ", ..." : ""); check the image URL or give --sha256"
    }
}

/// A checksum file lists the file more than once, with different hashes.
public struct ChecksumConflictError: ImageError {
    public var fileName: String
    public var checksumURL: String
    /// The entries for the file, in the order listed.
    public var listed: [ChecksumEntry]

    public init(fileName: String, checksumURL: String, listed: [ChecksumEntry]) {
        self.fileName = fileName
        self.checksumURL = checksumURL
        self.listed = listed
    }

    public var category: FailureCategory { .invalidData }
    public var description: String {
        let lines = listed.map { "\($0.digest.hex) \($0.fileName)" }.joined(separator: ", ")
        return "\(redactingPassword(in: checksumURL)) lists \(fileName) with different SHA-256 values: \(lines)"
    }
    public var remedy: String? { "check the checksum URL, or give the right hash with --sha256" }
}

/// The destination exists with other content, and `force` was not given.
public struct DestinationMismatchError: ImageError {
    public var path: String
    public var expected: SHA256Digest
    public var actual: SHA256Digest
    /// False when the destination's directory cannot be written (a read-only mount, no
    /// write permission), where --force cannot replace the file either.
    public var directoryIsWritable = true
    /// The operation that found the file, which decides what the remedy offers.
    public var operation: Operation = .fetch
    /// How the operation was called, which decides how the remedy names its options.
    public var interface: Interface = .commandLine

    /// The kind of operation that downloads images into a directory.
    public enum Operation: Sendable {
        /// `imgtool fetch` or `vm.fetch_image`, which may replace the file when forced.
        /// `imgtool fetch` also takes a destination.
        case fetch
        /// `imgtool provision` or `vm.create_container`, which download into the active
        /// sharefs's iso_files directory and have no destination option.
        case provision
    }

    /// The front end that called the operation.
    public enum Interface: Sendable {
        /// `imgtool fetch` and `imgtool provision`, which take `--force`.
        case commandLine
        /// The service's `vm.fetch_image`, which takes a `force` parameter and no
        /// destination, and `vm.create_container`, which takes neither.
        case service
    }

    public var category: FailureCategory { .targetExists }
    public var description: String {
        "'\(path)' already exists with SHA-256 \(actual.hex), not the expected \(expected.hex); it was not modified"
    }
    public var remedy: String? {
        switch (operation, interface) {
        case (.fetch, .commandLine):
            guard directoryIsWritable else {
                return "its directory cannot be written, so --force cannot replace it there either. Choose another destination, "
                    + "or make the directory writable and pass --force"
            }
            return "pass --force to download the image again and replace it, or choose another destination"
        case (.fetch, .service):
            guard directoryIsWritable else {
                return "its directory, the sharefs's iso_files, cannot be written, so force cannot replace it there either. "
                    + "Make that directory writable, then call vm.fetch_image again with force set to true"
            }
            return "call vm.fetch_image again with force set to true to download the image again and replace it"
        case (.provision, .commandLine):
            guard directoryIsWritable else {
                return "its directory, the sharefs's iso_files, cannot be written, so the image cannot be downloaded there. "
                    + "Make that directory writable, remove the file, and provision again"
            }
            return "remove the file and provision again (or pass --force to imgtool provision): the image is then "
                + "downloaded anew into the same directory"
        case (.provision, .service):
            guard directoryIsWritable else {
                return "its directory, the sharefs's iso_files, cannot be written, so the image cannot be downloaded there. "
                    + "Make that directory writable, call vm.fetch_image with force set to true, then call vm.create_container again"
            }
            return "call vm.fetch_image with force set to true to replace the file, then call vm.create_container again"
        }
    }
}

/// `url` with the password of its user information replaced by `***`
/// (`https://user:***@host/path`), for messages and logs. Other URLs come back unchanged.
public func redactingPassword(in url: String) -> String {
    guard let schemeEnd = url.range(of: "://") else { return url }
    let authority = url[schemeEnd.upperBound...].prefix { !"/?#".contains($0) }
    guard let at = authority.lastIndex(of: "@"), let colon = authority[..<at].firstIndex(of: ":") else { return url }
    return url[..<authority.index(after: colon)] + "***" + url[at...]
}

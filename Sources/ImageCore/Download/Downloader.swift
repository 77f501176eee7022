// Downloader: resumable, verified downloads of one file over HTTP(S) with libcurl.
//
// Files beside the destination `DIR/NAME`:
//
//     NAME              appears only after its SHA-256 matched (atomic rename)
//     NAME.part         the bytes received so far, always a contiguous prefix
//     NAME.part.state   what NAME.part is: URL, final URL, ETag, Last-Modified, length
//     NAME.lock         flock(2) target, so two processes never write NAME.part at once
//     NAME.sha256       the verified hash, kept when it came from a checksum file
//
// One attempt sends `Range: bytes=N-` and `If-Range: <validator>` when N bytes are on disk,
// and accepts the answer only when it fits the partial file:
//
//     206, Content-Range starts at S <= N, same validator  -> write from S
//     206 with another validator or length, or S > N         -> discard, start over
//     200                                                    -> the whole file: write from 0
//     416 with `bytes */TOTAL` and TOTAL == N                -> complete: verify
//     5xx, 408, 429, a dropped connection, a stall           -> retry with backoff, resume
//     other statuses                                         -> fail; the body is never stored
//
// The SHA-256 is computed as bytes arrive; a resumed download first hashes the partial
// file from disk. A mismatch discards everything and downloads once more from zero (a bad
// splice may have caused it); a second mismatch fails.

#if canImport(Glibc)
import Glibc
#endif
import CCurl
import CSystem
import Foundation
import Synchronization

/// The source of the expected SHA-256 of a download.
public enum ExpectedChecksum: Sendable, Equatable {
    /// The hash itself.
    case sha256(SHA256Digest)
    /// A GNU `sha256sum`-format file at `url`, searched for `fileName` (the download's
    /// file name when nil).
    case checksumFile(url: String, fileName: String?)
}

/// Retry and timeout settings for `Downloader`.
public struct DownloadOptions: Sendable {
    /// An attempt that receives no byte for this long is abandoned and retried.
    public var stallTimeout: Duration = .seconds(30)
    /// Retries after the first attempt for transient failures (drops, stalls, 5xx).
    public var retries: Int = 5
    /// The delay before the first retry. It doubles for each further retry, up to
    /// `maximumRetryDelay`, and each delay is scaled by a random factor in 0.5...1.
    public var retryDelay: Duration = .seconds(1)
    public var maximumRetryDelay: Duration = .seconds(60)
    public var connectTimeout: Duration = .seconds(30)
    /// The largest file accepted, in bytes. A response that announces more fails before
    /// its body is stored, and a body without a length (chunked) that grows past it stops
    /// there, so a server that never ends the body cannot fill the disk.
    public var maximumSize: Int64 = DownloadOptions.defaultMaximumSize

    /// 64 GiB, far larger than the disk images the catalog lists.
    public static let defaultMaximumSize: Int64 = 64 << 30

    public init(stallTimeout: Duration = .seconds(30), retries: Int = 5, retryDelay: Duration = .seconds(1),
                maximumRetryDelay: Duration = .seconds(60), connectTimeout: Duration = .seconds(30),
                maximumSize: Int64 = DownloadOptions.defaultMaximumSize) {
        self.stallTimeout = stallTimeout
        self.retries = retries
        self.retryDelay = retryDelay
        self.maximumRetryDelay = maximumRetryDelay
        self.connectTimeout = connectTimeout
        self.maximumSize = maximumSize
    }
}

/// A change to the partial file, for a caller that consumes it while it grows.
public enum DownloadEvent: Sendable, Equatable {
    /// `partPath` now contains `length` contiguous bytes from offset 0. They are not yet
    /// checksummed, because only `published` confirms the whole file. `total` is
    /// the file's length when the server sent it.
    case wrote(partPath: String, length: Int64, total: Int64?)
    /// The partial file was discarded and the download starts again from zero; anything
    /// derived from earlier `wrote` events is invalid.
    case restarted(partPath: String, reason: String)
    /// The verified file is at `path`; `reused` when no download was needed.
    case published(path: String, reused: Bool)
}

public typealias DownloadObserver = @Sendable (DownloadEvent) -> Void

/// The result of a successful `fetch`.
public struct DownloadSummary: Sendable {
    public var path: String
    public var sha256: SHA256Digest
    /// The file's size in bytes.
    public var size: Int64
    /// True when an existing verified file was used and nothing was downloaded.
    public var reused: Bool
    /// Body bytes received from the network in this call.
    public var bytesDownloaded: Int64
    /// The size of the partial file this call resumed from (0 for a fresh download).
    public var resumedFrom: Int64
    /// HTTP requests made, for the file itself (the checksum file not included).
    public var attempts: Int
    /// Times the partial file was discarded and the download started over.
    public var restarts: Int
    /// The URL after redirects, or nil when reused.
    public var finalURL: String?
    public var elapsed: Duration
}

/// Downloads files with resume, retries and SHA-256 verification.
///
/// `fetch` blocks its calling thread for the whole download (libcurl's easy interface),
/// so async callers run it on a thread of their own. Any number of fetches may run at
/// once in one process or several; fetches of the same destination serialize on
/// `NAME.lock`, and the later one reuses the file the first one verified.
///
/// To consume the file while it arrives (inflating during the download), pass an
/// `observer`: after each write it receives `.wrote` with the `.part` path and the
/// length that is contiguous from offset 0. Bytes below that length never change unless
/// `.restarted` follows, which means the partial file was truncated to zero (a 200 answer
/// to a range request, a changed ETag or Last-Modified, a 416 that does not fit, or the
/// retry after a checksum mismatch) and the consumer must start over. `.published` comes
/// last, after the SHA-256 matched and the file was renamed to its final name.
public final class Downloader: Sendable {
    public let options: DownloadOptions

    /// The longest destination file name in bytes: NAME.part.state, the longest name
    /// beside it, must fit in the 255 bytes that Linux file systems allow (NAME_MAX).
    public static let maximumFileNameLength = 255 - ".part.state".utf8.count

    /// Errors that publication's link and rename calls return in place of running; empty
    /// outside tests.
    let publicationFaults: PublicationFaults

    public init(options: DownloadOptions = DownloadOptions()) {
        self.options = options
        self.publicationFaults = PublicationFaults()
    }

    /// Creates a downloader whose publication fails the calls that `faults` names, as on a
    /// file system without hard links or a kernel without RENAME_NOREPLACE.
    init(options: DownloadOptions, publicationFaults faults: PublicationFaults) {
        self.options = options
        self.publicationFaults = faults
    }

    /// Downloads `url` to `destination` and verifies it.
    /// - Parameters:
    ///   - expected: the SHA-256 the file must have, or a checksum file that lists it.
    ///   - force: download again even when `destination` already has the expected hash,
    ///     and replace a `destination` with other content (only after the new file verified).
    /// - Throws: `DownloadNetworkError` or `HTTPStatusError` (`.network`),
    ///   `ChecksumMismatchError` or `ChecksumNotListedError` (`.invalidData`),
    ///   `DestinationMismatchError` or `TargetExistsError` (the destination is left as it was),
    ///   `CancelledError`, `SystemError`. The partial file is kept for a later resume
    ///   except after a checksum mismatch.
    public func fetch(url: String, expected: ExpectedChecksum, to destination: String, force: Bool = false,
                      progress: ProgressHandler? = nil, observer: DownloadObserver? = nil,
                      cancellation: CancellationToken = CancellationToken()) throws -> DownloadSummary {
        try Self.validate(url: url, argument: "URL")
        if destination.isEmpty || destination.utf8.contains(0) {
            // The C calls would cut the path at the NUL and create or lock another file.
            throw InvalidArgumentError(argument: "destination", value: destination.replacingOccurrences(of: "\0", with: "\\0"),
                                       reason: "empty or containing a NUL byte", remedy: "give a path without NUL bytes")
        }
        let started = ContinuousClock.now
        let paths = DownloadPaths(destination: destination)
        if paths.name.utf8.count > Downloader.maximumFileNameLength {
            throw InvalidArgumentError(argument: "destination", value: paths.name,
                                       reason: "the file name is \(paths.name.utf8.count) bytes long, but at most \(Downloader.maximumFileNameLength) fit, because NAME.part.state beside it must stay within 255 bytes",
                                       remedy: "choose a destination with a shorter file name")
        }

        let lock: DownloadLock
        do {
            lock = try DownloadLock(path: paths.lock, cancellation: cancellation)
        } catch let error as SystemError where !force && Self.isUnwritableDirectory(paths.directory, lockError: error) {
            // This process could not download or replace the file here anyway, so a
            // verified file is reused without the lock. A file with another hash fails as
            // it does with the lock, and a missing file fails with the lock's error.
            let digest = try expectedDigest(expected, url: url, paths: paths, force: force, cancellation: cancellation)
            let reusable: Int64?
            do {
                reusable = try reuseExisting(paths: paths, expected: digest, cancellation: cancellation)
            } catch var mismatch as DestinationMismatchError {
                mismatch.directoryIsWritable = false
                throw mismatch
            }
            guard let reused = reusable else { throw error }
            Log.info("download", "reused '\(destination)' without '\(paths.lock)', because its directory cannot be written")
            observer?(.published(path: destination, reused: true))
            return reusedSummary(path: destination, sha256: digest, size: reused, started: started)
        }
        defer { lock.release() }

        // --force replaces a regular file or a symbolic link, never a directory, a device
        // (--output /dev/sda would replace the device node) or a FIFO: reject those before downloading.
        if force, let status = (try? linkStatus(paths.destination)) ?? nil, !status.isRegularFile, !status.isSymbolicLink {
            throw TargetExistsError(path: paths.destination, kind: status.kindDescription)
        }
        // The state file is replaced by rename(2), which cannot replace a directory: find
        // one now rather than after the first response has started to arrive.
        if let status = (try? linkStatus(paths.state)) ?? nil, status.isDirectory {
            throw TargetExistsError(path: paths.state, kind: status.kindDescription)
        }
        let digest = try expectedDigest(expected, url: url, paths: paths, force: force, cancellation: cancellation)
        if !force, let reused = try reuseExisting(paths: paths, expected: digest, cancellation: cancellation) {
            observer?(.published(path: destination, reused: true))
            return reusedSummary(path: destination, sha256: digest, size: reused, started: started)
        }

        let session = try DownloadSession(url: url, expected: digest, paths: paths, options: options, force: force,
                                          progress: progress, observer: observer, cancellation: cancellation)
        var summary: DownloadSummary
        do {
            summary = try session.run()
        } catch {
            // An empty partial file is not worth keeping for a resume.
            if let status = try? linkStatus(paths.part), status.size == 0 {
                unlink(paths.part)
                unlink(paths.state)
            }
            throw error
        }
        try publish(paths: paths, part: session.part, force: force)
        if case .checksumFile(let checksumURL, _) = expected {
            recordChecksum(digest, listedAt: checksumURL, paths: paths)
        }
        observer?(.published(path: destination, reused: false))
        summary.elapsed = ContinuousClock.now - started
        return summary
    }

    /// Downloads the image a catalog entry describes into `directory`.
    public func fetch(_ entry: CatalogEntry, into directory: String, force: Bool = false,
                      progress: ProgressHandler? = nil, observer: DownloadObserver? = nil,
                      cancellation: CancellationToken = CancellationToken()) throws -> DownloadSummary {
        let expected: ExpectedChecksum
        if let hex = entry.sha256, let digest = SHA256Digest(hex: hex) {
            expected = .sha256(digest)
        } else if let checksumURL = entry.checksumURL {
            expected = .checksumFile(url: checksumURL, fileName: entry.fileName)
        } else {
            throw InvalidArgumentError(argument: "image", value: entry.reference, reason: "the catalog gives no SHA-256 for it",
                                       remedy: "add sha256 or checksumURL to its catalog entry")
        }
        let destination = (directory as NSString).appendingPathComponent(entry.fileName)
        return try fetch(url: entry.url, expected: expected, to: destination, force: force, progress: progress,
                         observer: observer, cancellation: cancellation)
    }

    static func validate(url: String, argument: String) throws {
        // libcurl rejects these only after the lock and partial files exist, with a vague message.
        if url.unicodeScalars.contains(where: { $0.properties.isWhitespace || $0.value < 0x20 || $0.value == 0x7F }) {
            throw InvalidArgumentError(argument: argument, value: redactingPassword(in: url),
                                       reason: "contains a space or a control character",
                                       remedy: "percent-encode it in the URL (a space is %20)")
        }
        guard let parsed = URL(string: url), let scheme = parsed.scheme?.lowercased(), ["http", "https"].contains(scheme),
              parsed.host?.isEmpty == false else {
            throw InvalidArgumentError(argument: argument, value: redactingPassword(in: url), reason: "not an http or https URL with a host",
                                       remedy: "give a URL such as https://example.org/image.img.gz")
        }
    }

    // MARK: Expected checksum and reuse

    private func expectedDigest(_ expected: ExpectedChecksum, url: String, paths: DownloadPaths, force: Bool,
                                cancellation: CancellationToken) throws -> SHA256Digest {
        switch expected {
        case .sha256(let digest):
            return digest
        case .checksumFile(let checksumURL, let fileName):
            try Self.validate(url: checksumURL, argument: "checksum URL")
            let name = fileName ?? paths.name
            // A file already verified against this checksum file is reused without network.
            if !force, pathExistsNoFollow(paths.destination), let cached = try? String(contentsOfFile: paths.checksum, encoding: .utf8),
               cached.hasPrefix("# from \(redactingPassword(in: checksumURL))\n"), let entry = ChecksumFile(parsing: cached).entry(named: paths.name) {
                return entry.digest
            }
            return try checksum(for: name, listedAt: checksumURL, cancellation: cancellation)
        }
    }

    /// Writes NAME.sha256, so that a later run can reuse NAME without fetching the checksum
    /// file. A NAME.sha256 that imgtool did not write (one without the "# from " line, a
    /// symbolic link) is the user's file, such as the publisher's checksum file saved
    /// beside the image, and is left as it is. A failure to write only costs that reuse.
    private func recordChecksum(_ digest: SHA256Digest, listedAt checksumURL: String, paths: DownloadPaths) {
        let marker = "# from "
        if let status = (try? linkStatus(paths.checksum)) ?? nil {
            let head = status.isRegularFile ? FileHandle(forReadingAtPath: paths.checksum)?.readData(ofLength: marker.utf8.count) : nil
            guard let head, head == Data(marker.utf8) else {
                Log.info("download", "not recording the SHA-256 in '\(paths.checksum)': that \(status.kindDescription) was not written by imgtool")
                return
            }
        }
        try? "\(marker)\(redactingPassword(in: checksumURL))\n\(digest.hex)  \(paths.name)\n".write(toFile: paths.checksum, atomically: true, encoding: .utf8)
    }

    /// Downloads the checksum file at `checksumURL` (at most 4 MiB, with the same retries
    /// as a download) and returns its entry for `fileName`.
    /// - Throws: `ChecksumNotListedError` when the file has no entry for `fileName`,
    ///   `ChecksumConflictError` when it lists `fileName` with different hashes,
    ///   `DownloadNetworkError` or `HTTPStatusError` when it cannot be downloaded,
    ///   `InvalidArgumentError` when it is larger than 4 MiB.
    public func checksum(for fileName: String, listedAt checksumURL: String,
                         cancellation: CancellationToken = CancellationToken()) throws -> SHA256Digest {
        try Self.validate(url: checksumURL, argument: "checksum URL")
        let text = try fetchSmallFile(url: checksumURL, cancellation: cancellation)
        let file = ChecksumFile(parsing: text)
        let matches = file.entries(named: fileName)
        guard let entry = matches.first else {
            throw ChecksumNotListedError(fileName: fileName, checksumURL: checksumURL, listed: file.entries.map(\.fileName))
        }
        if matches.contains(where: { $0.digest != entry.digest }) {
            throw ChecksumConflictError(fileName: fileName, checksumURL: checksumURL, listed: matches)
        }
        return entry.digest
    }

    /// Returns whether `lockError`, from creating or opening NAME.lock, comes from a
    /// `directory` that this process cannot write (a read-only mount, missing write
    /// permission), and not from a lock file that alone is not writable.
    private static func isUnwritableDirectory(_ directory: String, lockError: SystemError) -> Bool {
        guard lockError.errno == .readOnlyFileSystem || lockError.errno == .permissionDenied else { return false }
        return access(directory, W_OK) != 0
    }

    private func reusedSummary(path: String, sha256: SHA256Digest, size: Int64,
                               started: ContinuousClock.Instant) -> DownloadSummary {
        DownloadSummary(path: path, sha256: sha256, size: size, reused: true, bytesDownloaded: 0, resumedFrom: 0,
                        attempts: 0, restarts: 0, finalURL: nil, elapsed: ContinuousClock.now - started)
    }

    /// Returns the size of `destination` when it exists and has the expected hash; nil
    /// when it does not exist. Throws when it exists with other content.
    private func reuseExisting(paths: DownloadPaths, expected: SHA256Digest, cancellation: CancellationToken) throws -> Int64? {
        let status: FileStatus?
        do {
            status = try linkStatus(paths.destination)
        } catch {
            throw SystemError("inspect", path: paths.destination, errno: error)
        }
        guard let status else { return nil }
        guard status.isRegularFile else {
            throw TargetExistsError(path: paths.destination, kind: status.kindDescription)
        }
        let actual = try SHA256.hash(fileAt: paths.destination, cancellation: cancellation)
        guard actual == expected else {
            throw DestinationMismatchError(path: paths.destination, expected: expected, actual: actual)
        }
        Log.info("download", "reusing verified '\(paths.destination)' (SHA-256 \(actual.hex))")
        return status.size
    }

    /// Fetches a small text file (a checksum list), with the same retries as a download.
    private func fetchSmallFile(url: String, cancellation: CancellationToken) throws -> String {
        var failures = 0
        while true {
            let collector = MemoryCollector(limit: 4 << 20, stallTimeout: options.stallTimeout, cancellation: cancellation)
            let transfer = CurlTransfer(url: url, requestHeaders: [], connectTimeout: options.connectTimeout, delegate: collector)
            let result = transfer.perform()
            try cancellation.check("download of \(redactingPassword(in: url))")
            let status = transfer.responseCode
            var failure: AttemptFailure
            if collector.tooLarge {
                // The wrong URL, not a network failure: retrying or exit code 3 would mislead.
                throw InvalidArgumentError(argument: "checksum URL", value: redactingPassword(in: url),
                                           reason: "the file there is larger than 4 MiB, so it is not a checksum list",
                                           remedy: "give the URL of the SHA256SUMS file, or the hash itself with --sha256")
            } else if result.isSuccess, status == 200 {
                return Self.text(of: collector.data)
            } else if result.isSuccess || result.code == CURLE_WRITE_ERROR {
                if !Self.isRetryable(status: status) { throw HTTPStatusError(url: transfer.effectiveURL, statusCode: status) }
                failure = AttemptFailure(reason: "the server responded with HTTP \(status)", retryable: true)
            } else if collector.stalled {
                failure = AttemptFailure(reason: "no data for \(options.stallTimeout.seconds) s", retryable: true)
            } else {
                failure = AttemptFailure.from(result, url: url)
            }
            failures += 1
            guard failure.retryable, failures <= options.retries else {
                throw DownloadNetworkError(url: url, reason: failure.reason, attempts: failures, remedy: failure.remedy)
            }
            try Self.sleepBeforeRetry(failures, options: options, cancellation: cancellation, url: url)
        }
    }

    /// A checksum file's text: UTF-16 when it starts with a UTF-16 byte order mark (as
    /// Windows tools write it), UTF-8 otherwise.
    static func text(of data: Data) -> String {
        if data.starts(with: [0xFF, 0xFE]) || data.starts(with: [0xFE, 0xFF]), let text = String(data: data, encoding: .utf16) {
            return text
        }
        return String(decoding: data, as: UTF8.self)
    }

    // MARK: Publication

    /// Gives the verified file its final name through `part`, the descriptor that the bytes
    /// were written and hashed through. The name NAME.part may refer to another file by
    /// now, because anyone who can write the directory can rename a file over it.
    private func publish(paths: DownloadPaths, part: FileDescriptor, force: Bool) throws {
        let written: FileStatus
        do {
            try part.sync()
            written = try part.status()
        } catch {
            throw SystemError("fsync", path: paths.part, errno: error)
        }
        // linkat through /proc links the descriptor's file itself. It fails when the file
        // has no name left (ENOENT), without /proc, or without hard links. Then NAME.part
        // is renamed by name below, but only while it is still the downloaded file.
        let source = "/proc/self/fd/\(part.rawValue)"
        var linked = false
        if force {
            let temporary = (paths.directory as NSString).appendingPathComponent(".imgtool-publish-\(getpid())-\(UInt32.random(in: .min ... .max))")
            if linkThroughProc(source, to: temporary) == 0 {
                if rename(temporary, paths.destination) != 0 {
                    let error = Errno.current
                    unlink(temporary)
                    throw SystemError("rename to", path: paths.destination, errno: error)
                }
                linked = true
            }
        } else if linkThroughProc(source, to: paths.destination) == 0 {
            linked = true
        } else if Errno.current == .exists {
            let kind = (try? linkStatus(paths.destination))??.kindDescription ?? "file"
            throw TargetExistsError(path: paths.destination, kind: kind)
        }

        let current = (try? linkStatus(paths.part)) ?? nil
        let partIsWritten = current.map { $0.device == written.device && $0.inode == written.inode } ?? false
        if linked {
            // Only the name of the file written goes; a file put there by someone else stays.
            if partIsWritten { unlink(paths.part) }
        } else {
            guard partIsWritten else { throw PartialFileReplacedError(path: paths.part) }
            try renamePart(paths: paths, force: force)
        }
        unlink(paths.state)
        if let directory = try? FileDescriptor.open(paths.directory, flags: O_RDONLY | O_DIRECTORY) {
            try? directory.sync()
            try? directory.close()
        }
    }

    /// Renames NAME.part to NAME by name: without replacing an existing NAME unless
    /// `force`, with link(2) where the file system has no RENAME_NOREPLACE, and with a
    /// checked rename(2) where it has no hard links either.
    private func renamePart(paths: DownloadPaths, force: Bool) throws {
        let result = force ? rename(paths.part, paths.destination) : renameWithoutReplacing(paths.part, to: paths.destination)
        if result != 0 {
            let error = Errno.current
            if error == .exists {
                throw existingDestination(paths)
            }
            if !force, error == .invalidArgument || error == .noSystemCall {
                // No RENAME_NOREPLACE on this filesystem: link(2) fails on an existing target too.
                if linkByName(paths.part, to: paths.destination) != 0 {
                    let linkError = Errno.current
                    if linkError == .exists { throw existingDestination(paths) }
                    // EPERM: no hard links either (vfat on an old kernel).
                    guard linkError == .notPermitted else {
                        throw SystemError("link to", path: paths.destination, errno: linkError)
                    }
                    try renameIfAbsent(paths)
                    return
                }
                unlink(paths.part)
            } else {
                throw SystemError("rename to", path: paths.destination, errno: error)
            }
        }
    }

    /// Renames NAME.part to NAME with rename(2) after checking that NAME does not exist,
    /// for a file system that offers neither RENAME_NOREPLACE nor hard links.
    private func renameIfAbsent(_ paths: DownloadPaths) throws {
        let existing: FileStatus?
        do {
            existing = try linkStatus(paths.destination)
        } catch {
            throw SystemError("inspect", path: paths.destination, errno: error)
        }
        if existing != nil { throw existingDestination(paths) }
        // NOTE: a file that another program creates as NAME between the check and the
        // rename is replaced. Other imgtool processes cannot, because they wait for NAME.lock.
        if rename(paths.part, paths.destination) != 0 {
            throw SystemError("rename to", path: paths.destination, errno: .current)
        }
    }

    private func existingDestination(_ paths: DownloadPaths) -> TargetExistsError {
        let kind = (try? linkStatus(paths.destination))??.kindDescription ?? "file"
        return TargetExistsError(path: paths.destination, kind: kind)
    }

    /// Calls linkat(2) on the /proc/self/fd name `source`, or fails with the error in
    /// `publicationFaults`.
    private func linkThroughProc(_ source: String, to target: String) -> Int32 {
        if let fault = publicationFaults.linkThroughProc {
            errno = fault.rawValue
            return -1
        }
        return linkat(AT_FDCWD, source, AT_FDCWD, target, AT_SYMLINK_FOLLOW)
    }

    /// Calls renameat2(2) with RENAME_NOREPLACE, or fails with the error in
    /// `publicationFaults`.
    private func renameWithoutReplacing(_ source: String, to target: String) -> Int32 {
        if let fault = publicationFaults.renameWithoutReplacing {
            errno = fault.rawValue
            return -1
        }
        return imgtool_renameat2(AT_FDCWD, source, AT_FDCWD, target, IMGTOOL_RENAME_NOREPLACE)
    }

    /// Calls link(2), or fails with the error in `publicationFaults`.
    private func linkByName(_ source: String, to target: String) -> Int32 {
        if let fault = publicationFaults.linkByName {
            errno = fault.rawValue
            return -1
        }
        return link(source, target)
    }

    // MARK: Retry policy

    static func isRetryable(status: Int) -> Bool {
        status >= 500 || status == 408 || status == 429
    }

    /// Sleeps `retryDelay * 2^(failures-1)`, capped and scaled by a random 0.5...1, in
    /// short steps so cancellation takes effect within 50 ms.
    static func sleepBeforeRetry(_ failures: Int, options: DownloadOptions, cancellation: CancellationToken, url: String) throws {
        let exponent = Double(min(failures - 1, 30))
        let capped = min(options.retryDelay.seconds * pow(2, exponent), options.maximumRetryDelay.seconds)
        let delay = capped * Double.random(in: 0.5...1)
        Log.info("download", "retrying \(redactingPassword(in: url)) in \(String(format: "%.2f", delay)) s (retry \(failures) of \(options.retries))")
        let deadline = ContinuousClock.now + .milliseconds(Int64(delay * 1000))
        while ContinuousClock.now < deadline {
            try cancellation.check("download of \(redactingPassword(in: url))")
            let left = deadline - ContinuousClock.now
            Thread.sleep(forTimeInterval: min(0.05, max(0, left.seconds)))
        }
        try cancellation.check("download of \(redactingPassword(in: url))")
    }
}

/// Errors that `Downloader`'s publication returns from its link and rename calls in place
/// of making them, so tests can take the paths that some file systems and kernels force.
/// A nil field lets the call run.
struct PublicationFaults: Sendable {
    /// For linkat(2) of /proc/self/fd/N: EPERM as on vfat, ENOENT as without /proc.
    var linkThroughProc: Errno?
    /// For renameat2(2) with RENAME_NOREPLACE: EINVAL as on a file system or kernel
    /// without that flag.
    var renameWithoutReplacing: Errno?
    /// For link(2) of NAME.part to NAME: EPERM as on vfat.
    var linkByName: Errno?
}

/// The file names a download uses beside its destination.
struct DownloadPaths {
    let destination: String
    let directory: String
    let name: String
    var part: String { destination + ".part" }
    var state: String { destination + ".part.state" }
    var lock: String { destination + ".lock" }
    var checksum: String { destination + ".sha256" }

    init(destination: String) {
        self.destination = destination
        // The directory is the path up to the last slash, as given. URL removes `dir/..`
        // from a relative path as text, which names another directory than the kernel
        // does when `dir` is a symbolic link.
        if let slash = destination.lastIndex(of: "/") {
            let prefix = String(destination[..<slash])
            directory = prefix.isEmpty ? "/" : prefix
        } else {
            directory = "."
        }
        name = URL(fileURLWithPath: destination).lastPathComponent
    }
}

private func pathExistsNoFollow(_ path: String) -> Bool {
    ((try? linkStatus(path)) ?? nil) != nil
}

/// An exclusive flock(2) on `NAME.lock`, polled so that cancellation can interrupt the wait.
final class DownloadLock {
    private let descriptor: FileDescriptor

    init(path: String, cancellation: CancellationToken) throws {
        do {
            // O_NOFOLLOW: a symbolic link here could make O_CREAT create a file elsewhere.
            descriptor = try FileDescriptor.open(path, flags: O_RDWR | O_CREAT | O_NOFOLLOW, mode: 0o644)
        } catch let error where error == .tooManyLinks {
            throw TargetExistsError(path: path, kind: "symbolic link")
        } catch {
            throw SystemError("open lock file", path: path, errno: error)
        }
        var logged = false
        while true {
            do {
                try descriptor.lock(exclusive: true, wait: false)
                return
            } catch let error where error == .wouldBlock {
                if !logged {
                    Log.info("download", "waiting for another process that holds '\(path)'")
                    logged = true
                }
                do {
                    try cancellation.check("wait for '\(path)'")
                } catch {
                    try? descriptor.close()
                    throw error
                }
                Thread.sleep(forTimeInterval: 0.05)
            } catch {
                try? descriptor.close()
                throw SystemError("lock", path: path, errno: error)
            }
        }
    }

    /// Releases the lock; the lock file stays, because removing it could let a third
    /// process lock a new file while a second one still waits on the old one.
    func release() {
        try? descriptor.unlock()
        try? descriptor.close()
    }
}

/// The reason one attempt ended without the whole file.
struct AttemptFailure: Error {
    var reason: String
    var retryable: Bool
    var remedy: String? = nil

    /// `from(_:url:)` for a raw `CURLcode` value, so tests need not import CCurl.
    static func from(curlCode: UInt32, message: String, url: String) -> AttemptFailure {
        from(CurlResult(code: CURLcode(rawValue: curlCode), message: message), url: url)
    }

    /// Plain words for a libcurl failure, naming the host for DNS and TLS problems.
    static func from(_ result: CurlResult, url: String) -> AttemptFailure {
        let host = URL(string: url)?.host ?? url
        let detail = result.message
        switch result.code {
        case CURLE_COULDNT_RESOLVE_HOST:
            return AttemptFailure(reason: "the host name '\(host)' could not be resolved (DNS lookup failed)", retryable: false,
                                  remedy: "check the host name in the URL and the system's DNS settings")
        case CURLE_COULDNT_RESOLVE_PROXY:
            return AttemptFailure(reason: "the proxy host could not be resolved (DNS lookup failed): \(detail)", retryable: false,
                                  remedy: "check the proxy settings (http_proxy, https_proxy)")
        case CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_CACERT_BADFILE, CURLE_SSL_CERTPROBLEM, CURLE_SSL_PINNEDPUBKEYNOTMATCH:
            return AttemptFailure(reason: "the TLS certificate of '\(host)' could not be verified (\(detail))", retryable: false,
                                  remedy: "check the URL's host name and the system's CA certificates; the server may not be who it claims")
        case CURLE_SSL_CONNECT_ERROR:
            return AttemptFailure(reason: "the TLS handshake with '\(host)' failed (\(detail))", retryable: true)
        case CURLE_UNSUPPORTED_PROTOCOL, CURLE_URL_MALFORMAT:
            return AttemptFailure(reason: "the URL cannot be fetched (\(detail))", retryable: false,
                                  remedy: "give an http or https URL; redirects to other protocols are not followed")
        case CURLE_TOO_MANY_REDIRECTS:
            return AttemptFailure(reason: "more than 10 redirects (\(detail))", retryable: false,
                                  remedy: "the server redirects in a loop; check the URL in a browser or with curl -IL")
        case CURLE_COULDNT_CONNECT:
            return AttemptFailure(reason: "could not connect to '\(host)' (\(detail))", retryable: true)
        case CURLE_OPERATION_TIMEDOUT:
            return AttemptFailure(reason: "timed out (\(detail))", retryable: true)
        default:
            return AttemptFailure(reason: detail, retryable: true)
        }
    }
}

/// Collects a small response body in memory, for checksum files.
private final class MemoryCollector: CurlTransferDelegate {
    private(set) var data = Data()
    private(set) var tooLarge = false
    private(set) var stalled = false
    private let limit: Int
    private let stallTimeout: Duration
    private let cancellation: CancellationToken
    private var lastData = ContinuousClock.now

    init(limit: Int, stallTimeout: Duration, cancellation: CancellationToken) {
        self.limit = limit
        self.stallTimeout = stallTimeout
        self.cancellation = cancellation
    }

    func transferShouldAcceptBody(_ transfer: CurlTransfer) -> Bool {
        transfer.headers.statusCode == 200
    }

    func transfer(_ transfer: CurlTransfer, received bytes: UnsafeRawBufferPointer) -> Bool {
        lastData = .now
        guard data.count + bytes.count <= limit else {
            tooLarge = true
            return false
        }
        data.append(contentsOf: bytes)
        return true
    }

    func transferShouldContinue(_ transfer: CurlTransfer) -> Bool {
        if cancellation.isCancelled { return false }
        if ContinuousClock.now - lastData > stallTimeout {
            stalled = true
            return false
        }
        return true
    }
}

extension Downloader {
    /// Runs the blocking `fetch` on a thread of its own, so that the caller's task (and
    /// Swift's cooperative thread pool) is not blocked for the whole download.
    public func fetch(url: String, expected: ExpectedChecksum, to destination: String, force: Bool = false,
                      progress: ProgressHandler? = nil, observer: DownloadObserver? = nil,
                      cancellation: CancellationToken = CancellationToken()) async throws -> DownloadSummary {
        try await withCheckedThrowingContinuation { continuation in
            let thread = Thread.named("download") {
                continuation.resume(with: Result {
                    try self.fetch(url: url, expected: expected, to: destination, force: force, progress: progress,
                                   observer: observer, cancellation: cancellation)
                })
            }
            thread.start()
        }
    }
}

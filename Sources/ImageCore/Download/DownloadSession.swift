// DownloadSession: the attempt loop of one `Downloader.fetch`, from the first request
// to a complete partial file whose SHA-256 matched.
//
// Invariants, kept between any two callbacks:
// - `partLength` bytes of `NAME.part` from offset 0 came from the response the state file
//   describes, and `hasher` has been fed exactly those bytes in order;
// - the state file is written before the first byte of a response is stored.
// The session runs on the thread that called `fetch`, and libcurl's callbacks run inside
// `perform` on that same thread. Only writing and hashing happen on the `WriteBehind`
// workers, which the session drains before it looks at the file or the hasher.

#if canImport(Glibc)
import Glibc
#endif
import CCurl
import Foundation
import Synchronization

final class DownloadSession: CurlTransferDelegate {
    /// The end of one attempt, decided from the response or the transfer result.
    private enum Outcome {
        /// The whole file is in `NAME.part`.
        case complete
        /// The partial file was discarded; ask again from zero at once.
        case restart(String)
        /// A transient failure: back off, then resume.
        case retry(AttemptFailure)
        /// A failure that retrying will not fix.
        case fail(any Error)
    }

    private let url: String
    /// `url` without its password, for messages and logs.
    private let shownURL: String
    private let expected: SHA256Digest
    private let paths: DownloadPaths
    private let options: DownloadOptions
    private let observer: DownloadObserver?
    private let cancellation: CancellationToken
    private let reporter: ProgressReporter

    /// The partial file, open until the session ends; `Downloader.publish` links it.
    let part: FileDescriptor
    private let hasher = SHA256()
    private var state: DownloadState? {
        didSet { announcedTotal.value.store(state?.expectedLength ?? -1, ordering: .relaxed) }
    }
    /// Bytes received from offset 0: written, or queued in `writer` to be written.
    private var partLength: Int64 = 0
    private var writer: WriteBehind!
    /// `state?.expectedLength` (or -1) for the writer thread's progress reports.
    private let announcedTotal = AtomicLength()

    // Per attempt.
    private var outcome: Outcome?
    private var requestedFrom: Int64 = 0
    private var lastData = ContinuousClock.now
    private var stalled = false
    /// Set once the final URL of an earlier response rejected a resume with a 4xx status
    /// (a mirror link that expired) or sent no response at all (a mirror that is down);
    /// later requests go to the requested URL again.
    private var finalURLRejected = false

    // Totals for the summary.
    private var bytesDownloaded: Int64 = 0
    private var resumedFrom: Int64 = 0
    private var attempts = 0
    private var restarts = 0

    /// Restarts (changed file, unusable responses) allowed in one fetch besides the single
    /// checksum retry: enough for a file replaced during the download, bounded so a
    /// server that changes the file on every request cannot loop forever.
    private static let maximumRestarts = 3

    init(url: String, expected: SHA256Digest, paths: DownloadPaths, options: DownloadOptions, force: Bool,
         progress: ProgressHandler?, observer: DownloadObserver?, cancellation: CancellationToken) throws {
        self.url = url
        self.shownURL = redactingPassword(in: url)
        self.expected = expected
        self.paths = paths
        self.options = options
        self.observer = observer
        self.cancellation = cancellation
        self.reporter = ProgressReporter(step: "download", handler: progress)
        part = try Self.openPart(paths.part)
        // When this throws, deinit closes `part`: every stored property is set by now.
        try loadPartial(force: force)
        writer = WriteBehind(part: part, hasher: hasher) {
            [partPath = paths.part, announcedTotal, observer, reporter] length in
            let announced = announcedTotal.value.load(ordering: .relaxed)
            let total = announced >= 0 ? announced : nil
            observer?(.wrote(partPath: partPath, length: length, total: total))
            reporter.update(completed: length, total: total)
        }
        writer.reset(writtenLength: partLength)
    }

    deinit { try? part.close() }

    /// Opens `NAME.part` for reading and writing, or creates it. Writes must reach only
    /// this name: a symbolic link there (O_NOFOLLOW) or a file with other hard links would
    /// pass them to other names. A linked file is therefore replaced by a new empty one,
    /// which costs only the resume. A directory, device or FIFO fails before any write.
    static func openPart(_ path: String) throws -> FileDescriptor {
        func failure(_ operation: String, _ error: Errno) -> any Error {
            if error == .tooManyLinks { return TargetExistsError(path: path, kind: "symbolic link") }
            return SystemError(operation, path: path, errno: error, remedy: SystemError.defaultRemedy(for: error))
        }
        func create() throws -> FileDescriptor? {
            do {
                return try FileDescriptor.open(path, flags: O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW, mode: 0o644)
            } catch let error where error == .exists {
                return nil
            } catch {
                throw failure("create", error)
            }
        }
        if let created = try create() { return created }

        // The file exists. Reject what is not a regular file before opening it, since
        // opening a device can have effects of its own; O_NONBLOCK keeps a FIFO that
        // replaced it since from blocking the open, and fstat below catches it.
        if let status = (try? linkStatus(path)) ?? nil, !status.isRegularFile {
            throw TargetExistsError(path: path, kind: status.kindDescription)
        }
        let existing: FileDescriptor
        do {
            existing = try FileDescriptor.open(path, flags: O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY)
        } catch let error where error == .noEntry {
            // Removed since; create it after all.
            if let created = try create() { return created }
            throw failure("create", .exists)
        } catch {
            throw failure("open", error)
        }
        let status: FileStatus
        do {
            status = try existing.status()
        } catch {
            try? existing.close()
            throw failure("inspect", error)
        }
        if !status.isRegularFile {
            try? existing.close()
            throw TargetExistsError(path: path, kind: status.kindDescription)
        }
        if status.linkCount == 1 {
            // O_NONBLOCK was only for the open; the writes should not carry it.
            _ = fcntl(existing.rawValue, F_SETFL, fcntl(existing.rawValue, F_GETFL) & ~O_NONBLOCK)
            return existing
        }

        try? existing.close()
        Log.warning("download", "'\(path)' has \(status.linkCount - 1) other hard link(s); writing to it would change those files too, so it is replaced by a new empty file")
        if unlink(path) != 0 {
            let error = Errno.current
            if error != .noEntry { throw failure("remove", error) }
        }
        if let created = try create() { return created }
        // Someone created the name again between unlink and open: give up rather than loop.
        throw SystemError("create", path: path, errno: .exists,
                          remedy: "another program keeps creating this file; remove it and make sure nothing else writes in that directory")
    }

    /// Keeps the partial file when its state file records it as a prefix of this URL with
    /// this hash; otherwise empties it. Then hashes what is kept.
    private func loadPartial(force: Bool) throws {
        let size: Int64
        do {
            size = try part.status().size
        } catch {
            throw SystemError("inspect", path: paths.part, errno: error)
        }
        let saved = DownloadState.load(from: paths.state)
        var keep = !force && size > 0
        if let saved {
            keep = keep && saved.url == url && saved.sha256 == expected.hex && saved.expectedLength.map { size <= $0 } ?? true
        } else {
            keep = false
        }
        guard keep, let saved else {
            if size > 0 {
                Log.info("download", "discarding '\(paths.part)' (\(size) bytes): it is not a partial download of \(shownURL) with SHA-256 \(expected.hex)")
            }
            try truncatePart()
            return
        }
        state = saved
        try cancellation.check("download of \(shownURL)")
        try hasher.update(file: part, path: paths.part, length: size, cancellation: cancellation)
        partLength = size
        resumedFrom = size
        reporter.measureRate(from: size)
        Log.info("download", "resuming \(shownURL) at byte \(size) from '\(paths.part)'")
    }

    // MARK: The attempt loop

    func run() throws -> DownloadSummary {
        defer { writer.stop() }
        var failures = 0
        var checksumRetried = false
        while true {
            try cancellation.check("download of \(shownURL)")
            let lengthBefore = partLength
            let outcome = attempt()
            switch outcome {
            case .complete:
                let actual = hasher.finalize()
                if actual == expected {
                    reporter.finish(completed: partLength, total: partLength)
                    return DownloadSummary(path: paths.destination, sha256: actual, size: partLength, reused: false,
                                           bytesDownloaded: bytesDownloaded, resumedFrom: resumedFrom, attempts: attempts,
                                           restarts: restarts, finalURL: state?.finalURL, elapsed: .zero)
                }
                let mismatch = ChecksumMismatchError(path: paths.part, expected: expected, actual: actual, url: url)
                if checksumRetried {
                    // The error reports this mismatch, so it is not logged as well.
                    unlink(paths.part)
                    unlink(paths.state)
                    throw mismatch
                }
                Log.warning("download", "\(mismatch.description); downloading it once more")
                try discardPartial(reason: "checksum mismatch: expected \(expected.hex), got \(actual.hex)")
                checksumRetried = true
                restarts += 1
            case .restart(let reason):
                restarts += 1
                if restarts > Self.maximumRestarts {
                    throw DownloadNetworkError(url: url, reason: "gave up after \(restarts) restarts; last: \(reason)",
                                               attempts: attempts, remedy: "the file keeps changing on the server; try again later")
                }
            case .retry(let failure):
                // An attempt that added bytes before it failed counts as the first failure
                // of a new run: a link that drops often but keeps making progress finishes,
                // while one that makes no progress still gives up after `retries`.
                failures = partLength > lengthBefore ? 1 : failures + 1
                Log.warning("download", "attempt \(attempts) for \(shownURL) failed at byte \(partLength): \(failure.reason)")
                guard failure.retryable, failures <= options.retries else {
                    throw DownloadNetworkError(url: url, reason: failure.reason, attempts: attempts, remedy: failure.remedy)
                }
                try Downloader.sleepBeforeRetry(failures, options: options, cancellation: cancellation, url: url)
            case .fail(let error):
                if let error = error as? DownloadTooLargeError, error.announced == nil {
                    // A body without a length that grew this far is most likely endless, and
                    // keeping it would leave up to `maximumSize` bytes of it on the disk.
                    Log.warning("download", "removing '\(paths.part)' (\(partLength) bytes): a body without a length passed the size limit")
                    unlink(paths.part)
                    unlink(paths.state)
                }
                throw error
            }
        }
    }

    /// Sends one HTTP request, from `partLength` when there is a partial file to resume.
    private func attempt() -> Outcome {
        attempts += 1
        outcome = nil
        stalled = false
        lastData = .now
        requestedFrom = partLength

        // The range goes out as a plain header rather than CURLOPT_RESUME_FROM_LARGE, so
        // libcurl never turns a 200 into error 33 (CURLE_RANGE_ERROR): `decide` judges it.
        var headers: [String] = []
        var target = url
        if partLength > 0, let state {
            target = finalURLRejected ? url : state.finalURL
            headers.append("Range: bytes=\(partLength)-")
            if let validator = state.etag.flatMap({ $0.hasPrefix("W/") ? nil : $0 }) ?? state.lastModified {
                headers.append("If-Range: \(validator)")
            }
        }
        let transfer = CurlTransfer(url: target, requestHeaders: headers, connectTimeout: options.connectTimeout, delegate: self)
        let result = transfer.perform()
        do {
            try writer.drain()
        } catch {
            return .fail(SystemError("write", path: paths.part, errno: error))
        }

        if cancellation.isCancelled { return .fail(CancelledError("download of \(shownURL)")) }
        if let outcome { return outcome }
        if target != url, !finalURLRejected, transfer.responseCode == 0 {
            // No HTTP response from the mirror an earlier response redirected to (refused,
            // DNS or TLS failure, a stall). Retrying it would most likely fail the same way,
            // while the requested URL may redirect to a mirror that works.
            finalURLRejected = true
            let failure = stalled ? "no response for \(options.stallTimeout.seconds) s"
                : AttemptFailure.from(result, url: transfer.effectiveURL).reason
            return .retry(AttemptFailure(reason: "resuming at \(redactingPassword(in: target)) failed: \(failure); trying \(shownURL) again",
                                         retryable: true))
        }
        if !transfer.hasStartedBody, result.isSuccess {
            // An empty body: decide from the headers alone (an empty file, or a 416).
            if let outcome = decide(transfer) { return outcome }
        }
        if let outcome { return outcome }
        if stalled {
            return .retry(AttemptFailure(reason: "no data received for \(options.stallTimeout.seconds) s", retryable: true))
        }
        if result.isSuccess {
            if let total = state?.expectedLength, partLength != total {
                return .retry(AttemptFailure(reason: "the response ended at byte \(partLength) of \(total)", retryable: true))
            }
            return .complete
        }
        if result.code == CURLE_PARTIAL_FILE {
            let total = state?.expectedLength.map { " of \($0)" } ?? ""
            return .retry(AttemptFailure(reason: "the connection closed after \(partLength)\(total) bytes", retryable: true))
        }
        return .retry(AttemptFailure.from(result, url: transfer.effectiveURL))
    }

    // MARK: Deciding about a response

    func transferShouldAcceptBody(_ transfer: CurlTransfer) -> Bool {
        if let outcome = decide(transfer) {
            self.outcome = outcome
            return false
        }
        return true
    }

    /// Checks the final response against the partial file and prepares the file for its
    /// body. Returns nil when the body is to be written, or how the attempt ends.
    private func decide(_ transfer: CurlTransfer) -> Outcome? {
        do {
            try writer.drain()
        } catch {
            return .fail(SystemError("write", path: paths.part, errno: error))
        }
        let response = transfer.headers
        let status = response.statusCode
        let etag = response["etag"]
        let lastModified = response["last-modified"]
        do {
            switch status {
            case 200:
                var length = response["content-length"].flatMap { Int64($0) }
                if response["transfer-encoding"]?.lowercased().contains("chunked") == true { length = nil }
                if let length, length > options.maximumSize { return tooLarge(announced: length) }
                if requestedFrom > 0 {
                    try discardPartial(reason: "the server sent the whole file (HTTP 200) for a range request")
                    restarts += 1
                }
                try recordState(transfer, etag: etag, lastModified: lastModified, length: length)
                return nil

            case 206:
                guard let header = response["content-range"], let range = ContentRange(header), let first = range.first else {
                    try discardPartial(reason: "HTTP 206 without a valid Content-Range (\(response["content-range"] ?? "none"))")
                    return .restart("invalid Content-Range")
                }
                if let total = range.total, total > options.maximumSize { return tooLarge(announced: total) }
                if requestedFrom == 0, first == 0 {
                    // The whole file as a 206 to a request without Range, as some proxies send it.
                    try recordState(transfer, etag: etag, lastModified: lastModified, length: range.total)
                    return nil
                }
                guard requestedFrom > 0, let state, state.matches(etag: etag, lastModified: lastModified, length: range.total) else {
                    try discardPartial(reason: "the file changed on the server (ETag \(etag ?? "none"), Last-Modified \(lastModified ?? "none"))")
                    return .restart("the file changed on the server")
                }
                guard first <= partLength else {
                    try discardPartial(reason: "HTTP 206 starts at byte \(first), after the \(partLength) bytes on disk")
                    return .restart("range starts beyond the partial file")
                }
                if first < partLength { try rewind(to: first) }
                try recordState(transfer, etag: etag ?? state.etag, lastModified: lastModified ?? state.lastModified,
                                length: range.total ?? state.expectedLength)
                return nil

            case 416:
                if let header = response["content-range"], let range = ContentRange(header), range.first == nil,
                   range.total == partLength, partLength > 0 {
                    Log.info("download", "\(shownURL): the server reports the \(partLength) bytes on disk are the whole file")
                    return .complete
                }
                try discardPartial(reason: "HTTP 416 with Content-Range \(response["content-range"] ?? "none") does not match the \(partLength) bytes on disk")
                return .restart("range not satisfiable")

            default:
                if (400..<500).contains(status), !Downloader.isRetryable(status: status), requestedFrom > 0,
                   !finalURLRejected, transfer.url != url {
                    finalURLRejected = true
                    return .retry(AttemptFailure(reason: "resuming at \(redactingPassword(in: transfer.url)) failed with HTTP \(status); trying \(shownURL) again",
                                                 retryable: true))
                }
                if Downloader.isRetryable(status: status) {
                    return .retry(AttemptFailure(reason: "the server responded with HTTP \(status)", retryable: true))
                }
                return .fail(HTTPStatusError(url: transfer.effectiveURL, statusCode: status))
            }
        } catch {
            return .fail(error)
        }
    }

    private func tooLarge(announced: Int64?) -> Outcome {
        .fail(DownloadTooLargeError(url: url, limit: options.maximumSize, announced: announced))
    }

    private func recordState(_ transfer: CurlTransfer, etag: String?, lastModified: String?, length: Int64?) throws {
        let updated = DownloadState(url: url, finalURL: transfer.effectiveURL, etag: etag, lastModified: lastModified,
                                    expectedLength: length, sha256: expected.hex)
        if updated != state {
            try updated.save(to: paths.state)
            state = updated
        }
    }

    // MARK: Writing

    func transfer(_ transfer: CurlTransfer, received bytes: UnsafeRawBufferPointer) -> Bool {
        lastData = .now
        if let total = state?.expectedLength, partLength + Int64(bytes.count) > total {
            outcome = .retry(AttemptFailure(reason: "the server sent more than the \(total) bytes it announced", retryable: true))
            return false
        }
        if partLength + Int64(bytes.count) > options.maximumSize {
            outcome = tooLarge(announced: nil)
            return false
        }
        do {
            try writer.submit(bytes, at: partLength)
        } catch {
            outcome = .fail(SystemError("write", path: paths.part, errno: error))
            return false
        }
        partLength += Int64(bytes.count)
        bytesDownloaded += Int64(bytes.count)
        return true
    }

    func transferShouldContinue(_ transfer: CurlTransfer) -> Bool {
        if cancellation.isCancelled { return false }
        writer.flushIfStale()
        if ContinuousClock.now - lastData > options.stallTimeout {
            stalled = true
            return false
        }
        return true
    }

    /// Truncates the partial file to zero, removes its state file and notifies the observer.
    private func discardPartial(reason: String) throws {
        Log.info("download", "restarting \(shownURL) from zero: \(reason)")
        try truncatePart()
        unlink(paths.state)
        state = nil
        reporter.measureRate(from: 0)
        observer?(.restarted(partPath: paths.part, reason: reason))
    }

    private func truncatePart() throws {
        do {
            try part.truncate(to: 0)
        } catch {
            throw SystemError("truncate", path: paths.part, errno: error)
        }
        hasher.reset()
        partLength = 0
        writer?.reset(writtenLength: 0)
    }

    /// Cuts the partial file back to `offset`, where a 206 starts, and rehashes the prefix.
    private func rewind(to offset: Int64) throws {
        Log.info("download", "\(shownURL): the server resumes at byte \(offset), before the \(partLength) bytes on disk")
        do {
            try part.truncate(to: offset)
        } catch {
            throw SystemError("truncate", path: paths.part, errno: error)
        }
        hasher.reset()
        try hasher.update(file: part, path: paths.part, length: offset, cancellation: cancellation)
        partLength = offset
        writer.reset(writtenLength: offset)
    }
}

/// A length shared with another thread; -1 means unknown.
private final class AtomicLength: Sendable {
    let value = Atomic<Int64>(-1)
}

// DownloadFollower: a CompressedInput that reads a download's partial file while it grows.
//
// Two threads share it. The download thread passes every `DownloadEvent` to `handle`;
// the inflating thread calls `read`. `read` returns only bytes below the length the
// downloader reported as contiguous, blocks while it waits for more, and returns 0 (end of
// input) only after the downloader published the verified file. So a decoder that reaches
// its end has read exactly the bytes whose SHA-256 matched.
//
// When the downloader discards the partial file (`.restarted`), the next `read` throws
// `CompressedInputRestarted` and the following one starts again at byte 0. A pread that
// raced with the truncation may have returned stale or missing bytes. The decoder then
// fails or restarts, and in either case `Provisioner` inflates the verified file again.

#if canImport(Glibc)
import Glibc
#endif
import Foundation

final class DownloadFollower: CompressedInput, @unchecked Sendable {
    /// How the download began, as far as the follower has seen.
    enum Start: Equatable {
        /// Bytes are arriving (or a resumed partial file exists).
        case downloading
        /// The verified file already existed and nothing will be downloaded.
        case reused(path: String)
        /// The download failed before any event.
        case failed
    }

    // Shared state, guarded by `condition`.
    private let condition = NSCondition()
    private var sourcePath: String?
    private var available: Int64 = 0
    private var total: Int64?
    private var generation = 0
    private var published = false
    private var failure: (any Error)?
    private var start: Start?

    // Reader state, used only by the thread that calls `read`.
    private var descriptor: FileDescriptor?
    private var offset: Int64 = 0
    private var readerGeneration = 0

    private let cancellation: CancellationToken?
    let name: String

    init(name: String, cancellation: CancellationToken?) {
        self.name = name
        self.cancellation = cancellation
    }

    deinit {
        try? descriptor?.close()
    }

    var totalSize: Int64? {
        condition.withLock { total }
    }

    /// Times the download started over from byte 0.
    var restarts: Int {
        condition.withLock { generation }
    }

    // MARK: Download side

    /// Receives the downloader's events (`Downloader.fetch`'s observer).
    func handle(_ event: DownloadEvent) {
        condition.withLock {
            switch event {
            case .wrote(let partPath, let length, let total):
                sourcePath = sourcePath ?? partPath
                available = max(available, length)
                if let total { self.total = total }
                start = start ?? .downloading
            case .restarted(let partPath, _):
                sourcePath = partPath
                available = 0
                generation += 1
                start = start ?? .downloading
            case .published(let path, let reused):
                // The partial file was renamed; a descriptor already open keeps reading the
                // same inode, and a new one opens the final name.
                sourcePath = path
                var info = stat()
                if stat(path, &info) == 0 {
                    available = Int64(info.st_size)
                    total = Int64(info.st_size)
                }
                published = true
                start = start ?? (reused ? .reused(path: path) : .downloading)
            }
            condition.broadcast()
        }
    }

    /// Records that the download ended with `error`; readers then throw it.
    func fail(_ error: any Error) {
        condition.withLock {
            failure = error
            start = start ?? .failed
            condition.broadcast()
        }
    }

    /// Blocks until the first event (or failure) and returns how the download began.
    func waitForStart() -> Start {
        condition.withLock {
            while start == nil { condition.wait() }
            return start!
        }
    }

    // MARK: Reader side

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        while true {
            let (path, limit) = try waitForBytes()
            if descriptor == nil {
                do {
                    descriptor = try FileDescriptor.open(path, flags: O_RDONLY)
                } catch {
                    throw SystemError("open", path: path, errno: error)
                }
            }
            if limit == offset { return 0 }
            let count = min(Int64(buffer.count), limit - offset)
            let read: Int
            do {
                read = try descriptor!.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[..<Int(count)]), at: offset)
            } catch {
                throw SystemError("read", path: path, errno: error)
            }
            let restarted = condition.withLock { generation != readerGeneration }
            if restarted { continue }
            // Nothing read below the reported length means the file was truncated under us:
            // wait briefly for the `.restarted` event that follows.
            if read == 0 {
                usleep(10_000)
                continue
            }
            offset += Int64(read)
            return read
        }
    }

    /// Waits until bytes past `offset` are available or the file is complete, and returns
    /// the path to read and the limit. Throws on restart, failure and cancellation.
    private func waitForBytes() throws -> (path: String, limit: Int64) {
        condition.lock()
        defer { condition.unlock() }
        while true {
            if generation != readerGeneration {
                readerGeneration = generation
                offset = 0
                try? descriptor?.close()
                descriptor = nil
                throw CompressedInputRestarted()
            }
            if let failure { throw failure }
            if cancellation?.isCancelled == true { throw CancelledError("inflation of '\(name)'") }
            if let sourcePath, offset < available || (published && offset == available) {
                return (sourcePath, available)
            }
            // The wait is bounded so that cancellation is seen even without events.
            _ = condition.wait(until: Date(timeIntervalSinceNow: 0.2))
        }
    }
}

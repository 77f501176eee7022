// WriteBehind: stores and hashes downloaded bytes on a worker thread.
//
// libcurl delivers the body on the thread that runs `curl_easy_perform`. Writing each
// piece with pwrite and hashing it on that thread keeps it from reading the socket in the
// meantime. Here the curl thread only copies each piece into one of a fixed set of
// buffers, and a worker thread writes it at its offset and feeds the hasher, in
// order. Memory is bounded by `bufferCount * bufferSize`: when every buffer is queued,
// `submit` waits for the worker.
//
// Ownership: `hasher`, the file descriptor and `written` belong to the worker while
// anything is queued. The session touches them only after `drain` returned, and because
// both sides go through `condition`, the worker's last write happens before that.

import CSystem
import Foundation

final class WriteBehind: @unchecked Sendable {
    private struct Piece {
        var buffer: UnsafeMutableRawBufferPointer
        var count: Int
        var offset: Int64
    }

    static let bufferSize = 512 * 1024
    static let bufferCount = 16
    /// Writeback of every this many new bytes is started at once (sync_file_range), so the
    /// fsync before publication finds little left to write.
    static let writebackInterval: Int64 = 32 << 20

    private let part: FileDescriptor
    private let hasher: SHA256
    /// Called on the worker thread after each piece is written, with the contiguous length.
    private let wrote: @Sendable (Int64) -> Void

    /// Protects every variable below, and signals changes to them.
    private let condition = NSCondition()
    private var queue: [Piece] = []
    private var freeBuffers: [UnsafeMutableRawBufferPointer] = []
    private var allBuffers: [UnsafeMutableRawBufferPointer] = []
    private var workerBusy = false
    private var failure: Errno?
    private var stopping = false
    private var workerFinished = false
    /// Bytes written from offset 0 (the worker's view); equal to the session's
    /// `partLength` whenever the queue is empty.
    private var written: Int64 = 0
    /// The offset up to which writeback was started; only the worker uses it.
    private var writebackStart: Int64 = 0

    init(part: FileDescriptor, hasher: SHA256, wrote: @escaping @Sendable (Int64) -> Void) {
        self.part = part
        self.hasher = hasher
        self.wrote = wrote
        for _ in 0..<Self.bufferCount {
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.bufferSize, alignment: 4096)
            allBuffers.append(buffer)
            freeBuffers.append(buffer)
        }
        let thread = Thread { [self] in workerLoop() }
        thread.name = "imgtool download writer"
        thread.start()
    }

    deinit {
        for buffer in allBuffers { buffer.deallocate() }
    }

    /// Queues `bytes` for writing at `offset`. Throws the worker's write error, if any.
    func submit(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws(Errno) {
        var done = 0
        while done < bytes.count {
            let count = min(Self.bufferSize, bytes.count - done)
            condition.lock()
            while freeBuffers.isEmpty && failure == nil { condition.wait() }
            if let failure {
                condition.unlock()
                throw failure
            }
            let buffer = freeBuffers.removeLast()
            condition.unlock()

            buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[done..<(done + count)]))

            condition.lock()
            queue.append(Piece(buffer: buffer, count: count, offset: offset + Int64(done)))
            condition.broadcast()
            condition.unlock()
            done += count
        }
    }

    /// Waits until everything queued is written and hashed. Throws the first write error.
    func drain() throws(Errno) {
        condition.lock()
        defer { condition.unlock() }
        while !queue.isEmpty || workerBusy { condition.wait() }
        if let failure { throw failure }
    }

    /// Sets the worker's idea of the contiguous length after the session truncated or
    /// rewound the file; call only after `drain`.
    func reset(writtenLength: Int64) {
        condition.lock()
        written = writtenLength
        failure = nil
        condition.unlock()
    }

    /// Drains the queue and ends the worker thread; the object is unusable afterwards.
    func stop() {
        condition.lock()
        while !queue.isEmpty || workerBusy { condition.wait() }
        stopping = true
        condition.broadcast()
        while !workerFinished { condition.wait() }
        condition.unlock()
    }

    /// Starts writeback of the bytes written since the last call, once there are
    /// `writebackInterval` of them. A failure is ignored: the final fsync still writes
    /// everything, only later.
    private func startWriteback() {
        if written < writebackStart { writebackStart = 0 }
        guard written - writebackStart >= Self.writebackInterval else { return }
        _ = imgtool_sync_file_range(part.rawValue, writebackStart, written - writebackStart, IMGTOOL_SYNC_FILE_RANGE_WRITE)
        writebackStart = written
    }

    private func workerLoop() {
        condition.lock()
        while true {
            while queue.isEmpty && !stopping { condition.wait() }
            if queue.isEmpty && stopping { break }
            let piece = queue.removeFirst()
            workerBusy = true
            let skip = failure != nil
            condition.unlock()

            // While `workerBusy` is set only this thread touches the file, the hasher and
            // `written`, so they are used here without the lock.
            var error: Errno?
            if !skip {
                let bytes = UnsafeRawBufferPointer(rebasing: piece.buffer[..<piece.count])
                do {
                    try part.writeAll(bytes, at: piece.offset)
                    hasher.update(bytes)
                    written = piece.offset + Int64(piece.count)
                    startWriteback()
                    wrote(written)
                } catch let writeError {
                    error = writeError
                }
            }

            condition.lock()
            if let error, failure == nil { failure = error }
            workerBusy = false
            freeBuffers.append(piece.buffer)
            condition.broadcast()
        }
        workerFinished = true
        condition.broadcast()
        condition.unlock()
    }
}

// WriteBehind: stores and hashes downloaded bytes on two worker threads.
//
// libcurl delivers the body on the thread that runs `curl_easy_perform`, in pieces of
// whatever size each read from the socket returned. Writing and hashing each piece on
// that thread would keep it from reading the socket in the meantime, and writing pieces
// that do not end on a page boundary makes the kernel zero and merge partial pages.
// Here the curl thread only copies the pieces into one of a fixed set of buffers until it
// is full and queues it. A writer thread writes each queued buffer at its offset and a
// hasher thread feeds it to the SHA-256, both in order and at the same time. A buffer is
// reused once both are done with it, so memory is bounded by `bufferCount * bufferSize`:
// when every buffer is queued, `submit` waits.
//
// Full buffers go to the file through a second descriptor opened with O_DIRECT, so the
// device copies them from memory and no CPU time goes into filling the page cache. On
// the 2-core test machine, copying a gigabyte into the page cache cost more CPU time
// than hashing it, and with both on the same cores the fetch was about 35% slower than
// `curl -o`. Buffers start at offsets that are a multiple of `directAlignment` (after an
// unaligned resume point, the first one is shortened to reach one), so only the first
// and the last piece of a response go through the page cache. Where the file system
// refuses O_DIRECT, every piece does.
//
// Ownership: the buffer being filled belongs to the submitting thread. `hasher` belongs
// to the hasher thread, and the file descriptors and `written` to the writer thread, while
// anything is queued. The session touches them only after `drain` returned, and because
// every side goes through `condition`, the workers' last use happens before that.

import CSystem
import Foundation

final class WriteBehind: @unchecked Sendable {
    private struct Piece {
        /// Index into `buffers`.
        var buffer: Int
        var count: Int
        var offset: Int64
    }

    private enum Role: Int, CaseIterable {
        case write = 0
        case hash = 1

        var threadName: String {
            switch self {
            case .write: "dl-writer"
            case .hash: "dl-hasher"
            }
        }
    }

    /// Direct writes of 1 MiB reached 1.7 GB/s on the test machine's disk, against
    /// 1.4 GB/s for 256 KiB.
    static let bufferSize = 1 << 20
    static let bufferCount = 8
    /// The offset and length alignment that direct writes need; 4096 covers devices with
    /// 512-byte and 4096-byte logical blocks.
    static let directAlignment = 4096
    /// Writeback of every this many new bytes is started at once (sync_file_range), so the
    /// fsync before publication finds little left to write.
    static let writebackInterval: Int64 = 32 << 20

    private let part: FileDescriptor
    /// `part` opened again with O_DIRECT; nil when the file system rejects it.
    private var direct: FileDescriptor?
    private let hasher: SHA256
    /// Called on the writer thread after each piece is written, with the contiguous length.
    private let wrote: @Sendable (Int64) -> Void
    private let buffers: [UnsafeMutableRawBufferPointer]

    /// Protects every variable below, and signals changes to them.
    private let condition = NSCondition()
    /// The pieces each role has still to process, in file order; indexed by `Role`.
    private var queues: [[Piece]] = Array(repeating: [], count: Role.allCases.count)
    private var busy: [Bool] = Array(repeating: false, count: Role.allCases.count)
    /// For each buffer, how many roles have still to process it; 0 means free.
    private var users: [Int] = Array(repeating: 0, count: WriteBehind.bufferCount)
    private var freeBuffers: [Int] = Array(0..<WriteBehind.bufferCount)
    private var failure: Errno?
    private var stopping = false
    private var workersRunning = Role.allCases.count
    /// Bytes written from offset 0 (the writer's view); equal to the session's
    /// `partLength` whenever nothing is queued.
    private var written: Int64 = 0
    /// The offset up to which writeback was started; only the writer uses it.
    private var writebackStart: Int64 = 0

    /// The buffer that the submitting thread fills, with its first byte's offset in the
    /// file, its byte count and its capacity. Only the submitting thread uses them.
    private var filling: Int?
    private var fillingOffset: Int64 = 0
    private var fillingCount = 0
    private var fillingCapacity = 0
    private var fillingSince = ContinuousClock.now

    /// The longest a partly filled buffer waits for more bytes. On a slow link a 1 MiB
    /// buffer would otherwise hold back progress reports, and the inflation that follows
    /// the partial file, for seconds.
    static let maximumFillTime = Duration.milliseconds(200)

    init(part: FileDescriptor, hasher: SHA256, wrote: @escaping @Sendable (Int64) -> Void) {
        self.part = part
        self.hasher = hasher
        self.wrote = wrote
        // Through /proc the new descriptor is sure to refer to the same file as `part`.
        direct = try? FileDescriptor.open("/proc/self/fd/\(part.rawValue)", flags: O_WRONLY | IMGTOOL_O_DIRECT)
        buffers = (0..<Self.bufferCount).map { _ in
            UnsafeMutableRawBufferPointer.allocate(byteCount: Self.bufferSize, alignment: Self.directAlignment)
        }
        for role in Role.allCases {
            Thread.named(role.threadName) { [self] in workerLoop(role) }.start()
        }
    }

    deinit {
        try? direct?.close()
        for buffer in buffers { buffer.deallocate() }
    }

    /// Queues `bytes` for writing at `offset` and for hashing. Throws the writer's error,
    /// if any.
    func submit(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws(Errno) {
        if filling != nil, fillingOffset + Int64(fillingCount) != offset { flush() }
        var done = 0
        while done < bytes.count {
            let buffer: Int
            if let filling {
                buffer = filling
            } else {
                buffer = try takeFreeBuffer()
                filling = buffer
                fillingOffset = offset + Int64(done)
                fillingCount = 0
                fillingCapacity = Self.bufferSize - Int(fillingOffset % Int64(Self.directAlignment))
                fillingSince = .now
            }
            let count = min(fillingCapacity - fillingCount, bytes.count - done)
            UnsafeMutableRawBufferPointer(rebasing: buffers[buffer][fillingCount..<(fillingCount + count)])
                .copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[done..<(done + count)]))
            fillingCount += count
            done += count
            if fillingCount == fillingCapacity { flush() }
        }
        flushIfStale()
    }

    /// Queues the buffer being filled when it has waited `maximumFillTime` for more
    /// bytes. Called on the submitting thread, also while no bytes arrive.
    func flushIfStale() {
        if filling != nil, ContinuousClock.now - fillingSince >= Self.maximumFillTime { flush() }
    }

    /// Queues the buffer being filled for both workers.
    private func flush() {
        guard let buffer = filling else { return }
        filling = nil
        condition.lock()
        if fillingCount == 0 {
            freeBuffers.append(buffer)
        } else {
            let piece = Piece(buffer: buffer, count: fillingCount, offset: fillingOffset)
            users[buffer] = Role.allCases.count
            for role in Role.allCases { queues[role.rawValue].append(piece) }
        }
        condition.broadcast()
        condition.unlock()
    }

    private func takeFreeBuffer() throws(Errno) -> Int {
        condition.lock()
        defer { condition.unlock() }
        while freeBuffers.isEmpty && failure == nil { condition.wait() }
        if let failure { throw failure }
        return freeBuffers.removeLast()
    }

    /// Whether some worker has something queued or in hand; call with `condition` held.
    private var working: Bool {
        queues.contains { !$0.isEmpty } || busy.contains(true)
    }

    /// Queues what is buffered and waits until everything queued is written and hashed.
    /// Throws the first write error.
    func drain() throws(Errno) {
        flush()
        condition.lock()
        defer { condition.unlock() }
        while working { condition.wait() }
        if let failure { throw failure }
    }

    /// Sets the writer's idea of the contiguous length after the session truncated or
    /// rewound the file; call only after `drain`.
    func reset(writtenLength: Int64) {
        condition.lock()
        if let buffer = filling {
            freeBuffers.append(buffer)
            filling = nil
        }
        written = writtenLength
        failure = nil
        condition.unlock()
    }

    /// Drains the queues and ends the worker threads; the object is unusable afterwards.
    func stop() {
        flush()
        condition.lock()
        while working { condition.wait() }
        stopping = true
        condition.broadcast()
        while workersRunning > 0 { condition.wait() }
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

    /// Writes one piece: directly when it is aligned and the file system allows it,
    /// otherwise through the page cache. Called on the writer thread.
    private func store(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws(Errno) {
        let alignment = Int64(Self.directAlignment)
        if let direct, offset % alignment == 0, Int64(bytes.count) % alignment == 0 {
            do {
                try direct.writeAll(bytes, at: offset)
                return
            } catch {
                // EINVAL: this file system takes O_DIRECT at open but not for writes (or
                // wants a larger alignment). Write through the page cache from now on; the
                // piece is written again whole, so a partial direct write does no harm.
                guard error == .invalidArgument else { throw error }
                try? direct.close()
                self.direct = nil
            }
        }
        try part.writeAll(bytes, at: offset)
    }

    private func workerLoop(_ role: Role) {
        let index = role.rawValue
        condition.lock()
        while true {
            while queues[index].isEmpty && !stopping { condition.wait() }
            if queues[index].isEmpty && stopping { break }
            let piece = queues[index].removeFirst()
            busy[index] = true
            // After a write error the download fails or starts over, so the rest is
            // neither written nor hashed.
            let skip = failure != nil
            condition.unlock()

            // While `busy` is set only this thread uses what its role owns, so that is
            // used here without the lock.
            var error: Errno?
            if !skip {
                let bytes = UnsafeRawBufferPointer(rebasing: buffers[piece.buffer][..<piece.count])
                switch role {
                case .hash:
                    hasher.update(bytes)
                case .write:
                    do {
                        try store(bytes, at: piece.offset)
                        written = piece.offset + Int64(piece.count)
                        startWriteback()
                        wrote(written)
                    } catch let writeError {
                        error = writeError
                    }
                }
            }

            condition.lock()
            if let error, failure == nil { failure = error }
            busy[index] = false
            users[piece.buffer] -= 1
            if users[piece.buffer] == 0 { freeBuffers.append(piece.buffer) }
            condition.broadcast()
        }
        workersRunning -= 1
        condition.broadcast()
        condition.unlock()
    }
}

// SparseFileWriter: writes decoded output into a new file, leaving holes for zero blocks.
//
// Design:
// - The producer (a decoder, on its own thread) fills fixed buffers and hands each one to
//   a writer thread through a bounded queue. Decoding and writing overlap, and memory is
//   `bufferCount * bufferSize` however large the output is.
// - The writer thread looks at each buffer in blocks aligned to file offsets (the
//   filesystem's block size, at least 4 KiB). An all-zero block is not written; a run of
//   non-zero blocks goes out in one `pwrite`. A run never spans two buffers, so a write
//   is at most one buffer long (4 MiB by default).
// - The whole 4 KiB blocks of a run go out through a second descriptor opened with
//   O_DIRECT. The device then copies them from the buffer, and no CPU time goes into
//   filling the page cache. The partial blocks at a run's ends use the page cache. On
//   the 2-core test machine, `dd bs=1M` of 1 GiB took 2.77 s through the page cache and
//   0.64 s with `oflag=direct`. Where the file system rejects
//   O_DIRECT, every run uses the page cache.
// - The writer thread requests a higher priority (nice -10), because it mostly waits for
//   the disk, and the disk idles while the thread waits for a CPU. With two decoding
//   threads on two cores, that made a data-heavy decode with an index about 10% faster
//   (docs/BENCHMARKS.md). Without the privilege (CAP_SYS_NICE) it keeps the default.
// - `finish` sets the exact size with `ftruncate`, so output that ends in zeros (which
//   were never written) still has its full length.
//
// Skipping zero blocks is only correct in a file that held no data at those offsets: a
// file this process just created, or one truncated to zero length. The caller
// guarantees that.
//
// Threads: the public methods are called from one producer thread. `Shared` is the
// only state the writer thread touches; its queues are guarded by `condition`, and each
// buffer belongs to the owner of its index (the free list, the producer, the filled
// queue, or the writer thread).

import CSystem
import Foundation
#if canImport(Glibc)
import Glibc
#endif

public final class SparseFileWriter: ExtentSink {
    /// The path shown in error messages.
    public let path: String
    /// The granularity of zero detection in bytes.
    public let blockSize: Int
    /// The bytes appended so far, holes included.
    public private(set) var size: Int64 = 0
    /// The offset, length and address alignment of writes that bypass the page cache;
    /// 4096 covers devices with 512-byte and 4096-byte logical blocks.
    static let directAlignment = 4096

    private let shared: Shared
    private let descriptor: FileDescriptor
    /// The buffer the producer is filling: its index, where its bytes start (see
    /// `writableSpace`) and the end of the bytes filled so far.
    private var current: (index: Int, start: Int, count: Int)?
    /// The output offset that the current buffer's first byte stands for.
    private var currentOffset: Int64 = 0
    private var isRunning = true

    /// Starts the writer thread for `descriptor`, which must be an empty file opened for
    /// writing (see the file comment).
    /// - Parameters:
    ///   - path: the file's path, for error messages.
    ///   - blockSize: the zero-detection block; by default the filesystem's block size
    ///     (`st_blksize`) when it is a power of two from 4 KiB to 1 MiB, else 4 KiB.
    ///   - bufferSize: the size of each queued buffer and the maximum `pwrite`.
    ///   - bufferCount: the number of buffers; the queue holds at most this many.
    public init(descriptor: FileDescriptor, path: String, blockSize: Int? = nil,
                bufferSize: Int = 4 << 20, bufferCount: Int = 4) throws {
        precondition(bufferCount >= 2 && bufferSize >= 4096, "Bug in imgtool: writer needs 2 buffers of 4 KiB or more")
        var chosenBlockSize = 4096
        if let blockSize {
            chosenBlockSize = blockSize
        } else if let status = try? descriptor.status() {
            let reported = Int(status.blockSize)
            if reported >= 4096, reported <= 1 << 20, reported & (reported - 1) == 0 { chosenBlockSize = reported }
        }
        precondition(chosenBlockSize > 0 && bufferSize % chosenBlockSize == 0,
                     "Bug in imgtool: buffer size \(bufferSize) is not a multiple of block size \(chosenBlockSize)")
        self.path = path
        self.blockSize = chosenBlockSize
        self.descriptor = descriptor
        shared = Shared(descriptor: descriptor, path: path, blockSize: chosenBlockSize,
                        bufferSize: bufferSize, bufferCount: bufferCount)
        let shared = self.shared
        Thread.named("sparse-writer") {
            shared.raisePriority()
            shared.runWriter()
        }.start()
    }

    deinit {
        if isRunning { cancel() }
        shared.deallocateBuffers()
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        var copied = 0
        while copied < bytes.count {
            let space = try writableSpace()
            let chunk = min(space.count, bytes.count - copied)
            space.baseAddress!.copyMemory(from: bytes.baseAddress! + copied, byteCount: chunk)
            try commit(chunk)
            copied += chunk
        }
    }

    public func writeHole(count: Int64) throws {
        precondition(count >= 0, "Bug in imgtool: hole of \(count) bytes")
        try submitCurrent()
        size += count
    }

    /// Free space at the end of the current buffer, taking a new buffer when it is full
    /// (waiting while the writer thread owns all of them). Never empty. Fill a prefix
    /// and call `commit` with its length; the space is valid until then.
    func writableSpace() throws -> UnsafeMutableRawBufferPointer {
        if let current, current.count < shared.bufferSize {
            return UnsafeMutableRawBufferPointer(rebasing: shared.buffers[current.index][current.count...])
        }
        try submitCurrent()
        let index = try shared.takeFreeBuffer()
        // After a hole of odd length, the bytes start as far into the buffer as `size` is
        // past a 4 KiB boundary, so file offsets and addresses line up for O_DIRECT.
        let start = Int(size % Int64(Self.directAlignment))
        current = (index, start, start)
        currentOffset = size - Int64(start)
        return UnsafeMutableRawBufferPointer(rebasing: shared.buffers[index][start...])
    }

    /// Appends the first `count` bytes of the space `writableSpace` returned.
    func commit(_ count: Int) throws {
        guard count > 0 else { return }
        guard var current else { preconditionFailure("Bug in imgtool: commit without writableSpace") }
        precondition(current.count + count <= shared.bufferSize, "Bug in imgtool: commit past the buffer's end")
        current.count += count
        self.current = current
        size += Int64(count)
        if current.count == shared.bufferSize { try submitCurrent() }
    }

    /// Writes everything queued, waits for the writer thread, and sets the file's size.
    /// - Returns: the file's size in bytes.
    @discardableResult
    public func finish() throws -> Int64 {
        precondition(isRunning, "Bug in imgtool: SparseFileWriter finished twice or after cancel")
        do {
            try submitCurrent()
        } catch {
            cancel()
            throw error
        }
        isRunning = false
        try shared.closeAndWait()
        do {
            try descriptor.truncate(to: size)
        } catch {
            throw SystemError("set the size of", path: path, errno: error)
        }
        return size
    }

    /// Stops the writer thread without writing what is still queued; waits for it to
    /// exit. The file's content is then undefined.
    public func cancel() {
        guard isRunning else { return }
        isRunning = false
        if let current { shared.returnBuffer(current.index) }
        current = nil
        shared.abandonAndWait()
    }

    /// The nice value the writer thread requests. Lower is more urgent, and -20 is the highest.
    static let requestedNice: Int32 = -10

    /// The writer thread's nice value once it started (see `Shared.raisePriority`).
    var writerNice: Int32? {
        shared.condition.lock()
        defer { shared.condition.unlock() }
        return shared.writerNice
    }

    /// Lets other threads queue parts of the output at their final offsets. The
    /// producer then passes over those bytes with `writeHole`, and must not also append
    /// them.
    func placement() -> Placement {
        Placement(shared: shared)
    }

    private func submitCurrent() throws {
        guard let current else { return }
        self.current = nil
        if current.count == current.start {
            shared.returnBuffer(current.index)
            return
        }
        try shared.submit(Filled(buffer: shared.buffers[current.index], owner: .pool(current.index), offset: currentOffset,
                                 start: current.start, count: current.count))
    }

    /// A handle through which other threads queue output at known offsets (see
    /// `placement()`). Their buffers go to the writer thread without a copy.
    struct Placement: @unchecked Sendable {
        fileprivate let shared: Shared

        /// Queues `buffer[start..<count]`, the output from `offset + start` on, for the
        /// writer thread, which calls `giveBack` once it no longer reads the buffer.
        /// `buffer` and `offset` must be aligned to 4 KiB, so that addresses and file
        /// offsets line up for O_DIRECT.
        /// Write errors are thrown later, by `finish`.
        func submit(_ buffer: UnsafeMutableRawBufferPointer, offset: Int64, start: Int, count: Int,
                    giveBack: @escaping @Sendable () -> Void) {
            precondition(offset % Int64(SparseFileWriter.directAlignment) == 0
                         && Int(bitPattern: buffer.baseAddress) % SparseFileWriter.directAlignment == 0,
                         "Bug in imgtool: a placed buffer is not aligned")
            do {
                try shared.submit(Filled(buffer: buffer, owner: .lent(giveBack), offset: offset, start: start, count: count))
            } catch {
                // The writer failed already; `finish` reports it.
            }
        }
    }
}

/// The state shared with the writer thread. `@unchecked Sendable` because the buffers
/// are raw memory: the index protocol in the file comment keeps each one single-owner.
/// A buffer handed to the writer thread: `buffer[start..<count]` is the output from
/// `offset + start` on.
private struct Filled {
    /// The owner that gets the buffer back after the write.
    enum Owner {
        /// The producer's pool: `Shared.buffers[index]`.
        case pool(Int)
        /// Another thread that lent its buffer (`SparseFileWriter.Placement`).
        case lent(@Sendable () -> Void)
    }

    var buffer: UnsafeMutableRawBufferPointer
    var owner: Owner
    var offset: Int64
    var start: Int
    var count: Int
}

private final class Shared: @unchecked Sendable {
    let descriptor: FileDescriptor
    /// `descriptor` opened again with O_DIRECT, or nil where the file system rejects it.
    /// Only the writer thread uses it once the thread runs.
    var direct: FileDescriptor?
    let path: String
    let blockSize: Int
    let bufferSize: Int
    let buffers: [UnsafeMutableRawBufferPointer]
    /// `blockSize` zero bytes to compare blocks against with `memcmp`, which glibc
    /// vectorises; written once at init.
    let zeroBlock: UnsafeMutableRawBufferPointer

    let condition = NSCondition()
    // Guarded by `condition`:
    var free: [Int]
    var filled: [Filled] = []
    /// The producer has submitted its last buffer.
    var closing = false
    /// The producer gave up: drop queued work and exit.
    var abandoned = false
    /// The first write error; later buffers are returned unwritten.
    var failure: (any Error)?
    var writerExited = false
    /// The writer thread's nice value after `raisePriority`, or nil until then.
    var writerNice: Int32?

    init(descriptor: FileDescriptor, path: String, blockSize: Int, bufferSize: Int, bufferCount: Int) {
        self.descriptor = descriptor
        // Through /proc the new descriptor is sure to refer to the same file.
        direct = try? FileDescriptor.open("/proc/self/fd/\(descriptor.rawValue)", flags: O_WRONLY | IMGTOOL_O_DIRECT)
        self.path = path
        self.blockSize = blockSize
        self.bufferSize = bufferSize
        buffers = (0..<bufferCount).map { _ in .allocate(byteCount: bufferSize, alignment: 4096) }
        free = Array(0..<bufferCount)
        zeroBlock = .allocate(byteCount: blockSize, alignment: 4096)
        zeroBlock.initializeMemory(as: UInt8.self, repeating: 0)
    }

    func deallocateBuffers() {
        try? direct?.close()
        direct = nil
        for buffer in buffers { buffer.deallocate() }
        zeroBlock.deallocate()
    }

    func takeFreeBuffer() throws -> Int {
        condition.lock()
        defer { condition.unlock() }
        while free.isEmpty && failure == nil { condition.wait() }
        if let failure { throw failure }
        return free.removeLast()
    }

    func returnBuffer(_ index: Int) {
        condition.lock()
        free.append(index)
        condition.broadcast()
        condition.unlock()
    }

    func submit(_ item: Filled) throws {
        condition.lock()
        if let failure {
            condition.unlock()
            giveBack(item)
            throw failure
        }
        // After `cancel` no thread would write or return the buffer.
        if writerExited {
            condition.unlock()
            giveBack(item)
            return
        }
        filled.append(item)
        condition.broadcast()
        condition.unlock()
    }

    func closeAndWait() throws {
        condition.lock()
        defer { condition.unlock() }
        closing = true
        condition.broadcast()
        while !writerExited { condition.wait() }
        if let failure { throw failure }
    }

    func abandonAndWait() {
        condition.lock()
        abandoned = true
        condition.broadcast()
        while !writerExited { condition.wait() }
        condition.unlock()
    }

    /// Raises the calling thread's priority to `requestedNice` where the process may
    /// (CAP_SYS_NICE, or RLIMIT_NICE high enough), and records the nice value it has after.
    func raisePriority() {
        let thread = id_t(imgtool_gettid())
        let scope = __priority_which_t(PRIO_PROCESS.rawValue)
        let failure = setpriority(scope, thread, SparseFileWriter.requestedNice) == 0 ? nil : Errno.current
        // getpriority can return -1 as a value, so only errno shows a failure.
        errno = 0
        let nice = getpriority(scope, thread)
        let niceKnown = errno == 0
        if let failure {
            Log.debug("sparse writer", "'\(path)': the writer thread keeps nice \(nice), because setpriority "
                      + "to \(SparseFileWriter.requestedNice) failed: \(failure)")
        }
        condition.lock()
        writerNice = niceKnown ? nice : nil
        condition.unlock()
    }

    /// The writer thread's loop: take a filled buffer, write its non-zero runs, return it.
    func runWriter() {
        while true {
            condition.lock()
            while filled.isEmpty && !closing && !abandoned { condition.wait() }
            if abandoned || filled.isEmpty {
                let dropped = filled
                filled = []
                writerExited = true
                condition.broadcast()
                condition.unlock()
                for item in dropped { giveBack(item) }
                return
            }
            let item = filled.removeFirst()
            let skip = failure != nil
            condition.unlock()

            var error: (any Error)?
            if !skip {
                do {
                    try writeNonZeroRuns(item)
                } catch let caught {
                    error = caught
                }
            }

            condition.lock()
            if let error, failure == nil { failure = error }
            condition.unlock()
            giveBack(item)
        }
    }

    /// Returns `item`'s buffer to its owner. Called without holding `condition`.
    private func giveBack(_ item: Filled) {
        switch item.owner {
        case .pool(let index): returnBuffer(index)
        case .lent(let giveBack): giveBack()
        }
    }

    private func writeNonZeroRuns(_ item: Filled) throws {
        let buffer = UnsafeRawBufferPointer(item.buffer)
        let block = Int64(blockSize)
        var position = item.start
        var runStart: Int?
        while position < item.count {
            // Blocks are aligned to file offsets, so the first and last may be partial.
            let intoBlock = Int((item.offset + Int64(position)) % block)
            let blockEnd = min(item.count, position + blockSize - intoBlock)
            let isZero = memcmp(buffer.baseAddress! + position, zeroBlock.baseAddress!, blockEnd - position) == 0
            if isZero, let start = runStart {
                try writeRun(buffer, from: start, to: position, at: item.offset)
                runStart = nil
            } else if !isZero, runStart == nil {
                runStart = position
            }
            position = blockEnd
        }
        if let start = runStart { try writeRun(buffer, from: start, to: item.count, at: item.offset) }
    }

    /// Writes `buffer[start..<end]` at `offset + start`: its whole 4 KiB blocks with
    /// O_DIRECT when the file system allows it, the partial blocks at its ends through
    /// the page cache.
    private func writeRun(_ buffer: UnsafeRawBufferPointer, from start: Int, to end: Int, at offset: Int64) throws {
        let alignment = Int64(SparseFileWriter.directAlignment)
        // Buffers are aligned in memory and start at an aligned file offset, so an
        // aligned file offset is also an aligned address.
        let middleStart = Int(((offset + Int64(start) + alignment - 1) / alignment) * alignment - offset)
        let middleEnd = Int(((offset + Int64(end)) / alignment) * alignment - offset)
        var position = start
        do {
            if middleEnd > middleStart,
               try writeDirect(UnsafeRawBufferPointer(rebasing: buffer[middleStart..<middleEnd]), at: offset + Int64(middleStart)) {
                try descriptor.writeAll(UnsafeRawBufferPointer(rebasing: buffer[start..<middleStart]), at: offset + Int64(start))
                position = middleEnd
            }
            try descriptor.writeAll(UnsafeRawBufferPointer(rebasing: buffer[position..<end]), at: offset + Int64(position))
        } catch {
            throw SystemError("write", path: path, errno: error)
        }
    }

    /// Writes `bytes` with O_DIRECT; returns false, and stops using O_DIRECT, when the
    /// file system rejects it for writes (EINVAL).
    private func writeDirect(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws(Errno) -> Bool {
        guard let direct else { return false }
        do {
            try direct.writeAll(bytes, at: offset)
            return true
        } catch {
            guard error == .invalidArgument else { throw error }
            try? direct.close()
            self.direct = nil
            return false
        }
    }
}

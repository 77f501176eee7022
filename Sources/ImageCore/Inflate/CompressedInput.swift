// Where compressed bytes come from, and the buffered window the decoders read through.
//
// `CompressedInput` is deliberately small so that sources other than a finished file fit:
// a file that is still being downloaded can block in `read` until more bytes arrive,
// return 0 only once the download has finished, and throw `CompressedInputRestarted` when
// the download started over from byte 0 (the decoder then starts over as well).

#if canImport(Glibc)
import Glibc
#endif

/// A source of compressed bytes, read once from start to end. Not thread-safe: one
/// decoder reads it from one thread.
public protocol CompressedInput: AnyObject {
    /// The path or other name that error messages show.
    var name: String { get }
    /// The total size in bytes when known in advance, for progress.
    var totalSize: Int64? { get }
    /// Reads the next bytes into `buffer` and returns how many were read. Blocks until at
    /// least one byte is available; returns 0 only at the end of the input.
    /// - Throws: `CompressedInputRestarted` when the source started over from byte 0,
    ///   or any error from the source.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int
}

/// Thrown by a `CompressedInput` whose bytes started over from offset 0 (for example a
/// download that the server could not resume). The next `read` returns byte 0 again.
public struct CompressedInputRestarted: Error, Sendable {
    public init() {}
}

/// A regular file read sequentially with `read(2)`.
public final class FileInput: CompressedInput {
    public let name: String
    public let totalSize: Int64?
    private let descriptor: FileDescriptor
    private var isOpen = true

    /// Opens `path` for reading.
    /// - Throws: `SystemError` naming the path when it cannot be opened, or
    ///   `InvalidArgumentError` when it is a directory.
    public init(path: String) throws {
        let descriptor: FileDescriptor
        do {
            descriptor = try FileDescriptor.open(path, flags: O_RDONLY)
        } catch {
            throw SystemError("open", path: path, errno: error)
        }
        let status: FileStatus
        do {
            status = try descriptor.status()
        } catch {
            try? descriptor.close()
            throw SystemError("inspect", path: path, errno: error)
        }
        if status.isDirectory {
            try? descriptor.close()
            throw InvalidArgumentError(argument: "source", value: path, reason: "it is a directory",
                                       remedy: "give the path of a gzip or xz file")
        }
        self.name = path
        self.descriptor = descriptor
        self.totalSize = status.isRegularFile ? status.size : nil
        // Sequential reading lets the kernel read ahead further.
        _ = posix_fadvise(descriptor.rawValue, 0, 0, POSIX_FADV_SEQUENTIAL)
    }

    deinit { close() }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        do {
            return try descriptor.read(into: buffer)
        } catch {
            throw SystemError("read", path: name, errno: error)
        }
    }

    /// Closes the file; later reads are a bug. Called by deinit when not called before.
    public func close() {
        guard isOpen else { return }
        isOpen = false
        try? descriptor.close()
    }
}

/// A growable window over a `CompressedInput` that tracks absolute offsets.
///
/// Bytes in `storage[start..<end]` are read but not consumed. Compaction keeps up to
/// `keptHistory` consumed bytes before `start`, so a decoder that read a few bytes past
/// the end of its stream (ISA-L buffers up to 8 bytes) can give them back with
/// `unconsume`.
final class InputWindow {
    let input: CompressedInput
    private var storage: UnsafeMutableRawBufferPointer
    private var start = 0
    private var end = 0
    /// The input offset of `storage[0]`.
    private var storageOffset: Int64 = 0
    private(set) var reachedEnd = false

    static let keptHistory = 64
    /// The largest the window may grow to hold one gzip header (FNAME and FCOMMENT have no
    /// length limit in RFC 1952, so a bound is needed against a hostile input).
    static let maximumCapacity = 64 << 20

    init(input: CompressedInput, capacity: Int = 1 << 20) {
        self.input = input
        storage = .allocate(byteCount: capacity, alignment: 64)
    }

    deinit { storage.deallocate() }

    /// The input offset of the first unconsumed byte.
    var offset: Int64 { storageOffset + Int64(start) }
    /// The number of read but unconsumed bytes.
    var count: Int { end - start }
    var capacity: Int { storage.count }
    /// The read but unconsumed bytes; valid until the next call that reads.
    var available: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: storage[start..<end]) }

    func consume(_ byteCount: Int) {
        precondition(byteCount >= 0 && byteCount <= count, "Bug in imgtool: consumed \(byteCount) of \(count) bytes")
        start += byteCount
    }

    /// Gives back the last `byteCount` consumed bytes.
    func unconsume(_ byteCount: Int) {
        precondition(byteCount >= 0 && byteCount <= min(start, Self.keptHistory),
                     "Bug in imgtool: cannot give back \(byteCount) bytes")
        start -= byteCount
    }

    /// Reads once more from the input, compacting or growing the storage when its tail
    /// is short. Returns false at the end of the input.
    @discardableResult
    func readMore() throws -> Bool {
        if reachedEnd { return false }
        if storage.count - end < storage.count / 4 { compact() }
        if end == storage.count { try grow() }
        let read = try input.read(into: UnsafeMutableRawBufferPointer(rebasing: storage[end...]))
        if read == 0 {
            reachedEnd = true
            return false
        }
        end += read
        return true
    }

    /// Reads until `minimum` bytes are available; returns false when the input ends first.
    func fill(minimum: Int) throws -> Bool {
        while count < minimum {
            if try !readMore() { return false }
        }
        return true
    }

    private func compact() {
        let kept = min(start, Self.keptHistory)
        let from = start - kept
        guard from > 0 else { return }
        let moved = end - from
        storage.baseAddress!.copyMemory(from: storage.baseAddress! + from, byteCount: moved)
        storageOffset += Int64(from)
        start = kept
        end = moved
    }

    private func grow() throws {
        guard storage.count < Self.maximumCapacity else {
            throw InflateError.corrupt(path: input.name, offset: offset,
                                       reason: "a gzip header field is longer than \(Self.maximumCapacity >> 20) MiB")
        }
        let larger = UnsafeMutableRawBufferPointer.allocate(byteCount: storage.count * 2, alignment: 64)
        larger.baseAddress!.copyMemory(from: storage.baseAddress!, byteCount: end)
        storage.deallocate()
        storage = larger
    }
}

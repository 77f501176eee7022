// MappedFile: a read-only memory map of a whole input file, shared by worker threads.
//
// Workers decode different parts of one compressed file at once; a shared read-only map
// lets each read any byte range without copies or per-thread descriptors. The map is
// immutable after init, so concurrent reads need no lock.

#if canImport(Glibc)
import Glibc
#endif

public final class MappedFile: @unchecked Sendable {
    public let path: String
    /// The file's bytes; empty for an empty file. Valid until the object is freed.
    public let bytes: UnsafeRawBufferPointer
    public var count: Int { bytes.count }

    /// Maps `path` read-only.
    /// NOTE: a file truncated by another process while mapped raises SIGBUS on access;
    /// imgtool's own inputs (downloads it published) are never rewritten in place.
    public init(path: String) throws {
        let (descriptor, status) = try FileDescriptor.openRegularFile(path, argument: "input",
                                                                       remedy: "give the path of a .gz file")
        defer { try? descriptor.close() }
        self.path = path
        guard status.size > 0 else {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        let address = mmap(nil, Int(status.size), PROT_READ, MAP_PRIVATE, descriptor.rawValue, 0)
        guard let address, address != MAP_FAILED else {
            throw SystemError("mmap", path: path, errno: Errno.current)
        }
        _ = madvise(address, Int(status.size), MADV_WILLNEED)
        bytes = UnsafeRawBufferPointer(start: address, count: Int(status.size))
    }

    deinit {
        if let base = bytes.baseAddress { munmap(UnsafeMutableRawPointer(mutating: base), bytes.count) }
    }
}

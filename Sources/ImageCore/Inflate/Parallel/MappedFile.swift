// MappedFile: a read-only memory map of a whole input file, shared by worker threads.
//
// Workers decode different parts of one compressed file at once; a shared read-only map
// lets each read any byte range without copies or per-thread descriptors. The map is
// immutable after init, so concurrent reads need no lock.
//
// A mapped file that another process truncates would end this process with SIGBUS on the
// next read past the new end (a download still writing it, a user's `truncate`). The map
// is registered with CMapGuard, whose handler puts zeros where the lost pages were, so
// readers must call `checkUnchanged()` before they trust a result or report an error.

import CMapGuard
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

public final class MappedFile: @unchecked Sendable {
    public let path: String
    /// The file's bytes; empty for an empty file. Valid until the object is freed.
    public let bytes: UnsafeRawBufferPointer
    public var count: Int { bytes.count }
    /// The `CMapGuard` slot of the map, or -1 when the map is not guarded: for an empty
    /// file, or when the handler or memory for more slots was not available.
    private let guardSlot: Int32
    /// Kept open to report the file's size after it shrank.
    private let descriptor: FileDescriptor?

    /// Test seam: paths whose map fails with the given errno instead of calling `mmap`,
    /// so that tests can stand in for a file system that rejects maps with ENODEV. Keyed
    /// by path because tests run in parallel. Empty outside tests.
    static let simulatedMapFailures = Mutex<[String: Errno]>([:])

    /// Maps `path` read-only.
    /// - Throws: `SystemError` when the file cannot be opened or mapped. Its errno is
    ///   ENODEV when the file system does not support `mmap` (sysfs, for example).
    public init(path: String) throws {
        let (descriptor, status) = try FileDescriptor.openRegularFile(path, argument: "input",
                                                                       remedy: "give the path of a .gz file")
        self.path = path
        guard status.size > 0 else {
            try? descriptor.close()
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            guardSlot = -1
            self.descriptor = nil
            return
        }
        let simulated = Self.simulatedMapFailures.withLock { $0[path] }
        var address: UnsafeMutableRawPointer? = MAP_FAILED
        if simulated == nil {
            address = mmap(nil, Int(status.size), PROT_READ, MAP_PRIVATE, descriptor.rawValue, 0)
        }
        guard let address, address != MAP_FAILED else {
            let error = simulated ?? Errno.current
            try? descriptor.close()
            throw SystemError("mmap", path: path, errno: error,
                              remedy: error == .noDevice ? Self.unmappableRemedy : nil)
        }
        _ = madvise(address, Int(status.size), MADV_WILLNEED)
        bytes = UnsafeRawBufferPointer(start: address, count: Int(status.size))
        guardSlot = imgtool_map_guard_register(address, Int(status.size))
        if guardSlot < 0 {
            Log.warning("inflate", "'\(path)' is memory-mapped without protection: if another process truncates it now, imgtool ends with SIGBUS")
        }
        self.descriptor = descriptor
    }

    /// The remedy of the ENODEV error from `mmap`.
    static let unmappableRemedy = "its file system does not support memory maps, so copy the file to a local disk and give the copy"

    deinit {
        imgtool_map_guard_unregister(guardSlot)
        if let base = bytes.baseAddress { munmap(UnsafeMutableRawPointer(mutating: base), bytes.count) }
        try? descriptor?.close()
    }

    /// True when `CMapGuard` protects the map, so that a file that shrinks fails the
    /// decode instead of ending the process with SIGBUS.
    public var isGuarded: Bool { guardSlot >= 0 }

    /// True once a read found a page of the map missing because the file shrank after
    /// it was mapped; zeros stood in for that page.
    public var lostPage: Bool { guardSlot >= 0 && imgtool_map_guard_faulted(guardSlot) != 0 }

    /// Throws `InflateError.inputShrank` when the file is now shorter than when it was
    /// mapped, or a read found a page missing, so that what was read cannot be trusted.
    /// The size counts too: the bytes past the end inside the file's last page read as
    /// zeros without any fault.
    public func checkUnchanged() throws(InflateError) {
        let size = try? descriptor?.status().size
        guard lostPage || size.map({ $0 < Int64(bytes.count) }) == true else { return }
        throw InflateError.inputShrank(path: path, mappedSize: Int64(bytes.count), size: size)
    }
}

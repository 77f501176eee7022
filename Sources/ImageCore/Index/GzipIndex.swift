// GzipIndex: a seek index for a gzip file, in indexed_gzip's GZIDX format.
//
// An access point is a deflate block boundary where decoding can start: its bit offset
// in the compressed file, its offset in the uncompressed output, and the 32 KiB of output
// that precede it (the window that later matches may copy from). The format is the one
// indexed_gzip's `zran_export_index` writes and rapidgzip 0.16 reads and writes with
// `--export-index` / `--import-index`. Every integer is little-endian:
//
//     offset  size  field
//          0     5  magic "GZIDX"
//          5     1  format version (1; version 0 had no data flag, see below)
//          6     1  flags (unused, 0)
//          7     8  compressed size of the gzip file in bytes
//         15     8  uncompressed size in bytes
//         23     4  spacing: the intended uncompressed distance between points
//         27     4  window size in bytes (32768)
//         31     4  number of points N
//         35  18*N  points, each:
//                     0  8  compressed offset in bytes, rounded up when bits > 0
//                     8  8  uncompressed offset
//                    16  1  bits: how many bits of the byte before the compressed offset
//                           belong to the block (0...7), so the block starts at bit
//                           8 * offset - bits
//                    17  1  data flag: 1 when a window follows for this point
//                           (version 0: every point but the first has one)
//          then one window of `window size` bytes for each point with the data flag,
//          in point order.
//
// rapidgzip writes a first point at the start of the first deflate stream (after the
// gzip header) and a last point at the end of the file, neither with a window; points
// at the start of a later gzip member need no window either.

import Foundation

/// One place where decoding can start.
public struct GzipAccessPoint: Sendable, Equatable {
    /// The bit offset of a deflate block's first bit in the compressed file.
    public var compressedBitOffset: Int64
    /// The offset of the block's first output byte in the uncompressed data.
    public var uncompressedOffset: Int64
    /// The output that precedes the point (up to 32 KiB), or nil when decoding from
    /// here needs none (the start of a member, the end of the file). A window read
    /// from an index file is copied out of the file's bytes on each access.
    public var window: [UInt8]? {
        get {
            switch storedWindow {
            case .none: return nil
            case .bytes(let bytes): return bytes
            case .shared(let file, let offset):
                return Array(UnsafeRawBufferPointer(rebasing: file.bytes[offset..<offset + GzipIndex.windowSize]))
            }
        }
        set { storedWindow = newValue.map { .bytes($0) } ?? .none }
    }

    /// Whether the point has a window, without copying it.
    public var hasWindow: Bool {
        if case .none = storedWindow { return false }
        return true
    }

    /// The location of the window. Windows of a loaded index stay in the file's bytes,
    /// so loading copies none of them; each worker copies the one it starts from.
    enum StoredWindow: Sendable {
        case none
        case bytes([UInt8])
        case shared(IndexFileBytes, offset: Int)
    }

    var storedWindow: StoredWindow

    public init(compressedBitOffset: Int64, uncompressedOffset: Int64, window: [UInt8]?) {
        self.compressedBitOffset = compressedBitOffset
        self.uncompressedOffset = uncompressedOffset
        storedWindow = window.map { .bytes($0) } ?? .none
    }

    public static func == (left: GzipAccessPoint, right: GzipAccessPoint) -> Bool {
        left.compressedBitOffset == right.compressedBitOffset && left.uncompressedOffset == right.uncompressedOffset
            && left.window == right.window
    }
}

/// A GZIDX file that cannot be used, with the reason.
public struct GzipIndexError: ImageError {
    public var path: String
    public var reason: String

    public init(path: String, reason: String) {
        self.path = path
        self.reason = reason
    }

    public var category: FailureCategory { .invalidData }
    public var description: String { "invalid gzip index '\(path)': \(reason)" }
    public var remedy: String? {
        "rebuild it with 'imgtool index SOURCE.gz' or 'rapidgzip --export-index FILE SOURCE.gz'"
    }
}

/// The seek index of one gzip file.
public struct GzipIndex: Sendable, Equatable {
    public static let magic: [UInt8] = Array("GZIDX".utf8)
    /// Deflate's maximum match distance, and the only window size accepted.
    public static let windowSize = 32768
    static let headerSize = 35
    static let pointSize = 18

    public var compressedSize: Int64
    public var uncompressedSize: Int64
    /// The intended uncompressed distance between points (a hint; points may be sparser).
    public var spacing: UInt32
    /// Sorted by offset, compressed and uncompressed alike.
    public var points: [GzipAccessPoint]

    public init(compressedSize: Int64, uncompressedSize: Int64, spacing: UInt32, points: [GzipAccessPoint]) {
        self.compressedSize = compressedSize
        self.uncompressedSize = uncompressedSize
        self.spacing = spacing
        self.points = points
    }

    // MARK: Writing

    /// Encodes the index in GZIDX format version 1. Windows shorter than 32 KiB (points
    /// near the start of a member) are padded in front with zeros, which decoding never
    /// reads because no match reaches before the member's first byte.
    public func serialized() -> [UInt8] {
        var bytes: [UInt8] = []
        let windowCount = points.count(where: { $0.hasWindow })
        bytes.reserveCapacity(Self.headerSize + points.count * Self.pointSize + windowCount * Self.windowSize)
        bytes += Self.magic
        bytes += [1, 0]
        append(UInt64(compressedSize), to: &bytes)
        append(UInt64(uncompressedSize), to: &bytes)
        append(spacing, to: &bytes)
        append(UInt32(Self.windowSize), to: &bytes)
        append(UInt32(points.count), to: &bytes)
        for point in points {
            let bits = (8 - point.compressedBitOffset % 8) % 8
            append(UInt64((point.compressedBitOffset + bits) / 8), to: &bytes)
            append(UInt64(point.uncompressedOffset), to: &bytes)
            bytes.append(UInt8(bits))
            bytes.append(point.window == nil ? 0 : 1)
        }
        for point in points {
            guard let window = point.window else { continue }
            bytes += repeatElement(0, count: Self.windowSize - window.count)
            bytes += window.suffix(Self.windowSize)
        }
        return bytes
    }

    private func append<T: FixedWidthInteger>(_ value: T, to bytes: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { bytes += $0 }
    }

    // MARK: Reading

    /// Decodes a GZIDX file. `path` names it in errors. Every length and offset is
    /// checked before use: points must lie inside the sizes the header gives and be
    /// sorted, and the file must hold exactly the windows the points announce.
    public init(parsing data: [UInt8], path: String) throws(GzipIndexError) {
        let parsed = data.withUnsafeBytes { bytes in
            Result { () throws(GzipIndexError) in try GzipIndex(parsingBytes: bytes, path: path) }
        }
        self = try parsed.get()
    }

    /// Decodes a GZIDX file from raw bytes; see `init(parsing:path:)`. When `data` lies in
    /// `shared`, the windows stay there instead of being copied.
    init(parsingBytes data: UnsafeRawBufferPointer, path: String, shared: IndexFileBytes? = nil) throws(GzipIndexError) {
        var reader = CheckedReader(bytes: data, path: path)
        guard try reader.bytes(5) == Self.magic else {
            throw GzipIndexError(path: path, reason: "it does not start with 'GZIDX'")
        }
        let version = try reader.integer(UInt8.self)
        guard version <= 1 else {
            throw GzipIndexError(path: path, reason: "format version \(version) is unknown (versions 0 and 1 are supported)")
        }
        _ = try reader.integer(UInt8.self)
        let compressedSize = try reader.integer(UInt64.self)
        let uncompressedSize = try reader.integer(UInt64.self)
        let spacing = try reader.integer(UInt32.self)
        let windowSize = try reader.integer(UInt32.self)
        let count = try reader.integer(UInt32.self)
        guard compressedSize <= UInt64(Int64.max), uncompressedSize <= UInt64(Int64.max) else {
            throw GzipIndexError(path: path, reason: "a size in the header is larger than 2^63")
        }
        guard windowSize == UInt32(Self.windowSize) else {
            throw GzipIndexError(path: path, reason: "window size \(windowSize) is not 32768")
        }
        // Each point takes at least 18 bytes, so a count the file cannot hold is caught
        // before anything is allocated for it.
        guard UInt64(count) * UInt64(version == 0 ? 17 : 18) <= UInt64(reader.remaining) else {
            throw GzipIndexError(path: path, reason: "it announces \(count) points but is too short for them")
        }

        var points: [GzipAccessPoint] = []
        var hasWindow: [Bool] = []
        points.reserveCapacity(Int(count))
        for number in 0..<Int(count) {
            let byteOffset = try reader.integer(UInt64.self)
            let uncompressedOffset = try reader.integer(UInt64.self)
            let bits = try reader.integer(UInt8.self)
            let flag = version == 0 ? (number == 0 ? 0 : 1) : try reader.integer(UInt8.self)
            guard bits < 8, byteOffset <= compressedSize, uncompressedOffset <= uncompressedSize,
                  byteOffset > 0 || bits == 0 else {
                throw GzipIndexError(path: path, reason: "point \(number) lies outside the file it indexes")
            }
            guard flag <= 1 else {
                throw GzipIndexError(path: path, reason: "point \(number) has data flag \(flag), expected 0 or 1")
            }
            let point = GzipAccessPoint(compressedBitOffset: Int64(byteOffset) * 8 - Int64(bits),
                                        uncompressedOffset: Int64(uncompressedOffset), window: nil)
            if let previous = points.last,
               previous.compressedBitOffset > point.compressedBitOffset
                || previous.uncompressedOffset > point.uncompressedOffset {
                throw GzipIndexError(path: path, reason: "point \(number) is not sorted after point \(number - 1)")
            }
            points.append(point)
            hasWindow.append(flag == 1)
        }
        for number in points.indices where hasWindow[number] {
            if let shared {
                guard Self.windowSize <= reader.remaining else {
                    throw GzipIndexError(path: path, reason: "it ends after \(data.count) bytes, inside the window of point \(number)")
                }
                points[number].storedWindow = .shared(shared, offset: reader.position)
                reader.position += Self.windowSize
            } else {
                points[number].window = try reader.bytes(Self.windowSize)
            }
        }
        guard reader.remaining == 0 else {
            throw GzipIndexError(path: path, reason: "\(reader.remaining) bytes follow the last window")
        }
        self.init(compressedSize: Int64(compressedSize), uncompressedSize: Int64(uncompressedSize),
                  spacing: spacing, points: points)
    }

    /// Reads and decodes the GZIDX file at `path`. A path that cannot be opened or read
    /// throws `SystemError`, one that is no regular file `InvalidArgumentError`.
    public init(contentsOf path: String) throws {
        // The file is read once into a buffer that its windows then refer to; workers copy
        // only the window they start from. It is not mapped: a mapped file that another
        // program truncates would crash imgtool with SIGBUS. For the 20 MB index of a
        // 4 GiB image on the test machine, loading took 110 ms with Data, an array copy
        // and a copy of every window.
        let (descriptor, status) = try FileDescriptor.openRegularFile(
            path, argument: "index", remedy: "give the path of a GZIDX file made by 'imgtool index' or 'rapidgzip --export-index'")
        defer { try? descriptor.close() }
        let size = Int(status.size)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, size), alignment: 16)
        let count: Int
        do {
            count = try descriptor.readFully(into: UnsafeMutableRawBufferPointer(rebasing: buffer[..<size]), at: 0)
        } catch {
            buffer.deallocate()
            throw SystemError("read", path: path, errno: error)
        }
        // A file that shrank meanwhile parses as a short one and is rejected as such.
        let shared = IndexFileBytes(buffer: buffer, count: count)
        try self.init(parsingBytes: shared.bytes, path: path, shared: shared)
    }

    /// Writes the index to a new file at `path` through `TemporaryFile`, so a partial
    /// index never appears under the final name and an existing file is never replaced.
    public func write(to path: String) throws {
        let file = try TemporaryFile(for: path)
        do {
            try write(into: file)
        } catch {
            file.discard()
            throw error
        }
        try file.publish()
    }

    /// Writes the index into `file`, which must be empty, and leaves it unpublished, so
    /// the caller can publish it together with other output. On error the file is left
    /// for the caller to discard. Errors name the final path, which the caller gave,
    /// because the temporary file is gone once it is discarded.
    public func write(into file: TemporaryFile) throws {
        let bytes = serialized()
        do {
            try bytes.withUnsafeBytes { try file.descriptor.writeAll($0, at: 0) }
        } catch let error as Errno {
            throw SystemError("write", path: file.finalPath, errno: error)
        }
    }
}

/// The bytes of an index file read into memory, which the windows of its points refer
/// to. Immutable after init, so threads may read them at once.
final class IndexFileBytes: @unchecked Sendable {
    let bytes: UnsafeRawBufferPointer

    /// Takes ownership of `buffer`, of which the first `count` bytes are the file.
    init(buffer: UnsafeMutableRawBufferPointer, count: Int) {
        bytes = UnsafeRawBufferPointer(rebasing: buffer[..<count])
        owned = buffer
    }

    private let owned: UnsafeMutableRawBufferPointer

    deinit {
        owned.deallocate()
    }
}

/// Reads little-endian fields from untrusted bytes; every read checks the length first.
private struct CheckedReader {
    let bytes: UnsafeRawBufferPointer
    let path: String
    var position = 0

    var remaining: Int { bytes.count - position }

    mutating func bytes(_ count: Int) throws(GzipIndexError) -> [UInt8] {
        guard count <= remaining else {
            throw GzipIndexError(path: path, reason: "it ends after \(bytes.count) bytes, inside a field at offset \(position)")
        }
        defer { position += count }
        return Array(UnsafeRawBufferPointer(rebasing: bytes[position..<position + count]))
    }

    mutating func integer<T: FixedWidthInteger>(_ type: T.Type) throws(GzipIndexError) -> T {
        let size = MemoryLayout<T>.size
        guard size <= remaining else {
            throw GzipIndexError(path: path, reason: "it ends after \(bytes.count) bytes, inside a field at offset \(position)")
        }
        defer { position += size }
        return T(littleEndian: bytes.loadUnaligned(fromByteOffset: position, as: T.self))
    }
}

/// Decoding with a seek index failed on data the index led to. The index may belong to
/// another file or be damaged as easily as the file itself, so the message names both.
public struct IndexedInflateError: ImageError {
    public var indexPath: String
    public var underlying: any ImageError

    public init(indexPath: String, underlying: any ImageError) {
        self.indexPath = indexPath
        self.underlying = underlying
    }

    public var category: FailureCategory { underlying.category }
    public var description: String { "\(underlying.description) (decoded with the index '\(indexPath)')" }
    public var remedy: String? {
        "the index may not belong to this file: decompress again without --index, or rebuild the index "
            + "with 'imgtool index'; if that fails too, the file is damaged: download it again and check its SHA-256"
    }
}

extension GzipIndexError {
    /// Names the index file in an error that the decoder raised with the input's path.
    public func naming(indexPath: String) -> GzipIndexError {
        path == indexPath ? self : GzipIndexError(path: indexPath, reason: reason)
    }
}

// SHA256: streaming SHA-256 over OpenSSL's EVP interface (libcrypto).
//
// OpenSSL picks the fastest implementation for the CPU at run time (SHA-NI, AVX2, or
// plain C), so this type is a thin owner of one EVP_MD_CTX and never copies the input.

import CCrypto
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A SHA-256 digest: 32 bytes.
public struct SHA256Digest: Hashable, Sendable, CustomStringConvertible {
    public let bytes: [UInt8]

    public init(bytes: [UInt8]) {
        precondition(bytes.count == 32, "Bug in imgtool: a SHA-256 digest has 32 bytes, not \(bytes.count)")
        self.bytes = bytes
    }

    /// Parses 64 hex digits in either case; returns nil for anything else.
    public init?(hex: some StringProtocol) {
        let utf8 = Array(hex.utf8)
        guard utf8.count == 64 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(32)
        for index in stride(from: 0, to: 64, by: 2) {
            guard let high = Self.nibble(utf8[index]), let low = Self.nibble(utf8[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
        }
        self.bytes = bytes
    }

    /// The digest as 64 lower-case hex digits, the form `sha256sum` prints.
    public var hex: String {
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        text.reserveCapacity(64)
        for byte in bytes {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: text, as: UTF8.self)
    }

    public var description: String { hex }

    private static func nibble(_ character: UInt8) -> UInt8? {
        switch character {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return character - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return character - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return character - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}

/// An incremental SHA-256 computation. Not thread-safe: one thread feeds it at a time.
/// After `finalize` the hasher is reset and can be used for new input.
public final class SHA256 {
    /// Owned by this object; freed in deinit. OpenSSL keeps no pointer to it elsewhere.
    private let context: OpaquePointer
    /// Bytes fed since the last reset.
    public private(set) var count: Int64 = 0

    public init() {
        guard let context = EVP_MD_CTX_new() else {
            fatalError("Bug in imgtool: EVP_MD_CTX_new failed (out of memory)")
        }
        self.context = context
        reset()
    }

    deinit { EVP_MD_CTX_free(context) }

    /// Starts over, as if nothing had been fed (`EVP_DigestInit_ex`).
    public func reset() {
        guard EVP_DigestInit_ex(context, EVP_sha256(), nil) == 1 else {
            fatalError("Bug in imgtool: EVP_DigestInit_ex(SHA-256) failed")
        }
        count = 0
    }

    /// Feeds `bytes` (`EVP_DigestUpdate`).
    public func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        guard EVP_DigestUpdate(context, base, bytes.count) == 1 else {
            fatalError("Bug in imgtool: EVP_DigestUpdate failed")
        }
        count += Int64(bytes.count)
    }

    /// Feeds the bytes of `data`.
    public func update(_ data: some ContiguousBytes) {
        data.withUnsafeBytes { update($0) }
    }

    /// Returns the digest of everything fed so far and resets (`EVP_DigestFinal_ex`).
    public func finalize() -> SHA256Digest {
        var bytes = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        guard EVP_DigestFinal_ex(context, &bytes, &length) == 1, length == 32 else {
            fatalError("Bug in imgtool: EVP_DigestFinal_ex failed")
        }
        reset()
        return SHA256Digest(bytes: bytes)
    }

    /// Returns the digest of `data` in one call.
    public static func hash(_ data: some ContiguousBytes) -> SHA256Digest {
        let hasher = SHA256()
        hasher.update(data)
        return hasher.finalize()
    }

    /// Feeds the first `length` bytes of the file open at `descriptor` (all of it when
    /// `length` is nil), reading 1 MiB at a time with `pread`, at disk speed.
    /// - Throws: `SystemError` naming `path` on a read error or when the file is shorter
    ///   than `length`; `CancelledError` once `cancellation` is cancelled.
    public func update(file descriptor: FileDescriptor, path: String, length: Int64? = nil,
                       cancellation: CancellationToken? = nil,
                       progress: ((Int64) -> Void)? = nil) throws {
        let chunkSize = 1 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 4096)
        defer { buffer.deallocate() }
        var offset: Int64 = 0
        while length.map({ offset < $0 }) ?? true {
            try cancellation?.check("hash '\(path)'")
            let pieceLength = Int(min(Int64(chunkSize), (length ?? Int64.max) - offset))
            let count: Int
            do {
                count = try descriptor.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[..<pieceLength]), at: offset)
            } catch {
                throw SystemError("read", path: path, errno: error)
            }
            if count == 0 {
                if length == nil { break }
                throw SystemError("read", path: path, errno: Errno(rawValue: EIO),
                                  remedy: "the file is shorter than \(length!) bytes; it changed while being read")
            }
            update(UnsafeRawBufferPointer(rebasing: buffer[..<count]))
            offset += Int64(count)
            progress?(offset)
        }
    }

    /// Returns the SHA-256 of the whole file at `path`.
    public static func hash(fileAt path: String, cancellation: CancellationToken? = nil,
                            progress: ((Int64) -> Void)? = nil) throws -> SHA256Digest {
        let descriptor: FileDescriptor
        do {
            descriptor = try FileDescriptor.open(path, flags: O_RDONLY)
        } catch {
            throw SystemError("open", path: path, errno: error)
        }
        defer { try? descriptor.close() }
        let hasher = SHA256()
        try hasher.update(file: descriptor, path: path, cancellation: cancellation, progress: progress)
        return hasher.finalize()
    }
}

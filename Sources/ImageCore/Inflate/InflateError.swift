// Errors of inflation. Every case names the compressed file and, where one applies, the
// byte offset in that file, so a user can compare with `gzip -t`, `xz -t` or a hex dump.

/// The compressed input cannot be inflated.
public enum InflateError: ImageError, Equatable {
    /// The content is neither gzip nor xz; `found` describes what it looks like.
    case unsupportedFormat(path: String, found: String)
    /// The input ends before the stream does; `context` describes where, for example
    /// "inside deflate data of the member at offset 0".
    case truncated(path: String, offset: Int64, context: String)
    /// The stream is invalid at `offset`.
    case corrupt(path: String, offset: Int64, reason: String)
    /// A member's CRC-32 does not match its output.
    case checksumMismatch(path: String, memberOffset: Int64, stored: UInt32, computed: UInt32)
    /// A member's ISIZE does not match its output length modulo 2^32.
    case sizeMismatch(path: String, memberOffset: Int64, stored: UInt32, computed: UInt32)
    /// The xz stream needs more memory than the limit allows.
    case memoryLimitExceeded(path: String, needed: UInt64, limit: UInt64)
    /// The memory-mapped input lost data while it was decoded: it had `mappedSize` bytes
    /// when it was mapped and has `size` now (nil when that is unknown). `size` is at
    /// least `mappedSize` when the file was cut and grown again before the check, or a
    /// read of the disk failed: both raise SIGBUS on a mapped page.
    case inputShrank(path: String, mappedSize: Int64, size: Int64?)

    public var category: FailureCategory {
        switch self {
        case .memoryLimitExceeded, .inputShrank: return .failure
        default: return .invalidData
        }
    }

    public var description: String {
        switch self {
        case .unsupportedFormat(let path, let found):
            return "inflate '\(path)' failed: not gzip or xz: \(found)"
        case .truncated(let path, let offset, let context):
            return "inflate '\(path)' failed: the file ends at offset \(offset) \(context); it is truncated"
        case .corrupt(let path, let offset, let reason):
            return "inflate '\(path)' failed: corrupt data at offset \(offset): \(reason)"
        case .checksumMismatch(let path, let memberOffset, let stored, let computed):
            return "inflate '\(path)' failed: the gzip member at offset \(memberOffset) stores CRC-32 "
                + "\(hex32(stored)) but its data gives \(hex32(computed))"
        case .sizeMismatch(let path, let memberOffset, let stored, let computed):
            return "inflate '\(path)' failed: the gzip member at offset \(memberOffset) stores ISIZE \(stored) "
                + "but its data is \(computed) bytes long (modulo 2^32)"
        case .memoryLimitExceeded(let path, let needed, let limit):
            return "inflate '\(path)' failed: the xz stream needs \(needed) bytes of memory, more than the limit of \(limit) bytes"
        case .inputShrank(let path, let mappedSize, let size):
            if let size, size >= mappedSize {
                return "inflate '\(path)' failed: pages of the file were missing while it was being read, although it "
                    + "has \(size) bytes now (\(mappedSize) when it was mapped): another program cut it and wrote it "
                    + "again, or the disk could not read them"
            }
            let now = size.map { "\($0) bytes" } ?? "fewer bytes"
            return "inflate '\(path)' failed: the file shrank from \(mappedSize) bytes to \(now) while it was being read"
        }
    }

    public var remedy: String? {
        switch self {
        case .unsupportedFormat:
            return "give a gzip (.gz) or xz (.xz) file; check that the download is complete and is the image itself"
        case .truncated:
            return "the file is incomplete: download it again and check its SHA-256"
        case .corrupt, .checksumMismatch, .sizeMismatch:
            return "the file is damaged: download it again and check its SHA-256"
        case .memoryLimitExceeded:
            return "free memory or use a machine with more memory"
        case .inputShrank(_, let mappedSize, let size):
            let retry = "another program changed the file (a download still running?): wait until nothing writes it, then run the command again"
            guard let size, size >= mappedSize else { return retry }
            return retry + "; if nothing wrote it, look for read errors of its disk in the kernel log (dmesg)"
        }
    }
}

/// `0x0000abcd`-style text.
func hex32(_ value: UInt32) -> String {
    let digits = String(value, radix: 16)
    return "0x" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits
}

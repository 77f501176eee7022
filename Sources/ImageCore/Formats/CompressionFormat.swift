// Detection of the compression format from the first bytes of the content. The file
// name is never consulted: downloads are often renamed, and `.img` files are often gzip.

/// A compressed format imgtool can inflate.
public enum CompressionFormat: String, Sendable, Codable, CaseIterable {
    case gzip
    case xz

    /// The xz stream header magic: fd '7' 'z' 'X' 'Z' 00 (the .xz file format's Header Magic Bytes).
    public static let xzMagic: [UInt8] = [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]

    /// The number of leading bytes `detect` needs to decide.
    public static let detectionLength = 6

    /// Returns the format whose magic number starts `bytes`, or nil. `bytes` should hold
    /// `detectionLength` bytes unless the input is shorter.
    public static func detect(_ bytes: [UInt8]) -> CompressionFormat? {
        if bytes.starts(with: GzipHeader.magic) { return .gzip }
        if bytes.starts(with: xzMagic) { return .xz }
        return nil
    }

    /// Names what `bytes` look like when `detect` returns nil, for the error message.
    public static func describeUnsupported(_ bytes: [UInt8]) -> String {
        let known: [(magic: [UInt8], name: String)] = [
            ([0x42, 0x5a, 0x68], "bzip2 data"),
            ([0x28, 0xb5, 0x2f, 0xfd], "zstd data"),
            ([0x04, 0x22, 0x4d, 0x18], "lz4 data"),
            ([0x50, 0x4b, 0x03, 0x04], "a zip archive"),
            ([0x5d, 0x00, 0x00], "legacy .lzma data"),
            ([0x51, 0x46, 0x49, 0xfb], "a qcow2 image"),
            ([0x78, 0x9c], "zlib data"),
            ([0x1f, 0x9d], "compress (.Z) data"),
        ]
        if bytes.isEmpty { return "the file is empty" }
        if let match = known.first(where: { bytes.starts(with: $0.magic) }) {
            return "found \(match.name) (first bytes \(hexString(bytes)))"
        }
        if bytes.allSatisfy({ $0 == 0 }) {
            return "found zero bytes (first bytes \(hexString(bytes))), which looks like an uncompressed disk image"
        }
        return "found first bytes \(hexString(bytes)), which are neither gzip (1f 8b) nor xz (fd 37 7a 58 5a 00)"
    }
}

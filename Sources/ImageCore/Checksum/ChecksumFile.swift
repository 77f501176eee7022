// ChecksumFile: the GNU `sha256sum` output format, as published beside images.
//
// One entry per line:
//
//     <64 hex digits><space><space or '*'><file name>
//
// Two spaces mark text mode and " *" binary mode, which read the same bytes on Linux.
// A single space before the name is accepted too, because some publishers write it. A line that starts
// with '\' escapes "\\" and "\n" in the name (GNU coreutils 8.x and later). Also accepted:
// the BSD form `SHA256 (name) = hex` that `sha256sum --tag` prints, the form
// `SHA2-256(name)= hex` that `openssl dgst -sha256` prints (`SHA256(name)= hex` before
// OpenSSL 3.0), a UTF-8 byte order
// mark, CRLF line ends, blank lines, `#` comments, upper-case hex, and an OpenPGP
// clear-signed wrapper (RFC 4880, section 7): only the signed text between the armour
// header block and `-----BEGIN PGP SIGNATURE-----` is read, with "- " dash escapes
// removed. The signature itself is not checked.
//
// A file whose only line is a bare hash, as the `NAME.sha256` files published beside
// some downloads are, lists that hash for any name looked up in it.

import Foundation

/// One line of a checksum file.
public struct ChecksumEntry: Sendable, Equatable {
    public var digest: SHA256Digest
    /// The file name exactly as listed (a path when the publisher listed one).
    public var fileName: String
    /// True for the binary-mode marker `*`.
    public var isBinary: Bool
}

/// The parsed entries of a checksum file.
public struct ChecksumFile: Sendable {
    public private(set) var entries: [ChecksumEntry] = []
    /// The hash of a file that contains one bare hash and no other entry or text line.
    public private(set) var soleDigest: SHA256Digest?

    /// Parses `text`. Lines that are not entries (comments, PGP armour, other digests) are
    /// skipped, so a file that lists several kinds of checksum still works.
    public init(parsing text: String) {
        var body = Substring(text)
        if body.hasPrefix("\u{FEFF}") { body = body.dropFirst() }
        var lines = body.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" })
            .map { line -> Substring in line.hasSuffix("\r") ? line.dropLast() : line }
        lines = Self.signedText(of: lines)
        for line in lines {
            if let entry = Self.entry(from: line) { entries.append(entry) }
        }
        if entries.isEmpty { soleDigest = Self.bareDigest(in: lines) }
    }

    /// Returns the entry whose file name is exactly `name`, or, failing that, whose last
    /// path component is `name` (a file that lists `images/x.gz` for `x.gz`).
    public func entry(named name: String) -> ChecksumEntry? {
        entries(named: name).first
    }

    /// Every entry `entry(named:)` chooses from: those named exactly `name`, or, when there
    /// is none, those whose last path component is `name`. More than one with different
    /// digests means the file does not say which hash is right.
    /// A file that contains only a bare hash returns that hash under `name`.
    public func entries(named name: String) -> [ChecksumEntry] {
        if let soleDigest { return [ChecksumEntry(digest: soleDigest, fileName: name, isBinary: false)] }
        let exact = entries.filter { $0.fileName == name }
        if !exact.isEmpty { return exact }
        return entries.filter { $0.fileName.split(separator: "/").last.map(String.init) == name }
    }

    /// The lines inside a PGP clear-signed message, or `lines` unchanged when there is no
    /// such wrapper.
    private static func signedText(of lines: [Substring]) -> [Substring] {
        guard let start = lines.firstIndex(where: { $0 == "-----BEGIN PGP SIGNED MESSAGE-----" }) else {
            return lines
        }
        var index = start + 1
        // Armour headers ("Hash: SHA256") end at the first empty line.
        while index < lines.count, !lines[index].isEmpty { index += 1 }
        index += 1
        var text: [Substring] = []
        while index < lines.count, lines[index] != "-----BEGIN PGP SIGNATURE-----" {
            let line = lines[index]
            text.append(line.hasPrefix("- ") ? line.dropFirst(2) : line)
            index += 1
        }
        return text
    }

    /// Returns the hash on the only line that is not blank or a `#` comment, when that line
    /// is 64 hex digits and nothing else.
    private static func bareDigest(in lines: [Substring]) -> SHA256Digest? {
        let content = lines.map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty && !$0.hasPrefix("#") }
        guard content.count == 1 else { return nil }
        return SHA256Digest(hex: content[0])
    }

    private static func entry(from rawLine: Substring) -> ChecksumEntry? {
        var line = rawLine
        while line.first == " " || line.first == "\t" { line = line.dropFirst() }
        if line.isEmpty || line.hasPrefix("#") { return nil }
        if tagForms.contains(where: { line.hasPrefix($0.prefix) }) { return taggedEntry(from: line) }

        var escaped = false
        if line.hasPrefix("\\") {
            escaped = true
            line = line.dropFirst()
        }
        // Counted in characters: a line of multi-byte characters has fewer than its bytes.
        guard let hexEnd = line.index(line.startIndex, offsetBy: 64, limitedBy: line.endIndex), hexEnd < line.endIndex,
              let digest = SHA256Digest(hex: line[..<hexEnd]), line[hexEnd] == " " else { return nil }
        var rest = line[line.index(after: hexEnd)...]
        var isBinary = false
        if rest.first == "*" {
            isBinary = true
            rest = rest.dropFirst()
        } else if rest.first == " " {
            rest = rest.dropFirst()
        }
        guard !rest.isEmpty else { return nil }
        let name = escaped ? unescape(rest) : String(rest)
        return ChecksumEntry(digest: digest, fileName: name, isBinary: isBinary)
    }

    /// The tagged forms: `SHA256 (name) = hex` (BSD, `sha256sum --tag`), `SHA2-256(name)= hex`
    /// (`openssl dgst -sha256` of OpenSSL 3.0) and `SHA256(name)= hex` (OpenSSL 1.1).
    private static let tagForms: [(prefix: String, separator: String)] = [
        ("SHA256 (", ") = "), ("SHA2-256(", ")= "), ("SHA256(", ")= "),
    ]

    private static func taggedEntry(from line: Substring) -> ChecksumEntry? {
        guard let form = tagForms.first(where: { line.hasPrefix($0.prefix) }),
              let separator = line.range(of: form.separator, options: .backwards) else { return nil }
        let nameStart = line.index(line.startIndex, offsetBy: form.prefix.count)
        guard nameStart < separator.lowerBound else { return nil }
        let name = line[nameStart..<separator.lowerBound]
        guard let digest = SHA256Digest(hex: line[separator.upperBound...]) else { return nil }
        return ChecksumEntry(digest: digest, fileName: String(name), isBinary: true)
    }

    private static func unescape(_ name: Substring) -> String {
        var result = ""
        var iterator = name.makeIterator()
        while let character = iterator.next() {
            guard character == "\\" else {
                result.append(character)
                continue
            }
            switch iterator.next() {
            case "n": result.append("\n")
            case "r": result.append("\r")
            case "\\": result.append("\\")
            case let other?: result.append("\\"); result.append(other)
            case nil: result.append("\\")
            }
        }
        return result
    }
}

// imgtool verify: check a file's SHA-256.

import Foundation
import ImageCore

enum VerifyCommand: Command {
    static let name = "verify"
    static let summary = "Check a file's SHA-256 against the catalog or a given hash."
    static let help = """
    Usage: imgtool verify FILE [--sha256 HEX | --sha256-url URL | --image IMAGE] [--catalog FILE]

    Computes the SHA-256 of FILE and compares it with the expected one: the given hash,
    the entry for FILE's name in a checksum file, the catalog entry IMAGE, or, with none
    of these, the catalog entry whose download has FILE's name. Prints 'FILE: OK' and
    exits 0 on a match; exits 2 on a mismatch, naming both hashes.

    Options:
      --sha256 HEX       the expected SHA-256 (64 hex digits)
      --sha256-url URL   a checksum file in sha256sum format that lists FILE's name
      --image IMAGE      a catalog entry such as RancherOS@v1.4.2
      --catalog FILE     a catalog file to use instead of the default (or IMGTOOL_CATALOG)
    """

    static func run(_ arguments: [String], context: CommandContext) async throws -> Int32 {
        let parsed = try Arguments(arguments, options: ["--sha256", "--sha256-url", "--image", "--catalog"])
        try parsed.requirePositionals(1...1, names: "FILE")
        let path = parsed.positionals[0]
        let name = (path as NSString).lastPathComponent
        let sources = ["--sha256", "--sha256-url", "--image"].filter { parsed.value($0) != nil }
        if sources.count > 1 {
            throw UsageError(message: "\(sources.joined(separator: " and ")) cannot be combined: give one source for the expected hash")
        }

        let expected: SHA256Digest
        if let hex = parsed.value("--sha256") {
            guard let digest = SHA256Digest(hex: hex) else {
                throw UsageError(message: "invalid --sha256 '\(hex)': expected 64 hex digits")
            }
            expected = digest
        } else if let checksumURL = parsed.value("--sha256-url") {
            expected = try Downloader().checksum(for: name, listedAt: checksumURL, cancellation: context.cancellation)
        } else {
            let catalog = try ImageCatalog.load(path: parsed.value("--catalog"))
            let entry: CatalogEntry
            if let reference = parsed.value("--image") {
                entry = try catalog.resolve(reference)
            } else {
                guard let match = catalog.entries.first(where: { $0.fileName == name }) else {
                    throw UsageError(message: "no catalog image is named '\(name)': give --sha256, --sha256-url or --image")
                }
                entry = match
            }
            if let hex = entry.sha256, let digest = SHA256Digest(hex: hex) {
                expected = digest
            } else if let checksumURL = entry.checksumURL {
                expected = try Downloader().checksum(for: entry.fileName, listedAt: checksumURL,
                                                    cancellation: context.cancellation)
            } else {
                throw UsageError(message: "the catalog entry \(entry.reference) has neither sha256 nor checksumURL")
            }
        }

        let actual = try SHA256.hash(fileAt: path, cancellation: context.cancellation)
        guard actual == expected else {
            throw ChecksumMismatchError(path: path, expected: expected, actual: actual)
        }
        print("\(escapingControlCharacters(path)): OK (SHA-256 \(actual.hex))")
        return 0
    }
}

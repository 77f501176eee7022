// The state file that lets a later run resume a partial download.
//
// `NAME.part.state` sits beside `NAME.part` and records what the partial bytes are: the
// requested URL, the final URL after redirects, the validators (ETag, Last-Modified) and
// the total length of the response that produced them, and the expected SHA-256. It is
// written (atomically) before the first byte of a response is stored, so after a crash
// every byte in the partial file came from the response the state describes.

import Foundation

struct DownloadState: Codable, Equatable {
    /// The URL the caller requested.
    var url: String
    /// The URL after redirects; resumes go here.
    var finalURL: String
    var etag: String?
    var lastModified: String?
    /// The length of the whole file, when the server sent one.
    var expectedLength: Int64?
    /// The expected SHA-256 as lower-case hex.
    var sha256: String

    static func load(from path: String) -> DownloadState? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return try? JSONDecoder().decode(DownloadState.self, from: data)
    }

    func save(to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        let data = try encoder.encode(self)
        // Readable by the owner only: the URLs may carry a password (user:password@host).
        let file = try TemporaryFile(for: path, mode: 0o600, mustNotExist: false)
        do {
            try data.withUnsafeBytes { bytes in try file.descriptor.writeAll(bytes, at: 0) }
        } catch let error as Errno {
            file.discard()
            throw SystemError("write", path: file.temporaryPath, errno: error)
        }
        try file.publish(replacing: true)
    }

    /// True when a response with these validators is the same file as the one this state
    /// describes. A validator counts only when both sides have it.
    func matches(etag newETag: String?, lastModified newLastModified: String?, length: Int64?) -> Bool {
        if let etag, let newETag { return etag == newETag && lengthMatches(length) }
        if let lastModified, let newLastModified { return lastModified == newLastModified && lengthMatches(length) }
        return lengthMatches(length)
    }

    private func lengthMatches(_ length: Int64?) -> Bool {
        guard let expectedLength, let length else { return true }
        return expectedLength == length
    }
}

/// A parsed `Content-Range` header (RFC 9110, section 14.4): `bytes FIRST-LAST/TOTAL`,
/// `bytes FIRST-LAST/*`, or `bytes */TOTAL` in a 416 response.
struct ContentRange: Equatable {
    /// The first byte's offset, or nil for the unsatisfied form `*/TOTAL`.
    var first: Int64?
    var last: Int64?
    /// The whole file's length, or nil for `*`.
    var total: Int64?

    init(first: Int64?, last: Int64?, total: Int64?) {
        self.first = first
        self.last = last
        self.total = total
    }

    init?(_ header: String) {
        let text = header.trimmingCharacters(in: .whitespaces)
        guard text.lowercased().hasPrefix("bytes ") else { return nil }
        let spec = text.dropFirst(6).trimmingCharacters(in: .whitespaces)
        let halves = spec.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard halves.count == 2 else { return nil }
        if halves[1] == "*" {
            total = nil
        } else {
            guard let value = Int64(halves[1]), value >= 0 else { return nil }
            total = value
        }
        if halves[0] == "*" {
            guard total != nil else { return nil }
            return
        }
        let bounds = halves[0].split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard bounds.count == 2, let first = Int64(bounds[0]), let last = Int64(bounds[1]),
              first >= 0, last >= first else { return nil }
        if let total, last >= total { return nil }
        self.first = first
        self.last = last
    }
}

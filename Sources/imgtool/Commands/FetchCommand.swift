// imgtool fetch: download an image from the catalog or a URL, resumable and verified.

import Foundation
import ImageCore

enum FetchCommand: Command {
    static let name = "fetch"
    static let summary = "Download an image with resume and SHA-256 verification."
    static let help = """
    Usage: imgtool fetch IMAGE|URL [--sha256 HEX | --sha256-url URL] [--output PATH | --dir DIR]
                         [--force] [--catalog FILE] [--retries N] [--stall-timeout SECONDS]
                         [--max-size SIZE] [--progress auto|bar|json|none]

    Downloads IMAGE (a catalog name such as RancherOS for the newest version, or
    RancherOS@v1.4.0) or an http(s) URL, checks its SHA-256 while it arrives, and prints
    the path of the verified file (on a terminal, with control characters, text-direction
    marks and backslashes escaped as in 'imgtool images'). The file appears under its
    final name only after the hash matched. An interrupted download continues from
    NAME.part on the next run; a file that is already there with the right hash is
    reused without any network access.

    Options:
      --sha256 HEX          the expected SHA-256 of a URL download (64 hex digits)
      --sha256-url URL      a checksum file in sha256sum format that lists the URL's file name
      --output PATH         the file to create (default: the URL's file name in --dir)
      --dir DIR             the directory to download into (default: the current directory)
      --force               download again even when a verified file exists, and replace
                            the existing file once the new one verified
      --catalog FILE        a catalog file to use instead of the default (or IMGTOOL_CATALOG)
      --retries N           retries after a dropped connection, stall or 5xx (default 5)
      --stall-timeout SECONDS  abandon an attempt that receives nothing this long (default 30)
      --max-size SIZE       fail when the file is larger, for example 4G (default 64G); this
                            also stops a body without a length that never ends
      --progress MODE       auto (a bar on a terminal), bar, json (lines on stdout) or none

    Files beside the destination: NAME.part and NAME.part.state (the partial download),
    NAME.lock (held while a process downloads; a second process waits, then reuses the file).
    """

    static func run(_ arguments: [String], context: CommandContext) async throws -> Int32 {
        let parsed = try Arguments(arguments, options: ["--sha256", "--sha256-url", "--output", "--dir", "--catalog",
                                                        "--retries", "--stall-timeout", "--max-size", "--progress"],
                                   flags: ["--force"])
        try parsed.requirePositionals(1...1, names: "IMAGE or URL")
        let source = parsed.positionals[0]
        if parsed.value("--output") != nil && parsed.value("--dir") != nil {
            throw UsageError(message: "--output and --dir cannot be combined: --output names the file, --dir its directory")
        }
        if let output = parsed.value("--output") {
            // The lock, partial and state files are named by appending to the path, so a
            // directory path would create `DIR/.lock` and `DIR/.part`.
            let name = (output as NSString).lastPathComponent
            if output.isEmpty || output.hasSuffix("/") || name == "." || name == ".." {
                throw UsageError(message: "invalid --output '\(output)': it names a directory, not a file; give the file's path (DIR/NAME), or --dir DIR to keep the URL's file name")
            }
        }
        if parsed.value("--sha256") != nil && parsed.value("--sha256-url") != nil {
            throw UsageError(message: "--sha256 and --sha256-url cannot be combined: give one source for the expected hash")
        }

        var options = DownloadOptions()
        if let retries = try parsed.integer("--retries", in: 0...100) { options.retries = retries }
        if let text = parsed.value("--stall-timeout") {
            guard let seconds = Double(text), seconds > 0, seconds <= 86_400 else {
                throw UsageError(message: "invalid --stall-timeout '\(text)': expected seconds greater than 0, at most 86400")
            }
            options.stallTimeout = .milliseconds(Int64(seconds * 1000))
        }

        if let text = parsed.value("--max-size") {
            let size: DiskSize
            do {
                size = try DiskSize(parsing: text)
            } catch var error {
                // The parser's reason and fix, such as the whitespace to remove, under this option's name.
                error.argument = "--max-size"
                throw error
            }
            guard size.requestedBytes > 0 else {
                throw UsageError(message: "invalid --max-size '\(text)': expected \(DiskSize.acceptedForms), greater than 0")
            }
            options.maximumSize = size.requestedBytes
        }

        let (url, expected) = try resolveSource(source, parsed: parsed)
        let directory = parsed.value("--dir") ?? FileManager.default.currentDirectoryPath
        let destination = try parsed.value("--output") ?? (directory as NSString).appendingPathComponent(Self.usableFileName(of: url))

        let display = ProgressDisplay(try ProgressMode.parse(parsed.value("--progress")))
        let summary: DownloadSummary
        do {
            summary = try await Downloader(options: options).fetch(
                url: url, expected: expected, to: destination, force: parsed.flag("--force"),
                progress: display.handler, cancellation: context.cancellation)
            display.finish()
        } catch {
            display.finish()
            throw error
        }
        if summary.reused {
            Log.info("fetch", "'\(summary.path)' was already verified; nothing downloaded")
        } else {
            Log.info("fetch", "downloaded \(summary.bytesDownloaded) bytes in \(summary.attempts) requests, resumed from byte \(summary.resumedFrom), \(summary.restarts) restarts")
        }
        print(escapingForTerminal(summary.path))
        return 0
    }

    /// The URL and expected hash for a catalog reference or a URL.
    private static func resolveSource(_ source: String, parsed: Arguments) throws -> (String, ExpectedChecksum) {
        if source.contains("://") {
            if let hex = parsed.value("--sha256") {
                guard let digest = SHA256Digest(hex: hex) else {
                    throw UsageError(message: "invalid --sha256 '\(hex)': expected 64 hex digits")
                }
                return (source, .sha256(digest))
            }
            if let checksumURL = parsed.value("--sha256-url") {
                return (source, .checksumFile(url: checksumURL, fileName: nil))
            }
            throw UsageError(message: "no expected SHA-256 for \(source): give --sha256 HEX or --sha256-url URL, so the download can be verified")
        }
        if parsed.value("--sha256") != nil || parsed.value("--sha256-url") != nil {
            throw UsageError(message: "--sha256 and --sha256-url apply to URLs; the catalog gives the hash of '\(source)'")
        }
        let entry = try ImageCatalog.load(path: parsed.value("--catalog")).resolve(source)
        if let hex = entry.sha256, let digest = SHA256Digest(hex: hex) {
            return (entry.url, .sha256(digest))
        }
        guard let checksumURL = entry.checksumURL else {
            throw UsageError(message: "the catalog entry \(entry.reference) has neither sha256 nor checksumURL")
        }
        return (entry.url, .checksumFile(url: checksumURL, fileName: entry.fileName))
    }

    /// `fileName(of:)`, unless the URL's decoded name cannot be a file in the directory:
    /// "." and "..", or a name with a NUL (which would cut the path short) or another
    /// control character.
    static func usableFileName(of url: String) throws -> String {
        let name = fileName(of: url)
        if name == "." || name == ".." || name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
            let shown = name.unicodeScalars.map { $0.escaped(asASCII: true) }.joined()
            throw UsageError(message: "the URL's file name '\(shown)' cannot be used as a file name: give --output PATH")
        }
        if name.utf8.count > Downloader.maximumFileNameLength {
            throw UsageError(message: "the URL's file name '\(name)' is \(name.utf8.count) bytes long, but a download can use at most \(Downloader.maximumFileNameLength) (NAME.part.state must fit in 255 bytes): give --output PATH with a shorter name")
        }
        return name
    }

    /// The last path component of `url` without its query, or "download" when it has none.
    static func fileName(of url: String) -> String {
        let path = URL(string: url)?.path ?? ""
        let name = (path as NSString).lastPathComponent
        return name.isEmpty || name == "/" ? "download" : name
    }
}

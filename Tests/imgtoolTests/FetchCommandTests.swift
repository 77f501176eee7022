// `imgtool images`, `imgtool verify` and the argument checks of `imgtool fetch`. None of
// these tests touches the network; downloads are tested against nginx in ImageCoreTests.

import Foundation
import Testing

@Suite struct FetchCommandTests {
    static let emptyHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

    @Test func imagesMarksNewest() throws {
        let result = try runImgtool(["images"])
        #expect(result.status == 0)
        #expect(result.output.contains("RancherOS@v1.4.2 (newest)"))
        #expect(result.output.contains("RancherOS@v1.1.3 "))
    }

    @Test func imagesJSONParses() throws {
        let result = try runImgtool(["images", "--json"])
        let object = try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any]
        let images = object?["images"] as? [[String: Any]]
        #expect(images?.count == 4)
        #expect(images?.first?["passwordForm"] as? String == "plain")
    }

    @Test func imagesRejectsInvalidCatalog() throws {
        let path = NSTemporaryDirectory() + "/imgtool-catalog-\(getpid()).json"
        try "{\"images\": 5}".write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }

        let result = try runImgtool(["images", "--catalog", path])

        #expect(result.status == 64)
        #expect(result.error.contains("invalid catalog '\(path)'"))
    }

    @Test func imagesHidesURLPassword() throws {
        let path = NSTemporaryDirectory() + "/imgtool-catalog-password-\(getpid()).json"
        let entry = """
            {"name": "T", "version": "v1", "url": "http://bob:s3cretPW@127.0.0.1:9/t.img", "sha256": "\(Self.emptyHash)",
             "kernel": "k", "initrd": "i", "kernelArguments": [], "passwordForm": "plain", "splitsCommandLineOnSpaces": true}
            """
        try "{\"images\": [\(entry)]}".write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let invalidPath = path + ".ftp"
        try "{\"images\": [\(entry.replacingOccurrences(of: "http:", with: "ftp:"))]}"
            .write(toFile: invalidPath, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: invalidPath) }

        let listed = try runImgtool(["images", "--catalog", path])
        let invalid = try runImgtool(["images", "--catalog", invalidPath])

        #expect(listed.status == 0)
        #expect(listed.output.contains("http://bob:***@127.0.0.1:9/t.img"))
        #expect(!listed.output.contains("s3cretPW"))
        #expect(invalid.status == 64)
        #expect(invalid.error.contains("ftp://bob:***@127.0.0.1:9/t.img"))
        #expect(!invalid.error.contains("s3cretPW"))
    }

    /// Writes a catalog with one image whose name contains an escape sequence, U+202E,
    /// a backslash and a tab, and returns its path and that name.
    static func writeHostileCatalog(_ tag: String) throws -> (path: String, name: String) {
        let path = NSTemporaryDirectory() + "/imgtool-catalog-\(tag)-\(getpid()).json"
        let entry = """
            {"name": "T\\u001b[31m\\u202ex\\\\y\\tz", "version": "v1", "url": "http://127.0.0.1:9/t.img", "sha256": "\(Self.emptyHash)",
             "kernel": "k", "initrd": "i", "kernelArguments": [], "passwordForm": "plain", "splitsCommandLineOnSpaces": true}
            """
        try "{\"images\": [\(entry)]}".write(toFile: path, atomically: true, encoding: .utf8)
        return (path, "T\u{1B}[31m\u{202E}x\\y\tz")
    }

    @Test(arguments: ["/", "", ".", ".."])
    func fetchOutputDirectoryRejected(suffix: String) throws {
        let directory = NSTemporaryDirectory() + "/imgtool-output-dir-\(getpid())-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let output = suffix.isEmpty ? "" : directory + (suffix == "/" ? "/" : "/" + suffix)

        let result = try runImgtool(["fetch", "http://127.0.0.1:9/t.img", "--sha256", Self.emptyHash,
                                     "--output", output, "--retries", "0"])

        #expect(result.status == 64, "\(result.error)")
        #expect(result.error.contains("names a directory"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).isEmpty)
    }

    @Test func imagesPipeGetsRawNames() throws {
        let catalog = try Self.writeHostileCatalog("pipe")
        defer { try? FileManager.default.removeItem(atPath: catalog.path) }

        let result = try runImgtool(["images", "--catalog", catalog.path])

        #expect(result.status == 0, "\(result.error)")
        #expect(result.output.contains(catalog.name + "@v1 (newest)"))
    }

    @Test func imagesTerminalGetsEscapedNames() throws {
        let catalog = try Self.writeHostileCatalog("terminal")
        defer { try? FileManager.default.removeItem(atPath: catalog.path) }

        let result = try runImgtoolOnTerminal(["images", "--catalog", catalog.path])

        #expect(result.status == 0, "\(result.output)")
        #expect(result.output.contains(#"T\u{1B}[31m\u{202E}x\\y\u{9}z@v1 (newest)"#))
        #expect(!result.output.contains("\u{1B}"))
        #expect(!result.output.contains("\u{202E}"))
        #expect(!result.output.contains("\t"))
    }

    @Test func imagesColumnsAlignWideNames() throws {
        let path = NSTemporaryDirectory() + "/imgtool-catalog-wide-\(getpid()).json"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let entries = ["磁盘映像", "Disk", "cafe\u{301}"].map { name in
            """
            {"name": "\(name)", "version": "v1", "url": "http://127.0.0.1:9/\(name.count).img", "sha256": "\(Self.emptyHash)",
             "kernel": "k", "initrd": "i", "kernelArguments": [], "passwordForm": "plain", "splitsCommandLineOnSpaces": true}
            """
        }
        try "{\"images\": [\(entries.joined(separator: ","))]}".write(toFile: path, atomically: true, encoding: .utf8)

        let result = try runImgtool(["images", "--catalog", path])

        #expect(result.status == 0, "\(result.error)")
        // Each CJK character takes two columns, the combining accent none.
        func width(of scalar: Unicode.Scalar) -> Int {
            if (0x4E00...0x9FFF).contains(scalar.value) { return 2 }
            if scalar.value == 0x301 { return 0 }
            return 1
        }
        let columns = result.output.split(separator: "\n").map { line in
            line.prefix { $0 != "h" && $0 != "U" }.unicodeScalars.reduce(0) { $0 + width(of: $1) }
        }
        #expect(columns.count == 4)
        #expect(Set(columns).count == 1, "\(result.output)")
    }

    @Test func imagesColumnsAlignEmojiAndHangul() throws {
        // Each name with the columns glibc's wcswidth gives it: emoji drawn as emoji take
        // two (U+1F680 is outside the blocks counted before), the thermometer (text form
        // by default) one, a decomposed Hangul syllable two, and a flag two.
        let names: [(name: String, columns: Int)] = [
            ("\u{1F680}", 2), ("\u{2615}", 2), ("\u{1FAE0}", 2), ("\u{1F321}", 1),
            ("\u{1112}\u{1161}\u{11AB}", 2), ("\u{1F1E9}\u{1F1EA}", 2), ("Disk", 4),
        ]
        let path = NSTemporaryDirectory() + "/imgtool-catalog-emoji-\(getpid()).json"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let entries = names.enumerated().map { index, entry in
            """
            {"name": "\(entry.name)", "version": "v1", "url": "http://127.0.0.1:9/\(index).img", "sha256": "\(Self.emptyHash)",
             "kernel": "k", "initrd": "i", "kernelArguments": [], "passwordForm": "plain", "splitsCommandLineOnSpaces": true}
            """
        }
        try "{\"images\": [\(entries.joined(separator: ","))]}".write(toFile: path, atomically: true, encoding: .utf8)

        let result = try runImgtool(["images", "--catalog", path])

        #expect(result.status == 0, "\(result.error)")
        let lines = result.output.split(separator: "\n").map(String.init)
        #expect(lines.count == names.count + 1)
        // The column where each line's URL starts: the label's columns plus its padding.
        func urlColumn(line: String, label: String, labelColumns: Int) -> Int {
            labelColumns + line.dropFirst(label.count).prefix { $0 == " " }.count
        }
        let header = lines.first ?? ""
        let headerColumn = urlColumn(line: header, label: "IMAGE", labelColumns: 5)
        for (name, columns) in names {
            let label = "\(name)@v1 (newest)"
            let line = lines.first { $0.hasPrefix(label) }
            #expect(line != nil, "no line for \(name): \(result.output)")
            guard let line else { continue }
            #expect(urlColumn(line: line, label: label, labelColumns: columns + 12) == headerColumn, "\(result.output)")
        }
    }

    /// Creates an empty file whose name contains a newline, an escape sequence and U+202E,
    /// which `fetch` reuses without a connection because its hash matches `--sha256`.
    static func makeHostileDownload(_ tag: String) throws -> (directory: String, path: String) {
        let directory = NSTemporaryDirectory() + "/imgtool-fetch-\(tag)-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let path = directory + "/a\nb\u{1B}[2K\u{202E}c"
        #expect(FileManager.default.createFile(atPath: path, contents: Data()))
        return (directory, path)
    }

    @Test func fetchPipeGetsRawPath() throws {
        let download = try Self.makeHostileDownload("pipe")
        defer { try? FileManager.default.removeItem(atPath: download.directory) }

        let result = try runImgtool(["fetch", "http://127.0.0.1:9/t.img", "--sha256", Self.emptyHash,
                                     "--output", download.path, "--progress", "none"])

        #expect(result.status == 0, "\(result.error)")
        #expect(result.output == download.path + "\n")
    }

    @Test func fetchTerminalGetsEscapedPath() throws {
        let download = try Self.makeHostileDownload("terminal")
        defer { try? FileManager.default.removeItem(atPath: download.directory) }

        let result = try runImgtoolOnTerminal(["fetch", "http://127.0.0.1:9/t.img", "--sha256", Self.emptyHash,
                                               "--output", download.path, "--progress", "none"])

        #expect(result.status == 0, "\(result.output)")
        #expect(result.output.contains(download.directory + #"/a\u{A}b\u{1B}[2K\u{202E}c"#))
        #expect(!result.output.contains("\u{1B}"))
        #expect(!result.output.contains("\u{202E}"))
    }

    @Test func verifyMatchExitsZero() throws {
        let path = NSTemporaryDirectory() + "/imgtool-verify-\(getpid())-empty"
        #expect(FileManager.default.createFile(atPath: path, contents: Data()))
        defer { try? FileManager.default.removeItem(atPath: path) }

        let result = try runImgtool(["verify", path, "--sha256", Self.emptyHash.uppercased()])

        #expect(result.status == 0)
        #expect(result.output == "\(path): OK (SHA-256 \(Self.emptyHash))\n")
    }

    @Test func verifyMatchEscapesControlCharacters() throws {
        let path = NSTemporaryDirectory() + "/imgtool-verify-\(getpid())-a\nimgtool: \u{1B}[2Kb"
        #expect(FileManager.default.createFile(atPath: path, contents: Data()))
        defer { try? FileManager.default.removeItem(atPath: path) }

        let result = try runImgtool(["verify", path, "--sha256", Self.emptyHash])
        #expect(result.status == 0)
        #expect(result.output.contains(#"-a\u{A}imgtool: \u{1B}[2Kb: OK"#))
        #expect(!result.output.contains("\u{1B}"))
        #expect(result.output.split(separator: "\n").count == 1)
    }

    @Test func verifyMismatchExitsTwo() throws {
        let path = NSTemporaryDirectory() + "/imgtool-verify-\(getpid())-x"
        #expect(FileManager.default.createFile(atPath: path, contents: Data("x".utf8)))
        defer { try? FileManager.default.removeItem(atPath: path) }

        let result = try runImgtool(["verify", path, "--sha256", Self.emptyHash])

        #expect(result.status == 2)
        #expect(result.error.contains("expected SHA-256 \(Self.emptyHash), got "))
    }

    @Test func fetchURLWithoutHashIsRejected() throws {
        let result = try runImgtool(["fetch", "http://127.0.0.1:9/x.img.gz"])
        #expect(result.status == 64)
        #expect(result.error.contains("no expected SHA-256 for http://127.0.0.1:9/x.img.gz"))
    }

    @Test func fetchUnknownImageListsChoices() throws {
        let result = try runImgtool(["fetch", "RancherOS@v0.1"])
        #expect(result.status == 64)
        #expect(result.error.contains("unknown image 'RancherOS@v0.1'"))
        #expect(result.error.contains("RancherOS@v1.4.2"))
    }

    @Test func fetchInvalidHashIsRejected() throws {
        let result = try runImgtool(["fetch", "http://127.0.0.1:9/x", "--sha256", "abc"])
        #expect(result.status == 64)
        #expect(result.error.contains("invalid --sha256 'abc': expected 64 hex digits"))
    }

    @Test func fetchURLWithSpaceIsRejected() throws {
        let result = try runImgtool(["fetch", "http://127.0.0.1:9/my file.img", "--sha256", Self.emptyHash])
        #expect(result.status == 64)
        #expect(result.error.contains("invalid URL 'http://127.0.0.1:9/my file.img': contains a space"))
        #expect(result.error.contains("%20"))
    }

    @Test(arguments: ["f.bin%00x", "%2E%2E", "f%0Abin"])
    func fetchUnusableFileNameIsRejected(name: String) throws {
        let directory = NSTemporaryDirectory() + "/imgtool-fetch-name-\(getpid())-\(name.count)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }

        let result = try runImgtool(["fetch", "http://127.0.0.1:9/\(name)", "--sha256", Self.emptyHash, "--dir", directory])

        #expect(result.status == 64)
        #expect(result.error.contains("cannot be used as a file name: give --output PATH"))
        // Nothing was created, not even a lock file named after the part before a NUL.
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).isEmpty)
    }

    @Test func fetchTooLongURLNameIsRejected() throws {
        let directory = NSTemporaryDirectory() + "/imgtool-fetch-long-name-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let name = String(repeating: "a", count: 245)

        let result = try runImgtool(["fetch", "http://127.0.0.1:9/\(name)", "--sha256", Self.emptyHash, "--dir", directory])

        #expect(result.status == 64)
        #expect(result.error.contains("the URL's file name '\(name)' is 245 bytes long"))
        #expect(result.error.contains("give --output PATH with a shorter name"))
        #expect(!result.error.contains("ENAMETOOLONG"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).isEmpty)
    }

    @Test(arguments: ["0", "-1", "ten", "1X"])
    func fetchInvalidMaxSizeIsRejected(value: String) throws {
        let result = try runImgtool(["fetch", "http://127.0.0.1:9/x", "--sha256", Self.emptyHash, "--max-size", value])
        #expect(result.status == 64)
        #expect(result.error.contains("invalid --max-size '\(value)'"))
    }

    // The size parser's reason and fix must reach the user, not only the accepted forms.
    @Test func fetchMaxSizeNamesWhitespace() throws {
        let result = try runImgtool(["fetch", "http://127.0.0.1:9/x", "--sha256", Self.emptyHash, "--max-size", "4\tG"])
        #expect(result.status == 64)
        #expect(result.error.contains("invalid --max-size '4\\u{9}G'"))
        #expect(result.error.contains("found a tab inside"))
        #expect(result.error.contains("remove the whitespace: '4G'"))
    }

    @Test func fetchHelpNamesOptions() throws {
        let result = try runImgtool(["fetch", "--help"])
        #expect(result.status == 0)
        #expect(result.output.contains("--stall-timeout SECONDS"))
        #expect(result.output.contains("--sha256-url URL"))
        #expect(result.output.contains("--max-size SIZE"))
    }
}

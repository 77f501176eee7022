// Tests of `imgtool decompress` as a user runs it: help, exit codes, messages, progress
// lines, and SIGINT/SIGTERM in the middle of inflation.

import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A fresh directory for one test, removed by `remove()`.
private struct TestDirectory {
    let path: String

    init() throws {
        path = NSTemporaryDirectory() + "imgtool-cli-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func file(_ name: String) -> String { "\(path)/\(name)" }
    func names() throws -> [String] { try FileManager.default.contentsOfDirectory(atPath: path).sorted() }

    /// Polls every 20 ms, up to `attempts` times, until imgtool's temporary file for
    /// `name` appears; returns whether it did.
    func waitForTemporaryFile(of name: String, attempts: Int) throws -> Bool {
        for _ in 0..<attempts {
            if try names().contains(where: { $0.hasPrefix(".\(name).imgtool-") }) { return true }
            usleep(20_000)
        }
        return false
    }
    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// Runs `/bin/sh -c command` and returns its exit status.
@discardableResult
private func sh(_ command: String) throws -> Int32 {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/sh")
    process.arguments = ["-c", command]
    try process.run()
    process.waitUntilExit()
    return process.terminationStatus
}

@Suite struct DecompressCommandTests {
    @Test func helpShowsUsageOptionsAndExitCodes() throws {
        let result = try runImgtool(["decompress", "--help"])
        #expect(result.status == 0)
        #expect(result.output.hasPrefix("Usage: imgtool decompress SOURCE RAW [--threads N] [--progress auto|bar|json|none]"))
        #expect(result.output.contains("--threads N"))
        #expect(result.output.contains("73   the target already exists"))
    }

    @Test func hardLinkedLeftoverFreesNothing() throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        try sh("printf 'hello' | gzip -c > '\(directory.file("in.gz"))'")
        // A leftover of a process that no longer runs (pid_t.max is never assigned),
        // which is also the user's file under another name.
        try Data(repeating: 7, count: 4096).write(to: URL(fileURLWithPath: directory.file("user.img")))
        let leftover = directory.file(".old.raw.imgtool-\(pid_t.max)-1.tmp")
        #expect(link(directory.file("user.img"), leftover) == 0)

        let result = try sh("IMGTOOL_LOG=info '\(imgtoolBinary())' decompress --progress none '\(directory.file("in.gz"))' "
                            + "'\(directory.file("disk.raw"))' 2> '\(directory.file("log"))'")

        #expect(result == 0)
        let log = try String(contentsOfFile: directory.file("log"), encoding: .utf8)
        #expect(log.contains("(4096 bytes, not freed: the file has another name)"), "\(log)")
        #expect(!FileManager.default.fileExists(atPath: leftover))
        #expect(try Data(contentsOf: URL(fileURLWithPath: directory.file("user.img"))).count == 4096)
    }

    @Test func inflatesAndPrintsSummary() throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        try sh("printf 'hello' | gzip -c > '\(directory.file("in.gz"))'")
        let result = try runImgtool(["decompress", directory.file("in.gz"), directory.file("disk.raw"), "--progress", "none"])
        #expect(result.status == 0)
        #expect(try String(contentsOfFile: directory.file("disk.raw"), encoding: .utf8) == "hello")
        #expect(result.error.contains("wrote '\(directory.file("disk.raw"))': 5 bytes"))
    }

    @Test func summaryEscapesControlCharacters() throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        try sh("printf 'hello' | gzip -c > '\(directory.file("in.gz"))'")
        let name = "a\nimgtool: \u{1B}[2Kb.raw"
        let result = try runImgtool(["decompress", directory.file("in.gz"), directory.file(name), "--progress", "none"])
        #expect(result.status == 0, "\(result.error)")
        #expect(result.error.contains(#"wrote '\#(directory.path)/a\u{A}imgtool: \u{1B}[2Kb.raw': 5 bytes"#))
        #expect(!result.error.contains("\u{1B}"))
        #expect(result.error.split(separator: "\n").count == 1)
    }

    /// SOURCE '-' reads standard input, from a pipe (sequential) and from a redirected
    /// file (mapped, so in parallel).
    @Test func dashReadsStandardInput() throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let binary = imgtoolBinary()
        try sh("seq 1 200000 > '\(directory.file("data"))' && gzip -c '\(directory.file("data"))' > '\(directory.file("in.gz"))'")
        let piped = try sh("gzip -c '\(directory.file("data"))' | '\(binary)' decompress --progress none - '\(directory.file("piped.raw"))'")
        let redirected = try sh("'\(binary)' decompress --progress none --threads 2 - '\(directory.file("redirected.raw"))'"
                                + " < '\(directory.file("in.gz"))'")
        #expect(piped == 0)
        #expect(redirected == 0)
        let data = try Data(contentsOf: URL(fileURLWithPath: directory.file("data")))
        #expect(try Data(contentsOf: URL(fileURLWithPath: directory.file("piped.raw"))) == data)
        #expect(try Data(contentsOf: URL(fileURLWithPath: directory.file("redirected.raw"))) == data)
    }

    /// Standard input closed by the caller: the process reuses descriptor 0 before main,
    /// so '/dev/stdin' names one of imgtool's own files, which must not be read.
    @Test func dashWithClosedStandardInputRejected() throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let status = try sh("'\(imgtoolBinary())' decompress --progress none - '\(directory.file("out.raw"))'"
                            + " <&- 2> '\(directory.file("err"))'")
        let error = try String(contentsOfFile: directory.file("err"), encoding: .utf8)
        #expect(status == 64)
        #expect(error.contains("SOURCE '-' reads standard input, which is closed"), "\(error)")
        #expect(try directory.names() == ["err"])
    }

    /// Linux cannot open a socket through /dev/stdin (ENXIO), so a socket on standard
    /// input gets a usage error that names the cause, not "No such device or address".
    @Test func dashWithSocketStandardInputRejected() throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        var pair: [Int32] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair) == 0)
        defer { close(pair[1]) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: imgtoolBinary())
        process.arguments = ["decompress", "--progress", "none", "-", directory.file("out.raw")]
        process.standardInput = FileHandle(fileDescriptor: pair[0], closeOnDealloc: true)
        let errors = Pipe()
        process.standardError = errors
        try process.run()
        let error = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 64)
        #expect(error.contains("SOURCE '-' reads standard input, which is a socket"), "\(error)")
        #expect(try directory.names() == [])
    }

    /// /dev/stdin reopens a regular file from its start, so a file the caller already
    /// read from is rejected instead of decoded from byte 0.
    @Test func dashWithPartlyReadFileRejected() throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let binary = imgtoolBinary()
        try sh("seq 1 1000 | gzip -c > '\(directory.file("in.gz"))'")
        let status = try sh("( head -c 10 > /dev/null; '\(binary)' decompress --progress none - "
                            + "'\(directory.file("out.raw"))' 2> '\(directory.file("err.txt"))' ) < '\(directory.file("in.gz"))'")
        let error = try String(contentsOfFile: directory.file("err.txt"), encoding: .utf8)
        #expect(status == 64)
        #expect(error.contains("a file already read up to offset 10"), "\(error)")
        #expect(try directory.names() == ["err.txt", "in.gz"])
    }

    /// '-' is standard input for SOURCE, so as an index path it would silently name a
    /// file called '-' in the current directory.
    @Test(arguments: ["--index", "--index-out"])
    func dashAsIndexPathRejected(option: String) throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        try sh("printf 'hello' | gzip -c > '\(directory.file("in.gz"))'")
        let status = try sh("cd '\(directory.path)' && '\(imgtoolBinary())' decompress --progress none \(option) - "
                            + "in.gz out.raw 2> err")
        let error = try String(contentsOfFile: directory.file("err"), encoding: .utf8)
        #expect(status == 64)
        #expect(error.contains("\(option) '-'"), "\(error)")
        #expect(error.contains("./-"), "\(error)")
        #expect(try directory.names() == ["err", "in.gz"])
    }

    @Test func existingTargetExits73Unchanged() throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        try sh("printf 'hello' | gzip -c > '\(directory.file("in.gz"))'")
        let original = Data(repeating: 0xff, count: 4096)
        try original.write(to: URL(fileURLWithPath: directory.file("disk.raw")))
        let result = try runImgtool(["decompress", directory.file("in.gz"), directory.file("disk.raw")])
        #expect(result.status == 73)
        #expect(result.error.contains("already exists (regular file); it was not modified"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: directory.file("disk.raw"))) == original)
        #expect(try directory.names() == ["disk.raw", "in.gz"])
    }

    /// A run killed between publishing RAW and publishing its --index-out file leaves RAW
    /// alone. Removing the index after a full run gives that state: the rerun names
    /// `imgtool index`, which writes the same index bytes.
    @Test func rawWithoutIndexNamesIndexCommand() throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let source = directory.file("in.gz"), raw = directory.file("disk.raw"), index = directory.file("disk.gzidx")
        try sh("seq 1 3000000 | gzip -c > '\(source)'")
        let first = try runImgtool(["decompress", source, raw, "--index-out", index, "--progress", "none"])
        #expect(first.status == 0, "\(first.error)")
        let written = try Data(contentsOf: URL(fileURLWithPath: index))
        try FileManager.default.removeItem(atPath: index)
        let rawBefore = try Data(contentsOf: URL(fileURLWithPath: raw))

        let rerun = try runImgtool(["decompress", source, raw, "--index-out", index, "--progress", "none"])

        #expect(rerun.status == 73)
        #expect(rerun.error.contains("'\(raw)' already exists (regular file); it was not modified, and the --index-out file '\(index)' does not exist"))
        #expect(rerun.error.contains("if an earlier run with --index-out was stopped after it published RAW, RAW is complete"))
        #expect(rerun.error.hasSuffix(": imgtool index \(source) -o \(index)\n"), "\(rerun.error)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: raw)) == rawBefore)
        #expect(try directory.names() == ["disk.raw", "in.gz"])

        let indexed = try runImgtool(["index", source, "-o", index])
        #expect(indexed.status == 0, "\(indexed.error)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: index)) == written)
    }

    /// Only a regular file can be RAW published by a stopped run, and only a gzip SOURCE
    /// has a seek index, so a link, a directory or an xz SOURCE gets the plain hint. A
    /// FIFO SOURCE is not opened to find its format, which would wait for a writer.
    @Test(arguments: ["link", "directory", "xz", "fifo"])
    func rawThatNoRunLeftKeepsPlainHint(_ form: String) throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let raw = directory.file("disk.raw")
        let source = directory.file(form == "xz" ? "in.xz" : "in.gz")
        if form == "fifo" {
            #expect(mkfifo(source, 0o600) == 0)
        } else {
            try sh("printf 'hello' | \(form == "xz" ? "xz" : "gzip") -c > '\(source)'")
        }
        switch form {
        case "link": try FileManager.default.createSymbolicLink(atPath: raw, withDestinationPath: "missing")
        case "directory": try FileManager.default.createDirectory(atPath: raw, withIntermediateDirectories: false)
        default: try Data([1]).write(to: URL(fileURLWithPath: raw))
        }
        let result = try runImgtool(["decompress", source, raw, "--index-out", directory.file("disk.gzidx"), "--progress", "none"])
        #expect(result.status == 73)
        #expect(result.error.contains("hint: choose a path that does not exist yet"), "\(result.error)")
        #expect(!result.error.contains("imgtool index"), "\(result.error)")
    }

    /// The hint ends with a command to paste, so a path with a space or a quote in it is
    /// quoted for the shell.
    @Test func rawWithoutIndexQuotesPathsInHint() throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let source = directory.file("my in.gz"), index = directory.file("it's.gzidx")
        try sh("printf 'hello' | gzip -c > '\(source)'")
        try Data([1]).write(to: URL(fileURLWithPath: directory.file("disk.raw")))
        let result = try runImgtool(["decompress", source, directory.file("disk.raw"), "--index-out", index, "--progress", "none"])
        #expect(result.status == 73)
        #expect(result.error.hasSuffix(": imgtool index '\(source)' -o '\(directory.path)/it'\"'\"'s.gzidx'\n"), "\(result.error)")
    }

    @Test func existingRawAndIndexKeepPlainHint() throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        try sh("printf 'hello' | gzip -c > '\(directory.file("in.gz"))'")
        try Data([1]).write(to: URL(fileURLWithPath: directory.file("disk.raw")))
        try Data([2]).write(to: URL(fileURLWithPath: directory.file("disk.gzidx")))
        let result = try runImgtool(["decompress", directory.file("in.gz"), directory.file("disk.raw"),
                                     "--index-out", directory.file("disk.gzidx"), "--progress", "none"])
        #expect(result.status == 73)
        #expect(result.error.contains("hint: choose a path that does not exist yet"))
        #expect(!result.error.contains("imgtool index"))
    }

    @Test func indexOutputNamingRawExits64() throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        try sh("printf 'hello' | gzip -c > '\(directory.file("in.gz"))'")
        let result = try runImgtool(["decompress", directory.file("in.gz"), directory.file("disk.raw"),
                                     "--index-out", "\(directory.path)/./disk.raw", "--progress", "none"])
        #expect(result.status == 64)
        #expect(result.error.contains("invalid --index-out '\(directory.path)/./disk.raw': it names the same file as RAW"))
        #expect(result.error.contains("hint: give the index a path of its own"))
        #expect(try directory.names() == ["in.gz"])
    }

    @Test func corruptInputExits2WithOffset() throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        // A gzip file cut to 15 bytes ends inside its deflate data.
        try sh("head -c 100000 /dev/urandom | gzip -c | head -c 15 > '\(directory.file("cut.gz"))'")
        let result = try runImgtool(["decompress", directory.file("cut.gz"), directory.file("disk.raw")])
        #expect(result.status == 2)
        #expect(result.error.contains("the file ends at offset 15"))
        #expect(result.error.contains("imgtool: hint: the file is incomplete"))
        #expect(try directory.names() == ["cut.gz"])
    }

    /// Stray bytes after 1 MiB of xz stream padding, from a file and from a pipe: the
    /// message names the size to cut the file to, and `truncate -s` to that size gives a
    /// file that inflates to the original data.
    @Test(arguments: [false, true])
    func xzStrayBytesAfterLongPaddingCut(fromPipe: Bool) throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let binary = imgtoolBinary()
        let image = directory.file("image.xz")
        try sh("seq 1 100000 > '\(directory.file("data"))' && xz -c '\(directory.file("data"))' > '\(image)'")
        let streamSize = try #require(try FileManager.default.attributesOfItem(atPath: image)[.size] as? Int)
        try sh("head -c 1048576 /dev/zero >> '\(image)' && printf 'GARBAGE-GARBAGE' >> '\(image)'")

        let errorPath = directory.file("err")
        let status = fromPipe
            ? try sh("cat '\(image)' | '\(binary)' decompress --progress none - '\(directory.file("piped.raw"))' 2> '\(errorPath)'")
            : try sh("'\(binary)' decompress --progress none '\(image)' '\(directory.file("file.raw"))' 2> '\(errorPath)'")
        let error = try String(contentsOfFile: errorPath, encoding: .utf8)
        #expect(status == 2, "\(error)")
        #expect(error.contains("at offset \(streamSize + 1_048_576)"), "\(error)")
        #expect(error.contains("cut it to \(streamSize) bytes (truncate -s)"), "\(error)")

        #expect(try sh("truncate -s \(streamSize) '\(image)'") == 0)
        let result = try runImgtool(["decompress", "--progress", "none", image, directory.file("disk.raw")])
        #expect(result.status == 0, "\(result.error)")
        let data = try Data(contentsOf: URL(fileURLWithPath: directory.file("data")))
        #expect(try Data(contentsOf: URL(fileURLWithPath: directory.file("disk.raw"))) == data)
    }

    @Test func unsupportedFormatExits2() throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        try sh("printf 'plain text' > '\(directory.file("image.gz"))'")
        let result = try runImgtool(["decompress", directory.file("image.gz"), directory.file("disk.raw")])
        #expect(result.status == 2)
        #expect(result.error.contains("not gzip or xz: found first bytes 70 6c 61 69 6e 20"))
    }

    @Test func missingSourceExits1() throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let result = try runImgtool(["decompress", directory.file("missing.gz"), directory.file("disk.raw")])
        #expect(result.status == 1)
        #expect(result.error.contains("open '\(directory.file("missing.gz"))' failed"))
        #expect(try directory.names() == [])
    }

    @Test(arguments: [["--threads", "0"], ["--progress", "fancy"], ["only-one-argument"]])
    func invalidArgumentsExit64(arguments: [String]) throws {
        let result = try runImgtool(["decompress"] + (arguments.count == 1 ? arguments : ["a.gz", "b.raw"] + arguments))
        #expect(result.status == 64)
    }

    @Test func jsonProgressEndsAtTotal() throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        try sh("head -c 3000000 /dev/urandom | gzip -1 -c > '\(directory.file("in.gz"))'")
        let size = try FileManager.default.attributesOfItem(atPath: directory.file("in.gz"))[.size] as! Int
        let result = try runImgtool(["decompress", directory.file("in.gz"), directory.file("disk.raw"), "--progress", "json"])
        #expect(result.status == 0)
        let lines = result.output.split(separator: "\n")
        let last = try #require(lines.last)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any])
        #expect(object["completed"] as? Int == size)
        #expect(object["total"] as? Int == size)
        #expect(object["written"] as? Int == 3_000_000)
        #expect(object["step"] as? String == "inflate")
    }

    // SIGHUP comes from a closed terminal or a dropped SSH session.
    @Test(arguments: [SIGINT, SIGTERM, SIGHUP])
    func signalMidInflationLeavesNoFile(signalNumber: Int32) throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        // The source is a FIFO fed in two halves with a pause between, so the signal
        // arrives while the temporary file exists and decoding has started.
        try sh("head -c 6000000 /dev/urandom | gzip -1 -c > '\(directory.file("in.gz"))'"
               + " && head -c 3000000 '\(directory.file("in.gz"))' > '\(directory.file("first"))'"
               + " && tail -c +3000001 '\(directory.file("in.gz"))' > '\(directory.file("second"))'"
               + " && mkfifo '\(directory.file("fifo"))'")
        let feeder = Process()
        feeder.executableURL = URL(fileURLWithPath: "/bin/sh")
        feeder.arguments = ["-c", "(cat first; sleep 1; cat second) > fifo 2>/dev/null"]
        feeder.currentDirectoryURL = URL(fileURLWithPath: directory.path)
        try feeder.run()

        let imgtool = Process()
        imgtool.executableURL = URL(fileURLWithPath: imgtoolBinary())
        imgtool.arguments = ["decompress", directory.file("fifo"), directory.file("disk.raw"), "--progress", "none"]
        imgtool.standardError = FileHandle.nullDevice
        try imgtool.run()

        #expect(try directory.waitForTemporaryFile(of: "disk.raw", attempts: 100))
        kill(imgtool.processIdentifier, signalNumber)
        imgtool.waitUntilExit()
        feeder.waitUntilExit()

        #expect(imgtool.terminationStatus == 128 + signalNumber)
        #expect(try directory.names() == ["fifo", "first", "in.gz", "second"])
    }

    // Ctrl-C reaches every process of a pipeline, so the writer of the pipe usually stops
    // too and the input ends early. The exit is still the signal's, not "truncated".
    @Test func sigintWithPipeWriterStoppedExits130() throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        try sh("seq 1 400000 | gzip -1 -c | head -c 100000 > '\(directory.file("part.gz"))'")
        let input = Pipe()
        let imgtool = Process()
        imgtool.executableURL = URL(fileURLWithPath: imgtoolBinary())
        imgtool.arguments = ["decompress", "--progress", "none", "-", directory.file("disk.raw")]
        imgtool.standardInput = input
        let errors = Pipe()
        imgtool.standardError = errors
        try imgtool.run()
        try input.fileHandleForWriting.write(contentsOf: try Data(contentsOf: URL(fileURLWithPath: directory.file("part.gz"))))

        #expect(try directory.waitForTemporaryFile(of: "disk.raw", attempts: 250))
        kill(imgtool.processIdentifier, SIGINT)
        // The signal's handler runs on a Dispatch queue, and the pipe's writer stops a
        // moment after the signal, as a shell's pipeline does.
        usleep(200_000)
        try input.fileHandleForWriting.close()
        let error = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        imgtool.waitUntilExit()

        #expect(imgtool.terminationStatus == 128 + SIGINT, "\(error)")
        #expect(!error.contains("truncated"), "\(error)")
        #expect(try directory.names() == ["part.gz"])
    }

    // imgtool's SIGBUS handler maps zeros over the pages a mapped input lost. A SIGBUS
    // that `kill` sends is no such fault and must end the process, also when the Swift
    // runtime's crash handler, which prints a backtrace and returns, ran before.
    @Test func sentSIGBUSEndsMappedDecode() throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let source = directory.file("in.gz")
        try sh("seq 1 40000000 | gzip -1 -c > '\(source)'")

        let imgtool = Process()
        imgtool.executableURL = URL(fileURLWithPath: imgtoolBinary())
        imgtool.arguments = ["decompress", source, directory.file("disk.raw"), "--threads", "1", "--progress", "none"]
        imgtool.standardError = FileHandle.nullDevice
        try imgtool.run()

        // The guard is installed when the input is mapped.
        var mapped = false
        for _ in 0..<2000 where !mapped && imgtool.isRunning {
            let maps = (try? String(contentsOfFile: "/proc/\(imgtool.processIdentifier)/maps", encoding: .utf8)) ?? ""
            mapped = maps.contains(source)
            if !mapped { usleep(1000) }
        }
        #expect(mapped, "the decode ended before its input was seen mapped")
        // The map is registered with the guard just after mmap(2) returns.
        usleep(50_000)
        kill(imgtool.processIdentifier, SIGBUS)
        imgtool.waitUntilExit()

        #expect(imgtool.terminationReason == .uncaughtSignal)
        #expect(imgtool.terminationStatus == SIGBUS)
    }
}

@Suite struct NonUTF8ArgumentTests {
    @Test func latin1TargetNameIsRejected() throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        try sh("printf 'hello' | gzip -c > '\(directory.file("in.gz"))'")
        // Byte e9 is 'é' in Latin-1 and invalid on its own in UTF-8. Swift decodes it as
        // U+FFFD, so inflating would create a file under another name than the one given.
        let status = try sh("'\(imgtoolBinary())' decompress '\(directory.file("in.gz"))' "
            + "\"$(printf '\(directory.path)/\\351.raw')\" --progress none 2> '\(directory.file("error.txt"))'")
        #expect(status == 64)
        #expect(try directory.names() == ["error.txt", "in.gz"])
        let message = try String(contentsOfFile: directory.file("error.txt"), encoding: .utf8)
        #expect(message.contains("not valid UTF-8"))
    }
}

@Suite struct ClosedOutputTests {
    @Test func closedProgressReaderStillInflates() throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        try sh("head -c 8000000 /dev/urandom | gzip -1 -c > '\(directory.file("in.gz"))'")
        // Like `imgtool decompress ... --progress json | head -1`: the reader of the JSON
        // lines is gone before the first line, so every write gets EPIPE.
        let process = Process()
        process.executableURL = URL(fileURLWithPath: imgtoolBinary())
        process.arguments = ["decompress", directory.file("in.gz"), directory.file("disk.raw"), "--progress", "json"]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        try output.fileHandleForReading.close()
        process.waitUntilExit()
        #expect(process.terminationReason == .exit)
        #expect(process.terminationStatus == 0)
        #expect(try directory.names() == ["disk.raw", "in.gz"])
    }
}

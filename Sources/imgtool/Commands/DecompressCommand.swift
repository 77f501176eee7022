// imgtool decompress SOURCE RAW: inflate a gzip or xz image into a new sparse RAW file.

import Foundation
import ImageCore

enum DecompressCommand: Command {
    static let name = "decompress"
    static let summary = "Inflate a gzip or xz image into a new sparse RAW file."
    static let help = """
    Usage: imgtool decompress SOURCE RAW [--threads N] [--progress auto|bar|json|none]
                              [--index FILE | --index-out FILE]

    Inflates SOURCE, a gzip or xz file (detected from its content, not its name), into
    RAW, a new file. SOURCE '-' reads standard input, for example a pipe from a
    download; a pipe is decoded in one pass on one thread. Zero blocks are left as
    holes, so RAW allocates disk space only for its data. RAW must not exist: an
    existing file, link or device is never modified.
    The output is written to a temporary file beside RAW and renamed to RAW only when
    complete; on any error, SIGINT, SIGTERM or SIGHUP the temporary file is removed.
    An --index-out file is written the same way and renamed right after RAW; when that
    fails, RAW is removed again, so neither file stays after a failed command. A run
    killed between the two renames leaves a complete RAW without its index, and a rerun
    then exits 73 with a hint: 'imgtool index SOURCE -o FILE' writes the same index.

    gzip: every member is decoded (concatenated and BGZF files included) and each
    member's CRC-32 and length are checked. Zero bytes after the last member are
    accepted; other trailing data is ignored with a warning.
    xz: every stream is decoded and its integrity checks verified.

    Options:
      --threads N        decoding threads, from 1 to 256 (default: the number of CPUs).
                         With more than one, a gzip file is split into chunks decoded
                         in parallel, with runs of zeros kept as holes: at access
                         points with an index, at members for BGZF, and otherwise at
                         deflate blocks found by searching (see docs/PARALLEL.md).
                         One thread decodes a single gzip stream as one chunk, also
                         with holes for zero runs, and BGZF member by member.
                         Memory: up to about 120 MiB per thread (2 threads measured),
                         about 40 MiB with one thread, not counting the pages of
                         SOURCE, which is memory-mapped.
                         The output is always identical to sequential decoding.
      --index FILE       a seek index of SOURCE (GZIDX, from 'imgtool index' or
                         'rapidgzip --export-index'): each access point starts a chunk;
                         a pipe is decoded without it, with a warning
      --index-out FILE   also write a seek index of SOURCE to FILE, which must not
                         exist; decoding then runs on one thread in a single pass,
                         and SOURCE must be a regular file
      --progress MODE    auto (a bar when standard error is a terminal, the default),
                         bar (a bar with rate and time left on standard error),
                         json (one JSON object per line on standard output: bytes read
                         of the total, bytes written, bytes per second, seconds left),
                         none
      -h, --help         show this help

    On success a summary line goes to standard error: bytes written, bytes allocated,
    the time taken and any warning.

    \(exitCodeHelp)
    """

    static func run(_ arguments: [String], context: CommandContext) async throws -> Int32 {
        let parsed = try Arguments(arguments, options: ["--threads", "--progress", "--index", "--index-out"])
        try parsed.requirePositionals(2...2, names: "SOURCE RAW")
        let threads = try parsed.integer("--threads", in: 1...256) ?? ProcessInfo.processInfo.activeProcessorCount
        let mode = try ProgressMode.parse(parsed.value("--progress"))
        var source = parsed.positionals[0]
        let destination = parsed.positionals[1]
        if source == "-" {
            if let problem = standardInputProblem() {
                throw UsageError(message: "SOURCE '-' reads standard input, which is \(problem)")
            }
            source = "/dev/stdin"
        }

        // SOURCE '-' is standard input, and standard output carries --progress json, so an
        // index path '-' would only name a file called '-' by surprise.
        for option in ["--index", "--index-out"] where parsed.value(option) == "-" {
            throw UsageError(message: "\(option) '-': an index is read from and written to files only, "
                             + "not standard input or output; give a path, or './-' for a file named '-'")
        }
        if parsed.value("--index") != nil, parsed.value("--index-out") != nil {
            throw UsageError(message: "--index and --index-out cannot be combined: an index is either used or written")
        }
        let index = try parsed.value("--index").map { try GzipIndex(contentsOf: $0) }
        // Decompressor rejects an existing --index-out file before it decodes anything.
        let indexOutput = parsed.value("--index-out")

        let display = ProgressDisplay(mode)
        var options = DecompressOptions(threads: threads, progress: display.handler, cancellation: context.cancellation,
                                        index: index, indexOutput: indexOutput, splitSingleStream: true)
        options.indexPath = parsed.value("--index")
        let summary: DecompressSummary
        do {
            summary = try Decompressor.decompress(source: source, destination: destination, options: options)
        } catch let error as GzipIndexError {
            display.finish()
            throw error.naming(indexPath: parsed.value("--index") ?? error.path)
        } catch let error as InflateError where index != nil && error.category == .invalidData {
            display.finish()
            throw IndexedInflateError(indexPath: parsed.value("--index")!, underlying: error)
        } catch let error as TargetExistsError
                    where error.path == destination
                    && indexOutput.map({ Self.mayLackOnlyIndex(raw: destination, source: source, indexOutput: $0) }) == true {
            display.finish()
            throw RawWithoutIndexError(existing: error, source: parsed.positionals[0], indexOutput: indexOutput!)
        } catch {
            display.finish()
            throw error
        }
        display.finish()

        var line = "imgtool: wrote '\(escapingControlCharacters(destination))': \(summary.bytesWritten) bytes (\(formatBytes(summary.bytesWritten)))"
        if let allocated = summary.allocatedBytes { line += ", \(formatBytes(allocated)) allocated" }
        line += String(format: ", %@ in %.2f s", summary.format.rawValue, summary.elapsed)
        try? FileHandle.standardError.write(contentsOf: Data((line + "\n").utf8))
        return 0
    }

    /// Returns whether the existing `raw` may be the RAW of an earlier run with --index-out
    /// that was stopped before it published the index. Such a run renames a regular file
    /// to RAW, writes an index only for a gzip SOURCE, and leaves nothing, not even a
    /// dangling link, at the --index-out path.
    private static func mayLackOnlyIndex(raw: String, source: String, indexOutput: String) -> Bool {
        guard let rawStatus = try? linkStatus(raw), rawStatus.isRegularFile else { return false }
        guard isMissing(indexOutput) else { return false }
        // Only a regular SOURCE is opened: opening a FIFO would wait for a writer, and the
        // first bytes of standard input belong to the decoder.
        var sourceStatus = stat()
        guard source != "/dev/stdin", stat(source, &sourceStatus) == 0, (sourceStatus.st_mode & S_IFMT) == S_IFREG,
              let handle = FileHandle(forReadingAtPath: source) else { return false }
        defer { try? handle.close() }
        guard let head = try? handle.read(upToCount: CompressionFormat.detectionLength) else { return false }
        return CompressionFormat.detect(Array(head)) == .gzip
    }

    /// Returns whether nothing, not even a dangling link, exists at `path`.
    private static func isMissing(_ path: String) -> Bool {
        do {
            return try linkStatus(path) == nil
        } catch {
            return false
        }
    }

    /// Returns what makes standard input unusable as SOURCE '-', with the fix, or nil.
    private static func standardInputProblem() -> String? {
        let remedy = "pipe a gzip or xz file into imgtool, or give the file's path"
        if isatty(STDIN_FILENO) != 0 {
            return "a terminal; " + remedy
        }
        // execve closes every descriptor with FD_CLOEXEC, so an inherited standard input
        // never has it. A descriptor 0 with the flag was opened by this process (Dispatch
        // opens its epoll descriptor before main) after the caller closed standard input.
        let flags = fcntl(STDIN_FILENO, F_GETFD)
        if flags == -1 || flags & FD_CLOEXEC != 0 {
            return "closed; " + remedy
        }
        var info = stat()
        guard fstat(STDIN_FILENO, &info) == 0 else { return nil }
        if info.st_mode & S_IFMT == S_IFSOCK {
            return "a socket, which Linux cannot open as /dev/stdin (ENXIO); pipe it through cat "
                + "(... | cat | imgtool decompress - RAW), or give the file's path"
        }
        // /dev/stdin opens a regular file again from its start, so bytes the caller
        // already read from standard input would be decoded too.
        let offset = lseek(STDIN_FILENO, 0, SEEK_CUR)
        if info.st_mode & S_IFMT == S_IFREG, offset > 0 {
            return "a file already read up to offset \(offset), and imgtool would read it again from its start; "
                + "pipe the rest through cat (... | cat | imgtool decompress - RAW), or give the file's path"
        }
        return nil
    }
}

/// RAW exists and the --index-out file does not. A run with --index-out publishes RAW
/// first and the index right after it, so a run killed between the two leaves this.
struct RawWithoutIndexError: ImageError {
    var existing: TargetExistsError
    var source: String
    var indexOutput: String

    var category: FailureCategory { existing.category }
    var description: String { "\(existing.description), and the --index-out file '\(indexOutput)' does not exist" }
    var remedy: String? {
        "choose a RAW path that does not exist yet; or, if an earlier run with --index-out was stopped after it "
            + "published RAW, RAW is complete and this command writes its index: "
            + "imgtool index \(quotedForShell(source)) -o \(quotedForShell(indexOutput))"
    }
}

/// Returns `argument` as a POSIX shell word: as it is when it contains only characters
/// that no shell treats specially, otherwise in single quotes, with each ' written
/// '"'"'. That form has no backslash, which `report` would double.
func quotedForShell(_ argument: String) -> String {
    let plain = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./:@%+=,")
    if !argument.isEmpty, argument.allSatisfy(plain.contains) { return argument }
    return "'" + argument.replacingOccurrences(of: "'", with: "'\"'\"'") + "'"
}

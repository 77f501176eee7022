// Decompressor: the entry points that turn a gzip or xz input into a RAW file.
//
// Three levels, each built on the next:
// - `decompress(source:destination:options:)` creates the RAW file: it refuses an
//   existing target, writes a `TemporaryFile` in the target's directory and publishes it
//   without replacing anything. Any error or cancellation removes the temporary file,
//   and temporary files for the same target left by killed processes are removed.
//   With `indexOutput` the seek index goes through a second `TemporaryFile`, published
//   only after the RAW file. If publishing the index fails, the RAW file is removed again.
// - `decompress(input:into:options:)` fills an already created `TemporaryFile` and does
//   not publish it, so a caller can publish later (for example only after the
//   download's SHA-256 has matched). It starts over when the input restarts.
// - `decode(input:into:options:)` decodes into any `ExtentSink`.
// The two lower levels write no index file but return the index in the summary.
//
// The format comes from the content: gzip (1f 8b) or xz (fd 37 7a 58 5a 00).

import Foundation

/// How to inflate.
public struct DecompressOptions: Sendable {
    /// Decoding threads. xz uses up to this many. A gzip file goes to
    /// `ParallelGzipInflater` with `index` or `indexOutput`, when it is BGZF, and
    /// whenever `splitSingleStream` is set. Otherwise one thread decodes it, and the
    /// writer thread runs beside it.
    public var threads: Int
    /// Decode a single gzip stream from a regular file with `ParallelGzipInflater`: in
    /// speculative chunks on `threads` threads, or as one chunk on one thread. One chunk
    /// keeps zero runs as holes instead of producing them, which halved the time on the
    /// realistic test image (docs/BENCHMARKS.md). Off by default, because the streams of
    /// speculative chunks hold up to 64 MiB per thread. The input is memory-mapped; a file
    /// that another process truncates meanwhile fails with `InflateError.inputShrank`
    /// (see `MappedFile`). A file whose file system rejects the map with ENODEV goes to
    /// the sequential decoder instead. `imgtool decompress`, `vm.decompress_gzip` and
    /// provisioning from a downloaded file turn it on.
    public var splitSingleStream: Bool
    /// Receives progress: compressed bytes consumed of the input's size, and bytes written.
    public var progress: ProgressHandler?
    /// Stops decoding between pieces of work; the caller then sees `CancelledError`.
    public var cancellation: CancellationToken?
    /// The deflate implementation of the sequential gzip decoder. The parallel decoder
    /// picks its own: ISA-L, the Swift decoder for zero runs, libdeflate for BGZF.
    public var engine: DeflateEngine
    /// A seek index of a gzip source: its access points become parallel chunks.
    public var index: GzipIndex?
    /// The file `index` was read from, for error messages.
    public var indexPath: String?
    /// Where to write a seek index of a gzip source, built while decoding in one pass
    /// on one thread. `decompress(source:destination:options:)` publishes it only after
    /// the RAW file and never replaces an existing file. The other entry points only
    /// build the index, return it in `DecompressSummary.index` and write no file.
    public var indexOutput: String?
    /// Whether `decode` logs each of `DecompressSummary.warnings` at warning level. The
    /// service turns it off and logs them itself, with the job id, which ImageCore does
    /// not know.
    public var logsWarnings = true

    public init(threads: Int = 1, progress: ProgressHandler? = nil, cancellation: CancellationToken? = nil,
                engine: DeflateEngine = .isal, index: GzipIndex? = nil, indexOutput: String? = nil,
                splitSingleStream: Bool = false) {
        self.threads = threads
        self.splitSingleStream = splitSingleStream
        self.progress = progress
        self.cancellation = cancellation
        self.engine = engine
        self.index = index
        self.indexOutput = indexOutput
    }
}

/// The result of one inflation.
public struct DecompressSummary: Sendable, Equatable {
    public var format: CompressionFormat
    /// Compressed bytes read from the input, trailing data included.
    public var compressedBytesRead: Int64
    /// The size of the output in bytes, zeros included.
    public var bytesWritten: Int64
    /// Bytes allocated on disk for the output (`st_blocks * 512`), or nil when the output
    /// is not a file this call finished.
    public var allocatedBytes: Int64?
    /// gzip members decoded (0 for xz).
    public var members: Int
    /// Problems that did not stop decoding, for example trailing data after the last gzip
    /// member. Each was also logged at warning level, unless `DecompressOptions.logsWarnings`
    /// was off.
    public var warnings: [String]
    /// Seconds from start to the end of writing.
    public var elapsed: Double
    /// The seek index built because `DecompressOptions.indexOutput` was set, or nil.
    public var index: GzipIndex? = nil
}

public enum Decompressor {
    /// Inflates `source` into a new RAW file at `destination`, and writes the seek index
    /// to a new file at `options.indexOutput` when it is set.
    /// - Throws: `TargetExistsError` when anything exists at `destination` or at
    ///   `options.indexOutput`, which stays untouched. `InvalidArgumentError` when
    ///   `options.indexOutput` names the same file as `destination`. `InflateError` for
    ///   invalid input, `SystemError` for I/O failures, `CancelledError` when cancelled.
    ///   On any error no file appears at `destination` or at `options.indexOutput`.
    public static func decompress(source: String, destination: String, options: DecompressOptions) throws -> DecompressSummary {
        // A run killed by SIGKILL could not remove its temporary files, and the RAW one can
        // be gigabytes in size. They go before the new files are created, because a file system that
        // they filled may have no room left even for an empty file.
        for target in [destination] + (options.indexOutput.map { [$0] } ?? []) {
            TemporaryFile.removeStale(inDirectoryOf: target, subsystem: "inflate")
        }
        // The targets next: opening a FIFO source waits for its writer, and an existing
        // target must be rejected at once.
        let file = try TemporaryFile(for: destination)
        let indexFile: TemporaryFile?
        do {
            indexFile = try options.indexOutput.map { try TemporaryFile(for: $0) }
        } catch {
            file.discard()
            throw error
        }
        // Publishing the index under RAW's name could only fail, after all the decoding.
        if let indexFile, indexFile.hasSameFinalPath(as: file) {
            indexFile.discard()
            file.discard()
            throw InvalidArgumentError(argument: "--index-out", value: indexFile.finalPath,
                                       reason: "it names the same file as RAW '\(destination)'",
                                       remedy: "give the index a path of its own, for example '\(destination).gzidx'")
        }
        do {
            // Opening a FIFO waits for its writer, and the data it sends would be lost.
            if let indexOutput = options.indexOutput, let status = try? followedStatus(source), !status.isRegularFile {
                throw sourceNotRegularError(indexOutput: indexOutput, source: source)
            }
            let input = try FileInput(path: source)
            defer { input.close() }
            let summary = try decompress(input: input, into: file, options: options)
            if let indexFile {
                // `decode` builds an index whenever `indexOutput` is set, or throws.
                guard let index = summary.index else {
                    preconditionFailure("Bug in imgtool: no seek index was built for '\(indexFile.finalPath)'")
                }
                try index.write(into: indexFile)
                // Flushed now, so that publishing it right after the RAW file is quick.
                do {
                    try indexFile.descriptor.sync()
                } catch {
                    throw SystemError("fsync", path: indexFile.finalPath, errno: error)
                }
            }
            // A signal during the last piece or the fsyncs leaves no file either.
            try options.cancellation?.check("inflate")
            try file.publish(cancellation: options.cancellation, operation: "inflate")
            // NOTE: a process killed between the two renames (SIGKILL, or the forced exit
            // after a second SIGINT) leaves the RAW file without its index. RAW goes
            // first on purpose: a complete RAW that lacks its index can be indexed with
            // `imgtool index`, while an index published first would stay behind alone,
            // look like a finished run, and make a rerun fail on the existing index.
            if let indexFile {
                do {
                    try indexFile.publish(cancellation: options.cancellation, operation: "inflate")
                } catch {
                    // A failed directory fsync leaves the index published. Without its
                    // index the command failed, so the RAW file goes too.
                    indexFile.withdraw()
                    file.withdraw()
                    throw error
                }
                Log.info("inflate", "published '\(indexFile.finalPath)': seek index with \(summary.index?.points.count ?? 0) points")
            }
            Log.info("inflate", "published '\(destination)': \(summary.bytesWritten) bytes, \(summary.allocatedBytes ?? 0) allocated")
            return summary
        } catch {
            file.discard()
            indexFile?.discard()
            // Ctrl-C stops every process of a pipeline, so a pipe's writer usually ends with
            // imgtool and the input looks truncated. The cancellation is the cause to report.
            if let cancellation = options.cancellation, cancellation.isCancelled, !(error is CancelledError) {
                Log.info("inflate", "cancelled; the input failed meanwhile: \(error)")
                throw CancelledError("inflate")
            }
            throw error
        }
    }

    /// Inflates `input` into `file`, which must be empty, and leaves it unpublished.
    /// When `input` throws `CompressedInputRestarted`, the file is truncated to zero and
    /// decoding starts over. On error the file is left for the caller to discard.
    public static func decompress(input: any CompressedInput, into file: TemporaryFile,
                                  options: DecompressOptions) throws -> DecompressSummary {
        while true {
            let writer = try SparseFileWriter(descriptor: file.descriptor, path: file.finalPath)
            do {
                var summary = try decode(input: input, into: writer, options: options)
                try writer.finish()
                // After fsync the filesystem has allocated every block (ext4 allocates
                // lazily), so `st_blocks` is final; publishing then has nothing to flush.
                do {
                    try file.descriptor.sync()
                    summary.allocatedBytes = try file.descriptor.status().allocatedBytes
                } catch {
                    throw SystemError("fsync", path: file.temporaryPath, errno: error)
                }
                return summary
            } catch is CompressedInputRestarted {
                writer.cancel()
                Log.info("inflate", "'\(input.name)' restarted from byte 0; inflating again from the start")
                do {
                    try file.descriptor.truncate(to: 0)
                } catch {
                    throw SystemError("truncate", path: file.temporaryPath, errno: error)
                }
            } catch {
                writer.cancel()
                throw error
            }
        }
    }

    /// Returns the error for `--index-out` with a source that is no regular file: the
    /// index builder maps the whole file, so it cannot read a pipe or a FIFO.
    private static func sourceNotRegularError(indexOutput: String, source: String) -> InvalidArgumentError {
        InvalidArgumentError(argument: "--index-out", value: indexOutput,
                             reason: "'\(source)' is not a regular file, and a seek index can be built only from a regular file",
                             remedy: "save the gzip file first and decompress the saved file, or leave out --index-out")
    }

    /// Returns the status of the file `path` names, following symbolic links (`stat(2)`).
    private static func followedStatus(_ path: String) throws(Errno) -> FileStatus {
        var info = stat()
        guard stat(path, &info) == 0 else { throw Errno.current }
        return FileStatus(info)
    }

    /// Returns whether `head` starts with a BGZF member header. Its extra field gives the
    /// member's size, so members can be decoded in parallel without guessing.
    static func isBGZF(_ head: UnsafeRawBufferPointer) -> Bool {
        let header = try? GzipMemberHeader.parse(UnsafeRawBufferPointer(rebasing: head.prefix(64)), at: 0)
        return header?.bgzfMemberSize != nil
    }

    /// Returns whether a gzip file without an index that starts with `head` goes to
    /// `ParallelGzipInflater` (see `DecompressOptions.threads`). BGZF always does: even
    /// on one thread, libdeflate decoding member by member beside the writer thread is
    /// faster than ISA-L's sequential decoding.
    static func decodesInParallel(_ head: UnsafeRawBufferPointer, _ options: DecompressOptions) -> Bool {
        options.splitSingleStream || isBGZF(head)
    }

    /// Maps the gzip file `path` for `ParallelGzipInflater` or `GzipIndexBuilder`. Returns
    /// nil, and appends the reason to `warnings`, when its file system does not support
    /// `mmap` (ENODEV) and no seek index is to be built. The sequential decoder then reads
    /// the file as it reads a pipe, without the seek index in `options.index`.
    private static func mapForParallelDecode(_ path: String, options: DecompressOptions,
                                             warnings: inout [String]) throws -> MappedFile? {
        do {
            return try MappedFile(path: path)
        } catch var error as SystemError where error.errno == .noDevice {
            if let indexOutput = options.indexOutput {
                error.remedy = "building the seek index '\(indexOutput)' needs a memory map, which this file's file system "
                    + "does not support, so copy the file to a local disk and decompress the copy, or leave out --index-out"
                throw error
            }
            var message = "'\(path)': its file system does not support memory maps (mmap failed: \(error.errno)), "
                + "so it is decoded sequentially, which is slower"
            if options.index != nil {
                message += " without the seek index\(options.indexPath.map { " '\($0)'" } ?? "")"
            }
            warnings.append(message + "; copy it to a local disk to decode it faster")
            return nil
        }
    }

    /// Decodes the mapped gzip file `file` of `size` bytes into `sink` with
    /// `GzipIndexBuilder` when `options.indexOutput` is set, else with `ParallelGzipInflater`.
    private static func decodeMapped(_ file: MappedFile, size: Int64, into sink: any ExtentSink,
                                     options: DecompressOptions, started: ContinuousClock.Instant) throws -> DecompressSummary {
        let progress = ProgressReporter(step: "inflate", handler: options.progress)
        if options.indexOutput != nil {
            let (index, warnings) = try GzipIndexBuilder.build(file: file, sink: sink, cancellation: options.cancellation,
                                                               progress: progress)
            // The builder marks each member's start, and the end of the file, with a
            // point without a window.
            return DecompressSummary(format: .gzip, compressedBytesRead: index.compressedSize,
                                     bytesWritten: index.uncompressedSize, allocatedBytes: nil,
                                     members: index.points.count(where: { !$0.hasWindow }) - 1, warnings: warnings,
                                     elapsed: (ContinuousClock.now - started).seconds, index: index)
        }
        let result = try ParallelGzipInflater.decompress(file: file, into: sink, threads: options.threads,
                                                         index: options.index, cancellation: options.cancellation,
                                                         progress: progress)
        return DecompressSummary(format: .gzip, compressedBytesRead: size, bytesWritten: result.uncompressedSize,
                                 allocatedBytes: nil, members: result.members, warnings: result.warnings,
                                 elapsed: (ContinuousClock.now - started).seconds)
    }

    /// Decodes `input` into `sink`. The sink is not finished or flushed beyond the bytes
    /// handed to it, and `allocatedBytes` in the result is nil.
    public static func decode(input: any CompressedInput, into sink: any ExtentSink,
                              options: DecompressOptions) throws -> DecompressSummary {
        let started = ContinuousClock.now
        let window = InputWindow(input: input)
        _ = try window.fill(minimum: CompressionFormat.detectionLength)
        let head = Array(window.available.prefix(CompressionFormat.detectionLength))
        guard let format = CompressionFormat.detect(head) else {
            // A file shorter than the magic bytes that starts like them was cut short.
            let magics = [GzipHeader.magic, CompressionFormat.xzMagic]
            if !head.isEmpty, head.count < CompressionFormat.detectionLength,
               magics.contains(where: { $0.count > head.count && $0.starts(with: head) }) {
                throw InflateError.truncated(path: input.name, offset: Int64(head.count),
                                             context: "inside the magic bytes that start a gzip or xz file")
            }
            throw InflateError.unsupportedFormat(path: input.name, found: CompressionFormat.describeUnsupported(head))
        }

        // A seek index describes one gzip file. For any other format it would be ignored
        // without a message, and --index-out would leave no index behind.
        if format != .gzip, options.index != nil || options.indexOutput != nil {
            let option = options.index != nil ? "--index" : "--index-out"
            throw InvalidArgumentError(argument: option, value: options.indexPath ?? options.indexOutput ?? "",
                                       reason: "'\(input.name)' is \(format.rawValue), and a seek index exists only for gzip",
                                       remedy: "leave out \(option) for this file")
        }
        // The index builder maps the whole file, so it cannot read a pipe or a FIFO.
        if let indexOutput = options.indexOutput, !(input is FileInput && input.totalSize != nil) {
            throw sourceNotRegularError(indexOutput: indexOutput, source: input.name)
        }

        let output = DecodedOutput(sink: sink)
        let reporter = ProgressReporter(step: "inflate", handler: options.progress)
        let total = input.totalSize
        let reportProgress = { reporter.update(completed: window.offset, total: total, written: output.count) }
        reportProgress()
        Log.debug("inflate", "'\(input.name)': \(format.rawValue), \(total.map(String.init) ?? "unknown") bytes, engine \(options.engine.rawValue)")

        // Warnings of the sequential decode, starting with why the file could not be mapped.
        var warnings: [String] = []
        if format == .gzip, input is FileInput, let total,
           options.index != nil || options.indexOutput != nil || Self.decodesInParallel(window.available, options),
           let file = try mapForParallelDecode(input.name, options: options, warnings: &warnings) {
            let summary = try decodeMapped(file, size: total, into: sink, options: options, started: started)
            logWarnings(of: summary, options: options)
            return summary
        }

        // A stream is read once from its start, so the access points cannot be used, and
        // an index of another file would go unnoticed without this warning.
        if format == .gzip, options.index != nil, !(input is FileInput && total != nil) {
            warnings.append("'\(input.name)' is not a regular file, so it is decoded in one pass without the seek index"
                            + "\(options.indexPath.map { " '\($0)'" } ?? ""); save it to a file to decode it with the index")
        }

        var members = 0
        switch format {
        case .gzip:
            let decoder = GzipDecoder(window: window, output: output, engine: options.engine,
                                      cancellation: options.cancellation, reportProgress: reportProgress)
            let decoded = try decoder.decode()
            members = decoded.members
            warnings += decoded.warnings
        case .xz:
            let decoder = XzDecoder(window: window, output: output, threads: options.threads,
                                    cancellation: options.cancellation, reportProgress: reportProgress)
            try decoder.decode()
        }
        try output.flush()
        reporter.finish(completed: window.offset, total: total, written: output.count)

        let summary = DecompressSummary(format: format, compressedBytesRead: window.offset, bytesWritten: output.count,
                                        allocatedBytes: nil, members: members, warnings: warnings,
                                        elapsed: (ContinuousClock.now - started).seconds)
        logWarnings(of: summary, options: options)
        return summary
    }

    private static func logWarnings(of summary: DecompressSummary, options: DecompressOptions) {
        guard options.logsWarnings else { return }
        for warning in summary.warnings { Log.warning("inflate", warning) }
    }
}

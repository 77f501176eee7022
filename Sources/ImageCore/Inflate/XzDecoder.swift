// XzDecoder: xz files through liblzma's multi-threaded stream decoder.
//
// `lzma_stream_decoder_mt` decodes blocks in parallel when the encoder stored their
// compressed sizes in the block headers (`xz -T2` and later do) and falls back to one
// thread otherwise, or when `memlimit_threading` would be exceeded. With
// LZMA_CONCATENATED it decodes every stream of the file and checks stream padding, which
// must be a multiple of four zero bytes. It verifies each block's integrity check
// (CRC32, CRC64 or SHA-256). Input is fed from the window in pieces of at most its
// capacity, and liblzma copies what it keeps between calls.

import CLzma
import CZlib
#if canImport(Glibc)
import Glibc
#endif

final class XzDecoder {
    private let window: InputWindow
    private let output: DecodedOutput
    private let threads: Int
    private let cancellation: CancellationToken?
    private let reportProgress: () -> Void
    private var path: String { window.input.name }
    /// The last bytes given to liblzma, at most `recentInputSize` of them, to tell a file
    /// with bytes after its last stream from a truncated or damaged one.
    private var recentInput: [UInt8] = []
    /// The zero bytes that end the input given to liblzma so far (length 0 when the last
    /// byte is not zero), so that a run that spans several reads is counted whole.
    private var trailingZeros = ZeroRun()
    /// The latest run of at least `longZeroRunMinimum` zero bytes that ended within the
    /// last `footerSize` bytes of a read. Stream padding may be of any length, so the
    /// footer before a long run is kept here rather than in `recentInput`.
    private var longZeroRun: ZeroRun?
    /// The input offset just after the last byte given to liblzma.
    private var inputEnd: Int64 = 0
    /// The size of an xz stream footer, and of a stream header.
    private static let footerSize = 12
    /// Input bytes kept in `recentInput`: a footer, a run of fewer than
    /// `longZeroRunMinimum` zero bytes, and the stream header that liblzma reads after them.
    private static let recentInputSize = 64
    /// The shortest zero run kept in `longZeroRun`; a shorter one fits in `recentInput`
    /// together with the footer before it and the header after it.
    private static let longZeroRunMinimum = recentInputSize - 2 * footerSize

    /// Above this much memory liblzma decodes with one thread instead of failing.
    let threadingMemoryLimit: UInt64
    /// Above this much memory decoding fails with `InflateError.memoryLimitExceeded`.
    let memoryLimit: UInt64

    init(window: InputWindow, output: DecodedOutput, threads: Int,
         cancellation: CancellationToken?, reportProgress: @escaping () -> Void) {
        self.window = window
        self.output = output
        self.threads = max(1, threads)
        self.cancellation = cancellation
        self.reportProgress = reportProgress
        // lzma_physmem returns 0 when it cannot tell; 4 GiB is then assumed.
        let physical = lzma_physmem() == 0 ? UInt64(4) << 30 : lzma_physmem()
        threadingMemoryLimit = physical / 4
        // Half of RAM, and at least 1 GiB. This is an estimate that leaves room for
        // several threads, each holding a dictionary of up to 64 MiB at `xz -9`.
        memoryLimit = max(physical / 2, UInt64(1) << 30)
    }

    func decode() throws {
        let stream = UnsafeMutablePointer<lzma_stream>.allocate(capacity: 1)
        stream.initialize(to: imgtool_lzma_stream_init())
        defer {
            lzma_end(stream)
            stream.deallocate()
        }

        var options = lzma_mt()
        options.flags = IMGTOOL_LZMA_CONCATENATED
        options.threads = UInt32(min(threads, 256))
        options.timeout = 0
        options.memlimit_threading = threadingMemoryLimit
        options.memlimit_stop = memoryLimit
        let started = lzma_stream_decoder_mt(stream, &options)
        guard started == LZMA_OK else { throw error(for: started, stream: stream) }

        while true {
            try cancellation?.check("inflate '\(path)'")
            if window.count == 0 && !window.reachedEnd { try window.readMore() }
            let action = window.count == 0 && window.reachedEnd ? LZMA_FINISH : LZMA_RUN
            let input = window.available
            let space = try output.space()
            stream.pointee.next_in = input.baseAddress?.assumingMemoryBound(to: UInt8.self)
            stream.pointee.avail_in = input.count
            stream.pointee.next_out = space.baseAddress?.assumingMemoryBound(to: UInt8.self)
            stream.pointee.avail_out = space.count
            let result = lzma_code(stream, action)
            let consumed = input.count - stream.pointee.avail_in
            recordTakenIn(UnsafeRawBufferPointer(rebasing: input[..<consumed]), start: window.offset)
            window.consume(consumed)
            let produced = space.count - stream.pointee.avail_out
            try output.commit(produced)
            if produced > 0 { reportProgress() }
            if result == LZMA_STREAM_END { return }
            if result != LZMA_OK { throw error(for: result, stream: stream) }
        }
    }

    /// A run of zero bytes in the input given to liblzma.
    private struct ZeroRun {
        /// Up to `footerSize` bytes given to liblzma just before the run: the stream
        /// footer, when the run is stream padding.
        var preceding: [UInt8] = []
        var length = 0
        /// The input offset just after the run's last zero byte.
        var end: Int64 = 0
    }

    /// Records `bytes`, which liblzma took in from input offset `start`, in `recentInput`,
    /// `trailingZeros` and `longZeroRun`. Only zero runs that end within the last
    /// `footerSize` bytes are followed to their start, because a stream header of that
    /// size is the most liblzma takes in after the padding before it fails. So the work
    /// is the bytes of those runs, and each zero byte is visited once per read.
    private func recordTakenIn(_ bytes: UnsafeRawBufferPointer, start: Int64) {
        guard !bytes.isEmpty else { return }
        inputEnd = start + Int64(bytes.count)

        var latestTrailing = ZeroRun(end: inputEnd)
        var latestLong: ZeroRun?
        var position = bytes.count
        while position > 0, bytes.count - position <= Self.footerSize {
            guard bytes[position - 1] == 0 else {
                position -= 1
                continue
            }
            let runEnd = position
            while position > 0, bytes[position - 1] == 0 { position -= 1 }
            var run = ZeroRun(length: runEnd - position, end: start + Int64(runEnd))
            if position == 0 {
                // The run began in an earlier read when that read ended with zero bytes.
                run.length += trailingZeros.length
                run.preceding = trailingZeros.length > 0 ? trailingZeros.preceding : Array(recentInput.suffix(Self.footerSize))
            } else if position >= Self.footerSize {
                run.preceding = Array(bytes[(position - Self.footerSize)..<position])
            } else {
                run.preceding = Array(recentInput.suffix(Self.footerSize - position)) + Array(bytes[..<position])
            }
            if runEnd == bytes.count { latestTrailing = run }
            if latestLong == nil, run.length >= Self.longZeroRunMinimum { latestLong = run }
        }
        trailingZeros = latestTrailing
        if let latestLong { longZeroRun = latestLong }

        if bytes.count >= Self.recentInputSize {
            recentInput = Array(bytes.suffix(Self.recentInputSize))
        } else {
            recentInput = Array((recentInput + bytes).suffix(Self.recentInputSize))
        }
    }

    /// The bytes after the last complete stream that liblzma took in: the stream
    /// padding (zero bytes in groups of four) and the bytes after it.
    private struct StreamTail {
        var padding: Int
        var rest: [UInt8]
        var count: Int { padding + rest.count }
    }

    /// Returns whether `footer` (12 bytes) is a valid xz stream footer: the CRC-32 of the
    /// next six bytes, the backward size, the stream flags and "YZ".
    private static func isStreamFooter(_ footer: [UInt8]) -> Bool {
        guard footer.count == footerSize, footer[10] == 0x59, footer[11] == 0x5A, footer[8] == 0 else { return false }
        let stored = UInt32(footer[0]) | UInt32(footer[1]) << 8 | UInt32(footer[2]) << 16 | UInt32(footer[3]) << 24
        let computed = footer[4..<10].withUnsafeBufferPointer { crc32(0, $0.baseAddress, 6) }
        return UInt32(computed) == stored
    }

    /// Returns the tail after the earliest valid stream footer whose tail `accepts`: the
    /// footer before `longZeroRun`, then each footer in `recentInput`. The earliest first:
    /// stray bytes can form a later footer with the "YZ" that ends the real one, but
    /// cannot change the bytes before them.
    private func tailAfterLastStream(where accepts: (StreamTail) -> Bool) -> StreamTail? {
        if let run = longZeroRun, inputEnd - run.end <= Int64(Self.footerSize), Self.isStreamFooter(run.preceding) {
            // Zeros past the last full group of four belong to the rest, as below.
            let ungrouped = run.length % 4
            let after = recentInput.suffix(Int(inputEnd - run.end))
            let tail = StreamTail(padding: run.length - ungrouped, rest: Array(repeating: 0, count: ungrouped) + after)
            if accepts(tail) { return tail }
        }
        let bytes = recentInput
        guard bytes.count > Self.footerSize else { return nil }
        for extra in (1...(bytes.count - Self.footerSize)).reversed() {
            let footer = Array(bytes[(bytes.count - extra - Self.footerSize)..<(bytes.count - extra)])
            guard Self.isStreamFooter(footer) else { continue }
            var rest = bytes.suffix(extra)[...]
            while rest.count >= 4, rest.prefix(4).allSatisfy({ $0 == 0 }) { rest = rest.dropFirst(4) }
            let tail = StreamTail(padding: extra - rest.count, rest: Array(rest))
            if accepts(tail) { return tail }
        }
        return nil
    }

    /// Returns whether `bytes` are the start of an xz stream header, or begin with one.
    private static func startsStream(_ bytes: [UInt8]) -> Bool {
        let magic = CompressionFormat.xzMagic
        return magic.starts(with: bytes) || bytes.starts(with: magic)
    }

    /// Returns whether the bytes after the stream padding of `tail` are 1 to 3 zero bytes,
    /// alone or followed by one other byte.
    private static func isPartialPadding(_ tail: StreamTail) -> Bool {
        let zeros = tail.rest.prefix(while: { $0 == 0 }).count
        return (1...3).contains(zeros) && tail.rest.count <= zeros + 1
    }

    /// Describes the stray bytes of `tail`, which ends at `end` (the bytes liblzma took
    /// in), with the size to cut the file to. `problem` completes a sentence whose subject
    /// is the stray bytes.
    private func strayBytesError(_ tail: StreamTail, end: Int64, problem: String) -> InflateError {
        let streamEnd = end - Int64(tail.count)
        let padding = tail.padding > 0 ? " and its \(tail.padding) bytes of stream padding" : ""
        return InflateError.corrupt(path: path, offset: streamEnd + Int64(tail.padding), reason:
            "the bytes after the last xz stream\(padding) \(problem), and only stream padding (zero bytes in groups "
            + "of four) or another stream may follow a stream; if the file was complete before them, cut it to "
            + "\(streamEnd) bytes (truncate -s)")
    }

    private func error(for result: lzma_ret, stream: UnsafeMutablePointer<lzma_stream>) -> any Error {
        let offset = window.offset
        switch result {
        case LZMA_BUF_ERROR:
            // liblzma took in every byte, and waits for the rest of a stream header: 1 to
            // 11 bytes that do not begin one are stray bytes, not a cut stream.
            if window.reachedEnd, window.count == 0,
               let tail = tailAfterLastStream(where: { (1..<Self.footerSize).contains($0.rest.count) && !Self.startsStream($0.rest) }) {
                let count = tail.rest.count
                return strayBytesError(tail, end: offset, problem: "(\(count == 1 ? "1 byte" : "\(count) bytes")) are too few for a stream")
            }
            return InflateError.truncated(path: path, offset: offset + Int64(window.count), context: "inside the xz stream")
        case LZMA_DATA_ERROR:
            // The 12 bytes after the last stream (and its padding) are not a stream header.
            // A damaged header of a real next stream still starts with the magic bytes.
            if let tail = tailAfterLastStream(where: { $0.rest.count == Self.footerSize && !Self.startsStream($0.rest) }) {
                return strayBytesError(tail, end: offset, problem: "do not start an xz stream")
            }
            // liblzma also fails on 1 to 3 zero bytes that end the input or come before a
            // nonzero byte (which it takes in), because padding comes in groups of four.
            if let tail = tailAfterLastStream(where: Self.isPartialPadding) {
                let zeros = tail.rest.prefix(while: { $0 == 0 }).count
                return strayBytesError(tail, end: offset, problem:
                    "begin with \(zeros == 1 ? "1 zero byte" : "\(zeros) zero bytes"), fewer than the four of a padding group")
            }
            return InflateError.corrupt(path: path, offset: offset,
                                        reason: "the xz data, its integrity check or its stream padding is invalid (liblzma: LZMA_DATA_ERROR)")
        case LZMA_FORMAT_ERROR:
            return InflateError.corrupt(path: path, offset: offset,
                                        reason: "the bytes there do not start an xz stream (liblzma: LZMA_FORMAT_ERROR)")
        case LZMA_OPTIONS_ERROR:
            return InflateError.corrupt(path: path, offset: offset,
                                        reason: "the stream uses options this liblzma does not support (liblzma: LZMA_OPTIONS_ERROR)")
        case LZMA_MEMLIMIT_ERROR:
            return InflateError.memoryLimitExceeded(path: path, needed: lzma_memusage(stream), limit: memoryLimit)
        case LZMA_MEM_ERROR:
            return SystemError("allocate memory to inflate", path: path, errno: Errno(rawValue: ENOMEM))
        default:
            return InflateError.corrupt(path: path, offset: offset, reason: "liblzma failed with code \(result.rawValue)")
        }
    }
}

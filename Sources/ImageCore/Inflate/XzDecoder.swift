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
            window.consume(input.count - stream.pointee.avail_in)
            let produced = space.count - stream.pointee.avail_out
            try output.commit(produced)
            if produced > 0 { reportProgress() }
            if result == LZMA_STREAM_END { return }
            if result != LZMA_OK { throw error(for: result, stream: stream) }
        }
    }

    private func error(for result: lzma_ret, stream: UnsafeMutablePointer<lzma_stream>) -> any Error {
        let offset = window.offset
        switch result {
        case LZMA_BUF_ERROR:
            return InflateError.truncated(path: path, offset: offset + Int64(window.count), context: "inside the xz stream")
        case LZMA_DATA_ERROR:
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

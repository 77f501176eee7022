// The decoders' side of an ExtentSink: space to decode into, and a running byte count.
//
// With a SparseFileWriter the decoder writes straight into the writer's queued buffers,
// so decoded bytes are never copied. Any other sink gets its bytes through
// `ExtentSink.write` from a buffer owned here.

final class DecodedOutput {
    let sink: any ExtentSink
    private let writer: SparseFileWriter?
    private let buffer: UnsafeMutableRawBufferPointer?
    private var buffered = 0
    /// Bytes produced so far (64-bit: images pass 4 GiB).
    private(set) var count: Int64 = 0

    init(sink: any ExtentSink, bufferSize: Int = 1 << 20) {
        self.sink = sink
        writer = sink as? SparseFileWriter
        buffer = writer == nil ? .allocate(byteCount: bufferSize, alignment: 64) : nil
    }

    deinit { buffer?.deallocate() }

    /// Space for the next decoded bytes; never empty. Valid until `commit`.
    func space() throws -> UnsafeMutableRawBufferPointer {
        if let writer { return try writer.writableSpace() }
        let buffer = buffer!
        if buffered == buffer.count { try flush() }
        return UnsafeMutableRawBufferPointer(rebasing: buffer[buffered...])
    }

    /// Appends the first `produced` bytes of the last `space()`.
    func commit(_ produced: Int) throws {
        count += Int64(produced)
        if let writer {
            try writer.commit(produced)
        } else {
            buffered += produced
        }
    }

    /// Hands buffered bytes to the sink; a SparseFileWriter needs no flush.
    func flush() throws {
        guard let buffer, buffered > 0 else { return }
        try sink.write(UnsafeRawBufferPointer(rebasing: buffer[..<buffered]))
        buffered = 0
    }
}

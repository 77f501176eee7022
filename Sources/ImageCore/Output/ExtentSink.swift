// ExtentSink: where decoders put their output.
//
// A decoder hands its output on in order as extents: bytes, or a hole (a run of zero
// bytes given only by its length). A decoder that knows a run is zero (for example a
// match that copies from an all-zero history) passes a hole and never materialises the
// zeros; the sink may still receive zero bytes inside `write` and is expected to detect
// them. 64-bit lengths: one hole may exceed 4 GiB.

public protocol ExtentSink: AnyObject {
    /// Appends `bytes` at the current end of the output.
    func write(_ bytes: UnsafeRawBufferPointer) throws
    /// Appends `count` zero bytes.
    func writeHole(count: Int64) throws
}

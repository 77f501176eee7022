// GzipIndexBuilder: decodes a gzip file once, sequentially, and records access points.
//
// zlib's `Z_BLOCK` flush makes inflate stop at every deflate block boundary; where at
// least `spacing` bytes of output have passed since the last point, the builder records
// the boundary's bit offset and the 32 KiB of output before it. Each member's deflate
// start becomes a point without a window, and a last point marks the end of the file,
// as rapidgzip writes them. The output can go to a sink at the same time, so
// `decompress --index-out` costs one pass.

import CZlib

public enum GzipIndexBuilder {
    /// The default distance between access points: 4 MiB of output, rapidgzip's default
    /// chunk size, so each point is one worker's unit of work.
    public static let defaultSpacing = 4 << 20

    /// Builds the index of the gzip file at `path`, writing the output to `sink` when
    /// one is given. Checks every member's CRC-32 and ISIZE, and logs a warning for
    /// trailing data after the last member.
    public static func build(path: String, spacing: Int = defaultSpacing, sink: (any ExtentSink)? = nil,
                             cancellation: CancellationToken? = nil, progress: ProgressReporter? = nil) throws -> GzipIndex {
        let built = try build(file: try MappedFile(path: path), spacing: spacing, sink: sink, cancellation: cancellation,
                              progress: progress)
        for warning in built.warnings { Log.warning("index", warning) }
        return built.index
    }

    /// `build` of a file mapped already, which logs nothing: `warnings` lists the trailing
    /// data after the last member as the sequential decoder words it, and `Decompressor`
    /// logs it (tests change the file in between).
    static func build(file: MappedFile, spacing: Int = defaultSpacing, sink: (any ExtentSink)? = nil,
                      cancellation: CancellationToken? = nil,
                      progress: ProgressReporter? = nil) throws -> (index: GzipIndex, warnings: [String]) {
        let path = file.path
        let index: GzipIndex
        let trailingData: Int
        do {
            (index, trailingData) = try buildChecked(file: file, spacing: spacing, sink: sink, cancellation: cancellation,
                                                     progress: progress)
        } catch {
            // Zeros stood in for the pages the file lost (see `MappedFile`).
            try file.checkUnchanged()
            if let error = error as? GzipDataError { throw error.at(path: path).inflateError }
            throw error
        }
        try file.checkUnchanged()
        guard trailingData > 0 else { return (index, []) }
        let offset = file.bytes.count - trailingData
        return (index, ["'\(path)': ignored \(trailingData) bytes of trailing data at offset \(offset) after the last gzip member"])
    }

    /// Returns the error for a source that does not start with the gzip magic bytes. An
    /// xz file or a RAW image is intact, so the message names what it is, not damage.
    private static func notGzipError(path: String, head: [UInt8]) -> InvalidArgumentError {
        if CompressionFormat.detect(head) == .xz {
            return InvalidArgumentError(argument: "SOURCE", value: path, reason: "it is xz, and a seek index exists only for gzip",
                                        remedy: "give the path of a gzip file; 'imgtool decompress' inflates xz without an index")
        }
        return InvalidArgumentError(argument: "SOURCE", value: path,
                                    reason: "it is not gzip: \(CompressionFormat.describeUnsupported(head))",
                                    remedy: "give the path of a gzip file (it starts with the bytes 1f 8b)")
    }

    /// Builds the index and returns it with the length of the trailing data after the
    /// last member: 0 when nothing or only zero bytes follow it.
    private static func buildChecked(file: MappedFile, spacing: Int, sink: (any ExtentSink)?, cancellation: CancellationToken?,
                                     progress: ProgressReporter?) throws -> (index: GzipIndex, trailingData: Int) {
        let input = file.bytes
        let window = GzipIndex.windowSize
        let pieceSize = 1 << 20
        // The buffer keeps the last 32 KiB of output in front of each new piece, so the
        // window of any block boundary is the 32 KiB before the write position.
        var buffer = [UInt8](repeating: 0, count: window + pieceSize)
        var filled = 0
        var unwritten = 0
        var points: [GzipAccessPoint] = []
        var total: Int64 = 0
        var lastPoint: Int64 = 0
        let inflater = ChunkZlibInflater()

        var position = 0
        guard let firstHeader = try GzipMemberHeader.parse(input, at: 0) else {
            throw notGzipError(path: file.path, head: Array(input.prefix(CompressionFormat.detectionLength)))
        }
        position = firstHeader.length
        points.append(GzipAccessPoint(compressedBitOffset: Int64(position) * 8, uncompressedOffset: 0, window: nil))
        var memberCRC: UInt = 0
        var memberSize: Int64 = 0

        func flushOutput() throws {
            guard filled > unwritten else { return }
            try buffer.withUnsafeBytes { bytes in
                let piece = UnsafeRawBufferPointer(rebasing: bytes[unwritten..<filled])
                memberCRC = crc32(memberCRC, piece.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt32(piece.count))
                try sink?.write(piece)
            }
            unwritten = filled
        }

        while true {
            if filled == buffer.count {
                try flushOutput()
                try cancellation?.check("index")
                try file.checkUnchanged()
                progress?.update(completed: Int64(position), total: Int64(input.count), written: total)
                buffer.withUnsafeMutableBytes { bytes in
                    bytes.baseAddress!.copyMemory(from: bytes.baseAddress! + filled - window, byteCount: window)
                }
                filled = window
                unwritten = window
            }
            let outcome = buffer.withUnsafeMutableBytes { bytes in
                Result { () throws(DeflateDataError) in
                    try inflater.inflate(UnsafeRawBufferPointer(rebasing: input[position...]),
                                         into: UnsafeMutableRawBufferPointer(rebasing: bytes[filled...]), stopAtBlocks: true)
                }
            }
            let step: ChunkZlibInflater.Step
            switch outcome {
            case .success(let value): step = value
            case .failure(let error): throw GzipDataError(offset: Int64(position), reason: "invalid deflate data (\(error.reason))")
            }
            position += step.consumed
            filled += step.produced
            total += Int64(step.produced)
            memberSize += Int64(step.produced)

            if step.status == .streamEnd {
                try flushOutput()
                guard position + GzipMemberHeader.trailerSize <= input.count else {
                    throw GzipDataError(offset: Int64(input.count), kind: .truncated, reason: "inside the 8-byte gzip trailer at offset \(position)")
                }
                let storedCRC = readLittleEndian32(input, at: position)
                let storedSize = readLittleEndian32(input, at: position + 4)
                guard storedCRC == UInt32(memberCRC) else {
                    throw GzipDataError(offset: Int64(position), reason: "CRC-32 mismatch: the trailer stores \(storedCRC), the data gives \(memberCRC)")
                }
                guard storedSize == UInt32(truncatingIfNeeded: memberSize) else {
                    throw GzipDataError(offset: Int64(position + 4), reason: "length mismatch: the trailer stores \(storedSize), the member holds \(memberSize) bytes")
                }
                position += GzipMemberHeader.trailerSize
                memberCRC = 0
                memberSize = 0
                guard let header = try GzipMemberHeader.parse(input, at: position) else { break }
                position += header.length
                inflater.reset()
                points.append(GzipAccessPoint(compressedBitOffset: Int64(position) * 8, uncompressedOffset: total, window: nil))
                lastPoint = total
                continue
            }
            if step.atBlockBoundary, !step.inFinalBlock, total - lastPoint >= Int64(spacing) {
                let windowStart = max(0, filled - window)
                let bitOffset = Int64(position) * 8 - Int64(step.unusedBits)
                points.append(GzipAccessPoint(compressedBitOffset: bitOffset, uncompressedOffset: total,
                                              window: Array(buffer[windowStart..<filled])))
                lastPoint = total
            }
            if step.consumed == 0 && step.produced == 0 && position >= input.count {
                throw GzipDataError(offset: Int64(position), kind: .truncated, reason: "inside deflate data")
            }
        }
        points.append(GzipAccessPoint(compressedBitOffset: Int64(input.count) * 8, uncompressedOffset: total, window: nil))
        progress?.finish(completed: Int64(input.count), total: Int64(input.count), written: total)
        // What follows the last member is neither a member (`parse` returned nil) nor cut
        // short. Zero bytes are padding, as `GzipDecoder` accepts them.
        let rest = UnsafeRawBufferPointer(rebasing: input[position...])
        let trailingData = rest.contains(where: { $0 != 0 }) ? rest.count : 0
        let index = GzipIndex(compressedSize: Int64(input.count), uncompressedSize: total,
                              spacing: UInt32(clamping: spacing), points: points)
        return (index, trailingData)
    }

    private static func readLittleEndian32(_ input: UnsafeRawBufferPointer, at offset: Int) -> UInt32 {
        UInt32(input[offset]) | UInt32(input[offset + 1]) << 8 | UInt32(input[offset + 2]) << 16 | UInt32(input[offset + 3]) << 24
    }
}

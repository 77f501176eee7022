// GzipDecoder: every member of a gzip file, in order, into one output.
//
// For each member: parse the header (GzipHeader), inflate the raw deflate data with a
// RawInflater, then check the trailer's CRC-32 and ISIZE against the output. Members
// follow each other with no gap; an empty member (a header, an empty final block and a
// trailer) is legal anywhere.
//
// After a member, what follows decides the end (as GNU gzip 1.12 does):
// - end of input: done;
// - 1f 8b: another member, and every error in it is an error (a lone 1f at the end is
//   a member cut after its first byte);
// - only zero bytes up to the end of input: block or tape padding, accepted silently;
// - anything else: trailing data, ignored with a warning and never called corrupt
//   (returned to `Decompressor`, which logs it).
// A truncation anywhere inside a member is an error that gives the offset where the
// input ends.

final class GzipDecoder {
    private let window: InputWindow
    private let output: DecodedOutput
    private let inflater: any RawInflater
    private let cancellation: CancellationToken?
    private let reportProgress: () -> Void
    private var path: String { window.input.name }

    init(window: InputWindow, output: DecodedOutput, engine: DeflateEngine,
         cancellation: CancellationToken?, reportProgress: @escaping () -> Void) {
        self.window = window
        self.output = output
        self.inflater = makeRawInflater(engine)
        self.cancellation = cancellation
        self.reportProgress = reportProgress
    }

    /// Decodes to the end of the input.
    /// - Returns: the number of members and the warnings (trailing data).
    func decode() throws -> (members: Int, warnings: [String]) {
        var members = 0
        var warnings: [String] = []
        while try window.fill(minimum: 1) {
            if members > 0, try !startsMember() {
                if let warning = try skipTrailingData() { warnings.append(warning) }
                break
            }
            try decodeMember()
            members += 1
        }
        return (members, warnings)
    }

    /// True when the unconsumed bytes start with the gzip magic.
    private func startsMember() throws -> Bool {
        guard window.available[0] == GzipHeader.magic[0] else { return false }
        // A lone 1f at the very end is the start of a member cut after one byte.
        guard try window.fill(minimum: 2) else {
            throw InflateError.truncated(path: path, offset: window.offset + 1,
                                         context: "inside the header of the gzip member at offset \(window.offset)")
        }
        return window.available[1] == GzipHeader.magic[1]
    }

    /// Consumes everything up to the end of the input. Returns nil when it is all zero
    /// bytes (padding), else a warning naming the offset and length of the trailing data.
    private func skipTrailingData() throws -> String? {
        let start = window.offset
        var allZero = true
        repeat {
            // Trailing data from a pipe can be endless (`cat a.gz /dev/zero`).
            try cancellation?.check("inflate '\(path)'")
            if allZero, window.available.contains(where: { $0 != 0 }) { allZero = false }
            window.consume(window.count)
        } while try window.readMore()
        if allZero { return nil }
        let length = window.offset - start
        return "'\(path)': ignored \(length) bytes of trailing data at offset \(start) after the last gzip member"
    }

    private func decodeMember() throws {
        let memberOffset = window.offset
        let header = try readHeader(memberOffset: memberOffset)
        window.consume(header.length)
        Log.debug("inflate", "'\(path)': gzip member at offset \(memberOffset), header \(header.length) bytes")

        inflater.reset()
        var memberSize: Int64 = 0
        while true {
            try cancellation?.check("inflate '\(path)'")
            let space = try output.space()
            let step: InflateStep
            do throws(RawInflateFailure) {
                step = try inflater.inflate(window.available, into: space)
            } catch {
                throw InflateError.corrupt(path: path, offset: window.offset, reason: error.reason)
            }
            window.consume(step.consumed)
            try output.commit(step.produced)
            memberSize += Int64(step.produced)
            if step.produced > 0 { reportProgress() }
            if step.finished { break }

            // More input is needed unless the call stopped because the output was full.
            let outputFull = step.produced == space.count
            let stalled = step.consumed == 0 && step.produced == 0
            if !outputFull && (window.count == 0 || stalled) {
                guard try window.readMore() else {
                    throw InflateError.truncated(path: path, offset: window.offset + Int64(window.count),
                                                 context: "inside the deflate data of the gzip member at offset \(memberOffset)")
                }
            }
        }
        window.unconsume(inflater.overread)

        guard try window.fill(minimum: GzipHeader.trailerLength) else {
            throw InflateError.truncated(path: path, offset: window.offset + Int64(window.count),
                                         context: "inside the 8-byte trailer of the gzip member at offset \(memberOffset)")
        }
        let trailer = GzipTrailer(window.available)
        if trailer.crc != inflater.crc {
            throw InflateError.checksumMismatch(path: path, memberOffset: memberOffset, stored: trailer.crc, computed: inflater.crc)
        }
        let sizeModulo = UInt32(truncatingIfNeeded: memberSize)
        if trailer.inputSize != sizeModulo {
            throw InflateError.sizeMismatch(path: path, memberOffset: memberOffset, stored: trailer.inputSize, computed: sizeModulo)
        }
        window.consume(GzipHeader.trailerLength)
    }

    private func readHeader(memberOffset: Int64) throws -> GzipHeader {
        while true {
            do throws(GzipHeaderError) {
                if let header = try GzipHeader.parse(window.available) { return header }
            } catch {
                throw InflateError.corrupt(path: path, offset: memberOffset + Int64(error.offset), reason: error.reason)
            }
            if window.reachedEnd {
                throw InflateError.truncated(path: path, offset: window.offset + Int64(window.count),
                                             context: "inside the header of the gzip member at offset \(memberOffset)")
            }
            // Parse again only once the bytes at hand have doubled (or filled the window)
            // or the input has ended, so a long FNAME or FCOMMENT in small reads costs
            // linear time.
            let target = min(2 * window.count, InputWindow.maximumCapacity)
            while try window.readMore(), window.count < target {}
        }
    }
}

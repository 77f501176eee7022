// Comparison of large byte sequences in tests, with a failure message that costs no more
// than the comparison.
//
// `#expect(actual == expected)` on two byte collections describes a failure by diffing
// them, which takes time proportional to their length times the number of differences.
// Two 2 MiB arrays that differ in the first 100 bytes of every 4 KiB block took 139 s
// to report that way, against microseconds for `==` (Swift Testing 6.3.1, debug build,
// 2 cores).

import Foundation
import Testing

/// Records one issue when `actual` and `expected` differ, naming both lengths and the
/// first offset where they differ. The bytes themselves are never printed.
///
/// An error thrown while evaluating either argument is recorded as an issue too, as
/// `#expect` does, so the test goes on to its next check.
func expectEqualBytes<Actual: Collection<UInt8>, Expected: Collection<UInt8>>(
    _ actual: @autoclosure () throws -> Actual,
    _ expected: @autoclosure () throws -> Expected,
    _ comment: Comment? = nil,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    let actualBytes: Actual
    let expectedBytes: Expected
    do {
        actualBytes = try actual()
        expectedBytes = try expected()
    } catch {
        Issue.record(error, comment, sourceLocation: sourceLocation)
        return
    }
    // `memcmp` needs contiguous storage, so `Data` and slices are copied into arrays once.
    let actualArray = actualBytes as? [UInt8] ?? Array(actualBytes)
    let expectedArray = expectedBytes as? [UInt8] ?? Array(expectedBytes)
    guard let offset = firstDifferingOffset(actualArray, expectedArray) else { return }

    var message = "Bytes differ first at offset \(offset) (actual \(byteText(actualArray, at: offset)), "
    message += "expected \(byteText(expectedArray, at: offset))). "
    message += "Actual has \(actualArray.count) bytes, expected has \(expectedArray.count)."
    if let comment {
        message += " \(comment.rawValue)"
    }
    Issue.record(Comment(rawValue: message), sourceLocation: sourceLocation)
}

/// Returns the first offset at which `first` and `second` differ, the length of the
/// shorter one when it is a prefix of the other, or nil when they are equal.
func firstDifferingOffset(_ first: [UInt8], _ second: [UInt8]) -> Int? {
    let common = min(first.count, second.count)
    // Compare 64 KiB at a time with memcmp and loop over bytes only in the step that
    // differs, because a byte loop over MiBs is slow in debug builds.
    let step = 64 << 10
    let offset: Int? = first.withUnsafeBytes { firstBuffer in
        second.withUnsafeBytes { secondBuffer in
            var start = 0
            while start < common {
                let length = min(step, common - start)
                if memcmp(firstBuffer.baseAddress! + start, secondBuffer.baseAddress! + start, length) != 0 {
                    return (start..<(start + length)).first { firstBuffer[$0] != secondBuffer[$0] }
                }
                start += length
            }
            return nil
        }
    }
    if let offset {
        return offset
    }
    return first.count == second.count ? nil : common
}

/// Formats the byte at `offset` as hex, or as "end of data" past the end.
private func byteText(_ bytes: [UInt8], at offset: Int) -> String {
    offset < bytes.count ? String(format: "0x%02x", bytes[offset]) : "end of data"
}

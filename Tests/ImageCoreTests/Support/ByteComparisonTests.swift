// The byte comparison helper: where it finds the first difference, and what it records.

import Testing

@Suite struct ByteComparisonTests {
    @Test func equalArraysHaveNoDifference() {
        let bytes = randomBytes(200_000, seed: 1)
        #expect(firstDifferingOffset(bytes, bytes) == nil)
        #expect(firstDifferingOffset([], []) == nil)
    }

    /// Offsets in the first step, at a 64 KiB step edge, and in the last byte.
    @Test(arguments: [0, 65_535, 65_536, 199_999])
    func firstDifferenceIsFound(offset: Int) {
        let expected = randomBytes(200_000, seed: 2)
        var actual = expected
        actual[offset] ^= 0x01
        actual[199_999] ^= 0x80
        #expect(firstDifferingOffset(actual, expected) == offset)
    }

    @Test func prefixDiffersWhereItEnds() {
        let longer = randomBytes(70_000, seed: 3)
        let shorter = Array(longer.prefix(65_540))
        #expect(firstDifferingOffset(shorter, longer) == 65_540)
        #expect(firstDifferingOffset(longer, shorter) == 65_540)
        #expect(firstDifferingOffset([], longer) == 0)
    }

    @Test func equalBytesRecordNoIssue() {
        let bytes = randomBytes(100_000, seed: 4)
        expectEqualBytes(bytes, bytes)
        expectEqualBytes(bytes[10..<20], Array(bytes[10..<20]))
    }

    @Test func issueNamesLengthsOffsetAndComment() {
        let expected: [UInt8] = [1, 2, 3, 4, 5, 6]
        let actual: [UInt8] = [1, 2, 3, 4, 0xab]
        withKnownIssue {
            expectEqualBytes(actual, expected, "round 7")
        } matching: { issue in
            issue.comments.map(\.rawValue) == [
                "Bytes differ first at offset 4 (actual 0xab, expected 0x05). Actual has 5 bytes, expected has 6. round 7",
            ]
        }
    }

    @Test func issueMarksEndOfShorterData() {
        withKnownIssue {
            expectEqualBytes([1, 2], [1, 2, 3])
        } matching: { issue in
            issue.comments.map(\.rawValue) == [
                "Bytes differ first at offset 2 (actual end of data, expected 0x03). Actual has 2 bytes, expected has 3.",
            ]
        }
    }

    @Test func thrownErrorIsRecorded() throws {
        struct ReadFailed: Error {}
        func read() throws -> [UInt8] { throw ReadFailed() }
        // The `try` inside the argument makes the closure a throwing one, although the
        // helper catches the error, so `withKnownIssue` needs a `try` too.
        try withKnownIssue {
            expectEqualBytes(try read(), [1])
        } matching: { issue in
            issue.error is ReadFailed
        }
    }
}

// A member header with FHCRC set stores the low 16 bits of the CRC-32 of the header
// bytes before it. Sequential decoding checks it, so parallel decoding must as well.

import CZlib
import Foundation
import Testing
@testable import ImageCore

/// Replaces the 10-byte header of `member` (written by `gzip -n`, so with no optional
/// fields) by one with FNAME and FHCRC, whose CRC-16 is off by `crcError`.
private func withHeaderCRC(_ member: [UInt8], crcError: UInt16) -> [UInt8] {
    var header: [UInt8] = [0x1f, 0x8b, 8, 0x08 | 0x02, 0, 0, 0, 0, 0, 3] + Array("disk.img".utf8) + [0]
    let crc = header.withUnsafeBufferPointer { UInt16(truncatingIfNeeded: crc32(0, $0.baseAddress, UInt32($0.count))) } ^ crcError
    header += [UInt8(crc & 0xff), UInt8(crc >> 8)]
    return header + member.dropFirst(10)
}

@Suite("Parallel gzip header CRC")
struct ParallelHeaderCRCTests {
    @Test("FHCRC checked in every member")
    func headerCRC() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let first = compressibleBytes(192 << 10, seed: 41)
        let second = compressibleBytes(128 << 10, seed: 42)
        let firstMember = try compress(first, with: "gzip -n -6 -c")
        let secondMember = try compress(second, with: "gzip -n -6 -c")
        let cases: [(String, [UInt8], Bool)] = [
            ("right CRC-16", withHeaderCRC(firstMember, crcError: 0) + withHeaderCRC(secondMember, crcError: 0), true),
            ("wrong CRC-16 in the first member", withHeaderCRC(firstMember, crcError: 1) + secondMember, false),
            ("wrong CRC-16 in the second member", firstMember + withHeaderCRC(secondMember, crcError: 0x100), false),
        ]
        for (label, bytes, valid) in cases {
            let path = scratch.file("header-crc.gz")
            try? FileManager.default.removeItem(atPath: path)
            try writeFile(path, bytes)
            #expect((try runProcess("gzip", ["-t", path]).status == 0) == valid, "\(label): gzip -t")
            for threads in [1, 2, 4] {
                if valid {
                    let (output, _) = try parallelOutput(path, threads: threads, minimumChunkInput: 4096)
                    expectEqualBytes(output, first + second, "\(label): threads \(threads)")
                } else {
                    #expect(throws: InflateError.self, "\(label): threads \(threads)") {
                        _ = try parallelOutput(path, threads: threads, minimumChunkInput: 4096)
                    }
                }
            }
        }
    }
}

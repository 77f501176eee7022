// SparseFileWriter on its own: zero blocks become holes, holes and unaligned writes land
// at the right offsets, and the final size is exact.

import CSystem
import Foundation
import Testing
@testable import ImageCore
#if canImport(Glibc)
import Glibc
#endif

@Suite struct SparseFileWriterTests {
    /// Opens a new file for a writer with small buffers, so a few KiB cross buffer edges.
    private func makeWriter(_ path: String, bufferSize: Int = 16384) throws -> (SparseFileWriter, FileDescriptor) {
        let descriptor = try FileDescriptor.open(path, flags: O_RDWR | O_CREAT | O_EXCL, mode: 0o644)
        let writer = try SparseFileWriter(descriptor: descriptor, path: path, blockSize: 4096,
                                          bufferSize: bufferSize, bufferCount: 2)
        return (writer, descriptor)
    }

    /// Many odd holes and data runs of 1 to 8191 bytes, some with zero blocks inside,
    /// across buffer edges. It runs on the scratch file system and on /dev/shm (tmpfs,
    /// which takes O_DIRECT only on newer kernels). The file must equal the bytes described.
    @Test(arguments: [16384, 65536])
    func randomHolesAndRunsMatch(bufferSize: Int) throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        var generator = SeededGenerator(seed: UInt64(bufferSize))
        let directories = [scratch.path] + (pathExists("/dev/shm") ? ["/dev/shm"] : [])
        for directory in directories {
            for round in 0..<20 {
                let path = directory + "/imgtool-sparse-\(getpid())-\(bufferSize)-\(round)"
                defer { unlink(path) }
                let (writer, descriptor) = try makeWriter(path, bufferSize: bufferSize)
                defer { try? descriptor.close() }
                var expected: [UInt8] = []
                for _ in 0..<Int.random(in: 0...60, using: &generator) {
                    if Bool.random(using: &generator) {
                        let hole = [1, 3, 511, 4095, 4097, Int.random(in: 0...20000, using: &generator)]
                            .randomElement(using: &generator)!
                        try writer.writeHole(count: Int64(hole))
                        expected += repeatElement(0, count: hole)
                    } else {
                        var run = (0..<Int.random(in: 1...8191, using: &generator)).map { _ in UInt8.random(in: 1...255, using: &generator) }
                        if run.count > 5000, Bool.random(using: &generator) {
                            run.replaceSubrange(100..<4500, with: repeatElement(0, count: 4400))
                        }
                        try run.withUnsafeBytes { try writer.write($0) }
                        expected += run
                    }
                }
                #expect(try writer.finish() == Int64(expected.count))
                expectEqualBytes(try readFile(path), expected, "\(directory) round \(round)")
            }
        }
    }

    @Test func zeroBlocksAreNotAllocated() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let path = scratch.file("out")
        let (writer, descriptor) = try makeWriter(path)
        defer { try? descriptor.close() }
        let data = [UInt8](repeating: 7, count: 4096) + [UInt8](repeating: 0, count: 40960) + [UInt8](repeating: 9, count: 4096)
        try data.withUnsafeBytes { try writer.write($0) }
        #expect(try writer.finish() == Int64(data.count))
        try descriptor.sync()
        expectEqualBytes(try readFile(path), data)
        // Two 4 KiB data blocks.
        #expect(allocatedBytes(path) == 8192)
    }

    /// The writer thread raises its priority where the process may. A probe thread tries
    /// the same nice value first, so the test passes as root and as another user.
    @Test func writerThreadRaisesPriority() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let scope = __priority_which_t(PRIO_PROCESS.rawValue)
        let inherited = getpriority(scope, id_t(imgtool_gettid()))
        let permitted = Recorded<Bool>()
        let probed = DispatchSemaphore(value: 0)
        let probe = Thread {
            permitted.append(setpriority(scope, id_t(imgtool_gettid()), SparseFileWriter.requestedNice) == 0)
            probed.signal()
        }
        probe.start()
        probed.wait()
        let expected = permitted.values[0] ? SparseFileWriter.requestedNice : inherited

        let (writer, descriptor) = try makeWriter(scratch.file("out"))
        defer { try? descriptor.close() }
        try [UInt8](repeating: 7, count: 4096).withUnsafeBytes { try writer.write($0) }
        _ = try writer.finish()
        #expect(writer.writerNice == expected)
    }

    @Test func holesAndUnalignedWritesLandInPlace() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let path = scratch.file("out")
        let (writer, descriptor) = try makeWriter(path)
        defer { try? descriptor.close() }
        var expected: [UInt8] = []
        try [UInt8](repeating: 1, count: 5).withUnsafeBytes { try writer.write($0) }
        expected += [UInt8](repeating: 1, count: 5)
        try writer.writeHole(count: 10_000)
        expected += [UInt8](repeating: 0, count: 10_000)
        try [UInt8](repeating: 2, count: 20_000).withUnsafeBytes { try writer.write($0) }
        expected += [UInt8](repeating: 2, count: 20_000)
        try writer.writeHole(count: 3)
        expected += [0, 0, 0]
        #expect(try writer.finish() == Int64(expected.count))
        expectEqualBytes(try readFile(path), expected)
    }

    @Test func trailingHoleSetsSize() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let path = scratch.file("out")
        let (writer, descriptor) = try makeWriter(path)
        defer { try? descriptor.close() }
        try [UInt8](repeating: 0x5a, count: 100).withUnsafeBytes { try writer.write($0) }
        // A hole larger than 4 GiB costs nothing and checks 64-bit sizes.
        try writer.writeHole(count: 5 << 30)
        try writer.finish()
        #expect(fileSize(path) == 100 + (5 << 30))
    }

    @Test func cancelStopsWithoutFinishing() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let path = scratch.file("out")
        let (writer, descriptor) = try makeWriter(path)
        defer { try? descriptor.close() }
        try [UInt8](repeating: 3, count: 100_000).withUnsafeBytes { try writer.write($0) }
        writer.cancel()
        // finish was never called, so the size was never set past what was written.
        #expect(fileSize(path) <= 100_000)
    }

    @Test func writeErrorIsReported() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let path = scratch.file("out")
        // /dev/full fails every write with ENOSPC, as a full filesystem does.
        let descriptor = try FileDescriptor.open("/dev/full", flags: O_WRONLY)
        defer { try? descriptor.close() }
        let writer = try SparseFileWriter(descriptor: descriptor, path: path, blockSize: 4096,
                                          bufferSize: 16384, bufferCount: 2)
        #expect(throws: SystemError.self) {
            try [UInt8](repeating: 1, count: 200_000).withUnsafeBytes { try writer.write($0) }
            try writer.finish()
        }
    }
}

/// A small deterministic generator (SplitMix64), so a failing case repeats.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e3779b97f4a7c15
        var value = state
        value = (value ^ (value >> 30)) &* 0xbf58476d1ce4e5b9
        value = (value ^ (value >> 27)) &* 0x94d049bb133111eb
        return value ^ (value >> 31)
    }
}

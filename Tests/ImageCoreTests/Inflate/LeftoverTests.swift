// What a killed run leaves behind: SIGKILL cannot be caught, so its temporary file stays
// in the target's directory until a later run for the same target removes it.

import Foundation
import Testing
@testable import ImageCore

@Suite struct LeftoverTests {
    @Test func rerunRemovesKilledRunsFile() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let source = scratch.file("input.gz")
        try writeFile(source, try gzip("abc"))
        // Process 2147483647 cannot exist: Linux pids stay below pid_max, at most 2^22.
        let leftover = scratch.file(".disk.raw.imgtool-2147483647-12345.tmp")
        try writeFile(leftover, [UInt8](repeating: 0x41, count: 4096))
        _ = try Decompressor.decompress(source: source, destination: scratch.file("disk.raw"), options: DecompressOptions())
        #expect(try directoryNames(scratch.path) == ["disk.raw", "input.gz"])
    }

    /// A file system can be too full to create even an empty file (no free inode here,
    /// ZFS near 100 %), so the killed run's files must go before the new ones are created.
    @Test(.enabled(if: ScratchMount.isPossible, "mounting a tmpfs needs root with CAP_SYS_ADMIN"))
    func rerunOnFullFileSystemRemovesLeftoversFirst() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let source = scratch.file("input.gz")
        try writeFile(source, try gzip("abc"))
        // The root directory and the two leftovers use all three inodes.
        let mount = try ScratchMount(type: "tmpfs", options: "size=1m,nr_inodes=3")
        defer { mount.unmount() }
        try writeFile(mount.file(".disk.raw.imgtool-2147483647-1.tmp"), [UInt8](repeating: 0x41, count: 4096))
        try writeFile(mount.file(".disk.gzidx.imgtool-2147483647-2.tmp"), [UInt8](repeating: 0x41, count: 4096))
        var options = DecompressOptions()
        options.indexOutput = mount.file("disk.gzidx")

        _ = try Decompressor.decompress(source: source, destination: mount.file("disk.raw"), options: options)

        #expect(try directoryNames(mount.path) == ["disk.gzidx", "disk.raw"])
    }

    @Test func rerunKeepsLiveProcessesFile() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let source = scratch.file("input.gz")
        try writeFile(source, try gzip("abc"))
        // Process 1 always runs, so its file may still be written.
        let live = ".disk.raw.imgtool-1-12345.tmp"
        try writeFile(scratch.file(live), [UInt8](repeating: 0x41, count: 4096))
        _ = try Decompressor.decompress(source: source, destination: scratch.file("disk.raw"), options: DecompressOptions())
        #expect(try directoryNames(scratch.path) == [live, "disk.raw", "input.gz"])
    }
}

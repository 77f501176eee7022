// A realistic disk image (MBR, ext4 labelled RANCHER_STATE with real files, zeros after)
// at a small size: compressed by gzip and xz, inflated, and checked by sfdisk and e2fsck.

import Foundation
import Testing
@testable import ImageCore

@Suite struct RealisticImageTests {
    /// The repository root, found from this file's path.
    static let repositoryRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    @Test(arguments: ["gzip -6 -c", "xz -T2 -c"])
    func smallImageInflatesClean(compressor: String) throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let image = scratch.file("image.raw")
        let built = try runProcess("\(Self.repositoryRoot)/scripts/make-disk-image", [image, "--size", "64M", "--data-mb", "16"])
        try #require(built.status == 0, "make-disk-image failed: \(built.standardError)")

        let source = scratch.file("image.compressed")
        try shell("\(compressor) < '\(image)' > '\(source)'")
        let raw = scratch.file("disk.raw")
        let summary = try Decompressor.decompress(source: source, destination: raw, options: DecompressOptions(threads: 2))

        #expect(try sha256sum(raw) == sha256sum(image))
        #expect(summary.bytesWritten == 64 << 20)
        // About 16 MiB of files plus filesystem metadata; the 64 MiB disk is mostly holes.
        #expect(allocatedBytes(raw) < 40 << 20)

        let table = try runProcess("sfdisk", ["-d", raw])
        #expect(table.status == 0)
        #expect(table.outputText.contains("start=        2048, size=      129024, type=83, bootable"))
        #expect(table.standardError.isEmpty)

        // e2fsck has no offset option: copy the partition (from 1 MiB) out sparsely.
        let partition = scratch.file("partition.img")
        try shell("dd if='\(raw)' of='\(partition)' bs=1M skip=1 conv=sparse status=none")
        let check = try runProcess("e2fsck", ["-fn", partition])
        #expect(check.status == 0, "e2fsck: \(check.outputText) \(check.standardError)")
        #expect(check.outputText.contains("RANCHER_STATE"))
    }
}

import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif
@testable import ImageCore

/// Creates a sparse file of `size` bytes with `data` written at offset 0.
private func makeDisk(_ path: String, size: Int64, data: [UInt8] = []) throws {
    let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o644)
    guard fd >= 0 else { throw POSIXError(.EIO) }
    defer { close(fd) }
    if !data.isEmpty { _ = data.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) } }
    guard ftruncate(fd, off_t(size)) == 0 else { throw POSIXError(.EIO) }
}

@Suite struct RawDiskTests {
    static let gibibyte: Int64 = 1 << 30
    static let tebibyte: Int64 = 1 << 40

    @Test func growOneGiBToOneTiBIsSparse() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let disk = scratch.file("disk.raw")
        try makeDisk(disk, size: Self.gibibyte, data: Array(repeating: 0xAB, count: 1 << 20))
        let allocatedBefore = allocatedBytes(disk)

        let clock = ContinuousClock()
        let started = clock.now
        let result = try RawDisk.resize(path: disk, to: DiskSize(bytes: Self.tebibyte))
        let elapsed = clock.now - started

        #expect(result.oldSize == Self.gibibyte)
        #expect(result.newSize == Self.tebibyte)
        #expect(result.allocation == .sparse)
        #expect(fileSize(disk) == Self.tebibyte)
        #expect(allocatedBytes(disk) == allocatedBefore)
        // ftruncate changes metadata only; one second is generous even on a loaded machine,
        // while writing 1 TiB of zeros would take hours.
        #expect(elapsed < .seconds(1))
    }

    @Test func growKeepsExistingData() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let disk = scratch.file("disk.raw")
        try makeDisk(disk, size: 4096, data: Array("boot sector".utf8))
        let hashBefore = try sha256sum(disk)
        _ = try RawDisk.resize(path: disk, to: DiskSize(parsing: "1M"))
        let prefix = try runProcess("/bin/sh", ["-c", "head -c 4096 '\(disk)' | sha256sum"]).outputText.prefix(64)
        #expect(String(prefix) == hashBefore)
    }

    @Test func roundedSizeIsReported() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let disk = scratch.file("disk.raw")
        try makeDisk(disk, size: 512)
        let result = try RawDisk.resize(path: disk, to: DiskSize(parsing: "1000"))
        #expect(result.wasRounded)
        #expect(result.requestedBytes == 1000)
        #expect(fileSize(disk) == 1024)
    }

    @Test func shrinkIsRejectedWithoutPermission() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let disk = scratch.file("disk.raw")
        try makeDisk(disk, size: 2 << 20)
        #expect(throws: DiskError.shrinkRejected(path: disk, currentSize: 2 << 20, requestedSize: 1 << 20)) {
            _ = try RawDisk.resize(path: disk, to: DiskSize(parsing: "1M"))
        }
        #expect(fileSize(disk) == 2 << 20)
    }

    @Test func shrinkWithPermissionShrinks() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let disk = scratch.file("disk.raw")
        try makeDisk(disk, size: 2 << 20)
        let result = try RawDisk.resize(path: disk, to: DiskSize(parsing: "1M"), allowShrink: true)
        #expect(result.shrank)
        #expect(fileSize(disk) == 1 << 20)
    }

    @Test func sameSizeIsNoOp() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let disk = scratch.file("disk.raw")
        try makeDisk(disk, size: 1 << 20)
        let result = try RawDisk.resize(path: disk, to: DiskSize(parsing: "1M"), preallocate: true)
        #expect(result.allocation == .unchanged)
        #expect(allocatedBytes(disk) == 0)
    }

    // ext4 with 4 KiB blocks rejects sizes from 16 TiB on with EFBIG. The message must
    // give the fix, not only "File too large".
    @Test func fileTooLargeHasRemedy() {
        let error = SystemError("set the size to 17592186044416 bytes of", path: "disk.raw", errno: Errno(rawValue: EFBIG))
        #expect(error.remedy?.contains("maximum file size") == true)
        #expect(error.remedy?.contains("smaller size") == true)
    }

    @Test func directoryIsRejected() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        #expect(throws: DiskError.notRegularFile(path: scratch.path, kind: "directory")) {
            _ = try RawDisk.resize(path: scratch.path, to: DiskSize(parsing: "1M"))
        }
    }

    @Test func fifoIsRejected() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let fifo = scratch.file("pipe")
        #expect(mkfifo(fifo, 0o600) == 0)
        #expect(throws: DiskError.notRegularFile(path: fifo, kind: "FIFO")) {
            _ = try RawDisk.resize(path: fifo, to: DiskSize(parsing: "1M"))
        }
    }

    @Test func fifoIsNeverOpened() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let fifo = scratch.file("pipe")
        #expect(mkfifo(fifo, 0o600) == 0)
        let reader = open(fifo, O_RDONLY | O_NONBLOCK)
        #expect(reader >= 0)
        defer { close(reader) }

        #expect(throws: DiskError.notRegularFile(path: fifo, kind: "FIFO")) {
            _ = try RawDisk.resize(path: fifo, to: DiskSize(parsing: "1M"))
        }
        // Linux reports POLLHUP to a FIFO's reader once a writer has opened and closed it.
        var request = pollfd(fd: reader, events: Int16(POLLIN), revents: 0)
        #expect(poll(&request, 1, 0) == 0)
    }

    @Test func missingFileNamesPath() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let disk = scratch.file("absent.raw")
        #expect {
            _ = try RawDisk.resize(path: disk, to: DiskSize(parsing: "1M"))
        } throws: { error in
            (error as? SystemError)?.errno == .noEntry && "\(error)".contains(disk)
        }
        #expect(!pathExists(disk))
    }

    @Test func lockedFileIsBusy() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let disk = scratch.file("disk.raw")
        try makeDisk(disk, size: 512)
        let holder = open(disk, O_RDONLY)
        defer { close(holder) }
        #expect(flock(holder, LOCK_EX) == 0)
        #expect(throws: DiskError.busy(path: disk)) {
            _ = try RawDisk.resize(path: disk, to: DiskSize(parsing: "1M"))
        }
        #expect(fileSize(disk) == 512)
    }

    /// A TemporaryFile holds the lock while an imgtool run writes it, so the hint must
    /// not name only another resize.
    @Test func temporaryFileBeingWrittenIsBusy() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let file = try TemporaryFile(for: scratch.file("disk.raw"))
        defer { file.discard() }
        let error = #expect(throws: DiskError.self) {
            _ = try RawDisk.resize(path: file.temporaryPath, to: DiskSize(parsing: "1M"))
        }
        #expect(error == .busy(path: file.temporaryPath))
        #expect(error?.remedy?.contains("still writing") == true)
        #expect(fileSize(file.temporaryPath) == 0)
    }

    @Test(.enabled(if: ScratchMount.isPossible, "mounting a tmpfs needs root with CAP_SYS_ADMIN"))
    func preallocateReservesBlocks() throws {
        let mount = try ScratchMount(type: "tmpfs", options: "size=16m")
        defer { mount.unmount() }
        let disk = mount.file("disk.raw")
        try makeDisk(disk, size: 4096)
        let result = try RawDisk.resize(path: disk, to: DiskSize(parsing: "8M"), preallocate: true)
        #expect(result.allocation == .preallocated)
        #expect(fileSize(disk) == 8 << 20)
        #expect(allocatedBytes(disk) == 8 << 20)
    }

    @Test(.enabled(if: ScratchMount.isPossible, "mounting a tmpfs needs root with CAP_SYS_ADMIN"))
    func noSpaceLeavesSizeUnchanged() throws {
        let mount = try ScratchMount(type: "tmpfs", options: "size=1m")
        defer { mount.unmount() }
        let disk = mount.file("disk.raw")
        try makeDisk(disk, size: 64 << 10, data: Array(repeating: 1, count: 4096))
        #expect {
            _ = try RawDisk.resize(path: disk, to: DiskSize(parsing: "8M"), preallocate: true)
        } throws: { error in
            (error as? SystemError)?.errno == .noSpace
        }
        #expect(fileSize(disk) == 64 << 10)
    }

    @Test(.enabled(if: ScratchMount.isPossible, "mounting a ramfs needs root with CAP_SYS_ADMIN"))
    func preallocateFallsBackWhereUnsupported() throws {
        // ramfs has no fallocate, so the kernel returns EOPNOTSUPP.
        let mount = try ScratchMount(type: "ramfs")
        defer { mount.unmount() }
        let disk = mount.file("disk.raw")
        try makeDisk(disk, size: 4096)
        let result = try RawDisk.resize(path: disk, to: DiskSize(parsing: "64M"), preallocate: true)
        #expect(result.allocation == .fellBackToSparse(.notSupported))
        #expect(fileSize(disk) == 64 << 20)
        #expect(allocatedBytes(disk) < 1 << 20)
    }

    @Test func resizeRequestZeroKeepsSize() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let disk = scratch.file("disk.raw")
        try makeDisk(disk, size: 5 << 20)
        let result = try RawDisk.applyResizeRequest(path: disk, request: "0")
        #expect(result.allocation == .unchanged)
        #expect(fileSize(disk) == 5 << 20)
    }

    @Test func resizeRequestZeroFollowsSymlink() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let disk = scratch.file("disk.raw")
        try makeDisk(disk, size: 5 << 20)
        let link = scratch.file("link.raw")
        #expect(symlink(disk, link) == 0)

        // "0" keeps the size, as "6M" through the same link grows it.
        let kept = try RawDisk.applyResizeRequest(path: link, request: "0")
        #expect(kept.newSize == 5 << 20)
        let grown = try RawDisk.applyResizeRequest(path: link, request: "6M")
        #expect(grown.newSize == 6 << 20)
    }

    @Test func resizeRequestSmallerIsRejected() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let disk = scratch.file("disk.raw")
        try makeDisk(disk, size: 2 << 30)
        #expect(throws: DiskError.shrinkRejected(path: disk, currentSize: 2 << 30, requestedSize: 1 << 30)) {
            _ = try RawDisk.applyResizeRequest(path: disk, request: "1")
        }
        #expect(fileSize(disk) == 2 << 30)
    }

    @Test func resizeRequestGrowsInGiB() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let disk = scratch.file("disk.raw")
        try makeDisk(disk, size: 1 << 30)
        _ = try RawDisk.applyResizeRequest(path: disk, request: "20")
        #expect(fileSize(disk) == 20 << 30)
    }
}

// Downloader against hostile local state and inputs: symbolic links beside the
// destination, credentials in URLs, destinations that cannot be replaced.

import Foundation
import Synchronization
import Testing
@testable import ImageCore

@Suite struct DownloaderHardeningTests {
    typealias Fixture = DownloaderFaultTests.Fixture

    @Test func symlinkedPartialFileIsRejected() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let digest = try fixture.serve("f.bin", count: 10_000)
        let destination = "\(fixture.out)/f.bin"
        let other = fixture.scratch.file("other.txt")
        try Data("keep me".utf8).write(to: URL(fileURLWithPath: other))
        try FileManager.default.createSymbolicLink(atPath: destination + ".part", withDestinationPath: other)

        let error = #expect(throws: TargetExistsError.self) {
            _ = try Downloader(options: testOptions()).fetch(url: fixture.server.url("f.bin"), expected: .sha256(digest),
                                                            to: destination)
        }
        #expect(error?.path == destination + ".part")
        #expect(try String(contentsOfFile: other, encoding: .utf8) == "keep me")
        #expect(!pathExists(destination))
    }

    @Test func directoryAtStateFileFailsBeforeDownloading() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let digest = try fixture.serve("f.bin", count: 10_000)
        let destination = "\(fixture.out)/f.bin"
        try FileManager.default.createDirectory(atPath: destination + ".part.state", withIntermediateDirectories: false)

        // It used to download, then fail to rename the state file over the directory
        // with EISDIR and no hint.
        let error = #expect(throws: TargetExistsError.self) {
            _ = try Downloader(options: testOptions()).fetch(url: fixture.server.url("f.bin"), expected: .sha256(digest),
                                                            to: destination)
        }
        #expect(error?.path == destination + ".part.state")
        #expect(!pathExists(destination))
        #expect(!pathExists(destination + ".part"))
    }

    @Test func cancellationWhileLoadingPartialFileKeepsIt() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let digest = try fixture.serve("f.bin", count: 300_000)
        let url = fixture.server.url("f.bin?drop_after=100000&drop_times=1")
        let destination = "\(fixture.out)/f.bin"
        #expect(throws: DownloadNetworkError.self) {
            _ = try Downloader(options: testOptions(retries: 0)).fetch(url: url, expected: .sha256(digest), to: destination)
        }
        // Cancelled before the partial file is hashed, so the session's setup fails after
        // it opened the partial file, which must then be closed exactly once.
        let cancellation = CancellationToken()
        cancellation.cancel()

        #expect(throws: CancelledError.self) {
            _ = try Downloader(options: testOptions()).fetch(url: url, expected: .sha256(digest), to: destination,
                                                            cancellation: cancellation)
        }
        #expect((try? linkStatus(destination + ".part"))??.size == 100_000)
    }

    @Test func hardLinkedPartialFileIsReplaced() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let digest = try fixture.serve("f.bin", count: 300_000)
        let url = fixture.server.url("f.bin?drop_after=100000&drop_times=1")
        let destination = "\(fixture.out)/f.bin"
        // A first run leaves a partial file with a state file that matches the URL.
        #expect(throws: DownloadNetworkError.self) {
            _ = try Downloader(options: testOptions(retries: 0)).fetch(url: url, expected: .sha256(digest), to: destination)
        }
        #expect(pathExists(destination + ".part.state"))
        // Then NAME.part becomes another name of a file that must not change.
        let other = fixture.scratch.file("other.txt")
        let otherContents = Data(repeating: 0x56, count: 50_000)
        try otherContents.write(to: URL(fileURLWithPath: other))
        unlink(destination + ".part")
        #expect(link(other, destination + ".part") == 0)

        let summary = try Downloader(options: testOptions()).fetch(url: url, expected: .sha256(digest), to: destination)

        #expect(summary.sha256 == digest)
        #expect(summary.resumedFrom == 0)
        expectEqualBytes(try Data(contentsOf: URL(fileURLWithPath: other)), otherContents)
        #expect((try? linkStatus(other))??.linkCount == 1)
    }

    @Test func swappedPartialFileIsNotPublished() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let digest = try fixture.serve("f.bin", count: 300_000)
        let destination = "\(fixture.out)/f.bin"
        let swap = try PartialFileSwap(decoy: "\(fixture.out)/decoy", keepDownloadAt: nil)

        let error = #expect(throws: PartialFileReplacedError.self) {
            _ = try Downloader(options: testOptions()).fetch(url: fixture.server.url("f.bin"), expected: .sha256(digest),
                                                            to: destination, observer: swap.observe)
        }

        #expect(swap.hasSwapped)
        #expect(error?.path == destination + ".part")
        #expect(!pathExists(destination))
        #expect(try String(contentsOfFile: destination + ".part", encoding: .utf8) == PartialFileSwap.decoyText)
    }

    @Test func swappedPartialFileWithOtherNamePublishesDownload() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let digest = try fixture.serve("f.bin", count: 300_000)
        let destination = "\(fixture.out)/f.bin"
        // The downloaded file keeps a second name, so it can still be linked after the swap.
        let swap = try PartialFileSwap(decoy: "\(fixture.out)/decoy", keepDownloadAt: "\(fixture.out)/kept")

        let summary = try Downloader(options: testOptions()).fetch(url: fixture.server.url("f.bin"), expected: .sha256(digest),
                                                                   to: destination, observer: swap.observe)

        #expect(swap.hasSwapped)
        #expect(summary.sha256 == digest)
        #expect(try SHA256.hash(fileAt: destination) == digest)
        #expect(try String(contentsOfFile: destination + ".part", encoding: .utf8) == PartialFileSwap.decoyText)
    }

    @Test func fifoAsPartialFileFailsAtOnce() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let digest = try fixture.serve("f.bin", count: 10_000)
        let destination = "\(fixture.out)/f.bin"
        #expect(mkfifo(destination + ".part", 0o644) == 0)

        let error = #expect(throws: TargetExistsError.self) {
            _ = try Downloader(options: testOptions()).fetch(url: fixture.server.url("f.bin"), expected: .sha256(digest),
                                                            to: destination)
        }
        #expect(error?.path == destination + ".part")
        #expect(error?.kind == "FIFO")
        #expect(try fixture.server.requests().isEmpty)
    }

    @Test func longestFileNameIsAccepted() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let longest = String(repeating: "b", count: Downloader.maximumFileNameLength)
        let digest = try fixture.serve(longest, count: 5000)

        let summary = try Downloader(options: testOptions()).fetch(url: fixture.server.url(longest), expected: .sha256(digest),
                                                                   to: "\(fixture.out)/\(longest)")
        let error = #expect(throws: InvalidArgumentError.self) {
            _ = try Downloader(options: testOptions()).fetch(url: fixture.server.url(longest), expected: .sha256(digest),
                                                            to: "\(fixture.out)/\(longest)c")
        }

        #expect(summary.sha256 == digest)
        #expect(error?.value == longest + "c")
        #expect(error?.remedy?.contains("shorter file name") == true)
        #expect(!pathExists("\(fixture.out)/\(longest)c.lock"))
    }

    @Test func urlPasswordIsNotPrinted() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let digest = try fixture.serve("f.bin", count: 300_000)
        let base = fixture.server.url("").replacingOccurrences(of: "http://", with: "http://bob:s3cretPW@")
        // One dropped connection (a logged retry), then a 404 (an error message).
        let dropped = try runProcess(imgtoolExecutable(), [
            "fetch", base + "f.bin?drop_after=100000&drop_times=1", "--sha256", digest.hex,
            "--output", "\(fixture.out)/f.bin", "--progress", "none"])
        let missing = try runProcess(imgtoolExecutable(), [
            "fetch", base + "missing.bin", "--sha256", digest.hex, "--output", "\(fixture.out)/missing.bin",
            "--progress", "none"])

        #expect(dropped.status == 0)
        #expect(dropped.standardError.contains("bob:***@127.0.0.1"))
        #expect(!dropped.standardError.contains("s3cretPW"))
        #expect(missing.status == 3)
        #expect(missing.standardError.contains("bob:***@127.0.0.1"))
        #expect(!missing.standardError.contains("s3cretPW"))
    }

    @Test func redactingPasswordKeepsUserAndPath() {
        #expect(redactingPassword(in: "https://u:p@x.org/a@b?c=d@e") == "https://u:***@x.org/a@b?c=d@e")
        #expect(redactingPassword(in: "https://u@x.org/a:b@c") == "https://u@x.org/a:b@c")
        #expect(redactingPassword(in: "https://x.org:8080/a") == "https://x.org:8080/a")
        #expect(redactingPassword(in: "https://u:p:q@r@x.org/") == "https://u:***@x.org/")
    }

    @Test func conflictingChecksumsFailEarly() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let digest = try fixture.serve("f.bin", count: 1000)
        let zeros = String(repeating: "0", count: 64)
        try "\(zeros)  f.bin\n\(digest.hex)  f.bin\n".write(toFile: "\(fixture.www)/SHA256SUMS", atomically: true, encoding: .utf8)

        let error = #expect(throws: ChecksumConflictError.self) {
            _ = try Downloader(options: testOptions()).fetch(
                url: fixture.server.url("f.bin"), expected: .checksumFile(url: fixture.server.url("SHA256SUMS"), fileName: nil),
                to: "\(fixture.out)/f.bin")
        }
        #expect(error?.listed.map(\.digest.hex) == [zeros, digest.hex])
        #expect(error?.category == .invalidData)
        #expect(try fixture.server.requests().map(\.url) == ["/SHA256SUMS"])
    }

    @Test func repeatedEqualChecksumsAreAccepted() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let digest = try fixture.serve("f.bin", count: 1000)
        try "\(digest.hex)  f.bin\n\(digest.hex.uppercased()) *f.bin\n"
            .write(toFile: "\(fixture.www)/SHA256SUMS", atomically: true, encoding: .utf8)

        let summary = try Downloader(options: testOptions()).fetch(
            url: fixture.server.url("f.bin"), expected: .checksumFile(url: fixture.server.url("SHA256SUMS"), fileName: nil),
            to: "\(fixture.out)/f.bin")

        #expect(summary.sha256 == digest)
    }

    @Test(arguments: [String.Encoding.utf16LittleEndian, .utf16BigEndian])
    func utf16ChecksumFileIsRead(encoding: String.Encoding) throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let digest = try fixture.serve("f.bin", count: 1000)
        let byteOrderMark: [UInt8] = encoding == .utf16LittleEndian ? [0xFF, 0xFE] : [0xFE, 0xFF]
        let text = try #require("\(digest.hex.uppercased()) *f.bin\r\n".data(using: encoding))
        try (Data(byteOrderMark) + text).write(to: URL(fileURLWithPath: "\(fixture.www)/SHA256SUMS"))

        let summary = try Downloader(options: testOptions()).fetch(
            url: fixture.server.url("f.bin"), expected: .checksumFile(url: fixture.server.url("SHA256SUMS"), fileName: nil),
            to: "\(fixture.out)/f.bin")

        #expect(summary.sha256 == digest)
    }

    @Test func bareHashSidecarFileIsUsed() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let digest = try fixture.serve("f.bin", count: 1000)
        try "\(digest.hex)\n".write(toFile: "\(fixture.www)/f.bin.sha256", atomically: true, encoding: .utf8)
        let expected = ExpectedChecksum.checksumFile(url: fixture.server.url("f.bin.sha256"), fileName: nil)

        let first = try Downloader(options: testOptions()).fetch(url: fixture.server.url("f.bin"), expected: expected,
                                                                 to: "\(fixture.out)/f.bin")
        let second = try Downloader(options: testOptions()).fetch(url: fixture.server.url("f.bin"), expected: expected,
                                                                  to: "\(fixture.out)/f.bin")

        #expect(first.sha256 == digest)
        #expect(second.reused)
        // The second run takes the hash from f.bin.sha256 beside the download, offline.
        #expect(try fixture.server.requests().map(\.url) == ["/f.bin.sha256", "/f.bin"])
    }

    @Test func userChecksumFileBesideDestinationIsKept() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let digest = try fixture.serve("f.bin", count: 1000)
        try "\(digest.hex)  f.bin\n".write(toFile: "\(fixture.www)/SHA256SUMS", atomically: true, encoding: .utf8)
        let destination = "\(fixture.out)/f.bin"
        // The user's own checksum list, saved where the hash cache would go.
        let userList = "\(digest.hex)  f.bin\n\(String(repeating: "0", count: 64))  g.bin\n"
        try userList.write(toFile: destination + ".sha256", atomically: true, encoding: .utf8)

        let summary = try Downloader(options: testOptions()).fetch(
            url: fixture.server.url("f.bin"), expected: .checksumFile(url: fixture.server.url("SHA256SUMS"), fileName: nil),
            to: destination)

        #expect(summary.sha256 == digest)
        #expect(try String(contentsOfFile: destination + ".sha256", encoding: .utf8) == userList)
    }

    @Test func symlinkBesideDestinationIsNotReplacedByHashCache() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let digest = try fixture.serve("f.bin", count: 1000)
        try "\(digest.hex)  f.bin\n".write(toFile: "\(fixture.www)/SHA256SUMS", atomically: true, encoding: .utf8)
        let destination = "\(fixture.out)/f.bin"
        let other = fixture.scratch.file("other.txt")
        try Data("keep me".utf8).write(to: URL(fileURLWithPath: other))
        try FileManager.default.createSymbolicLink(atPath: destination + ".sha256", withDestinationPath: other)

        _ = try Downloader(options: testOptions()).fetch(
            url: fixture.server.url("f.bin"), expected: .checksumFile(url: fixture.server.url("SHA256SUMS"), fileName: nil),
            to: destination)

        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: destination + ".sha256") == other)
        #expect(try String(contentsOfFile: other, encoding: .utf8) == "keep me")
    }

    @Test func forceOntoDirectoryFailsEarly() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let digest = try fixture.serve("f.bin", count: 10_000)
        let destination = "\(fixture.out)/f.bin"
        try FileManager.default.createDirectory(atPath: destination, withIntermediateDirectories: false)

        let error = #expect(throws: TargetExistsError.self) {
            _ = try Downloader(options: testOptions()).fetch(url: fixture.server.url("f.bin"), expected: .sha256(digest),
                                                            to: destination, force: true)
        }
        #expect(error?.category == .targetExists)
        #expect(try fixture.server.requests().isEmpty)
        #expect(!pathExists(destination + ".part"))
    }

    @Test func forceDoesNotReplaceFIFO() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let digest = try fixture.serve("f.bin", count: 10_000)
        let destination = "\(fixture.out)/f.bin"
        #expect(mkfifo(destination, 0o644) == 0)

        let error = #expect(throws: TargetExistsError.self) {
            _ = try Downloader(options: testOptions()).fetch(url: fixture.server.url("f.bin"), expected: .sha256(digest),
                                                            to: destination, force: true)
        }
        #expect(error?.kind == "FIFO")
        #expect(try fixture.server.requests().isEmpty)
        #expect((try? linkStatus(destination))??.kindDescription == "FIFO")
    }

    @Test func urlPasswordStaysPrivateOnDisk() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let digest = try fixture.serve("f.bin", count: 300_000)
        try "\(digest.hex)  f.bin\n".write(toFile: "\(fixture.www)/SHA256SUMS", atomically: true, encoding: .utf8)
        let base = fixture.server.url("").replacingOccurrences(of: "http://", with: "http://bob:s3cretPW@")
        let destination = "\(fixture.out)/f.bin"
        let expected = ExpectedChecksum.checksumFile(url: base + "SHA256SUMS", fileName: nil)

        #expect(throws: DownloadNetworkError.self) {
            _ = try Downloader(options: testOptions(retries: 0)).fetch(
                url: base + "f.bin?drop_after=100000", expected: expected, to: destination)
        }
        let mode = try FileManager.default.attributesOfItem(atPath: destination + ".part.state")[.posixPermissions] as? Int
        // 0600: the state file records the URL with its password.
        #expect(mode == 0o600)

        _ = try Downloader(options: testOptions()).fetch(url: base + "f.bin", expected: expected, to: destination)
        #expect(try !String(contentsOfFile: destination + ".sha256", encoding: .utf8).contains("s3cretPW"))
        let requestsBefore = try fixture.server.requests().count
        let reused = try Downloader(options: testOptions()).fetch(url: base + "f.bin", expected: expected, to: destination)
        #expect(reused.reused)
        #expect(try fixture.server.requests().count == requestsBefore)
    }

    @Test func symlinkedLockFileIsRejected() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let digest = try fixture.serve("f.bin", count: 10_000)
        let destination = "\(fixture.out)/f.bin"
        let elsewhere = fixture.scratch.file("created-elsewhere")
        try FileManager.default.createSymbolicLink(atPath: destination + ".lock", withDestinationPath: elsewhere)

        let error = #expect(throws: TargetExistsError.self) {
            _ = try Downloader(options: testOptions()).fetch(url: fixture.server.url("f.bin"), expected: .sha256(digest),
                                                            to: destination)
        }
        #expect(error?.path == destination + ".lock")
        #expect(!pathExists(elsewhere))
        #expect(try fixture.server.requests().isEmpty)
    }

    @Test func listedControlCharactersAreEscaped() {
        let error = ChecksumNotListedError(fileName: "f.bin", checksumURL: "http://127.0.0.1:9/SUMS", listed: ["f.bin\0", "g\r"])
        #expect(error.remedy == "it lists f.bin\\0, g\\r; check the image URL or give --sha256")
    }

    @Test func destinationWithNULIsRejected() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let digest = try fixture.serve("f.bin", count: 1000)

        #expect(throws: InvalidArgumentError.self) {
            _ = try Downloader(options: testOptions()).fetch(url: fixture.server.url("f.bin"), expected: .sha256(digest),
                                                            to: "\(fixture.out)/f.bin\0x")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: fixture.out).isEmpty)
    }

    @Test func oversizedChecksumFileIsUsageError() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        try fixture.serve("f.bin", count: 1000)
        // 5 MiB: over the 4 MiB limit for checksum files.
        try fixture.serve("SHA256SUMS", count: 5 << 20)

        let error = #expect(throws: InvalidArgumentError.self) {
            _ = try Downloader(options: testOptions()).fetch(
                url: fixture.server.url("f.bin"), expected: .checksumFile(url: fixture.server.url("SHA256SUMS"), fileName: nil),
                to: "\(fixture.out)/f.bin")
        }
        #expect(error?.category == .usage)
        #expect(try fixture.server.requests().map(\.url) == ["/SHA256SUMS"])
    }

    @Test func redirectLoopFailsAtOnceWithHint() {
        // CURLE_TOO_MANY_REDIRECTS is 47 in curl.h.
        let failure = AttemptFailure.from(curlCode: 47, message: "Maximum (10) redirects followed", url: "http://127.0.0.1:9/x")
        #expect(!failure.retryable)
        #expect(failure.remedy?.contains("redirects in a loop") == true)
    }

    @Test func wholeFileAs206IsAccepted() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let digest = try fixture.serve("f.bin", count: 300_000)
        let recorder = EventRecorder()

        let summary = try Downloader(options: testOptions()).fetch(
            url: fixture.server.url("f.bin?always_206=1"), expected: .sha256(digest), to: "\(fixture.out)/f.bin",
            observer: recorder.observer)

        #expect(try fixture.server.requests().map(\.status) == [206])
        #expect(summary.restarts == 0)
        #expect(recorder.restarts.isEmpty)
        #expect(try sha256sum("\(fixture.out)/f.bin") == digest.hex)
    }

    /// Runs `body` with a tmpfs that contains `www/name` of the fixture, copied before the
    /// tmpfs is remounted read-only, and the path of that copy.
    private func withReadOnlyCopy(of name: String, in fixture: Fixture, label: String = #function,
                                  _ body: (String) throws -> Void) throws {
        let mount = try ScratchMount(type: "tmpfs", options: "size=1m", label: label)
        defer { mount.unmount() }
        let copy = mount.file(name)
        try FileManager.default.copyItem(atPath: "\(fixture.www)/\(name)", toPath: copy)
        let remount = try runProcess("/bin/mount", ["-o", "remount,ro", mount.path])
        try #require(remount.status == 0)
        try body(copy)
    }

    /// A verified file in a directory that cannot be written is reused, although
    /// NAME.lock cannot be created there.
    @Test(.enabled(if: ScratchMount.isPossible, "mounting a tmpfs needs root with CAP_SYS_ADMIN"))
    func verifiedFileInReadOnlyDirectoryIsReused() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let digest = try fixture.serve("f.bin", count: 10_000)
        try withReadOnlyCopy(of: "f.bin", in: fixture) { destination throws in
            let summary = try Downloader(options: testOptions()).fetch(url: fixture.server.url("f.bin"),
                                                                       expected: .sha256(digest), to: destination)
            #expect(summary.reused)
            #expect(summary.size == 10_000)
            #expect(try fixture.server.requests().isEmpty)
            #expect(!pathExists(destination + ".lock"))
        }
    }

    /// Without the lock only reuse is possible, so --force fails on the lock file.
    @Test(.enabled(if: ScratchMount.isPossible, "mounting a tmpfs needs root with CAP_SYS_ADMIN"))
    func forceInReadOnlyDirectoryFailsOnLock() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let digest = try fixture.serve("f.bin", count: 10_000)
        try withReadOnlyCopy(of: "f.bin", in: fixture) { destination throws in
            let error = #expect(throws: SystemError.self) {
                _ = try Downloader(options: testOptions()).fetch(url: fixture.server.url("f.bin"), expected: .sha256(digest),
                                                                to: destination, force: true)
            }
            #expect(error?.path == destination + ".lock")
            #expect(error?.errno == .readOnlyFileSystem)
            #expect(try fixture.server.requests().isEmpty)
        }
    }

    /// A file with another hash fails as it does where the lock can be taken.
    @Test(.enabled(if: ScratchMount.isPossible, "mounting a tmpfs needs root with CAP_SYS_ADMIN"))
    func mismatchInReadOnlyDirectoryIsRejected() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        try fixture.serve("f.bin", count: 10_000)
        let other = try fixture.serve("other.bin", count: 10_000, seed: 2)
        try withReadOnlyCopy(of: "f.bin", in: fixture) { destination throws in
            let error = #expect(throws: DestinationMismatchError.self) {
                _ = try Downloader(options: testOptions()).fetch(url: fixture.server.url("f.bin"), expected: .sha256(other),
                                                                to: destination)
            }
            // --force fails on the lock file there, so the hint must not offer it alone.
            #expect(error?.directoryIsWritable == false)
            #expect(error?.remedy?.hasPrefix("pass --force") == false)
            #expect(try fixture.server.requests().isEmpty)
        }
    }

    /// The directory is the destination's path up to its last slash, as given: removing
    /// `link/..` as text names another directory than the kernel does when `link` is a
    /// symbolic link.
    @Test func downloadDirectoryKeepsPathAsGiven() {
        let cases: [(destination: String, directory: String)] = [
            ("link/../f.bin", "link/.."),
            ("/srv/link/../f.bin", "/srv/link/.."),
            ("./f.bin", "."),
            ("f.bin", "."),
            ("/f.bin", "/"),
        ]
        for (destination, directory) in cases {
            #expect(DownloadPaths(destination: destination).directory == directory, "destination '\(destination)'")
        }
    }

    @Test(.enabled(if: ScratchMount.isPossible, "mounting a tmpfs needs root with CAP_SYS_ADMIN"))
    func readOnlyDirectoryMissingFile() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let digest = try fixture.serve("f.bin", count: 10_000)
        try withReadOnlyCopy(of: "f.bin", in: fixture) { copy throws in
            let destination = copy + ".missing"
            let error = #expect(throws: SystemError.self) {
                _ = try Downloader(options: testOptions()).fetch(url: fixture.server.url("f.bin"), expected: .sha256(digest),
                                                                to: destination)
            }
            #expect(error?.path == destination + ".lock")
            #expect(error?.errno == .readOnlyFileSystem)
        }
    }

}

/// Another program that can write the download directory: once every byte of the download
/// is written, it renames a file of its own over NAME.part.
private final class PartialFileSwap: Sendable {
    static let decoyText = "not the download"
    private let swapped = Atomic<Bool>(false)
    private let decoy: String
    private let keepDownloadAt: String?

    init(decoy: String, keepDownloadAt: String?) throws {
        self.decoy = decoy
        self.keepDownloadAt = keepDownloadAt
        try Data(Self.decoyText.utf8).write(to: URL(fileURLWithPath: decoy))
    }

    var hasSwapped: Bool { swapped.load(ordering: .relaxed) }

    func observe(_ event: DownloadEvent) {
        guard case .wrote(let partPath, let length, let total) = event, length == total,
              swapped.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged else { return }
        if let keepDownloadAt { _ = link(partPath, keepDownloadAt) }
        _ = rename(decoy, partPath)
    }

}

// Downloader against the fault-injection server: each server behaviour that broke other
// downloaders, one test each, plus HTTP errors, TLS and the destination rules.

import Foundation
import Testing
@testable import ImageCore

@Suite struct DownloaderFaultTests {
    /// A scratch directory with `www/` served by a fault server and `out/` for downloads.
    struct Fixture {
        let scratch: ScratchDirectory
        let server: FaultServer
        var www: String { scratch.file("www") }
        var out: String { scratch.file("out") }

        init(_ label: String = #function) throws {
            scratch = try ScratchDirectory(label)
            try FileManager.default.createDirectory(atPath: scratch.file("www"), withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: scratch.file("out"), withIntermediateDirectories: true)
            server = try FaultServer(root: scratch.file("www"), logPath: scratch.file("requests.log"))
        }

        func remove() {
            server.stop()
            scratch.remove()
        }

        /// Writes `count` bytes to `www/name` and returns their SHA-256.
        @discardableResult
        func serve(_ name: String, count: Int, seed: UInt64 = 1) throws -> SHA256Digest {
            SHA256.hash(try writeRandomFile("\(www)/\(name)", count: count, seed: seed))
        }
    }

    static let mebibyte = 1 << 20

    @Test func chunkedBodyOverLimitStops() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let digest = try fixture.serve("f.bin", count: 3 * Self.mebibyte)
        var options = testOptions()
        options.maximumSize = Int64(Self.mebibyte) + 1
        let destination = "\(fixture.out)/f.bin"

        let error = #expect(throws: DownloadTooLargeError.self) {
            _ = try Downloader(options: options).fetch(url: fixture.server.url("f.bin?chunked=1"), expected: .sha256(digest),
                                                       to: destination)
        }

        #expect(error?.announced == nil)
        #expect(error?.limit == Int64(Self.mebibyte) + 1)
        #expect(error?.category == .network)
        #expect(try fixture.server.requests().count == 1)
        #expect(!pathExists(destination + ".part"))
        #expect(!pathExists(destination + ".part.state"))
        #expect(!pathExists(destination))
    }

    @Test func announcedLengthOverLimitFailsBeforeBody() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let digest = try fixture.serve("f.bin", count: 300_000)
        var options = testOptions()
        options.maximumSize = 299_999
        let destination = "\(fixture.out)/f.bin"

        let error = #expect(throws: DownloadTooLargeError.self) {
            _ = try Downloader(options: options).fetch(url: fixture.server.url("f.bin"), expected: .sha256(digest),
                                                       to: destination)
        }
        options.maximumSize = 300_000
        let summary = try Downloader(options: options).fetch(url: fixture.server.url("f.bin"), expected: .sha256(digest),
                                                             to: destination)

        #expect(error?.announced == 300_000)
        #expect(error?.description.contains("announced 300000 bytes, more than the limit of 299999 bytes") == true)
        #expect(summary.sha256 == digest)
        #expect(summary.resumedFrom == 0)
    }

    @Test func ignoredRangeRestartsFromZero() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let digest = try fixture.serve("f.bin", count: 3 * Self.mebibyte)
        let recorder = EventRecorder()
        let url = fixture.server.url("f.bin?ignore_range=1&drop_after=1048576&drop_times=1")

        let summary = try Downloader(options: testOptions()).fetch(
            url: url, expected: .sha256(digest), to: "\(fixture.out)/f.bin", observer: recorder.observer)

        let requests = try fixture.server.requests()
        #expect(requests.count == 2)
        #expect(requests[1].range == "bytes=1048576-")
        #expect(requests[1].status == 200)
        #expect(try sha256sum("\(fixture.out)/f.bin") == digest.hex)
        #expect(recorder.restarts.count == 1)
        // 1 MiB before the drop, then the whole 3 MiB again from the 200 response.
        #expect(summary.bytesDownloaded == 4 * Int64(Self.mebibyte))
    }

    @Test func completePartialWith416IsVerified() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let content = try writeRandomFile("\(fixture.www)/f.bin", count: 700_000)
        let digest = SHA256.hash(content)
        let destination = "\(fixture.out)/f.bin"
        let url = fixture.server.url("f.bin")
        // A partial file that already contains every byte, with no validator, so the
        // server responds to the range request with 416 and a small HTML body.
        try content.write(to: URL(fileURLWithPath: destination + ".part"))
        try DownloadState(url: url, finalURL: url, etag: nil, lastModified: nil, expectedLength: nil, sha256: digest.hex)
            .save(to: destination + ".part.state")

        let summary = try Downloader(options: testOptions()).fetch(url: url, expected: .sha256(digest), to: destination)

        let requests = try fixture.server.requests()
        #expect(requests.map(\.status) == [416])
        #expect(summary.bytesDownloaded == 0)
        #expect(fileSize(destination) == 700_000)
        #expect(try sha256sum(destination) == digest.hex)
        #expect(!pathExists(destination + ".part"))
        #expect(!pathExists(destination + ".part.state"))

        let second = try Downloader(options: testOptions()).fetch(url: url, expected: .sha256(digest), to: destination)
        #expect(second.reused)
        #expect(try fixture.server.requests().count == 1)
    }

    @Test(arguments: [false, true])
    func changedFileIsNeverSpliced(serverIgnoresIfRange: Bool) throws {
        let fixture = try Fixture("changedFile\(serverIgnoresIfRange)")
        defer { fixture.remove() }
        try fixture.serve("f.bin", count: 2 * Self.mebibyte, seed: 1)
        let newContent = try writeRandomFile(fixture.scratch.file("new.bin"), count: 2 * Self.mebibyte, seed: 2)
        let newDigest = SHA256.hash(newContent)
        let destination = "\(fixture.out)/f.bin"
        let query = serverIgnoresIfRange ? "&ignore_if_range=1" : ""
        let url = fixture.server.url("f.bin?drop_after=1048576&drop_times=1\(query)")

        // The first attempt stores 1 MiB of the old file, then the file changes.
        #expect(throws: DownloadNetworkError.self) {
            _ = try Downloader(options: testOptions(retries: 0)).fetch(url: url, expected: .sha256(newDigest), to: destination)
        }
        #expect(fileSize(destination + ".part") == Int64(Self.mebibyte))
        try newContent.write(to: URL(fileURLWithPath: "\(fixture.www)/f.bin"))
        let later = Date().addingTimeInterval(5)
        try FileManager.default.setAttributes([.modificationDate: later], ofItemAtPath: "\(fixture.www)/f.bin")

        let recorder = EventRecorder()
        _ = try Downloader(options: testOptions()).fetch(url: url, expected: .sha256(newDigest), to: destination,
                                                        observer: recorder.observer)

        #expect(try sha256sum(destination) == newDigest.hex)
        #expect(recorder.restarts.count == 1)
        let requests = try fixture.server.requests()
        #expect(requests[1].range == "bytes=1048576-")
        #expect(requests[1].if_range != nil)
        // A server that honours If-Range sends the new file at once (200); one that ignores
        // it sends the new tail (206), which is rejected and fetched again from zero.
        #expect(requests.map(\.status) == (serverIgnoresIfRange ? [200, 206, 200] : [200, 200]))
    }

    @Test func resumeGoesToRedirectTarget() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let digest = try fixture.serve("f.bin", count: 2 * Self.mebibyte)
        let mirror = "/f.bin?drop_after=1048576&drop_times=1"
        let url = fixture.server.url("start.bin?range_404=1&redirect=" + mirror.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!)

        let summary = try Downloader(options: testOptions()).fetch(url: url, expected: .sha256(digest), to: "\(fixture.out)/f.bin")

        let requests = try fixture.server.requests()
        #expect(requests.map(\.status) == [302, 200, 206])
        #expect(requests[2].url == mirror)
        #expect(requests[2].range == "bytes=1048576-")
        #expect(summary.finalURL == fixture.server.url(String(mirror.dropFirst())))
        #expect(try sha256sum("\(fixture.out)/f.bin") == digest.hex)
    }

    /// Writes a 2 MiB f.bin to serve and the first half of it as a partial download whose
    /// state records that an earlier run was redirected to `finalURL`. The ETag is the one
    /// fault_server.py computes for the file. Returns the file's hash, the destination and
    /// the requested URL.
    private func writeRedirectedPartial(_ fixture: Fixture, finalURL: String) throws
        -> (digest: SHA256Digest, destination: String, url: String) {
        let content = try writeRandomFile("\(fixture.www)/f.bin", count: 2 * Self.mebibyte)
        let digest = SHA256.hash(content)
        let destination = "\(fixture.out)/f.bin"
        let url = fixture.server.url("f.bin")
        let etag = "\"\(digest.hex.prefix(16))\""
        try content.prefix(Self.mebibyte).write(to: URL(fileURLWithPath: destination + ".part"))
        try DownloadState(url: url, finalURL: finalURL, etag: etag, lastModified: nil,
                          expectedLength: Int64(content.count), sha256: digest.hex).save(to: destination + ".part.state")
        return (digest, destination, url)
    }

    @Test func expiredFinalURLFallsBackToRequested() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        // The mirror link of the earlier run no longer exists.
        let (digest, destination, url) = try writeRedirectedPartial(fixture, finalURL: fixture.server.url("expired.bin"))

        let summary = try Downloader(options: testOptions()).fetch(url: url, expected: .sha256(digest), to: destination)

        let requests = try fixture.server.requests()
        #expect(requests.map(\.url) == ["/expired.bin", "/f.bin"])
        #expect(requests.map(\.status) == [404, 206])
        #expect(summary.bytesDownloaded == Int64(Self.mebibyte))
        #expect(try sha256sum(destination) == digest.hex)
    }

    @Test func unreachableFinalURLFallsBackToRequested() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        // The mirror of the earlier run no longer accepts connections; the requested URL
        // still works (and would redirect to a live mirror).
        let (digest, destination, url) = try writeRedirectedPartial(fixture, finalURL: "http://127.0.0.1:9/f.bin")

        let summary = try Downloader(options: testOptions()).fetch(url: url, expected: .sha256(digest), to: destination)

        let requests = try fixture.server.requests()
        #expect(requests.map(\.url) == ["/f.bin"])
        #expect(requests.map(\.status) == [206])
        #expect(summary.bytesDownloaded == Int64(Self.mebibyte))
        #expect(try sha256sum(destination) == digest.hex)
    }

    @Test func gzipContentEncodingIsStoredAsServed() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        try writeRandomFile(fixture.scratch.file("plain"), count: 300_000)
        try shell("gzip -c '\(fixture.scratch.file("plain"))' > '\(fixture.www)/image.img.gz'")
        let published = try sha256sum("\(fixture.www)/image.img.gz")
        let url = fixture.server.url("image.img.gz?content_encoding=gzip")

        _ = try Downloader(options: testOptions()).fetch(url: url, expected: .sha256(SHA256Digest(hex: published)!),
                                                        to: "\(fixture.out)/image.img.gz")

        #expect(try sha256sum("\(fixture.out)/image.img.gz") == published)
        #expect(try fixture.server.requests()[0].accept_encoding == nil)
    }

    @Test func chunkedBodyReportsUnknownTotal() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let digest = try fixture.serve("f.bin", count: 1_500_000)
        let updates = Recorded<ProgressUpdate>()
        let recorder = EventRecorder()

        let summary = try Downloader(options: testOptions()).fetch(
            url: fixture.server.url("f.bin?chunked=1"), expected: .sha256(digest), to: "\(fixture.out)/f.bin",
            progress: { updates.append($0) }, observer: recorder.observer)

        #expect(summary.size == 1_500_000)
        #expect(try sha256sum("\(fixture.out)/f.bin") == digest.hex)
        let during = updates.values.dropLast()
        #expect(during.allSatisfy { $0.total == nil })
        #expect(during.allSatisfy { $0.percent == nil })
        #expect(during.allSatisfy { $0.secondsLeft == nil })
        #expect(updates.values.last?.percent == 100)
        let wroteTotals = recorder.events.compactMap { if case .wrote(_, _, let total) = $0 { return total } else { return nil } }
        #expect(wroteTotals.isEmpty)
    }

    @Test func shiftedResumeIsCaughtAndRestartedOnce() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let digest = try fixture.serve("f.bin", count: 2 * Self.mebibyte)
        let recorder = EventRecorder()
        let url = fixture.server.url("f.bin?drop_after=1048576&drop_times=1&shift=4")

        let summary = try Downloader(options: testOptions()).fetch(url: url, expected: .sha256(digest),
                                                                  to: "\(fixture.out)/f.bin", observer: recorder.observer)

        #expect(try sha256sum("\(fixture.out)/f.bin") == digest.hex)
        // 200 dropped after 1 MiB, the shifted 206, then the whole file again.
        #expect(try fixture.server.requests().map(\.status) == [200, 206, 200])
        #expect(recorder.restarts.count == 1)
        #expect(recorder.restarts.first?.hasPrefix("checksum mismatch") == true)
        #expect(summary.restarts == 1)
    }

    @Test func persistentMismatchFailsWithBothHashes() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let content = try writeRandomFile("\(fixture.www)/f.bin", count: 400_000)
        let digest = SHA256.hash(content)
        var corrupted = content
        corrupted[200_000] ^= 0xFF
        let destination = "\(fixture.out)/f.bin"

        let error = #expect(throws: ChecksumMismatchError.self) {
            _ = try Downloader(options: testOptions()).fetch(url: fixture.server.url("f.bin?corrupt=1"),
                                                            expected: .sha256(digest), to: destination)
        }
        #expect(error?.expected == digest)
        #expect(error?.actual == SHA256.hash(corrupted))
        #expect(error?.category == .invalidData)
        #expect(error?.description.contains(digest.hex) == true)
        #expect(try fixture.server.requests().count == 2)
        #expect(!pathExists(destination))
        #expect(!pathExists(destination + ".part"))
    }

    @Test func threeDropsResumeWithoutRefetching() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let size = 5 * Self.mebibyte
        let digest = try fixture.serve("f.bin", count: size)
        let recorder = EventRecorder()

        let summary = try Downloader(options: testOptions(retries: 3)).fetch(
            url: fixture.server.url("f.bin?drop_after=1048576&drop_times=3"), expected: .sha256(digest),
            to: "\(fixture.out)/f.bin", observer: recorder.observer)

        #expect(try sha256sum("\(fixture.out)/f.bin") == digest.hex)
        let requests = try fixture.server.requests()
        #expect(requests.map(\.range) == [nil, "bytes=1048576-", "bytes=2097152-", "bytes=3145728-"])
        // Every byte crossed the wire exactly once: the sizes sent add up to the file.
        #expect(requests.map(\.sent).reduce(0, +) == Int64(size))
        #expect(summary.bytesDownloaded == Int64(size))
        #expect(summary.attempts == 4)
        #expect(recorder.restarts.isEmpty)
    }

    @Test func dropsWithProgressOutlastRetries() throws {
        // Six drops with one retry allowed: every attempt adds 1 MiB before it fails, so
        // the count starts again after each one and the download completes.
        let fixture = try Fixture()
        defer { fixture.remove() }
        let size = 7 * Self.mebibyte
        let digest = try fixture.serve("f.bin", count: size)

        let summary = try Downloader(options: testOptions(retries: 1)).fetch(
            url: fixture.server.url("f.bin?drop_after=1048576&drop_times=6"), expected: .sha256(digest),
            to: "\(fixture.out)/f.bin")

        #expect(try sha256sum("\(fixture.out)/f.bin") == digest.hex)
        #expect(summary.attempts == 7)
        #expect(summary.bytesDownloaded == Int64(size))
    }

    @Test func stallIsRetried() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let digest = try fixture.serve("f.bin", count: 100_000)

        let summary = try Downloader(options: testOptions(stall: .seconds(1))).fetch(
            url: fixture.server.url("f.bin?stall_times=1"), expected: .sha256(digest), to: "\(fixture.out)/f.bin")

        #expect(summary.attempts == 2)
        #expect(try sha256sum("\(fixture.out)/f.bin") == digest.hex)
    }

    @Test func stallWithoutRetriesFailsClearly() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let digest = try fixture.serve("f.bin", count: 100_000)
        let url = fixture.server.url("f.bin?stall_times=100")
        let started = ContinuousClock.now

        let error = #expect(throws: DownloadNetworkError.self) {
            _ = try Downloader(options: testOptions(retries: 1, stall: .seconds(1))).fetch(
                url: url, expected: .sha256(digest), to: "\(fixture.out)/f.bin")
        }
        #expect(error?.attempts == 2)
        #expect(error?.category == .network)
        #expect(error?.description.contains(url) == true)
        #expect(error?.reason.contains("no data received for 1.0 s") == true)
        // Two attempts of about 1 s each: libcurl checks progress about once a second.
        #expect(ContinuousClock.now - started < .seconds(10))
    }

    @Test func checksumFileWithBOMAndCRLFIsRead() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        _ = FileManager.default.createFile(atPath: "\(fixture.www)/x", contents: Data())
        let listing = "\u{FEFF}e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 *x\r\n"
        try listing.write(toFile: "\(fixture.www)/SHA256SUMS", atomically: true, encoding: .utf8)

        let summary = try Downloader(options: testOptions()).fetch(
            url: fixture.server.url("x"), expected: .checksumFile(url: fixture.server.url("SHA256SUMS"), fileName: nil),
            to: "\(fixture.out)/x")

        #expect(summary.sha256.hex == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(fileSize("\(fixture.out)/x") == 0)
    }

    @Test func catalogEntryWithChecksumFileIsReusedOffline() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let digest = try fixture.serve("image.img.gz", count: 100_000)
        try "\(digest.hex)  image.img.gz\n".write(toFile: "\(fixture.www)/SHA256SUMS", atomically: true, encoding: .utf8)
        let entry = CatalogEntry(name: "Test", version: "v1", url: fixture.server.url("image.img.gz"),
                                 checksumURL: fixture.server.url("SHA256SUMS"), kernel: "vmlinuz", initrd: "initrd",
                                 kernelArguments: [], passwordForm: .plain, splitsCommandLineOnSpaces: false)

        let first = try Downloader(options: testOptions()).fetch(entry, into: fixture.out)
        let second = try Downloader(options: testOptions()).fetch(entry, into: fixture.out)

        #expect(first.path == "\(fixture.out)/image.img.gz")
        #expect(first.sha256 == digest)
        #expect(second.reused)
        // The checksum file and the image once; the second fetch used NAME.sha256.
        #expect(try fixture.server.requests().map(\.url) == ["/SHA256SUMS", "/image.img.gz"])
    }

    @Test func missingChecksumEntryIsNotAMismatch() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        try fixture.serve("f.bin", count: 1000)
        try "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  other.bin\n"
            .write(toFile: "\(fixture.www)/SHA256SUMS", atomically: true, encoding: .utf8)
        let checksumURL = fixture.server.url("SHA256SUMS")

        let error = #expect(throws: ChecksumNotListedError.self) {
            _ = try Downloader(options: testOptions()).fetch(
                url: fixture.server.url("f.bin"), expected: .checksumFile(url: checksumURL, fileName: nil),
                to: "\(fixture.out)/f.bin")
        }
        #expect(error?.description == "no checksum for f.bin in \(checksumURL)")
        #expect(error?.listed == ["other.bin"])
        // Only the checksum file was requested: nothing is downloaded without a hash.
        #expect(try fixture.server.requests().map(\.url) == ["/SHA256SUMS"])
    }

    @Test func notFoundFailsWithoutRetry() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let url = fixture.server.url("missing.bin")

        let error = #expect(throws: HTTPStatusError.self) {
            _ = try Downloader(options: testOptions()).fetch(url: url, expected: .sha256(SHA256.hash(Data())),
                                                            to: "\(fixture.out)/missing.bin")
        }
        #expect(error?.statusCode == 404)
        #expect(error?.description == "download of \(url) failed: the server responded with HTTP 404")
        #expect(try fixture.server.requests().count == 1)
        #expect(fileSize("\(fixture.out)/missing.bin.part") <= 0)
        #expect(!pathExists("\(fixture.out)/missing.bin"))
    }

    @Test func serverErrorsAreRetried() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let digest = try fixture.serve("f.bin", count: 50_000)

        let summary = try Downloader(options: testOptions()).fetch(
            url: fixture.server.url("f.bin?status=503&status_times=2"), expected: .sha256(digest), to: "\(fixture.out)/f.bin")

        #expect(try fixture.server.requests().map(\.status) == [503, 503, 200])
        #expect(summary.attempts == 3)
        // The error pages' bodies are never stored.
        #expect(try sha256sum("\(fixture.out)/f.bin") == digest.hex)
    }

    @Test func untrustedCertificateIsReportedInPlainWords() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let key = scratch.file("key.pem"), certificate = scratch.file("cert.pem")
        let generated = try shell("openssl req -x509 -newkey rsa:2048 -nodes -keyout '\(key)' -out '\(certificate)' -days 1 -subj /CN=127.0.0.1 2>&1")
        #expect(generated.status == 0)
        try FileManager.default.createDirectory(atPath: scratch.file("www"), withIntermediateDirectories: true)
        let server = try FaultServer(root: scratch.file("www"), logPath: scratch.file("log"),
                                     tlsCertificate: (certificate, key))
        defer { server.stop() }
        let url = server.url("f.bin", scheme: "https")

        let error = #expect(throws: DownloadNetworkError.self) {
            _ = try Downloader(options: testOptions()).fetch(url: url, expected: .sha256(SHA256.hash(Data())),
                                                            to: scratch.file("f.bin"))
        }
        #expect(error?.description.contains(url) == true)
        #expect(error?.reason.contains("the TLS certificate of '127.0.0.1' could not be verified") == true)
        // A certificate problem is not transient, so there is no retry.
        #expect(error?.attempts == 1)
    }

    @Test func existingDifferentFileIsKeptWithoutForce() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let digest = try fixture.serve("f.bin", count: 10_000)
        let destination = "\(fixture.out)/f.bin"
        try Data("keep me".utf8).write(to: URL(fileURLWithPath: destination))

        let error = #expect(throws: DestinationMismatchError.self) {
            _ = try Downloader(options: testOptions()).fetch(url: fixture.server.url("f.bin"), expected: .sha256(digest),
                                                            to: destination)
        }
        #expect(error?.category == .targetExists)
        #expect(try String(contentsOfFile: destination, encoding: .utf8) == "keep me")
        #expect(try fixture.server.requests().isEmpty)

        _ = try Downloader(options: testOptions()).fetch(url: fixture.server.url("f.bin"), expected: .sha256(digest),
                                                        to: destination, force: true)
        #expect(try sha256sum(destination) == digest.hex)
    }

    @Test func observerSeesGrowthThenPublication() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let digest = try fixture.serve("f.bin", count: 3 * Self.mebibyte)
        let recorder = EventRecorder()
        let destination = "\(fixture.out)/f.bin"

        _ = try Downloader(options: testOptions()).fetch(url: fixture.server.url("f.bin"), expected: .sha256(digest),
                                                        to: destination, observer: recorder.observer)

        let lengths = recorder.events.compactMap { if case .wrote(_, let length, _) = $0 { return length } else { return nil } }
        #expect(!lengths.isEmpty)
        #expect(lengths == lengths.sorted())
        #expect(lengths.last == 3 * Int64(Self.mebibyte))
        #expect(recorder.events.last == .published(path: destination, reused: false))
        #expect(recorder.events.first == .wrote(partPath: destination + ".part", length: lengths[0], total: 3 * Int64(Self.mebibyte)))
    }
}

/// Values appended from any thread.
final class Recorded<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [Value] = []
    func append(_ value: Value) { lock.withLock { stored.append(value) } }
    var values: [Value] { lock.withLock { stored } }
}

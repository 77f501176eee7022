// `imgtool fetch` against a real nginx on 127.0.0.1: full download, resume after SIGKILL,
// --force, reuse, two processes at once, and a catalog of the test's own.

import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif
@testable import ImageCore

@Suite(.serialized) struct FetchNginxTests {
    struct Fixture {
        let scratch: ScratchDirectory
        let nginx: NginxServer
        let content: Data
        let digest: SHA256Digest
        var out: String { scratch.file("out") }

        /// Serves `www/image.bin` (`size` bytes) through nginx, at `limitRate` per connection.
        init(size: Int, limitRate: String? = nil, _ label: String = #function) throws {
            scratch = try ScratchDirectory(label)
            let www = scratch.file("www")
            try FileManager.default.createDirectory(atPath: www, withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: scratch.file("out"), withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: scratch.file("nginx"), withIntermediateDirectories: true)
            content = try writeRandomFile("\(www)/image.bin", count: size)
            digest = SHA256.hash(content)
            nginx = try NginxServer(root: www, directory: scratch.file("nginx"), limitRate: limitRate)
        }

        func remove() {
            nginx.stop()
            scratch.remove()
        }

        var url: String { nginx.url("image.bin") }
        var destination: String { "\(out)/image.bin" }

        func fetchArguments(_ extra: [String] = []) -> [String] {
            ["fetch", url, "--sha256", digest.hex, "--output", destination, "--progress", "none"] + extra
        }
    }

    @Test func fullDownloadPrintsVerifiedPath() throws {
        let fixture = try Fixture(size: 3_000_000)
        defer { fixture.remove() }

        let result = try runProcess(imgtoolExecutable(), fixture.fetchArguments())

        #expect(result.status == 0)
        #expect(result.outputText == fixture.destination + "\n")
        #expect(try sha256sum(fixture.destination) == fixture.digest.hex)
        let requests = try fixture.nginx.requests()
        #expect(requests.map(\.status) == [200])
        #expect(!pathExists(fixture.destination + ".part"))
        #expect(!pathExists(fixture.destination + ".part.state"))
    }

    @Test func verifiedFileIsReusedWithoutNetwork() throws {
        let fixture = try Fixture(size: 1_000_000)
        defer { fixture.remove() }
        try runProcess(imgtoolExecutable(), fixture.fetchArguments())

        let second = try runProcess(imgtoolExecutable(), fixture.fetchArguments())

        #expect(second.status == 0)
        #expect(second.outputText == fixture.destination + "\n")
        #expect(try fixture.nginx.requests().count == 1)
    }

    @Test func forceDownloadsAgain() throws {
        let fixture = try Fixture(size: 1_000_000)
        defer { fixture.remove() }
        try runProcess(imgtoolExecutable(), fixture.fetchArguments())

        let forced = try runProcess(imgtoolExecutable(), fixture.fetchArguments(["--force"]))

        #expect(forced.status == 0)
        let requests = try fixture.nginx.requests()
        #expect(requests.map(\.status) == [200, 200])
        #expect(requests.last?.bytesSent == 1_000_000)
        #expect(try sha256sum(fixture.destination) == fixture.digest.hex)
    }

    @Test func resumeAfterSIGKILLIsByteIdentical() throws {
        // 24 MiB at 8 MiB/s per connection: about 3 s for the whole file, so three kills
        // within 0.6 s of each run's first stored byte land in the middle of the body.
        let size = 24 << 20
        let fixture = try Fixture(size: size, limitRate: "8m")
        defer { fixture.remove() }
        let part = fixture.destination + ".part"

        var partSizes: [Int64] = []
        for _ in 0..<3 {
            partSizes.append(max(0, fileSize(part)))
            let process = Process()
            process.executableURL = URL(fileURLWithPath: imgtoolExecutable())
            process.arguments = fixture.fetchArguments()
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            // Wait until this run has stored bytes of its own (so it did send a request,
            // even on a slow machine), then kill it at a random point after that.
            let before = partSizes.last!
            let deadline = Date().addingTimeInterval(20)
            while fileSize(part) <= before && process.isRunning && Date() < deadline { usleep(10_000) }
            usleep(UInt32.random(in: 0...600_000))
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            #expect(process.terminationReason == .uncaughtSignal)
        }
        partSizes.append(max(0, fileSize(part)))
        #expect(partSizes.last! > 0)
        #expect(partSizes == partSizes.sorted())
        #expect(!pathExists(fixture.destination))

        let final = try runProcess(imgtoolExecutable(), fixture.fetchArguments())

        #expect(final.status == 0)
        expectEqualBytes(try Data(contentsOf: URL(fileURLWithPath: fixture.destination)), fixture.content)
        let requests = try fixture.nginx.requests()
        try #require(requests.count == partSizes.count)
        // Each run requests exactly what is missing from the partial file...
        let expectedRanges = partSizes.map { $0 == 0 ? nil : "bytes=\($0)-" }
        #expect(requests.map(\.range) == expectedRanges)
        // ...and the last one receives only that: nothing before its resume point again.
        #expect(requests.last?.bytesSent == Int64(size) - partSizes.last!)
    }

    @Test func interruptKeepsPartialForResume() throws {
        let fixture = try Fixture(size: 16 << 20, limitRate: "4m")
        defer { fixture.remove() }
        let part = fixture.destination + ".part"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: imgtoolExecutable())
        process.arguments = fixture.fetchArguments()
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(20)
        while fileSize(part) <= 0 && process.isRunning && Date() < deadline { usleep(10_000) }

        kill(process.processIdentifier, SIGINT)
        process.waitUntilExit()

        // 128 + SIGINT (2): the documented exit status for an interrupted command.
        #expect(process.terminationStatus == 130)
        #expect(fileSize(part) > 0)
        #expect(pathExists(part + ".state"))
        #expect(!pathExists(fixture.destination))
    }

    @Test func secondProcessWaitsThenReuses() throws {
        let fixture = try Fixture(size: 8 << 20, limitRate: "8m")
        defer { fixture.remove() }

        var processes: [Process] = []
        for _ in 0..<2 {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: imgtoolExecutable())
            process.arguments = fixture.fetchArguments()
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            processes.append(process)
        }
        for process in processes { process.waitUntilExit() }

        #expect(processes.map(\.terminationStatus) == [0, 0])
        #expect(try fixture.nginx.requests().map(\.status) == [200])
        #expect(try sha256sum(fixture.destination) == fixture.digest.hex)
    }

    @Test func catalogImageIsFetchedByName() throws {
        let fixture = try Fixture(size: 200_000)
        defer { fixture.remove() }
        let catalog = fixture.scratch.file("catalog.json")
        let entry = """
        {"name": "Test", "version": "%@", "url": "%@", "sha256": "%@", "kernel": "vmlinuz", "initrd": "initrd",
         "kernelArguments": [], "passwordForm": "plain", "splitsCommandLineOnSpaces": false}
        """
        let old = String(format: entry, "v1.9", fixture.nginx.url("missing.bin"), String(repeating: "0", count: 64))
        let new = String(format: entry, "v1.10", fixture.url, fixture.digest.hex)
        try "{\"images\": [\(old), \(new)]}".write(toFile: catalog, atomically: true, encoding: .utf8)

        let result = try runProcess(imgtoolExecutable(), ["fetch", "Test", "--catalog", catalog, "--dir", fixture.out,
                                                          "--progress", "none"])

        #expect(result.status == 0)
        #expect(result.outputText == fixture.destination + "\n")
        #expect(try sha256sum(fixture.destination) == fixture.digest.hex)
    }
}

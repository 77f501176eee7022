// Downloader publication where hard links or RENAME_NOREPLACE are missing. The seam
// `PublicationFaults` fails those calls with the errno that vfat or an old kernel returns,
// so the fallbacks run on the test machine's own file system.

import Foundation
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif
@testable import ImageCore

@Suite struct PublicationFallbackTests {
    typealias Fixture = DownloaderFaultTests.Fixture

    /// The file systems and kernels whose publication path differs from linkat through /proc.
    static let faultCases: [(name: String, faults: PublicationFaults)] = [
        // vfat: no hard links, but renameat2 with RENAME_NOREPLACE works.
        ("vfat", PublicationFaults(linkThroughProc: .notPermitted)),
        // No /proc and a kernel without RENAME_NOREPLACE: link(2) by name.
        ("old kernel without /proc",
         PublicationFaults(linkThroughProc: .noEntry, renameWithoutReplacing: .invalidArgument)),
        // vfat on an old kernel: neither hard links nor RENAME_NOREPLACE.
        ("vfat on old kernel",
         PublicationFaults(linkThroughProc: .notPermitted, renameWithoutReplacing: .invalidArgument,
                           linkByName: .notPermitted)),
    ]

    private func downloader(_ faults: PublicationFaults) -> Downloader {
        Downloader(options: testOptions(), publicationFaults: faults)
    }

    @Test(arguments: 0..<faultCases.count)
    func fallbackPublishesVerifiedFile(_ index: Int) throws {
        let (name, faults) = Self.faultCases[index]
        let fixture = try Fixture()
        defer { fixture.remove() }
        let digest = try fixture.serve("f.bin", count: 100_000)
        let destination = "\(fixture.out)/f.bin"

        let summary = try downloader(faults).fetch(url: fixture.server.url("f.bin"), expected: .sha256(digest),
                                                   to: destination)

        #expect(summary.path == destination, "\(name)")
        #expect(try SHA256.hash(fileAt: destination) == digest, "\(name)")
        #expect(!pathExists(destination + ".part"), "\(name)")
        #expect(!pathExists(destination + ".part.state"), "\(name)")
    }

    /// A file that appears under the final name during the download is kept.
    @Test(arguments: 0..<faultCases.count)
    func fallbackKeepsFileCreatedDuringDownload(_ index: Int) throws {
        let (name, faults) = Self.faultCases[index]
        let fixture = try Fixture()
        defer { fixture.remove() }
        let digest = try fixture.serve("f.bin", count: 100_000)
        let destination = "\(fixture.out)/f.bin"
        let created = Mutex(false)
        let observer: DownloadObserver = { event in
            guard case .wrote = event else { return }
            created.withLock { created in
                guard !created else { return }
                created = FileManager.default.createFile(atPath: destination, contents: Data("other".utf8))
            }
        }

        let error = #expect(throws: TargetExistsError.self, "\(name)") {
            _ = try downloader(faults).fetch(url: fixture.server.url("f.bin"), expected: .sha256(digest),
                                             to: destination, observer: observer)
        }

        #expect(created.withLock { $0 }, "\(name)")
        #expect(error?.path == destination, "\(name)")
        #expect(try String(contentsOfFile: destination, encoding: .utf8) == "other", "\(name)")
    }

    /// With force, an existing file with other content is replaced by the verified file.
    @Test(arguments: 0..<faultCases.count)
    func fallbackReplacesFileWithForce(_ index: Int) throws {
        let (name, faults) = Self.faultCases[index]
        let fixture = try Fixture()
        defer { fixture.remove() }
        let digest = try fixture.serve("f.bin", count: 100_000)
        let destination = "\(fixture.out)/f.bin"
        try Data("other".utf8).write(to: URL(fileURLWithPath: destination))

        _ = try downloader(faults).fetch(url: fixture.server.url("f.bin"), expected: .sha256(digest),
                                         to: destination, force: true)

        #expect(try SHA256.hash(fileAt: destination) == digest, "\(name)")
        #expect(!pathExists(destination + ".part"), "\(name)")
        #expect(!pathExists(destination + ".part.state"), "\(name)")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: fixture.out).filter { $0.hasPrefix(".imgtool-") }
        #expect(leftovers.isEmpty, "\(name)")
    }
}

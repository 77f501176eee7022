// Downloader against hostile local state and inputs: symbolic links beside the
// destination, credentials in URLs, destinations that cannot be replaced.

import Foundation
import Testing
@testable import ImageCore

@Suite struct DownloaderHardeningTests {
    typealias Fixture = DownloaderFaultTests.Fixture

    @Test func partialFileThatIsASymbolicLinkIsNotFollowed() throws {
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
}

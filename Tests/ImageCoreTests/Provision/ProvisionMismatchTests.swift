import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif
@testable import ImageCore

/// Tests of `DestinationMismatchError`'s remedy for each operation and interface. Fetch
/// offers --force and another destination; provisioning offers no destination, and
/// --force only in `imgtool provision`. Through the service, the remedy names
/// vm.fetch_image's `force` parameter and no command-line option.
@Suite struct ProvisionMismatchTests {
    private func mismatch(operation: DestinationMismatchError.Operation, directoryIsWritable: Bool,
                          interface: DestinationMismatchError.Interface = .commandLine) -> DestinationMismatchError {
        var error = DestinationMismatchError(path: "/pool/iso_files/image.img.gz", expected: SHA256.hash(Data([1])),
                                             actual: SHA256.hash(Data([2])))
        error.operation = operation
        error.directoryIsWritable = directoryIsWritable
        error.interface = interface
        return error
    }

    @Test func serviceFetchRemedyNamesForceParameter() throws {
        let remedy = try #require(mismatch(operation: .fetch, directoryIsWritable: true, interface: .service).remedy)
        #expect(remedy == "call vm.fetch_image again with force set to true to download the image again and replace it")
        #expect(!remedy.contains("--force"))
        #expect(!remedy.contains("destination"))
    }

    @Test func serviceFetchRemedyInUnwritableDirectory() throws {
        let remedy = try #require(mismatch(operation: .fetch, directoryIsWritable: false, interface: .service).remedy)
        #expect(remedy == "its directory, the sharefs's iso_files, cannot be written, so force cannot replace it there "
            + "either. Make that directory writable, then call vm.fetch_image again with force set to true")
        #expect(!remedy.contains("--force"))
        #expect(!remedy.contains("destination"))
    }

    @Test func serviceProvisionRemedyNamesFetchImage() throws {
        let remedy = try #require(mismatch(operation: .provision, directoryIsWritable: true, interface: .service).remedy)
        #expect(remedy == "call vm.fetch_image with force set to true to replace the file, then call vm.create_container again")
        #expect(!remedy.contains("--force"))
        #expect(!remedy.contains("imgtool provision"))
    }

    @Test func serviceProvisionRemedyInUnwritableDirectory() throws {
        let remedy = try #require(mismatch(operation: .provision, directoryIsWritable: false, interface: .service).remedy)
        #expect(remedy == "its directory, the sharefs's iso_files, cannot be written, so the image cannot be downloaded "
            + "there. Make that directory writable, call vm.fetch_image with force set to true, then call "
            + "vm.create_container again")
        #expect(!remedy.contains("--force"))
    }

    @Test func fetchRemedyOffersForce() {
        let remedy = mismatch(operation: .fetch, directoryIsWritable: true).remedy
        #expect(remedy == "pass --force to download the image again and replace it, or choose another destination")
    }

    @Test func fetchRemedyInUnwritableDirectory() {
        let remedy = mismatch(operation: .fetch, directoryIsWritable: false).remedy
        #expect(remedy == "its directory cannot be written, so --force cannot replace it there either. "
            + "Choose another destination, or make the directory writable and pass --force")
    }

    @Test func provisionRemedyRemovesFile() throws {
        let remedy = try #require(mismatch(operation: .provision, directoryIsWritable: true).remedy)
        #expect(remedy == "remove the file and provision again (or pass --force to imgtool provision): the image is then "
            + "downloaded anew into the same directory")
        #expect(!remedy.contains("destination"))
    }

    @Test func provisionRemedyInUnwritableDirectory() throws {
        let remedy = try #require(mismatch(operation: .provision, directoryIsWritable: false).remedy)
        #expect(remedy == "its directory, the sharefs's iso_files, cannot be written, so the image cannot be downloaded there. "
            + "Make that directory writable, remove the file, and provision again")
        #expect(!remedy.contains("--force"))
        #expect(!remedy.contains("destination"))
    }

    /// A provisioning job that finds a file with another hash in iso_files fails with the
    /// provisioning remedy, before any download. The catalog entry's URL is on loopback and
    /// is never requested, because the expected hash is given in the entry.
    @Test func provisionerReportsMismatchForProvisioning() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        try FileManager.default.createDirectory(atPath: scratch.file("pools/tank"), withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: scratch.file("vms"), withIntermediateDirectories: true)
        let sharefs = Sharefs(configuration: SharefsConfiguration(poolsRoot: scratch.file("pools"),
                                                                  stateDirectory: scratch.file("state")))
        let active = try sharefs.activate(pool: "tank").sharefs

        let expected = SHA256.hash(Array("expected image".utf8))
        var entry = TestEntries.rancher("v1.4.2", kernel: "vmlinuz-4.14.73-rancher")
        entry.url = "http://127.0.0.1:9/image.img.gz"
        entry.sha256 = expected.hex
        let imagePath = "\(active.isoFilesPath)/\(entry.fileName)"
        try Data("another image".utf8).write(to: URL(fileURLWithPath: imagePath))

        let provisioner = Provisioner(catalog: ImageCatalog(entries: [entry]), sharefs: sharefs,
                                      downloader: Downloader(options: testOptions(retries: 0)))
        let raw = scratch.file("vms/demo.raw")
        let request = ProvisionRequest(image: entry.reference, rawPath: raw, size: nil, vmID: 1, vmName: "demo",
                                       password: GuestPassword("horse-battery"))
        let error = #expect(throws: DestinationMismatchError.self) { _ = try provisioner.run(request) }

        #expect(error?.path == imagePath)
        #expect(error?.operation == .provision)
        #expect(error?.directoryIsWritable == true)
        #expect(error?.remedy?.contains("destination") == false)
        #expect(try String(contentsOfFile: imagePath, encoding: .utf8) == "another image")
        #expect(!pathExists(raw))
    }
}

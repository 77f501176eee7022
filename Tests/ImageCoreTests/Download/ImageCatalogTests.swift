// ImageCatalog: the embedded RancherOS entries, resolution, and catalog files. Nothing
// here touches the network.

import Foundation
import Testing
@testable import ImageCore

@Suite struct ImageCatalogTests {
    static let arguments = ["printk.devkmsg=on", "rancher.state.dev=LABEL=RANCHER_STATE", "rancher.state.wait",
                            "rancher.resize_device=/dev/sda"]

    @Test func defaultHasFourRancherOSImages() {
        let entries = ImageCatalog.default.sortedEntries
        #expect(entries.map(\.reference) == ["RancherOS@v1.1.3", "RancherOS@v1.4.0", "RancherOS@v1.4.1", "RancherOS@v1.4.2"])
        #expect(entries.allSatisfy { $0.passwordForm == .plain })
        #expect(entries.allSatisfy { $0.splitsCommandLineOnSpaces })
        #expect(entries.allSatisfy { $0.kernelArguments == Self.arguments })
    }

    @Test func bareNameResolvesToNewest() throws {
        let entry = try ImageCatalog.default.resolve("RancherOS")
        #expect(entry.version == "v1.4.2")
        #expect(entry.sha256 == "9913e05287fc79407b4949c095419d2369491c4d833f9887a1a88d853701bb87")
        #expect(entry.kernel == "vmlinuz-4.14.73-rancher")
        #expect(entry.initrd == "initrd-v1.4.2")
    }

    @Test func versionedReferenceResolves() throws {
        let entry = try ImageCatalog.default.resolve("RancherOS@v1.4.0")
        #expect(entry.url == "http://download.freenas.org/bhyve-templates/rancheros-bhyve-v1.4.0/rancheros-bhyve-v1.4.0.img.gz")
        #expect(entry.sha256 == "9ba4676656fe4b43b93a3da9d512b378bc48f7ccf3c889e812f73dc11811b6b3")
        #expect(entry.kernel == "vmlinuz-4.14.32-rancher2")
        #expect(entry.fileName == "rancheros-bhyve-v1.4.0.img.gz")
    }

    @Test func oldestEntryMatchesPublishedTable() throws {
        let entry = try ImageCatalog.default.resolve("rancheros@v1.1.3")
        #expect(entry.sha256 == "e9288df573e01f5468c1f7e4609fbeab481caa3ffc5855af9d003b49557dde84")
        #expect(entry.kernel == "vmlinuz-4.9.75-rancher")
        #expect(entry.initrd == "initrd-v1.1.3")
    }

    @Test func unknownReferenceListsChoices() {
        let error = #expect(throws: UnknownImageError.self) { try ImageCatalog.default.resolve("RancherOS@v9") }
        #expect(error?.description == "unknown image 'RancherOS@v9'")
        #expect(error?.remedy?.contains("RancherOS@v1.4.2") == true)
        #expect(error?.category == .usage)
    }

    @Test func numericVersionOrder() {
        #expect(ImageCatalog.versionPrecedes("v1.4.2", "v1.10.0"))
        #expect(!ImageCatalog.versionPrecedes("v1.10.0", "v1.4.2"))
        #expect(ImageCatalog.versionPrecedes("v1.4", "v1.4.1"))
    }

    static func entryJSON(version: String, sha256: String = String(repeating: "a", count: 64)) -> String {
        """
        {"name": "RancherOS", "version": "\(version)", "url": "http://127.0.0.1:1/r-\(version).img.gz",
         "sha256": "\(sha256)", "kernel": "vmlinuz", "initrd": "initrd", "kernelArguments": ["a"],
         "passwordForm": "plain", "splitsCommandLineOnSpaces": true}
        """
    }

    @Test func fileReplacesDefault() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        try "{\"images\": [\(Self.entryJSON(version: "v2.0"))]}".write(toFile: scratch.file("c.json"), atomically: true, encoding: .utf8)

        let catalog = try ImageCatalog.load(path: scratch.file("c.json"))

        #expect(catalog.entries.map(\.reference) == ["RancherOS@v2.0"])
    }

    @Test func fileExtendsDefault() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let text = "{\"extendsDefault\": true, \"images\": [\(Self.entryJSON(version: "v1.4.0")), \(Self.entryJSON(version: "v1.5.0"))]}"
        try text.write(toFile: scratch.file("c.json"), atomically: true, encoding: .utf8)

        let catalog = try ImageCatalog.load(path: scratch.file("c.json"))

        // Four defaults, v1.4.0 replaced by the file's entry, plus v1.5.0.
        #expect(catalog.entries.count == 5)
        #expect(try catalog.resolve("RancherOS").version == "v1.5.0")
        #expect(try catalog.resolve("RancherOS@v1.4.0").url == "http://127.0.0.1:1/r-v1.4.0.img.gz")
    }

    @Test func environmentVariableNamesFile() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        try "{\"images\": [\(Self.entryJSON(version: "v3"))]}".write(toFile: scratch.file("c.json"), atomically: true, encoding: .utf8)

        let catalog = try ImageCatalog.load(path: nil, environment: ["IMGTOOL_CATALOG": scratch.file("c.json")])

        #expect(catalog.entries.map(\.version) == ["v3"])
    }

    @Test func invalidHashIsRejectedWithItsValue() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        try "{\"images\": [\(Self.entryJSON(version: "v2", sha256: "abc"))]}".write(toFile: scratch.file("c.json"), atomically: true, encoding: .utf8)

        let error = #expect(throws: CatalogError.self) { _ = try ImageCatalog.load(path: scratch.file("c.json")) }
        #expect(error?.reason == "RancherOS@v2 has sha256 'abc', which is not 64 hex digits")
    }

    @Test func missingFieldIsNamed() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        try "{\"images\": [{\"name\": \"X\"}]}".write(toFile: scratch.file("c.json"), atomically: true, encoding: .utf8)

        let error = #expect(throws: CatalogError.self) { _ = try ImageCatalog.load(path: scratch.file("c.json")) }
        #expect(error?.reason.hasPrefix("missing field 'version' at .images[0]") == true)
    }

    @Test func missingFileIsReported() {
        let error = #expect(throws: CatalogError.self) { _ = try ImageCatalog.load(path: "/nonexistent/catalog.json") }
        #expect(error?.path == "/nonexistent/catalog.json")
    }
}

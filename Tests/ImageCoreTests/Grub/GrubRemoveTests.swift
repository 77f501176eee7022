import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif
@testable import ImageCore

@Suite struct GrubRemoveTests {
    private func write(_ fixture: GrubFixture, id: Int, name: String) throws {
        _ = try fixture.configurations.write(vmID: id, vmName: name, rawPath: "/mnt/tank/\(name).raw",
                                             entry: TestEntries.v142, password: GuestPassword("pw"))
    }

    private func entries(_ fixture: GrubFixture) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: fixture.sharefs.configsPath).sorted()
    }

    @Test func removeDeletesEveryName() throws {
        let fixture = try GrubFixture()
        defer { fixture.scratch.remove() }
        try write(fixture, id: 5, name: "before-rename")
        try write(fixture, id: 5, name: "after_rename")
        try write(fixture, id: 50, name: "other")
        try write(fixture, id: 15, name: "other")
        let removed = try fixture.configurations.remove(vmID: 5)
        #expect(removed.map { ($0 as NSString).lastPathComponent } == ["5_after_rename", "5_before-rename"])
        #expect(try entries(fixture) == ["15_other", "50_other"])
    }

    @Test func removeWithNothingIsQuiet() throws {
        let fixture = try GrubFixture()
        defer { fixture.scratch.remove() }
        try write(fixture, id: 7, name: "keep")
        #expect(try fixture.configurations.remove(vmID: 8).isEmpty)
        #expect(try entries(fixture) == ["7_keep"])
    }

    @Test func removeTwiceIsQuiet() throws {
        let fixture = try GrubFixture()
        defer { fixture.scratch.remove() }
        try write(fixture, id: 7, name: "guest")
        #expect(try fixture.configurations.remove(vmID: 7).count == 1)
        #expect(try fixture.configurations.remove(vmID: 7).isEmpty)
    }

    @Test func symlinkOutsideIsNotFollowed() throws {
        let fixture = try GrubFixture()
        defer { fixture.scratch.remove() }
        let outside = fixture.scratch.file("outside")
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: false)
        try Data("keep".utf8).write(to: URL(fileURLWithPath: "\(outside)/precious"))

        // A configuration directory that is itself a symlink, and one that contains one.
        try FileManager.default.createSymbolicLink(atPath: "\(fixture.sharefs.configsPath)/5_link",
                                                   withDestinationPath: outside)
        try write(fixture, id: 5, name: "real")
        try FileManager.default.createSymbolicLink(atPath: "\(fixture.sharefs.configsPath)/5_real/escape",
                                                   withDestinationPath: outside)

        let removed = try fixture.configurations.remove(vmID: 5)
        #expect(removed.count == 2)
        #expect(try entries(fixture).isEmpty)
        #expect(pathExists("\(outside)/precious"))
        #expect(try String(contentsOfFile: "\(outside)/precious", encoding: .utf8) == "keep")
    }

    @Test func symlinkedConfigsIsNotFollowed() throws {
        let fixture = try GrubFixture()
        defer { fixture.scratch.remove() }
        let outside = fixture.scratch.file("outside")
        try FileManager.default.createDirectory(atPath: "\(outside)/5_victim", withIntermediateDirectories: true)
        try FileManager.default.removeItem(atPath: fixture.sharefs.configsPath)
        try FileManager.default.createSymbolicLink(atPath: fixture.sharefs.configsPath, withDestinationPath: outside)
        #expect(throws: SharefsError.notADirectory(path: fixture.sharefs.configsPath, kind: "symbolic link")) {
            _ = try fixture.configurations.remove(vmID: 5)
        }
        #expect(pathExists("\(outside)/5_victim"))
    }

    @Test func symlinkedSharefsIsNotFollowed() throws {
        let fixture = try GrubFixture()
        defer { fixture.scratch.remove() }
        let outside = fixture.scratch.file("outside")
        try FileManager.default.createDirectory(atPath: "\(outside)/configs/5_victim", withIntermediateDirectories: true)
        try FileManager.default.removeItem(atPath: fixture.sharefs.path)
        try FileManager.default.createSymbolicLink(atPath: fixture.sharefs.path, withDestinationPath: outside)
        let expected = SharefsError.notADirectory(path: fixture.sharefs.path, kind: "symbolic link")

        #expect(throws: expected) { _ = try fixture.configurations.remove(vmID: 5) }
        #expect(pathExists("\(outside)/configs/5_victim"))
        #expect(throws: expected) {
            _ = try fixture.configurations.write(vmID: 6, vmName: "web", rawPath: "/mnt/tank/web.raw",
                                                 entry: TestEntries.v142, password: GuestPassword("secret"))
        }
        #expect(!pathExists("\(outside)/configs/6_web"))
    }

    @Test func invalidVMIDIsRejected() throws {
        let fixture = try GrubFixture()
        defer { fixture.scratch.remove() }
        #expect(throws: InvalidArgumentError.self) { _ = try fixture.configurations.remove(vmID: 0) }
    }
}

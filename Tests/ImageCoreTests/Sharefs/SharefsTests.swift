import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif
@testable import ImageCore

/// A pools root and a state directory in a fresh scratch directory.
private struct SharefsFixture {
    let scratch: ScratchDirectory
    let sharefs: Sharefs
    var root: String { scratch.file("pools") }

    init(pools: [String], label: String = #function) throws {
        scratch = try ScratchDirectory(label)
        try FileManager.default.createDirectory(atPath: scratch.file("pools"), withIntermediateDirectories: false)
        for pool in pools {
            try FileManager.default.createDirectory(atPath: "\(scratch.file("pools"))/\(pool)", withIntermediateDirectories: false)
        }
        sharefs = Sharefs(configuration: SharefsConfiguration(poolsRoot: scratch.file("pools"),
                                                              stateDirectory: scratch.file("state/nested")))
    }
}

@Suite struct SharefsTests {
    @Test func firstPoolIsChosenByteWise() throws {
        // "Zeta" sorts before "alpha" because 'Z' (0x5A) is below 'a' (0x61).
        let fixture = try SharefsFixture(pools: ["alpha", "Zeta", ".hidden", "boot-pool"])
        defer { fixture.scratch.remove() }
        #expect(try fixture.sharefs.candidatePools() == ["Zeta", "alpha"])
        let activation = try fixture.sharefs.activate()
        #expect(activation.sharefs.pool == "Zeta")
        #expect(activation.sharefs.path == "\(fixture.root)/Zeta/.bhyve_containers")
    }

    @Test func poolWithControlCharacterIsSkipped() throws {
        // "a\tb" sorts before "tank", but active() would reject it in the state file.
        let fixture = try SharefsFixture(pools: ["a\tb", "tank"])
        defer { fixture.scratch.remove() }
        #expect(try fixture.sharefs.candidatePools() == ["tank"])
        _ = try fixture.sharefs.activate()
        #expect(try fixture.sharefs.active()?.pool == "tank")
    }

    @Test func activationCreatesLayout() throws {
        let fixture = try SharefsFixture(pools: ["tank"])
        defer { fixture.scratch.remove() }
        let activation = try fixture.sharefs.activate(pool: "tank")
        let base = "\(fixture.root)/tank/.bhyve_containers"
        #expect(activation.createdDirectories == [base, "\(base)/iso_files", "\(base)/configs"])
        #expect(activation.sharefs.isoFilesPath == "\(base)/iso_files")
        #expect(activation.sharefs.configsPath == "\(base)/configs")
        #expect(pathExists("\(base)/iso_files"))
        #expect(pathExists("\(base)/configs"))
    }

    @Test func activationIsIdempotent() throws {
        let fixture = try SharefsFixture(pools: ["tank"])
        defer { fixture.scratch.remove() }
        let first = try fixture.sharefs.activate()
        let stateBefore = try Data(contentsOf: URL(fileURLWithPath: fixture.sharefs.configuration.stateFile))
        let second = try fixture.sharefs.activate()
        #expect(second.sharefs == first.sharefs)
        #expect(second.createdDirectories.isEmpty)
        expectEqualBytes(try Data(contentsOf: URL(fileURLWithPath: fixture.sharefs.configuration.stateFile)), stateBefore)
    }

    @Test func secondActivationRepairsLayout() throws {
        let fixture = try SharefsFixture(pools: ["tank"])
        defer { fixture.scratch.remove() }
        let first = try fixture.sharefs.activate()
        #expect(rmdir(first.sharefs.configsPath) == 0)
        let second = try fixture.sharefs.activate()
        #expect(second.createdDirectories == [first.sharefs.configsPath])
        #expect(pathExists(first.sharefs.configsPath))
    }

    @Test func activeIsRecorded() throws {
        let fixture = try SharefsFixture(pools: ["tank", "data"])
        defer { fixture.scratch.remove() }
        #expect(try fixture.sharefs.active() == nil)
        _ = try fixture.sharefs.activate(pool: "tank")
        let active = try #require(try fixture.sharefs.active())
        #expect(active.pool == "tank")
        #expect(active.path == "\(fixture.root)/tank/.bhyve_containers")
    }

    @Test func activatingOtherPoolSwitches() throws {
        let fixture = try SharefsFixture(pools: ["tank", "data"])
        defer { fixture.scratch.remove() }
        _ = try fixture.sharefs.activate(pool: "tank")
        _ = try fixture.sharefs.activate(pool: "data")
        #expect(try fixture.sharefs.active()?.pool == "data")
    }

    @Test func noPoolIsClearError() throws {
        let fixture = try SharefsFixture(pools: [".hidden", "boot-pool"])
        defer { fixture.scratch.remove() }
        #expect(throws: SharefsError.noPoolAvailable(poolsRoot: fixture.root, skipped: ["boot-pool", "freenas-boot"])) {
            _ = try fixture.sharefs.activate()
        }
        #expect(try fixture.sharefs.active() == nil)
    }

    @Test func skippedPoolIsConfigurable() throws {
        let fixture = try SharefsFixture(pools: ["aaa-boot", "tank"])
        defer { fixture.scratch.remove() }
        var configuration = fixture.sharefs.configuration
        configuration.skippedPools = ["aaa-boot"]
        #expect(try Sharefs(configuration: configuration).activate().sharefs.pool == "tank")
    }

    @Test func missingPoolIsRejected() throws {
        let fixture = try SharefsFixture(pools: ["tank"])
        defer { fixture.scratch.remove() }
        #expect(throws: SharefsError.poolNotFound(pool: "nope", poolsRoot: fixture.root)) {
            _ = try fixture.sharefs.activate(pool: "nope")
        }
    }

    // C1 controls (U+0085) and bidirectional controls (U+202E, U+200F) make a name
    // display as something else.
    @Test(arguments: ["", "../tank", "a/b", ".bhyve", "bad\nname", "a\u{85}b", "tank\u{202E}", "\u{200F}tank", "\u{061C}tank"])
    func invalidPoolNameIsRejected(_ pool: String) throws {
        let fixture = try SharefsFixture(pools: ["tank"])
        defer { fixture.scratch.remove() }
        #expect(throws: InvalidArgumentError.self) { _ = try fixture.sharefs.activate(pool: pool) }
    }

    @Test func symlinkedSharefsIsRejected() throws {
        let fixture = try SharefsFixture(pools: ["tank", "outside"])
        defer { fixture.scratch.remove() }
        let link = "\(fixture.root)/tank/.bhyve_containers"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: "\(fixture.root)/outside")
        #expect(throws: SharefsError.notADirectory(path: link, kind: "symbolic link")) {
            _ = try fixture.sharefs.activate(pool: "tank")
        }
        #expect(!pathExists("\(fixture.root)/outside/iso_files"))
    }

    @Test func environmentOverridesDefaults() {
        let configuration = SharefsConfiguration.fromEnvironment([
            "IMGTOOL_POOLS_ROOT": "/srv/pools", "IMGTOOL_STATE_DIR": "/run/imgtool", "IMGTOOL_BOOT_POOL": "boot,system",
        ])
        #expect(configuration.poolsRoot == "/srv/pools")
        #expect(configuration.stateDirectory == "/run/imgtool")
        #expect(configuration.skippedPools == ["boot", "system"])
    }

    @Test func environmentDefaults() {
        let configuration = SharefsConfiguration.fromEnvironment([:])
        #expect(configuration.poolsRoot == "/mnt")
        #expect(configuration.stateDirectory == "/var/lib/imgtool")
        #expect(configuration.skippedPools == ["boot-pool", "freenas-boot"])
    }

    @Test func corruptStateFileIsReported() throws {
        let fixture = try SharefsFixture(pools: ["tank"])
        defer { fixture.scratch.remove() }
        try FileManager.default.createDirectory(atPath: fixture.sharefs.configuration.stateDirectory,
                                                withIntermediateDirectories: true)
        try Data("not json".utf8).write(to: URL(fileURLWithPath: fixture.sharefs.configuration.stateFile))
        #expect(throws: SharefsError.self) { _ = try fixture.sharefs.active() }
    }

    @Test(arguments: [#"{"pool": "x", "path": "/etc"}"#,
                      #"{"pool": "tank", "path": "/mnt/tank/../../etc/tank/.bhyve_containers"}"#,
                      #"{"pool": "..", "path": "/mnt/../.bhyve_containers"}"#])
    func stateFileOutsideSharefsIsRejected(_ state: String) throws {
        let fixture = try SharefsFixture(pools: ["tank"])
        defer { fixture.scratch.remove() }
        try FileManager.default.createDirectory(atPath: fixture.sharefs.configuration.stateDirectory,
                                                withIntermediateDirectories: true)
        try Data(state.utf8).write(to: URL(fileURLWithPath: fixture.sharefs.configuration.stateFile))
        #expect {
            _ = try fixture.sharefs.active()
        } throws: { error in
            guard case .invalidStateFile(_, let reason)? = error as? SharefsError else { return false }
            return reason.contains("not <pools root>/")
        }
    }

    @Test func stateFileDirectoryIsReported() throws {
        let fixture = try SharefsFixture(pools: ["tank"])
        defer { fixture.scratch.remove() }
        try FileManager.default.createDirectory(atPath: fixture.sharefs.configuration.stateFile,
                                                withIntermediateDirectories: true)
        #expect(throws: SharefsError.invalidStateFile(path: fixture.sharefs.configuration.stateFile,
                                                      reason: "it is a directory, not a regular file")) {
            _ = try fixture.sharefs.active()
        }
    }

    @Test(arguments: [(7, "web", "7_web"), (12, "my vm", "12_my vm")])
    func configDirectoryNameJoinsIDAndName(_ example: (Int, String, String)) throws {
        #expect(try Sharefs.configDirectoryName(vmID: example.0, vmName: example.1) == example.2)
    }

    @Test(arguments: [(0, "web"), (-3, "web"), (1, ""), (1, "a/b"), (1, "a\nb"), (1, "a\u{85}b"),
                      (1, "web\u{202E}gpj.exe"), (1, "\u{2066}web")])
    func invalidVMIsRejected(_ example: (Int, String)) {
        #expect(throws: InvalidArgumentError.self) { _ = try Sharefs.configDirectoryName(vmID: example.0, vmName: example.1) }
    }

    @Test(arguments: ["tank", "pool-2", "données", "池"])
    func validPoolNameIsAccepted(_ name: String) throws {
        try Sharefs.validatePoolName(name)
    }
}

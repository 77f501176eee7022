import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif
@testable import ImageCore

/// Catalog entries as the image catalog describes them.
enum TestEntries {
    static let rancherArguments = ["printk.devkmsg=on", "rancher.state.dev=LABEL=RANCHER_STATE", "rancher.state.wait",
                                   "rancher.resize_device=/dev/sda"]

    static func rancher(_ version: String, kernel: String) -> CatalogEntry {
        CatalogEntry(name: "RancherOS", version: version,
                     url: "http://download.freenas.org/bhyve-templates/rancheros-bhyve-\(version)/rancheros-bhyve-\(version).img.gz",
                     kernel: kernel, initrd: "initrd-\(version)", kernelArguments: rancherArguments,
                     passwordForm: .plain, splitsCommandLineOnSpaces: true)
    }

    static let v113 = rancher("v1.1.3", kernel: "vmlinuz-4.9.75-rancher")
    static let v142 = rancher("v1.4.2", kernel: "vmlinuz-4.14.73-rancher")

    /// An entry whose guest applies a SHA-512 crypt hash with `chpasswd -e`.
    static let hashed: CatalogEntry = {
        var entry = rancher("v1.4.2", kernel: "vmlinuz-4.14.73-rancher")
        entry.passwordForm = .sha512Crypt
        entry.splitsCommandLineOnSpaces = false
        return entry
    }()
}

/// An active sharefs in a scratch directory.
struct GrubFixture {
    let scratch: ScratchDirectory
    let sharefs: ActiveSharefs
    let configurations: GrubConfigurations

    init(label: String = #function) throws {
        scratch = try ScratchDirectory(label)
        try FileManager.default.createDirectory(atPath: scratch.file("pools/tank"), withIntermediateDirectories: true)
        let manager = Sharefs(configuration: SharefsConfiguration(poolsRoot: scratch.file("pools"),
                                                                  stateDirectory: scratch.file("state")))
        sharefs = try manager.activate().sharefs
        configurations = GrubConfigurations(sharefs: sharefs)
    }

    func text(_ path: String) throws -> String { try String(contentsOfFile: path, encoding: .utf8) }
    func bytes(_ path: String) throws -> [UInt8] { Array(try Data(contentsOf: URL(fileURLWithPath: path))) }
}

/// Splits the first `linux` line of a grub.cfg with the test model of GRUB's lexer.
func linuxLine(of config: [UInt8]) -> (tokens: [GrubToken], expanded: Bool)? {
    for line in config.split(separator: UInt8(ascii: "\n")) {
        let split = GrubModel.split(Array(line))
        if split.tokens.first == .word(Array("linux".utf8)) { return split }
    }
    return nil
}

func grubScriptCheck(_ path: String) throws -> ProcessResult {
    try runProcess("grub-script-check", [path])
}

@Suite struct GrubConfigurationTests {
    static let key = Array("rancher.password=".utf8)

    static let acceptedPlain = ["a&b", "a;reboot", "a|b", "a{b}", "a<b>", "a#b", "a'b", "x$6$salt$abc", "pässwörd", "12345"]

    @Test(arguments: acceptedPlain)
    func plainPasswordReachesGuestUnchanged(_ password: String) throws {
        let fixture = try GrubFixture()
        defer { fixture.scratch.remove() }
        let result = try fixture.configurations.write(vmID: 1, vmName: "docker", rawPath: "/mnt/tank/docker.raw",
                                                      entry: TestEntries.v113, password: GuestPassword(password))
        let check = try grubScriptCheck(result.grubConfigPath)
        #expect(check.status == 0, "grub-script-check: \(check.standardError)")

        let line = try #require(linuxLine(of: try fixture.bytes(result.grubConfigPath)))
        #expect(!line.expanded)
        let words = line.tokens.compactMap { token -> [UInt8]? in
            if case .word(let word) = token { return word }
            return nil
        }
        #expect(words.count == line.tokens.count, "an operator token split the linux line")
        #expect(words.count == 7)                        // linux, kernel, password, 4 arguments
        #expect(words[2] == Self.key + Array(password.utf8))

        let commandLine = GrubModel.kernelCommandLine(Array(words.dropFirst(2)))
        let value = try #require(GrubModel.rancherPasswordValue(commandLine))
        #expect(value == Array(password.utf8))
        #expect(try GrubModel.yamlTexts([value]) == [password])
    }

    /// Password, and a phrase the rejection reason must contain.
    static let rejectedPlain: [(String, String)] = [
        ("", "empty"),
        (String(repeating: "a", count: 257), "maximum is 256"),
        ("a\nb", "line break"),
        ("a\tb", "control character"),
        ("a\u{7}b", "control character"),
        ("a\\b", "backslash"),
        ("a\"b", "double quote"),
        ("a b", "space"),
        ("#ab", "syntax"), ("&a", "syntax"), ("*a", "syntax"), ("!a", "syntax"), ("'a'", "syntax"),
        ("|a", "syntax"), (">a", "syntax"), ("%a", "syntax"), ("@a", "syntax"), ("`a", "syntax"),
        ("[a", "syntax"), ("{a", "syntax"), ("-a", "syntax"),
        ("yes", "boolean or null"), ("off", "boolean or null"), ("true", "boolean or null"),
        ("null", "boolean or null"), ("~", "boolean or null"),
        ("0777", "number"), ("0x1f", "number"), ("1_000", "number"), ("+1", "number"), ("1.50", "number"),
        ("1e5", "number"), (".inf", "number"), ("0o17", "number"), ("0B101", "number"),
        ("ab:", "mapping"), ("2001-12-14", "date"),
    ] + yamlBreakTraps

    /// Passwords that survive GRUB and the kernel but that the guest's YAML parse changes:
    /// U+2028 and U+2029 are YAML 1.1 line breaks, a leading U+FEFF is a byte order mark,
    /// and U+FFFE and U+FFFF are outside YAML's printable characters, so the parse fails.
    static let yamlBreakTraps: [(String, String)] = [
        ("\u{2028}ab", "separator"), ("ab\u{2029}", "separator"), ("a\u{2028}#b", "separator"),
        ("\u{FEFF}ab", "byte order mark"), ("ab\u{FFFF}cd", "non-printable"), ("ab\u{FFFE}", "non-printable"),
    ]

    @Test func yamlBreakTrapsChangeInGuest() throws {
        let values = Self.yamlBreakTraps.map { Array($0.0.utf8) }
        let texts = try GrubModel.yamlTexts(values)
        for (text, example) in zip(texts, Self.yamlBreakTraps) {
            #expect(text != example.0)
        }
    }

    @Test(arguments: rejectedPlain)
    func plainPasswordIsRejectedWithReason(_ example: (String, String)) throws {
        let fixture = try GrubFixture()
        defer { fixture.scratch.remove() }
        #expect {
            try fixture.configurations.write(vmID: 1, vmName: "docker", rawPath: "/mnt/tank/docker.raw",
                                             entry: TestEntries.v113, password: GuestPassword(example.0))
        } throws: { error in
            guard let error = error as? PasswordError else { return false }
            return error.reason.contains(example.1)
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: fixture.sharefs.configsPath).isEmpty)
    }

    @Test func rejectionNeverQuotesPassword() throws {
        // Reserved words are listed in their reason by category, so they are left out.
        for (password, _) in Self.rejectedPlain
        where password.count >= 3 && !PlainPasswordRules.reservedWords.contains(password.lowercased()) {
            do {
                try GuestPassword(password).validate(for: PasswordPolicy(entry: TestEntries.v113))
                Issue.record("a rejected password was accepted")
            } catch {
                #expect(!error.description.contains(password))
            }
        }
    }

    @Test func spaceIsAcceptedWhenGuestDoesNotSplit() throws {
        var entry = TestEntries.v142
        entry.splitsCommandLineOnSpaces = false
        try GuestPassword("correct horse").validate(for: PasswordPolicy(entry: entry))
    }

    @Test(arguments: [("a: b", "mapping"), ("a #b", "comment"), (" ab", "space"), ("ab ", "space")])
    func spacedPasswordYAMLTrapIsRejected(_ example: (String, String)) {
        var entry = TestEntries.v142
        entry.splitsCommandLineOnSpaces = false
        #expect {
            try GuestPassword(example.0).validate(for: PasswordPolicy(entry: entry))
        } throws: { error in
            (error as? PasswordError)?.reason.contains(example.1) == true
        }
    }

    static let hashedPasswords: [[UInt8]] = (acceptedPlain + [
        "a b", "a\"b", "a\\b", "#ab", "0777", "yes", "a\tb", "$(reboot)", "'; reboot; '", String(repeating: "p", count: 256),
    ]).map { Array($0.utf8) } + [[0xFF, 0xFE, 0x41]]

    @Test(arguments: hashedPasswords)
    func hashedPasswordWordIsCryptOutput(_ password: [UInt8]) throws {
        let fixture = try GrubFixture()
        defer { fixture.scratch.remove() }
        let result = try fixture.configurations.write(vmID: 2, vmName: "guest", rawPath: "/mnt/tank/guest.raw",
                                                      entry: TestEntries.hashed, password: GuestPassword(bytes: password))
        let check = try grubScriptCheck(result.grubConfigPath)
        #expect(check.status == 0, "grub-script-check: \(check.standardError)")

        let config = try fixture.bytes(result.grubConfigPath)
        let line = try #require(linuxLine(of: config))
        #expect(!line.expanded)
        guard line.tokens.count == 7, case .word(let word) = line.tokens[2] else {
            Issue.record("the linux line does not have 7 words")
            return
        }
        #expect(word.starts(with: Self.key))
        let hash = String(decoding: word.dropFirst(Self.key.count), as: UTF8.self)
        let fields = hash.split(separator: "$", omittingEmptySubsequences: false)
        #expect(fields.count == 4)                           // "", "6", salt, hash
        #expect(hash.hasPrefix("$6$"))

        // openssl reads the password as one line from standard input.
        let salt = String(fields[2])
        let openssl = try runProcess("openssl", ["passwd", "-6", "-salt", salt, "-stdin"], input: Data(password))
        #expect(openssl.outputText.trimmingCharacters(in: .newlines) == hash)
        #expect(config.firstRange(of: password) == nil)
    }

    @Test func newlinePasswordHashVerifies() throws {
        // openssl -stdin stops at a newline, so libxcrypt verifies this one.
        let fixture = try GrubFixture()
        defer { fixture.scratch.remove() }
        let password = GuestPassword("two\nlines")
        let result = try fixture.configurations.write(vmID: 2, vmName: "guest", rawPath: "/mnt/tank/guest.raw",
                                                      entry: TestEntries.hashed, password: password)
        let line = try #require(linuxLine(of: try fixture.bytes(result.grubConfigPath)))
        guard case .word(let word) = line.tokens[2] else {
            Issue.record("no password word")
            return
        }
        #expect(SHA512Crypt.verify(password, against: String(decoding: word.dropFirst(Self.key.count), as: UTF8.self)))
    }

    @Test(arguments: [GuestPassword(""), GuestPassword(String(repeating: "a", count: 257)), GuestPassword(bytes: [0x61, 0, 0x62])])
    func hashedPasswordIsRejected(_ password: GuestPassword) throws {
        #expect(throws: PasswordError.self) { try password.validate(for: PasswordPolicy(entry: TestEntries.hashed)) }
    }

    @Test func generatedConfigurationMatchesTemplate() throws {
        let fixture = try GrubFixture()
        defer { fixture.scratch.remove() }
        let result = try fixture.configurations.write(vmID: 4, vmName: "web", rawPath: "/mnt/tank/vm/web.raw",
                                                      entry: TestEntries.v142, password: GuestPassword("secret"))
        let expected = """
        set timeout=0
        set default=RancherOS

        menuentry "bhyve-image" --id RancherOS {
        \tset root=(hd0,msdos1)
        \tlinux /boot/vmlinuz-4.14.73-rancher rancher.password='secret' printk.devkmsg=on rancher.state.dev=LABEL=RANCHER_STATE rancher.state.wait rancher.resize_device=/dev/sda
        \tinitrd /boot/initrd-v1.4.2
        }

        """
        #expect(try fixture.text(result.grubConfigPath) == expected)
        #expect(result.grubConfigPath == "\(fixture.sharefs.configsPath)/4_web/grub/grub.cfg")
        #expect(result.outcome == .created)
    }

    @Test(arguments: ImageCatalog.default.entries)
    func catalogEntryConfigurationChecks(_ entry: CatalogEntry) throws {
        let fixture = try GrubFixture()
        defer { fixture.scratch.remove() }
        let result = try fixture.configurations.write(vmID: 8, vmName: "guest", rawPath: "/mnt/tank/guest.raw",
                                                      entry: entry, password: GuestPassword("a&b'c"))
        let check = try grubScriptCheck(result.grubConfigPath)
        #expect(check.status == 0, "grub-script-check: \(check.standardError)")
        let text = try fixture.text(result.grubConfigPath)
        #expect(text.contains("\tlinux /boot/\(entry.kernel) rancher.password="))
        #expect(text.contains("\tinitrd /boot/\(entry.initrd)\n"))
    }

    @Test func deviceMapNamesRawDisk() throws {
        let fixture = try GrubFixture()
        defer { fixture.scratch.remove() }
        let result = try fixture.configurations.write(vmID: 4, vmName: "web", rawPath: "/mnt/tank/vm/web-disk.raw",
                                                      entry: TestEntries.v142, password: GuestPassword("secret"))
        #expect(try fixture.text(result.deviceMapPath) == "(hd0) /mnt/tank/vm/web-disk.raw\n")
        #expect(result.deviceMapPath == "\(fixture.sharefs.configsPath)/4_web/device.map")
    }

    @Test func filesAreOwnerOnly() throws {
        let fixture = try GrubFixture()
        defer { fixture.scratch.remove() }
        let result = try fixture.configurations.write(vmID: 4, vmName: "web", rawPath: "/mnt/tank/web.raw",
                                                      entry: TestEntries.v142, password: GuestPassword("secret"))
        #expect(try linkStatus(result.grubConfigPath)!.mode & 0o777 == 0o600)
        #expect(try linkStatus(result.deviceMapPath)!.mode & 0o777 == 0o600)
        #expect(try linkStatus(result.directory)!.mode & 0o777 == 0o700)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: "\(result.directory)/grub")
        #expect(leftovers == ["grub.cfg"])
    }

    /// grub-bhyve reads device.map lines into a 1024-byte buffer and ends the path at the
    /// first blank, so these paths would name another file.
    @Test(arguments: [("/mnt/tank/vm/web disk.raw", "space"),
                      ("/" + String(repeating: "d", count: 1017), "1018 bytes long")])
    func unreadableRawPathIsRejected(_ example: (String, String)) throws {
        let error = try rawPathError(example.0)
        guard case .invalidRawPath(_, let reason, _)? = error else {
            Issue.record("'\(example.0)' gave \(String(describing: error))")
            return
        }
        #expect(reason.contains(example.1))
    }

    /// Text each unreadable RAW path's remedy must contain: the generic "give the absolute
    /// path" does not fit a path that is already absolute.
    @Test(arguments: [("/mnt/tank/vm/web disk.raw", "path without spaces, such as '/mnt/tank/vm/web_disk.raw'"),
                      ("/mnt/tank/web\u{7}.raw", "without control characters"),
                      ("/" + String(repeating: "d", count: 1017), "at most 1017 bytes"),
                      ("web.raw", "give the absolute path")])
    func unreadableRawPathRemedyFitsProblem(_ example: (String, String)) throws {
        let error = try rawPathError(example.0)
        guard let error, case .invalidRawPath = error else {
            Issue.record("'\(example.0)' gave \(String(describing: error))")
            return
        }
        #expect((error.remedy ?? "").contains(example.1))
    }

    /// A path with a space that is also too long: the remedy must not suggest the same
    /// path with underscores, which is rejected next for its length.
    @Test func longRawPathWithSpaceRemedyFitsLimit() throws {
        let error = try rawPathError("/mnt/tank/web disk/" + String(repeating: "d", count: 1010))
        guard let error, case .invalidRawPath = error else {
            Issue.record("the path gave \(String(describing: error))")
            return
        }
        let remedy = error.remedy ?? ""
        #expect(!remedy.contains("web_disk"))
        #expect(remedy.contains("without spaces"))
        #expect(remedy.contains("at most 1017 bytes"))
    }

    /// Writes a configuration for `rawPath` and returns the `GrubError` it fails with, or
    /// nil when it succeeds; a failed write must leave no configuration directory.
    private func rawPathError(_ rawPath: String) throws -> GrubError? {
        let fixture = try GrubFixture()
        defer { fixture.scratch.remove() }
        do {
            _ = try fixture.configurations.write(vmID: 4, vmName: "web", rawPath: rawPath, entry: TestEntries.v142,
                                                 password: GuestPassword("secret"))
            return nil
        } catch let error as GrubError {
            #expect(try FileManager.default.contentsOfDirectory(atPath: fixture.sharefs.configsPath).isEmpty)
            return error
        }
    }

    @Test func longestReadableRawPathIsAccepted() throws {
        let fixture = try GrubFixture()
        defer { fixture.scratch.remove() }
        // 1023 bytes in grub-bhyve's buffer minus the 6 of "(hd0) ".
        let path = "/" + String(repeating: "d", count: 1016)
        let result = try fixture.configurations.write(vmID: 4, vmName: "web", rawPath: path, entry: TestEntries.v142,
                                                      password: GuestPassword("secret"))
        #expect(try fixture.text(result.deviceMapPath) == "(hd0) \(path)\n")
    }

    @Test func relativeRawPathIsRejected() throws {
        let fixture = try GrubFixture()
        defer { fixture.scratch.remove() }
        #expect(throws: GrubError.invalidRawPath(path: "web.raw", reason: "the path is not absolute",
                                                 fix: "give the absolute path of the RAW disk file")) {
            try fixture.configurations.write(vmID: 4, vmName: "web", rawPath: "web.raw", entry: TestEntries.v142,
                                             password: GuestPassword("secret"))
        }
    }

    @Test func rewriteChangesOnlyPassword() throws {
        let fixture = try GrubFixture()
        defer { fixture.scratch.remove() }
        let policy = PasswordPolicy(entry: TestEntries.v113)
        let result = try fixture.configurations.write(vmID: 9, vmName: "old-guest", rawPath: "/mnt/tank/old.raw",
                                                      entry: TestEntries.v113, password: GuestPassword("old"))
        let before = try fixture.text(result.grubConfigPath).split(separator: "\n", omittingEmptySubsequences: false)

        #expect(try fixture.configurations.setPassword(vmID: 9, password: GuestPassword("new&pw"), policy: policy))
        let afterText = try fixture.text(result.grubConfigPath)
        let after = afterText.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(after.count == before.count)
        for (old, new) in zip(before, after) where !old.contains("linux ") {
            #expect(old == new)
        }
        #expect(afterText.contains("\tlinux /boot/vmlinuz-4.9.75-rancher rancher.password='new&pw' printk.devkmsg=on"))
        #expect(afterText.contains("\tinitrd /boot/initrd-v1.1.3\n"))
        #expect(!afterText.contains("old"))
        #expect(try grubScriptCheck(result.grubConfigPath).status == 0)

        let bytesAfterFirst = try fixture.bytes(result.grubConfigPath)
        #expect(try !fixture.configurations.setPassword(vmID: 9, password: GuestPassword("new&pw"), policy: policy))
        expectEqualBytes(try fixture.bytes(result.grubConfigPath), bytesAfterFirst)
    }

    @Test func hashedRewriteTwiceIsIdentical() throws {
        let fixture = try GrubFixture()
        defer { fixture.scratch.remove() }
        let policy = PasswordPolicy(entry: TestEntries.hashed)
        let result = try fixture.configurations.write(vmID: 9, vmName: "guest", rawPath: "/mnt/tank/g.raw",
                                                      entry: TestEntries.hashed, password: GuestPassword("first"))
        #expect(try fixture.configurations.setPassword(vmID: 9, password: GuestPassword("second"), policy: policy))
        let once = try fixture.bytes(result.grubConfigPath)
        #expect(try !fixture.configurations.setPassword(vmID: 9, password: GuestPassword("second"), policy: policy))
        expectEqualBytes(try fixture.bytes(result.grubConfigPath), once)
    }

    @Test func existingConfigurationKeepsKernel() throws {
        let fixture = try GrubFixture()
        defer { fixture.scratch.remove() }
        _ = try fixture.configurations.write(vmID: 5, vmName: "guest", rawPath: "/mnt/tank/g.raw",
                                             entry: TestEntries.v113, password: GuestPassword("first"))
        let result = try fixture.configurations.write(vmID: 5, vmName: "guest", rawPath: "/mnt/tank/g.raw",
                                                      entry: TestEntries.v142, password: GuestPassword("second"))
        let text = try fixture.text(result.grubConfigPath)
        #expect(result.outcome == .passwordUpdated)
        #expect(text.contains("linux /boot/vmlinuz-4.9.75-rancher rancher.password='second' "))
        #expect(text.contains("initrd /boot/initrd-v1.1.3"))
        #expect(!text.contains("first"))
    }

    @Test func setPasswordWithoutConfigurationFails() throws {
        let fixture = try GrubFixture()
        defer { fixture.scratch.remove() }
        #expect(throws: GrubError.configurationNotFound(vmID: 3, configsPath: fixture.sharefs.configsPath)) {
            try fixture.configurations.setPassword(vmID: 3, password: GuestPassword("pw"),
                                                   policy: PasswordPolicy(entry: TestEntries.v113))
        }
    }

    /// The first implementation wrote `rancher.password=<password>` unquoted, so a `$` in
    /// an old password makes the word expand in GRUB. set-password must still replace it.
    @Test func setPasswordReplacesUnquotedDollarWord() throws {
        let fixture = try GrubFixture()
        defer { fixture.scratch.remove() }
        let directory = "\(fixture.sharefs.configsPath)/3_guest"
        try FileManager.default.createDirectory(atPath: "\(directory)/grub", withIntermediateDirectories: true)
        let path = "\(directory)/grub/grub.cfg"
        try "\tlinux /boot/vmlinuz-4.9.75-rancher rancher.password=old$pw printk.devkmsg=on\n"
            .write(toFile: path, atomically: false, encoding: .utf8)

        #expect(try fixture.configurations.setPassword(vmID: 3, password: GuestPassword("new&pw"),
                                                       policy: PasswordPolicy(entry: TestEntries.v113)))
        #expect(try fixture.text(path) == "\tlinux /boot/vmlinuz-4.9.75-rancher rancher.password='new&pw' printk.devkmsg=on\n")
        #expect(try grubScriptCheck(path).status == 0)
    }

    @Test func setPasswordRejectsSymlinkedGrubDirectory() throws {
        let fixture = try GrubFixture()
        defer { fixture.scratch.remove() }
        let outside = fixture.scratch.file("outside")
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
        let original = "\tlinux /boot/vmlinuz rancher.password=old\n"
        try original.write(toFile: "\(outside)/grub.cfg", atomically: false, encoding: .utf8)
        let directory = "\(fixture.sharefs.configsPath)/3_guest"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
        try FileManager.default.createSymbolicLink(atPath: "\(directory)/grub", withDestinationPath: outside)

        #expect(throws: SharefsError.notADirectory(path: "\(directory)/grub", kind: "symbolic link")) {
            try fixture.configurations.setPassword(vmID: 3, password: GuestPassword("new"),
                                                   policy: PasswordPolicy(entry: TestEntries.v113))
        }
        #expect(try fixture.text("\(outside)/grub.cfg") == original)
    }

    @Test func setPasswordNeedsNameWhenRenamed() throws {
        let fixture = try GrubFixture()
        defer { fixture.scratch.remove() }
        for name in ["before", "after"] {
            _ = try fixture.configurations.write(vmID: 3, vmName: name, rawPath: "/mnt/tank/g.raw",
                                                 entry: TestEntries.v113, password: GuestPassword("pw1"))
        }
        #expect(throws: GrubError.self) {
            try fixture.configurations.setPassword(vmID: 3, password: GuestPassword("pw2"),
                                                   policy: PasswordPolicy(entry: TestEntries.v113))
        }
        #expect(try fixture.configurations.setPassword(vmID: 3, vmName: "after", password: GuestPassword("pw2"),
                                                       policy: PasswordPolicy(entry: TestEntries.v113)))
    }

    @Test func passwordIsNeverLogged() throws {
        let fixture = try GrubFixture()
        defer { fixture.scratch.remove() }
        let lines = LockedLines()
        let previousSink = Log.sink, previousLevel = Log.level
        Log.sink = { _, _, message in lines.append(message) }
        Log.level = .debug
        defer {
            Log.sink = previousSink
            Log.level = previousLevel
        }
        _ = try fixture.configurations.write(vmID: 6, vmName: "guest", rawPath: "/mnt/tank/g.raw",
                                             entry: TestEntries.v113, password: GuestPassword("hunter2&x"))
        try fixture.configurations.setPassword(vmID: 6, password: GuestPassword("swordfish&y"),
                                               policy: PasswordPolicy(entry: TestEntries.v113))
        #expect(!lines.all.isEmpty)
        #expect(!lines.all.contains { $0.contains("hunter2") || $0.contains("swordfish") })
    }

    @Test func passwordDescriptionIsHidden() {
        #expect("\(GuestPassword("hunter2"))" == "(password hidden)")
    }
}

/// Log lines collected from any thread.
final class LockedLines: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    func append(_ line: String) { lock.withLock { lines.append(line) } }
    var all: [String] { lock.withLock { lines } }
}

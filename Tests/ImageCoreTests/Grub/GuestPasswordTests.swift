import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif
@testable import ImageCore

@Suite struct GuestPasswordTests {
    @Test(arguments: ["saltsalt", "abcdefghijklmnop", "./09AZaz"])
    func sha512MatchesOpenSSLForSameSalt(_ salt: String) throws {
        let password = "correct horse battery staple"
        let hash = try SHA512Crypt.hash(GuestPassword(password), salt: salt)
        let openssl = try runProcess("openssl", ["passwd", "-6", "-salt", salt, "-stdin"], input: Data(password.utf8))
        #expect(openssl.status == 0)
        #expect(hash == openssl.outputText.trimmingCharacters(in: .newlines))
        #expect(hash.hasPrefix("$6$\(salt)$"))
    }

    @Test func randomSaltsDiffer() throws {
        let first = try SHA512Crypt.hash(GuestPassword("same"))
        let second = try SHA512Crypt.hash(GuestPassword("same"))
        #expect(first != second)
        // "$6$" + 16 salt characters + "$" + 86 hash characters.
        #expect(first.utf8.count == 3 + 16 + 1 + 86)
    }

    @Test func verifyAcceptsOwnHash() throws {
        let hash = try SHA512Crypt.hash(GuestPassword("pässwörd"))
        #expect(SHA512Crypt.verify(GuestPassword("pässwörd"), against: hash))
        #expect(!SHA512Crypt.verify(GuestPassword("passwort"), against: hash))
    }

    @Test(arguments: ["", "seventeen_chars_x", "bad$salt"])
    func invalidSaltIsRejected(_ salt: String) {
        #expect(throws: InvalidArgumentError.self) { _ = try SHA512Crypt.hash(GuestPassword("pw"), salt: salt) }
    }

    /// File contents and the password read from them.
    static let fileForms: [([UInt8], [UInt8])] = [
        (Array("secret\n".utf8), Array("secret".utf8)),
        (Array("secret\r\n".utf8), Array("secret".utf8)),
        (Array("secret".utf8), Array("secret".utf8)),
        (Array("secret\n\n".utf8), Array("secret\n".utf8)),     // only one newline is dropped
        (Array(" spaced \n".utf8), Array(" spaced ".utf8)),
    ]

    @Test(arguments: fileForms)
    func passwordFileDropsOneNewline(_ form: ([UInt8], [UInt8])) throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let path = scratch.file("password")
        try Data(form.0).write(to: URL(fileURLWithPath: path))
        #expect(try GuestPassword.read(fromFile: path).bytes == form.1)
    }

    @Test func missingPasswordFileNamesPath() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let path = scratch.file("absent")
        #expect {
            _ = try GuestPassword.read(fromFile: path)
        } throws: { error in
            "\(error)".contains(path)
        }
    }

    @Test func longPasswordFileIsRejected() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let path = scratch.file("password")
        try Data(repeating: UInt8(ascii: "a"), count: 100_000).write(to: URL(fileURLWithPath: path))
        let password = try GuestPassword.read(fromFile: path)
        #expect(throws: PasswordError.self) { try password.validate(for: PasswordPolicy(form: .sha512Crypt, splitsCommandLineOnSpaces: false)) }
    }
}

@Suite struct GrubScriptTests {
    @Test(arguments: [
        ("plain", "plain"),
        ("a&b", "'a&b'"),
        ("a'b", #"'a'\''b'"#),
        ("$6$x$y", "'$6$x$y'"),
        ("", "''"),
    ])
    func quoteKeepsSafeWordsBare(_ example: (String, String)) {
        #expect(GrubScript.quote(example.0) == example.1)
    }

    @Test func wordRangesFollowQuotes() {
        let line = Array(#"  linux /boot/k rancher.password='a b'\''c' "x y" z\ w"#.utf8)
        let words = GrubScript.wordRanges(in: line).map { String(decoding: line[$0], as: UTF8.self) }
        #expect(words == ["linux", "/boot/k", #"rancher.password='a b'\''c'"#, #""x y""#, #"z\ w"#])
    }

    @Test func unquoteRemovesQuotes() {
        let word = Array(#"rancher.password='a b'\''c'"#.utf8)
        #expect(GrubScript.unquote(word[...]) == Array("rancher.password=a b'c".utf8))
    }

    @Test func unquoteRejectsExpansion() {
        #expect(GrubScript.unquote(Array(#"a"$6"b"#.utf8)[...]) == nil)
    }

    @Test(arguments: ["../vmlinuz", ".hidden", "vm linuz", "a/b", ""])
    func badKernelNameIsRejected(_ name: String) {
        var entry = TestEntries.v142
        entry.kernel = name
        #expect(throws: InvalidArgumentError.self) { _ = try GrubScript.configuration(entry: entry, passwordWord: "x") }
    }
}

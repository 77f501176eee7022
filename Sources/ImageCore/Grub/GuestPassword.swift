// GuestPassword: the guest user's password on its way into grub.cfg.
//
// The password reaches the guest on the kernel command line, in one of two forms chosen
// per catalog entry (`PasswordForm`):
//
// - sha512-crypt (the default): the guest runs `chpasswd -e`, so the command line carries
//   a SHA-512 crypt hash from libxcrypt, `$6$<salt>$<hash>`, and the password itself is
//   written nowhere.
// - plain (RancherOS 1.x): the guest runs plain `chpasswd` on the value, so the command
//   line must carry the clear password. GRUB parses grub.cfg with shell-like quoting.
//   It builds the kernel command line with a backslash before every `\`, `'` and `"`, and
//   double quotes around words with spaces. RancherOS reads /proc/cmdline, undoes only
//   `\"` and `\'`, parses the value as YAML 1.1 and hands the result to `chpasswd` as
//   `rancher:<value>`. `validate` rejects, with the reason, every password that would not
//   arrive unchanged.
//
// The password is never logged or printed: `description` hides it.

#if canImport(Glibc)
import Glibc
#endif
import CCrypt

/// The password rules of one guest, taken from its catalog entry.
public struct PasswordPolicy: Sendable, Equatable {
    public var form: PasswordForm
    /// True when the guest splits the kernel command line on every space (RancherOS
    /// before 1.5.5), so a plain password cannot contain one.
    public var splitsCommandLineOnSpaces: Bool

    public init(form: PasswordForm, splitsCommandLineOnSpaces: Bool) {
        self.form = form
        self.splitsCommandLineOnSpaces = splitsCommandLineOnSpaces
    }

    public init(entry: CatalogEntry) {
        self.init(form: entry.passwordForm, splitsCommandLineOnSpaces: entry.splitsCommandLineOnSpaces)
    }
}

/// A password the guest cannot receive unchanged, or could not be read. The message
/// gives the reason and never the password.
public struct PasswordError: ImageError, Equatable {
    public var reason: String

    public init(_ reason: String) { self.reason = reason }

    public var category: FailureCategory { .usage }
    public var description: String { "invalid password: \(reason)" }
    public var remedy: String? { "choose another password" }
}

/// A password as bytes, as read from a file or standard input.
public struct GuestPassword: Sendable, Equatable, CustomStringConvertible {
    public let bytes: [UInt8]

    /// The largest accepted password in bytes.
    public static let maximumLength = 256

    public init(bytes: [UInt8]) { self.bytes = bytes }

    public init(_ text: String) { self.bytes = Array(text.utf8) }

    /// Hides the password from logs, messages and string interpolation.
    public var description: String { "(password hidden)" }

    /// Reads a password from `descriptor` to its end, dropping one trailing newline
    /// ("\n" or "\r\n") as `echo` and editors add. Reading stops past `maximumLength` plus
    /// a margin, since a longer password is rejected anyway.
    public static func read(from descriptor: FileDescriptor, name: String) throws -> GuestPassword {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1024)
        while bytes.count <= maximumLength + 2 {
            let count: Int
            do {
                count = try chunk.withUnsafeMutableBytes { try descriptor.read(into: $0) }
            } catch let error as Errno {
                throw SystemError("read the password from", path: name, errno: error)
            }
            if count == 0 { break }
            bytes += chunk[..<count]
        }
        for index in chunk.indices { chunk[index] = 0 }
        if bytes.last == UInt8(ascii: "\n") {
            bytes.removeLast()
            if bytes.last == UInt8(ascii: "\r") { bytes.removeLast() }
        }
        return GuestPassword(bytes: bytes)
    }

    /// Reads a password from the file at `path`; see `read(from:name:)`.
    public static func read(fromFile path: String) throws -> GuestPassword {
        let descriptor: FileDescriptor
        do {
            descriptor = try FileDescriptor.open(path, flags: O_RDONLY)
        } catch {
            throw SystemError("open the password file", path: path, errno: error)
        }
        defer { try? descriptor.close() }
        return try read(from: descriptor, name: path)
    }

    /// Checks that the guest receives this password unchanged under `policy`.
    /// - Throws: `PasswordError` with the reason.
    public func validate(for policy: PasswordPolicy) throws(PasswordError) {
        if bytes.isEmpty { throw PasswordError("the password is empty") }
        if bytes.count > Self.maximumLength {
            throw PasswordError("the password is \(bytes.count) bytes long, the maximum is \(Self.maximumLength)")
        }
        switch policy.form {
        case .sha512Crypt:
            // crypt(3) takes a C string, so a NUL byte would silently cut the password.
            if bytes.contains(0) { throw PasswordError("the password contains a NUL byte") }
        case .plain:
            if let reason = PlainPasswordRules.problem(with: bytes, splitsOnSpaces: policy.splitsCommandLineOnSpaces) {
                throw PasswordError(reason)
            }
        }
    }
}

/// SHA-512 crypt through libxcrypt.
public enum SHA512Crypt {
    /// The characters of a crypt salt.
    static let saltAlphabet = Set("./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)

    /// Hashes `password` as `$6$<salt>$<hash>` with 5000 rounds (the default, written
    /// without a `rounds=` field). Without `salt`, libxcrypt draws 16 random salt
    /// characters from the operating system (`crypt_gensalt_rn`).
    /// - Parameter salt: 1 to 16 characters from `[./0-9A-Za-z]`, for tests that compare
    ///   with another implementation.
    public static func hash(_ password: GuestPassword, salt: String? = nil) throws -> String {
        let setting: String
        if let salt {
            guard (1...16).contains(salt.utf8.count), salt.utf8.allSatisfy(saltAlphabet.contains) else {
                throw InvalidArgumentError(argument: "salt", value: salt, reason: "a salt is 1 to 16 characters from [./0-9A-Za-z]")
            }
            setting = "$6$" + salt
        } else {
            var output = [CChar](repeating: 0, count: Int(CRYPT_GENSALT_OUTPUT_SIZE))
            guard crypt_gensalt_rn("$6$", 0, nil, 0, &output, Int32(output.count)) != nil else {
                throw SystemError("generate a salt with", path: "crypt_gensalt_rn", errno: .current)
            }
            setting = String(decoding: output.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
        guard let result = try crypt(password, setting: setting), result.hasPrefix("$6$") else {
            throw SystemError("hash the password with", path: "crypt_ra", errno: .invalidArgument)
        }
        return result
    }

    /// True when `hash` is a SHA-512 crypt hash of `password`.
    public static func verify(_ password: GuestPassword, against hash: String) -> Bool {
        guard hash.hasPrefix("$6$"), let computed = try? crypt(password, setting: hash) else { return false }
        return computed == hash
    }

    /// Runs `crypt_ra`, which allocates its own work area; returns nil when libxcrypt
    /// rejects the setting (it returns NULL or a string starting with '*').
    private static func crypt(_ password: GuestPassword, setting: String) throws -> String? {
        var phrase = password.bytes.map { CChar(bitPattern: $0) } + [0]
        defer { for index in phrase.indices { phrase[index] = 0 } }
        var data: UnsafeMutableRawPointer?
        var size: Int32 = 0
        defer {
            if let data {
                memset(data, 0, Int(size))
                free(data)
            }
        }
        guard let output = crypt_ra(phrase, setting, &data, &size) else { return nil }
        let text = String(cString: output)
        return text.hasPrefix("*") ? nil : text
    }
}

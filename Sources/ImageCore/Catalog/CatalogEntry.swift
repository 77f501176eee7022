// One pre-built image that imgtool knows how to fetch, verify and boot.

/// How a guest applies the password given on its kernel command line.
public enum PasswordForm: String, Sendable, Codable, CaseIterable {
    /// The guest runs `chpasswd -e`: the command line carries a SHA-512 crypt hash
    /// (`$6$salt$hash`), and the clear password appears nowhere.
    case sha512Crypt = "sha512-crypt"
    /// The guest runs plain `chpasswd` on the value (RancherOS 1.x): the command line must
    /// carry the clear password, since a hash would become the literal password.
    case plain
}

/// A catalog entry: where an image comes from, how to check it, and how to boot it.
public struct CatalogEntry: Sendable, Codable, Equatable {
    /// The image family, for example "RancherOS".
    public var name: String
    /// The version, for example "v1.4.2".
    public var version: String
    /// Where the compressed image is downloaded from.
    public var url: String
    /// The SHA-256 of the compressed image as 64 lower-case hex digits, or nil when it is
    /// taken from `checksumURL`.
    public var sha256: String?
    /// A checksum file in GNU `sha256sum` format that lists the image by file name.
    public var checksumURL: String?
    /// The kernel file under the guest's `/boot`, for example "vmlinuz-4.14.73-rancher".
    public var kernel: String
    /// The initrd file under the guest's `/boot`, for example "initrd-v1.4.2".
    public var initrd: String
    /// Kernel command-line words after the password, in order.
    public var kernelArguments: [String]
    /// How the guest applies its password.
    public var passwordForm: PasswordForm
    /// True when the guest splits the whole kernel command line on every space before it
    /// reads the password (RancherOS before 1.5.5), so a password may not contain one.
    public var splitsCommandLineOnSpaces: Bool

    public init(name: String, version: String, url: String, sha256: String? = nil, checksumURL: String? = nil,
                kernel: String, initrd: String, kernelArguments: [String], passwordForm: PasswordForm,
                splitsCommandLineOnSpaces: Bool) {
        self.name = name
        self.version = version
        self.url = url
        self.sha256 = sha256
        self.checksumURL = checksumURL
        self.kernel = kernel
        self.initrd = initrd
        self.kernelArguments = kernelArguments
        self.passwordForm = passwordForm
        self.splitsCommandLineOnSpaces = splitsCommandLineOnSpaces
    }

    /// `name@version`, the form `imgtool fetch` accepts.
    public var reference: String { "\(name)@\(version)" }

    /// The file name of the download: the last path component of `url`.
    public var fileName: String {
        let path = url.split(separator: "?", maxSplits: 1).first.map(String.init) ?? url
        return path.split(separator: "/").last.map(String.init) ?? path
    }
}

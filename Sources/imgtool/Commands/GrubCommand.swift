#if canImport(Glibc)
import Glibc
#endif
import ImageCore

enum GrubCommand: Command {
    static let name = "grub"
    static let summary = "Write, update or remove a guest's GRUB configuration."
    static let help = """
    Usage: imgtool grub write --vm-id N --vm-name NAME --raw PATH --password-file FILE|-
                              (--image IMAGE [--catalog FILE] | --kernel FILE --initrd FILE)
                              [--kernel FILE] [--initrd FILE] [--password-form FORM]
           imgtool grub set-password --vm-id N [--vm-name NAME] --password-file FILE|-
                              (--image IMAGE [--catalog FILE] | --password-form FORM)
           imgtool grub remove --vm-id N

    The configuration lives in the active sharefs, in configs/<N>_<NAME>/: device.map
    ("(hd0) PATH") and grub/grub.cfg. Files are written atomically with mode 0600.

    write         Writes device.map and, unless it exists, grub.cfg from the image's kernel,
                  initrd and command line. An existing grub.cfg is kept (a guest made from
                  an older image keeps its kernel and initrd); only its password changes.
    set-password  Replaces the password in an existing grub.cfg. The same password twice
                  leaves the file unchanged.
    remove        Deletes every configs/<N>_* directory of VM N (one per name the VM had),
                  never following a symbolic link. Nothing to remove is not an error.

    Options:
      --vm-id N             The VM's numeric ID.
      --vm-name NAME        The VM's name; set-password needs it only when the VM has
                            several configuration directories.
      --raw PATH            The absolute path of the VM's RAW disk file.
      --image IMAGE         The catalog image, for example RancherOS@v1.4.2, or RancherOS
                            for the newest version. Its entry gives the kernel, the initrd,
                            the kernel arguments and the password form.
      --catalog FILE        A catalog file to use instead of the default (or IMGTOOL_CATALOG).
      --kernel FILE         The kernel under the guest's /boot (overrides the image's).
      --initrd FILE         The initrd under the guest's /boot (overrides the image's).
      --password-form FORM  sha512-crypt (the guest applies a hash with chpasswd -e, the
                            default without --image) or plain (RancherOS 1.x applies the
                            clear password; spaces are then rejected, as RancherOS before
                            1.5.5 splits its command line on them).
      --password-file FILE  Read the password from FILE, or from standard input with "-"
                            (on a terminal, a prompt reads one line without echo). One
                            trailing newline is dropped. The password is never taken from
                            the command line, which other users can read.
      --pools-root DIR, --state-dir DIR  As for 'imgtool sharefs'.
    """

    static let valueOptions: Set<String> = sharefsOptions.union([
        "--vm-id", "--vm-name", "--raw", "--image", "--catalog", "--kernel", "--initrd", "--password-form", "--password-file",
    ])

    /// The kernel arguments after the password for an image given by --kernel and --initrd
    /// without --image, as the NAS middleware wrote them for RancherOS.
    static let rancherKernelArguments = [
        "printk.devkmsg=on", "rancher.state.dev=LABEL=RANCHER_STATE", "rancher.state.wait", "rancher.resize_device=/dev/sda",
    ]

    static func run(_ arguments: [String], context: CommandContext) async throws -> Int32 {
        let options = try Arguments(arguments, options: valueOptions)
        guard let subcommand = options.positionals.first else {
            throw UsageError(message: "missing grub command: expected write, set-password or remove")
        }
        try options.requirePositionals(1...1, names: subcommand)
        let configurations = GrubConfigurations(sharefs: try Sharefs(configuration: sharefsConfiguration(options)).requireActive())
        let vmID = try requiredVMID(options)

        switch subcommand {
        case "write":
            guard let vmName = options.value("--vm-name") else { throw UsageError(message: "missing option --vm-name") }
            guard let rawPath = options.value("--raw") else { throw UsageError(message: "missing option --raw") }
            let entry = try catalogEntry(options)
            let password = try readPassword(options)
            let result = try configurations.write(vmID: vmID, vmName: vmName, rawPath: rawPath, entry: entry, password: password)
            let grubConfigPath = escapingControlCharacters(result.grubConfigPath)
            switch result.outcome {
            case .created: print("wrote '\(grubConfigPath)' and '\(escapingControlCharacters(result.deviceMapPath))'")
            case .passwordUpdated: print("kept the existing '\(grubConfigPath)' and changed its password")
            case .unchanged: print("kept the existing '\(grubConfigPath)'; its password was already set")
            }
        case "set-password":
            let policy: PasswordPolicy
            if options.value("--image") != nil {
                policy = PasswordPolicy(entry: try catalogEntry(options))
            } else {
                guard let formText = options.value("--password-form") else {
                    throw UsageError(message: "missing option --image or --password-form")
                }
                policy = try passwordPolicy(formText)
            }
            let password = try readPassword(options)
            let changed = try configurations.setPassword(vmID: vmID, vmName: options.value("--vm-name"), password: password,
                                                         policy: policy)
            print(changed ? "changed the password of VM \(vmID)" : "VM \(vmID) already has this password; nothing changed")
        case "remove":
            let removed = try configurations.remove(vmID: vmID)
            for path in removed { print("removed '\(escapingControlCharacters(path))'") }
        default:
            throw UsageError(message: "unknown grub command '\(subcommand)': expected write, set-password or remove")
        }
        return 0
    }

    private static func requiredVMID(_ options: Arguments) throws -> Int {
        guard options.value("--vm-id") != nil else { throw UsageError(message: "missing option --vm-id") }
        return try options.integer("--vm-id", in: 1...Int.max)!
    }

    private static func passwordPolicy(_ text: String) throws -> PasswordPolicy {
        guard let form = PasswordForm(rawValue: text) else {
            throw UsageError(message: "invalid --password-form '\(text)': expected sha512-crypt or plain")
        }
        return PasswordPolicy(form: form, splitsCommandLineOnSpaces: form == .plain)
    }

    /// Builds the catalog entry from --image with --kernel, --initrd and --password-form
    /// applied on top. Without --image, the entry comes from those options alone.
    private static func catalogEntry(_ options: Arguments) throws -> CatalogEntry {
        var entry: CatalogEntry
        if let image = options.value("--image") {
            entry = try resolveImage(image, catalogPath: options.value("--catalog"))
        } else {
            guard let kernel = options.value("--kernel"), let initrd = options.value("--initrd") else {
                throw UsageError(message: "missing option --image (or both --kernel and --initrd)")
            }
            entry = CatalogEntry(name: "custom", version: "custom", url: "", kernel: kernel, initrd: initrd,
                                 kernelArguments: rancherKernelArguments, passwordForm: .sha512Crypt,
                                 splitsCommandLineOnSpaces: false)
        }
        if let kernel = options.value("--kernel") { entry.kernel = kernel }
        if let initrd = options.value("--initrd") { entry.initrd = initrd }
        if let formText = options.value("--password-form") {
            let policy = try passwordPolicy(formText)
            entry.passwordForm = policy.form
            entry.splitsCommandLineOnSpaces = entry.splitsCommandLineOnSpaces || policy.splitsCommandLineOnSpaces
        }
        return entry
    }

    /// Looks IMAGE up in the catalog from --catalog, IMGTOOL_CATALOG or the default one.
    private static func resolveImage(_ image: String, catalogPath: String?) throws -> CatalogEntry {
        try ImageCatalog.load(path: catalogPath).resolve(image)
    }

    private static func readPassword(_ options: Arguments) throws -> GuestPassword {
        guard let source = options.value("--password-file") else {
            throw UsageError(message: "missing option --password-file (a file, or - for standard input)")
        }
        if source == "-" {
            if isatty(STDIN_FILENO) == 1 { return try readPasswordFromTerminal() }
            return try GuestPassword.read(from: FileDescriptor(rawValue: STDIN_FILENO), name: "standard input")
        }
        return try GuestPassword.read(fromFile: source)
    }

    /// Prompts on standard error and reads one line from the terminal with echo turned off.
    private static func readPasswordFromTerminal() throws -> GuestPassword {
        var saved = termios()
        guard tcgetattr(STDIN_FILENO, &saved) == 0 else {
            throw SystemError("read the terminal settings of", path: "standard input", errno: .current)
        }
        var silent = saved
        silent.c_lflag &= ~tcflag_t(ECHO)
        _ = tcsetattr(STDIN_FILENO, TCSANOW, &silent)
        defer {
            _ = tcsetattr(STDIN_FILENO, TCSANOW, &saved)
            writeToStandardError("\n")
        }
        writeToStandardError("Password: ")
        // In canonical mode one read returns one line, so the wait ends at Enter.
        var line = [UInt8](repeating: 0, count: GuestPassword.maximumLength + 2)
        let count = line.withUnsafeMutableBytes { Glibc.read(STDIN_FILENO, $0.baseAddress, $0.count) }
        guard count >= 0 else { throw SystemError("read the password from", path: "standard input", errno: .current) }
        // A line longer than the buffer leaves its end in the terminal's input queue, where
        // the next reader (the shell) would take it as a command; discard it.
        if count == line.count, line[count - 1] != UInt8(ascii: "\n") { _ = tcflush(STDIN_FILENO, TCIFLUSH) }
        var bytes = Array(line[..<count])
        for index in line.indices { line[index] = 0 }
        if bytes.last == UInt8(ascii: "\n") { bytes.removeLast() }
        return GuestPassword(bytes: bytes)
    }

    private static func writeToStandardError(_ text: String) {
        var bytes = Array(text.utf8)
        _ = bytes.withUnsafeMutableBytes { Glibc.write(STDERR_FILENO, $0.baseAddress, $0.count) }
    }
}

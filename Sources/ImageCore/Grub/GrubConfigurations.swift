// GrubConfigurations: each guest's boot configuration in the sharefs.
//
//     configs/<vm id>_<vm name>/      mode 0700
//         device.map                  "(hd0) <raw path>\n", mode 0600
//         grub/grub.cfg               see GrubScript, mode 0600
//
// Files are written through TemporaryFile (write, fsync, rename, fsync of the directory),
// so a reader sees the old file or the new one, never a mix. An existing grub.cfg is never
// regenerated: a guest made from an older image keeps its own kernel and initrd names,
// and only the password word of its `linux` lines is replaced, line by line.
//
// NOTE: directories are checked with lstat before files are written in them, so a
// symlink placed there by another root process between the check and the write is not
// detected. Only root can write in the sharefs.

#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// The outcome of `GrubConfigurations.write` for grub.cfg.
public enum GrubWriteOutcome: Sendable, Equatable {
    /// grub.cfg did not exist and was generated from the catalog entry.
    case created
    /// grub.cfg existed and only its password was replaced.
    case passwordUpdated
    /// grub.cfg existed and already carried this password.
    case unchanged
}

/// The files of one guest's boot configuration.
public struct GrubWriteResult: Sendable, Equatable {
    public var directory: String
    public var deviceMapPath: String
    public var grubConfigPath: String
    public var outcome: GrubWriteOutcome
}

/// A boot configuration that cannot be written, changed or removed as asked.
public enum GrubError: ImageError, Equatable {
    case configurationNotFound(vmID: Int, configsPath: String)
    case ambiguousConfiguration(vmID: Int, directories: [String])
    case passwordWordNotFound(path: String)
    case fileTooLarge(path: String, size: Int64)
    /// `fix` is the remedy for this `reason`, because a space, a control character and
    /// a relative path each need another change.
    case invalidRawPath(path: String, reason: String, fix: String)
    case notRegularFile(path: String, kind: String)

    public var category: FailureCategory {
        switch self {
        case .configurationNotFound, .ambiguousConfiguration, .invalidRawPath: return .usage
        case .passwordWordNotFound, .fileTooLarge, .notRegularFile: return .invalidData
        }
    }

    public var description: String {
        switch self {
        case let .configurationNotFound(vmID, configs):
            return "no boot configuration for VM \(vmID) in '\(configs)'"
        case let .ambiguousConfiguration(vmID, directories):
            return "VM \(vmID) has several boot configurations: \(directories.joined(separator: ", "))"
        case let .passwordWordNotFound(path):
            return "'\(path)' has no linux line with a rancher.password= word"
        case let .fileTooLarge(path, size):
            return "'\(path)' is \(size) bytes, too large for a grub.cfg"
        case let .invalidRawPath(path, reason, _):
            return "invalid RAW path '\(path)': \(reason)"
        case let .notRegularFile(path, kind):
            return "'\(path)' is a \(kind), not a regular file"
        }
    }

    public var remedy: String? {
        switch self {
        case .configurationNotFound: return "write it first with 'imgtool grub write'"
        case .ambiguousConfiguration: return "name the VM with --vm-name"
        case .passwordWordNotFound, .fileTooLarge, .notRegularFile: return "remove the configuration with 'imgtool grub remove' and write it again"
        case let .invalidRawPath(_, _, fix): return fix
        }
    }
}

/// Writes, updates and removes guests' boot configurations in one sharefs.
public struct GrubConfigurations: Sendable {
    public let sharefs: ActiveSharefs

    /// grub.cfg files larger than this are not ours; a generated one is about 400 bytes.
    static let maximumConfigurationSize: Int64 = 1 << 20

    public init(sharefs: ActiveSharefs) {
        self.sharefs = sharefs
    }

    /// Writes `device.map` and, unless it exists, `grub/grub.cfg` for one guest. When
    /// grub.cfg exists, only its password is replaced.
    ///
    /// Everything is validated before anything is written: the password against the
    /// entry's password form, the kernel and initrd names, the VM ID and name, the RAW path.
    public func write(vmID: Int, vmName: String, rawPath: String, entry: CatalogEntry,
                      password: GuestPassword) throws -> GrubWriteResult {
        let policy = PasswordPolicy(entry: entry)
        try password.validate(for: policy)
        try Self.validateRawPath(rawPath)
        let directory = try sharefs.configDirectory(vmID: vmID, vmName: vmName)
        let grubDirectory = "\(directory)/grub"
        let grubConfigPath = "\(grubDirectory)/grub.cfg"
        let deviceMapPath = "\(directory)/device.map"

        // Render once with a placeholder, so a bad catalog entry leaves nothing behind.
        _ = try GrubScript.configuration(entry: entry, passwordWord: GrubScript.passwordWord(value: "x"))

        try requireSharefsDirectories()
        try Sharefs.makeDirectory(directory, mode: 0o700)
        let lock = try Self.lockDirectory(directory)
        defer { try? lock.close() }
        try Sharefs.makeDirectory(grubDirectory, mode: 0o700)

        var newConfiguration: String?
        if try Self.readConfiguration(grubConfigPath) == nil {
            newConfiguration = try GrubScript.configuration(entry: entry, passwordWord: try Self.passwordWord(password, policy: policy))
        }

        let deviceMap = "(hd0) \(rawPath)\n"
        if (try? Self.readConfiguration(deviceMapPath)) ?? nil != Array(deviceMap.utf8) {
            try Self.publish(Array(deviceMap.utf8), to: deviceMapPath)
        }

        let outcome: GrubWriteOutcome
        if let newConfiguration {
            try Self.publish(Array(newConfiguration.utf8), to: grubConfigPath)
            outcome = .created
        } else {
            outcome = try replacePassword(in: grubConfigPath, with: password, policy: policy) ? .passwordUpdated : .unchanged
        }
        Log.info("grub", "wrote the boot configuration of VM \(vmID) in '\(directory)' (\(outcome))")
        return GrubWriteResult(directory: directory, deviceMapPath: deviceMapPath, grubConfigPath: grubConfigPath,
                               outcome: outcome)
    }

    /// Replaces the password in the existing grub.cfg of VM `vmID`. With `vmName` nil, the
    /// VM must have exactly one configuration directory. Returns false when the file
    /// already carried this password and was left as it was.
    @discardableResult
    public func setPassword(vmID: Int, vmName: String? = nil, password: GuestPassword,
                            policy: PasswordPolicy) throws -> Bool {
        try password.validate(for: policy)
        try requireSharefsDirectories()
        let directory: String
        if let vmName {
            directory = try sharefs.configDirectory(vmID: vmID, vmName: vmName)
        } else {
            let directories = try configurationDirectories(vmID: vmID)
            guard directories.count <= 1 else { throw GrubError.ambiguousConfiguration(vmID: vmID, directories: directories) }
            guard let only = directories.first else {
                throw GrubError.configurationNotFound(vmID: vmID, configsPath: sharefs.configsPath)
            }
            directory = only
        }
        let path = "\(directory)/grub/grub.cfg"
        guard (try? linkStatus(directory)) ?? nil != nil else {
            throw GrubError.configurationNotFound(vmID: vmID, configsPath: sharefs.configsPath)
        }
        let lock = try Self.lockDirectory(directory)
        defer { try? lock.close() }
        // readConfiguration refuses a symlink only as the last component, and a grub/
        // symlink could lead out of the sharefs.
        let grubStatus: FileStatus?
        do {
            grubStatus = try linkStatus("\(directory)/grub")
        } catch {
            throw SystemError("inspect", path: "\(directory)/grub", errno: error)
        }
        guard let grubStatus else { throw GrubError.configurationNotFound(vmID: vmID, configsPath: sharefs.configsPath) }
        guard grubStatus.isDirectory else {
            throw SharefsError.notADirectory(path: "\(directory)/grub", kind: grubStatus.kindDescription)
        }
        guard try Self.readConfiguration(path) != nil else {
            throw GrubError.configurationNotFound(vmID: vmID, configsPath: sharefs.configsPath)
        }
        let changed = try replacePassword(in: path, with: password, policy: policy)
        Log.info("grub", "\(changed ? "changed" : "kept") the password of VM \(vmID) in '\(path)'")
        return changed
    }

    /// Deletes every configuration directory of VM `vmID` (a VM renamed since its
    /// configuration was written has one per name). Symbolic links are removed, never
    /// followed. Returns the paths removed, empty when there was nothing to remove.
    @discardableResult
    public func remove(vmID: Int) throws -> [String] {
        guard vmID > 0 else {
            throw InvalidArgumentError(argument: "VM ID", value: String(vmID), reason: "a VM ID is a positive integer")
        }
        do {
            if try linkStatus(sharefs.configsPath) == nil { return [] }
        } catch {
            throw SystemError("inspect", path: sharefs.configsPath, errno: error)
        }
        try requireSharefsDirectories()
        let configs: FileDescriptor
        do {
            configs = try FileDescriptor.open(sharefs.configsPath, flags: O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
        } catch {
            if error == .noEntry { return [] }
            throw SystemError("open", path: sharefs.configsPath, errno: error)
        }
        defer { try? configs.close() }

        let names: [String]
        do {
            names = try directoryEntries(sharefs.configsPath)
        } catch {
            throw SystemError("list", path: sharefs.configsPath, errno: error)
        }
        var removed: [String] = []
        for name in names.sorted() where name.hasPrefix("\(vmID)_") {
            let path = "\(sharefs.configsPath)/\(name)"
            do {
                try TreeRemoval.remove(name, in: configs)
            } catch {
                throw SystemError("remove", path: path, errno: error)
            }
            removed.append(path)
        }
        if !removed.isEmpty { Log.info("grub", "removed the boot configuration of VM \(vmID): \(removed.count) entries") }
        return removed
    }

    /// Lists the configuration directories of VM `vmID`, `configs/<vm id>_*`.
    public func configurationDirectories(vmID: Int) throws -> [String] {
        let names: [String]
        do {
            names = try directoryEntries(sharefs.configsPath)
        } catch {
            if error == .noEntry { return [] }
            throw SystemError("list", path: sharefs.configsPath, errno: error)
        }
        return names.filter { $0.hasPrefix("\(vmID)_") }.sorted().map { "\(sharefs.configsPath)/\($0)" }
            .filter { (try? linkStatus($0))??.isDirectory == true }
    }

    // MARK: - Steps

    /// Replaces the password word on every `linux` line of the grub.cfg at `path`; returns
    /// false when nothing changed. A SHA-512 hash that already matches the password is
    /// kept, so running the same change twice leaves the file byte-identical.
    private func replacePassword(in path: String, with password: GuestPassword, policy: PasswordPolicy) throws -> Bool {
        guard let original = try Self.readConfiguration(path) else {
            throw GrubError.passwordWordNotFound(path: path)
        }
        var lines = original.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).map(Array.init)
        var replacements = 0
        var newWord: [UInt8]?
        for lineIndex in lines.indices {
            let line = lines[lineIndex]
            let ranges = GrubScript.wordRanges(in: line)
            guard let first = ranges.first, GrubScript.unquote(line[first]) == Array("linux".utf8) else { continue }
            for range in ranges.dropFirst(2).reversed() {
                // The first implementation wrote the password unquoted, so a `$` in it makes
                // the value depend on variables. Such a word is still the password word.
                let value = GrubScript.unquote(line[range])
                guard (value ?? Array(line[range])).starts(with: GrubScript.passwordKey.utf8) else { continue }
                replacements += 1
                if let value, Self.carries(Array(value.dropFirst(GrubScript.passwordKey.utf8.count)), password: password,
                                           policy: policy) {
                    continue
                }
                if newWord == nil { newWord = Array(try Self.passwordWord(password, policy: policy).utf8) }
                lines[lineIndex].replaceSubrange(range, with: newWord!)
            }
        }
        guard replacements > 0 else { throw GrubError.passwordWordNotFound(path: path) }
        let updated = Array(lines.joined(separator: [UInt8(ascii: "\n")]))
        if updated == original { return false }
        try Self.publish(updated, to: path)
        return true
    }

    /// True when a password word's value `current` already carries `password`.
    private static func carries(_ current: [UInt8], password: GuestPassword, policy: PasswordPolicy) -> Bool {
        switch policy.form {
        case .plain:
            return current == password.bytes
        case .sha512Crypt:
            return SHA512Crypt.verify(password, against: String(decoding: current, as: UTF8.self))
        }
    }

    /// Returns the quoted `rancher.password=` word for `password` in the entry's form.
    private static func passwordWord(_ password: GuestPassword, policy: PasswordPolicy) throws -> String {
        switch policy.form {
        case .sha512Crypt:
            return GrubScript.passwordWord(value: try SHA512Crypt.hash(password))
        case .plain:
            // validate() has checked that the bytes are UTF-8 without line breaks.
            return GrubScript.passwordWord(value: String(decoding: password.bytes, as: UTF8.self))
        }
    }

    /// The longest RAW path grub-bhyve reads whole from device.map: it reads lines with
    /// fgets into a 1024-byte buffer, so "(hd0) " and the path must fit in 1023 bytes.
    static let maximumRawPathLength = 1023 - "(hd0) ".utf8.count

    /// Throws `GrubError.invalidRawPath` for a RAW path that device.map cannot carry:
    /// relative, with a control character or a space, or too long.
    public static func validateRawPath(_ path: String) throws {
        if !path.hasPrefix("/") {
            throw GrubError.invalidRawPath(path: path, reason: "the path is not absolute",
                                           fix: "give the absolute path of the RAW disk file")
        }
        if path.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
            throw GrubError.invalidRawPath(path: path, reason: "the path contains a control character",
                                           fix: "rename the RAW file, or the directory that contains the control character, to a name without control characters")
        }
        // grub-bhyve's device.map reader (read_device_map in grub-core/kern/emu/hostdisk.c)
        // ends the path at the first blank, so the guest would boot from another file.
        if path.contains(" ") {
            let suggestion = path.replacingOccurrences(of: " ", with: "_")
            // The suggestion must pass the length check below too.
            let fix = suggestion.utf8.count > maximumRawPathLength
                ? "move or rename the RAW file to a path without spaces of at most \(maximumRawPathLength) bytes"
                : "move or rename the RAW file to a path without spaces, such as '\(suggestion)'"
            throw GrubError.invalidRawPath(path: path, reason: "the path contains a space, and grub-bhyve's device.map reader ends the path at the first space",
                                           fix: fix)
        }
        if path.utf8.count > maximumRawPathLength {
            throw GrubError.invalidRawPath(path: path, reason: "the path is \(path.utf8.count) bytes long, and grub-bhyve reads at most \(maximumRawPathLength) from device.map",
                                           fix: "move the RAW file to a path of at most \(maximumRawPathLength) bytes")
        }
    }

    /// Opens a guest's configuration directory, refusing a symlink, and locks it with
    /// flock(LOCK_EX) so that two writers never interleave their read-modify-write of
    /// grub.cfg. The lock ends when the returned descriptor is closed.
    private static func lockDirectory(_ path: String) throws -> FileDescriptor {
        let descriptor: FileDescriptor
        do {
            descriptor = try FileDescriptor.open(path, flags: O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
        } catch {
            throw SystemError("open", path: path, errno: error)
        }
        do {
            try descriptor.lock(exclusive: true, wait: true)
        } catch {
            try? descriptor.close()
            throw SystemError("lock", path: path, errno: error)
        }
        return descriptor
    }

    /// Checks that the sharefs and its configs/ are directories, not symlinks: activate
    /// rejects a symlink there, and one swapped in later could lead out of the pool.
    private func requireSharefsDirectories() throws {
        try requireDirectory(sharefs.path)
        try requireDirectory(sharefs.configsPath)
    }

    private func requireDirectory(_ path: String) throws {
        let status: FileStatus?
        do {
            status = try linkStatus(path)
        } catch {
            throw SystemError("inspect", path: path, errno: error)
        }
        guard let status else { throw SharefsError.notADirectory(path: path, kind: "missing entry") }
        guard status.isDirectory else { throw SharefsError.notADirectory(path: path, kind: status.kindDescription) }
    }

    /// Reads a small regular file without following a final symlink; nil when missing.
    static func readConfiguration(_ path: String) throws -> [UInt8]? {
        let descriptor: FileDescriptor
        do {
            descriptor = try FileDescriptor.open(path, flags: O_RDONLY | O_NOFOLLOW | O_NONBLOCK)
        } catch {
            if error == .noEntry { return nil }
            throw SystemError("open", path: path, errno: error)
        }
        defer { try? descriptor.close() }
        let status: FileStatus
        do {
            status = try descriptor.status()
        } catch {
            throw SystemError("inspect", path: path, errno: error)
        }
        guard status.isRegularFile else { throw GrubError.notRegularFile(path: path, kind: status.kindDescription) }
        guard status.size <= maximumConfigurationSize else { throw GrubError.fileTooLarge(path: path, size: status.size) }
        var bytes = [UInt8](repeating: 0, count: Int(status.size))
        let count: Int
        do {
            count = try bytes.withUnsafeMutableBytes { try descriptor.readFully(into: $0, at: 0) }
        } catch let error as Errno {
            throw SystemError("read", path: path, errno: error)
        }
        return Array(bytes[..<count])
    }

    /// Writes `bytes` to `path` atomically with mode 0600, replacing any file there.
    static func publish(_ bytes: [UInt8], to path: String) throws {
        let file = try TemporaryFile(for: path, mode: 0o600, mustNotExist: false)
        do {
            try bytes.withUnsafeBytes { try file.descriptor.writeAll($0, at: 0) }
            // The mode given to open is reduced by the umask; set it exactly.
            if fchmod(file.descriptor.rawValue, 0o600) != 0 { throw Errno.current }
        } catch let error as Errno {
            file.discard()
            throw SystemError("write", path: file.temporaryPath, errno: error)
        }
        try file.publish(replacing: true)
    }
}

/// Recursive removal relative to directory descriptors, never following a symlink.
enum TreeRemoval {
    /// Removes `name` in `directory`: a directory with everything in it, anything else
    /// (a symlink included) with unlink.
    static func remove(_ name: String, in directory: FileDescriptor) throws(Errno) {
        var info = stat()
        if fstatat(directory.rawValue, name, &info, AT_SYMLINK_NOFOLLOW) != 0 {
            let error = Errno.current
            if error == .noEntry { return }
            throw error
        }
        guard (info.st_mode & S_IFMT) == S_IFDIR else {
            _ = try retryingInterrupts { unlinkat(directory.rawValue, name, 0) }
            return
        }
        let child = try FileDescriptor.open(name, flags: O_RDONLY | O_DIRECTORY | O_NOFOLLOW, relativeTo: directory)
        do {
            for entry in try entries(of: child) { try remove(entry, in: child) }
        } catch {
            try? child.close()
            throw error
        }
        try? child.close()
        _ = try retryingInterrupts { unlinkat(directory.rawValue, name, AT_REMOVEDIR) }
    }

    /// Lists a directory through a duplicate of its descriptor (closedir closes it).
    private static func entries(of directory: FileDescriptor) throws(Errno) -> [String] {
        let duplicate = dup(directory.rawValue)
        guard duplicate >= 0 else { throw Errno.current }
        guard let stream = fdopendir(duplicate) else {
            let error = Errno.current
            close(duplicate)
            throw error
        }
        defer { closedir(stream) }
        return try readDirectoryEntries(stream)
    }
}

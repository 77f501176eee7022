// Sharefs: the one area, on one storage pool, that every Docker VM shares.
//
// Layout under the pools root (default /mnt, where the NAS mounts its pools):
//
//     <root>/<pool>/.bhyve_containers/
//         iso_files/                 downloaded images
//         configs/<vm id>_<vm name>/ one guest's boot configuration
//             device.map
//             grub/grub.cfg
//
// The pool of the active sharefs is recorded in a state file, `<state dir>/sharefs`,
// as JSON: {"pool": "tank", "path": "/mnt/tank/.bhyve_containers"}. The state directory
// defaults to /var/lib/imgtool and is set by IMGTOOL_STATE_DIR; the pools root is set by
// IMGTOOL_POOLS_ROOT or the CLI's --pools-root.

#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// The sharefs settings: the pools root, the state directory and the pools to skip.
public struct SharefsConfiguration: Sendable, Equatable {
    /// The directory whose subdirectories are the storage pools.
    public var poolsRoot: String
    /// The directory that contains the `sharefs` state file.
    public var stateDirectory: String
    /// Pools never chosen automatically: the NAS's boot pool. An explicit POOL may still
    /// name one.
    public var skippedPools: Set<String>

    public static let defaultPoolsRoot = "/mnt"
    public static let defaultStateDirectory = "/var/lib/imgtool"
    /// The boot pool's name on TrueNAS ("boot-pool") and on FreeNAS 11 ("freenas-boot").
    public static let defaultSkippedPools: Set<String> = ["boot-pool", "freenas-boot"]

    public init(poolsRoot: String = defaultPoolsRoot, stateDirectory: String = defaultStateDirectory,
                skippedPools: Set<String> = defaultSkippedPools) {
        self.poolsRoot = poolsRoot
        self.stateDirectory = stateDirectory
        self.skippedPools = skippedPools
    }

    /// Reads IMGTOOL_POOLS_ROOT, IMGTOOL_STATE_DIR and IMGTOOL_BOOT_POOL (a comma-separated
    /// list of pools to skip, empty for none) from `environment`; unset ones keep defaults.
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment)
        -> SharefsConfiguration {
        var configuration = SharefsConfiguration()
        if let root = environment["IMGTOOL_POOLS_ROOT"], !root.isEmpty { configuration.poolsRoot = root }
        if let state = environment["IMGTOOL_STATE_DIR"], !state.isEmpty { configuration.stateDirectory = state }
        if let boot = environment["IMGTOOL_BOOT_POOL"] {
            configuration.skippedPools = Set(boot.split(separator: ",").map(String.init))
        }
        return configuration
    }

    /// The state file that records the active sharefs.
    public var stateFile: String { "\(stateDirectory)/sharefs" }
}

/// An active sharefs: the pool it lives on and the absolute path of its directory.
public struct ActiveSharefs: Sendable, Equatable, Codable {
    public var pool: String
    public var path: String

    public init(pool: String, path: String) {
        self.pool = pool
        self.path = path
    }

    /// The directory of downloaded images.
    public var isoFilesPath: String { "\(path)/iso_files" }
    /// The directory that contains one configuration directory per guest.
    public var configsPath: String { "\(path)/configs" }

    /// Returns the configuration directory of one guest, `configs/<vm id>_<vm name>`.
    public func configDirectory(vmID: Int, vmName: String) throws(InvalidArgumentError) -> String {
        try "\(configsPath)/\(Sharefs.configDirectoryName(vmID: vmID, vmName: vmName))"
    }
}

/// The result of `Sharefs.activate`.
public struct SharefsActivation: Sendable, Equatable {
    public var sharefs: ActiveSharefs
    /// Directories this call created (empty when everything already existed).
    public var createdDirectories: [String]
}

/// A sharefs operation that could not be done.
public enum SharefsError: ImageError, Equatable {
    case noPoolAvailable(poolsRoot: String, skipped: [String])
    case poolNotFound(pool: String, poolsRoot: String)
    case notADirectory(path: String, kind: String)
    case noActiveSharefs(stateFile: String)
    case invalidStateFile(path: String, reason: String)

    public var category: FailureCategory {
        switch self {
        case .poolNotFound: return .usage
        default: return .failure
        }
    }

    public var description: String {
        switch self {
        case let .noPoolAvailable(root, skipped):
            let skippedText = skipped.isEmpty ? "" : " (skipped: \(skipped.joined(separator: ", ")))"
            return "no storage pool found under '\(root)'\(skippedText)"
        case let .poolNotFound(pool, root):
            return "pool '\(pool)' not found: '\(root)/\(pool)' is not a directory"
        case let .notADirectory(path, kind):
            return "'\(path)' is a \(kind), not a directory"
        case let .noActiveSharefs(stateFile):
            return "no sharefs is active (no state file '\(stateFile)')"
        case let .invalidStateFile(path, reason):
            return "invalid sharefs state file '\(path)': \(reason)"
        }
    }

    public var remedy: String? {
        switch self {
        case .noPoolAvailable: return "create or import a pool, or set the pools root with --pools-root or IMGTOOL_POOLS_ROOT"
        case .poolNotFound: return "give the name of a directory under the pools root"
        case .notADirectory: return "move that entry away; imgtool creates the directory itself"
        case .noActiveSharefs: return "run 'imgtool sharefs activate [POOL]' first"
        case .invalidStateFile: return "run 'imgtool sharefs activate [POOL]' to write it again"
        }
    }
}

/// Chooses, creates and records the sharefs.
public struct Sharefs: Sendable {
    /// The directory name of the sharefs inside a pool, fixed by the NAS middleware.
    public static let directoryName = ".bhyve_containers"

    public let configuration: SharefsConfiguration

    public init(configuration: SharefsConfiguration = .fromEnvironment()) {
        self.configuration = configuration
    }

    /// Lists the pools that `activate` may choose without a name: the directories under the
    /// pools root, sorted by the bytes of their names, without hidden and skipped ones.
    public func candidatePools() throws -> [String] {
        var root = configuration.poolsRoot
        if !root.hasPrefix("/") { root = FileManager.default.currentDirectoryPath + "/" + root }
        let names: [String]
        do {
            names = try directoryEntries(root)
        } catch {
            throw SystemError("list pools in", path: root, errno: error)
        }
        return names
            .filter { !configuration.skippedPools.contains($0) && (try? Self.validatePoolName($0)) != nil }
            .filter { (try? linkStatus("\(root)/\($0)"))??.isDirectory == true }
            .sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
    }

    /// Creates the sharefs on `pool` (the first candidate pool when nil), repairs any
    /// missing subdirectory, and records it as active. Running it again changes nothing.
    public func activate(pool: String? = nil) throws -> SharefsActivation {
        var root = configuration.poolsRoot
        if !root.hasPrefix("/") { root = FileManager.default.currentDirectoryPath + "/" + root }
        let chosen: String
        if let pool {
            try Self.validatePoolName(pool)
            chosen = pool
        } else {
            guard let first = try candidatePools().first else {
                throw SharefsError.noPoolAvailable(poolsRoot: root,
                                                   skipped: configuration.skippedPools.sorted())
            }
            chosen = first
        }
        let poolPath = "\(root)/\(chosen)"
        guard (try? linkStatus(poolPath))??.isDirectory == true else {
            throw SharefsError.poolNotFound(pool: chosen, poolsRoot: root)
        }

        let sharefsPath = "\(poolPath)/\(Self.directoryName)"
        var created: [String] = []
        for directory in [sharefsPath, "\(sharefsPath)/iso_files", "\(sharefsPath)/configs"] {
            if try Self.makeDirectory(directory, mode: 0o755) { created.append(directory) }
        }

        let sharefs = ActiveSharefs(pool: chosen, path: sharefsPath)
        if (try? active()) != sharefs { try record(sharefs) }
        Log.info("sharefs", "active sharefs is '\(sharefsPath)' on pool '\(chosen)'")
        return SharefsActivation(sharefs: sharefs, createdDirectories: created)
    }

    /// Returns the recorded sharefs, or nil when none was activated.
    /// - Throws: `SharefsError.invalidStateFile` when the state file cannot be decoded.
    public func active() throws -> ActiveSharefs? {
        let path = configuration.stateFile
        guard let data = try Self.readStateFile(path) else { return nil }
        do {
            let sharefs = try JSONDecoder().decode(ActiveSharefs.self, from: data)
            guard sharefs.path.hasPrefix("/") else { throw SharefsError.invalidStateFile(path: path, reason: "the path is not absolute") }
            // grub remove deletes under this path, so it must be a sharefs that activate
            // could have made, not any directory a hand edit put there.
            let components = sharefs.path.split(separator: "/")
            guard (try? Self.validatePoolName(sharefs.pool)) != nil,
                  components.suffix(2) == [Substring(sharefs.pool), Substring(Self.directoryName)],
                  !components.contains(where: { $0 == "." || $0 == ".." }) else {
                throw SharefsError.invalidStateFile(path: path, reason: "the path is not <pools root>/\(sharefs.pool)/\(Self.directoryName)")
            }
            return sharefs
        } catch let error as SharefsError {
            throw error
        } catch {
            throw SharefsError.invalidStateFile(path: path, reason: "it is not the expected JSON object")
        }
    }

    /// Returns the recorded sharefs, or throws `SharefsError.noActiveSharefs`.
    public func requireActive() throws -> ActiveSharefs {
        guard let sharefs = try active() else { throw SharefsError.noActiveSharefs(stateFile: configuration.stateFile) }
        return sharefs
    }

    /// The largest state file read; a real one is under 200 bytes.
    static let maximumStateFileSize: Int64 = 1 << 16

    /// Reads the state file; nil only when it does not exist. A file that cannot be read
    /// throws, so that an unreadable state is never taken for "no sharefs is active".
    static func readStateFile(_ path: String) throws -> Data? {
        let descriptor: FileDescriptor
        do {
            descriptor = try FileDescriptor.open(path, flags: O_RDONLY | O_NONBLOCK)
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
        guard status.isRegularFile else {
            throw SharefsError.invalidStateFile(path: path, reason: "it is a \(status.kindDescription), not a regular file")
        }
        guard status.size <= maximumStateFileSize else {
            throw SharefsError.invalidStateFile(path: path, reason: "it is \(status.size) bytes, too large for a state file")
        }
        var bytes = [UInt8](repeating: 0, count: Int(status.size))
        let count: Int
        do {
            count = try bytes.withUnsafeMutableBytes { try descriptor.readFully(into: $0, at: 0) }
        } catch let error as Errno {
            throw SystemError("read", path: path, errno: error)
        }
        return Data(bytes[..<count])
    }

    private func record(_ sharefs: ActiveSharefs) throws {
        let directory = configuration.stateDirectory
        var missing: [String] = []
        var ancestor = directory
        while !ancestor.isEmpty, ancestor != "/", (try? linkStatus(ancestor)) ?? nil == nil {
            missing.append(ancestor)
            ancestor = (ancestor as NSString).deletingLastPathComponent
        }
        for path in missing.reversed() where mkdir(path, 0o755) != 0 && Errno.current != .exists {
            throw SystemError("create state directory", path: path, errno: .current)
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let data = try encoder.encode(sharefs) + Data("\n".utf8)
        let file = try TemporaryFile(for: configuration.stateFile, mode: 0o644, mustNotExist: false)
        do {
            try data.withUnsafeBytes { bytes in try file.descriptor.writeAll(bytes, at: 0) }
        } catch let error as Errno {
            file.discard()
            throw SystemError("write", path: file.temporaryPath, errno: error)
        }
        try file.publish(replacing: true)
    }

    /// Rejects pool names that are not one directory name under the root.
    /// Returns whether `scalar` is a C0 or C1 control character, or a bidirectional
    /// control (U+061C, U+200E, U+200F, U+202A to U+202E, U+2066 to U+2069) that makes a
    /// name read differently from what it is.
    static func isControlOrDirection(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0..<0x20, 0x7F...0x9F, 0x061C, 0x200E, 0x200F, 0x202A...0x202E, 0x2066...0x2069: true
        default: false
        }
    }

    public static func validatePoolName(_ pool: String) throws(InvalidArgumentError) {
        let reason: String? =
            pool.isEmpty ? "the name is empty"
            : pool.contains("/") ? "a pool name cannot contain '/'"
            : pool.hasPrefix(".") ? "a pool name cannot start with '.'"
            : pool.unicodeScalars.contains(where: isControlOrDirection) ? "a pool name cannot contain control or text-direction characters"
            // NAME_MAX on Linux: a longer directory name cannot exist.
            : pool.utf8.count > 255 ? "a pool name is at most 255 bytes (\(pool.utf8.count) given)"
            : nil
        if let reason {
            throw InvalidArgumentError(argument: "pool", value: pool, reason: reason,
                                       remedy: "give the name of a directory under the pools root")
        }
    }

    /// Returns `<vm id>_<vm name>` after checking both parts: the ID is a positive integer
    /// and the name is one path component without control or text-direction characters.
    public static func configDirectoryName(vmID: Int, vmName: String) throws(InvalidArgumentError) -> String {
        guard vmID > 0 else {
            throw InvalidArgumentError(argument: "VM ID", value: String(vmID), reason: "a VM ID is a positive integer")
        }
        let reason: String? =
            vmName.isEmpty ? "the name is empty"
            : vmName.contains("/") ? "a VM name cannot contain '/'"
            : vmName.unicodeScalars.contains(where: isControlOrDirection) ? "a VM name cannot contain control or text-direction characters"
            : vmName.utf8.count > 200 ? "a VM name is at most 200 bytes"
            : nil
        if let reason {
            throw InvalidArgumentError(argument: "VM name", value: vmName, reason: reason)
        }
        return "\(vmID)_\(vmName)"
    }

    /// Creates `path` with `mode` unless a directory exists there; returns true when it
    /// created one. A symbolic link or a file at `path` is an error, never followed.
    @discardableResult
    static func makeDirectory(_ path: String, mode: mode_t) throws -> Bool {
        if mkdir(path, mode) == 0 { return true }
        let error = Errno.current
        guard error == .exists else { throw SystemError("create directory", path: path, errno: error) }
        let status: FileStatus?
        do {
            status = try linkStatus(path)
        } catch {
            throw SystemError("inspect", path: path, errno: error)
        }
        guard let status, status.isDirectory else {
            throw SharefsError.notADirectory(path: path, kind: status?.kindDescription ?? "missing entry")
        }
        return false
    }
}

/// Lists the names in directory `path` except "." and ".." (`opendir(3)`, `readdir(3)`).
func directoryEntries(_ path: String) throws(Errno) -> [String] {
    guard let stream = opendir(path) else { throw Errno.current }
    defer { closedir(stream) }
    return try readDirectoryEntries(stream)
}

/// Reads the remaining names from an open directory stream, except "." and "..".
func readDirectoryEntries(_ stream: OpaquePointer) throws(Errno) -> [String] {
    var names: [String] = []
    while true {
        errno = 0
        guard let entry = readdir(stream) else {
            if errno != 0 { throw Errno.current }
            return names
        }
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        if name != ".", name != ".." { names.append(name) }
    }
}

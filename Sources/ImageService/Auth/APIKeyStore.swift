// APIKeyStore: API keys for clients that are not root on the Unix socket.
//
// A key is `<id>-<64 random letters and digits>`, shown once when created. The store
// file (JSON, mode 0600) keeps for each key its id, name, creation time, a random salt
// and SHA-256(salt || key) in hex, never the key itself. Checking a key hashes it with
// the stored salt and compares in constant time. The store is read again when the file
// changes, so keys created or revoked with `imgtool apikey` apply to a running server.

import CCrypto
import Foundation
import ImageCore
import Synchronization

public struct APIKeyRecord: Sendable, Codable, Equatable {
    public var id: Int
    public var name: String
    /// Milliseconds since 1970.
    public var created: Int64
    /// 16 random bytes as hex.
    public var salt: String
    /// SHA-256 of the salt bytes followed by the key's UTF-8 bytes, as hex.
    public var sha256: String
}

public final class APIKeyStore: Sendable {
    public let path: String
    private let records = Mutex<[APIKeyRecord]>([])
    /// The (inode, size, modification time in ns) of the file when it was last read.
    private let loadedVersion = Mutex<[Int64]>([])

    /// Loads `path`; a missing file means no keys.
    public init(path: String) throws {
        self.path = path
        let version = APIKeyStore.fileVersion(path)
        let loaded = try APIKeyStore.load(path)
        records.withLock { $0 = loaded }
        loadedVersion.withLock { $0 = version }
    }

    /// Reads the file again when it changed since the last read. A file that cannot be
    /// read keeps the keys already loaded, and the failure is logged.
    private func reloadIfChanged() {
        let version = APIKeyStore.fileVersion(path)
        guard loadedVersion.withLock({ $0 != version }) else { return }
        do {
            let loaded = try APIKeyStore.load(path)
            records.withLock { $0 = loaded }
            loadedVersion.withLock { $0 = version }
        } catch {
            Log.error("service", "reloading the API key store failed, keeping the keys loaded before: \(error)")
        }
    }

    private static func fileVersion(_ path: String) -> [Int64] {
        var info = stat()
        guard stat(path, &info) == 0 else { return [] }
        return [Int64(info.st_ino), Int64(info.st_size), Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec)]
    }

    public var keys: [APIKeyRecord] { records.withLock { $0 } }

    /// Creates a key named `name`, saves the store and returns the key in clear (the only
    /// time it exists outside the caller's hands).
    public func create(name: String) throws -> (record: APIKeyRecord, key: String) {
        guard !name.isEmpty, name.count <= 200 else {
            throw InvalidArgumentError(argument: "name", value: name, reason: "expected 1 to 200 characters")
        }
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
        var generator = SystemRandomNumberGenerator()
        let secret = String((0..<64).map { _ in alphabet[Int(generator.next(upperBound: UInt64(alphabet.count)))] })
        let salt = (0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) }
        return try records.withLock { records in
            let id = (records.map(\.id).max() ?? 0) + 1
            let key = "\(id)-\(secret)"
            let record = APIKeyRecord(id: id, name: name, created: Int64(Date().timeIntervalSince1970 * 1000),
                                      salt: hex(salt), sha256: hex(APIKeyStore.hash(salt: salt, key: key)))
            var updated = records
            updated.append(record)
            try APIKeyStore.save(updated, to: path)
            records = updated
            return (record, key)
        }
    }

    /// Removes key `id`; returns false when no such key exists.
    public func revoke(id: Int) throws -> Bool {
        try records.withLock { records in
            guard records.contains(where: { $0.id == id }) else { return false }
            let updated = records.filter { $0.id != id }
            try APIKeyStore.save(updated, to: path)
            records = updated
            return true
        }
    }

    /// Checks `key` against the store; returns its record when it is valid, else nil.
    public func verify(_ key: String) -> APIKeyRecord? {
        reloadIfChanged()
        guard let dash = key.firstIndex(of: "-"), let id = Int(key[..<dash]) else { return nil }
        guard let record = records.withLock({ $0.first { $0.id == id } }),
              let salt = bytes(fromHex: record.salt), let stored = bytes(fromHex: record.sha256) else { return nil }
        let computed = APIKeyStore.hash(salt: salt, key: key)
        guard computed.count == stored.count else { return nil }
        var difference: UInt8 = 0
        for (a, b) in zip(computed, stored) { difference |= a ^ b }
        return difference == 0 ? record : nil
    }

    static func hash(salt: [UInt8], key: String) -> [UInt8] {
        let input = salt + Array(key.utf8)
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var size: UInt32 = 0
        let succeeded = input.withUnsafeBytes { bytes in
            EVP_Digest(bytes.baseAddress, bytes.count, &digest, &size, EVP_sha256(), nil)
        }
        precondition(succeeded == 1, "Bug in imgtool: libcrypto's SHA-256 failed on an in-memory buffer")
        return Array(digest.prefix(Int(size)))
    }

    private static func load(_ path: String) throws -> [APIKeyRecord] {
        guard FileManager.default.fileExists(atPath: path) else { return [] }
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw SystemError("read API key store", path: path, errno: Errno(rawValue: (error as NSError).code == 257 ? EACCES : EIO))
        }
        do {
            return try JSONDecoder().decode([APIKeyRecord].self, from: data)
        } catch {
            throw InvalidArgumentError(argument: "API key store", value: path, reason: "not a valid key store: \(error)",
                                       remedy: "restore the file or remove it and create new keys")
        }
    }

    private static func save(_ records: [APIKeyRecord], to path: String) throws {
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                 attributes: [.posixPermissions: 0o700])
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = try encoder.encode(records)
        let file = try TemporaryFile(for: path, mode: 0o600, mustNotExist: false)
        do {
            try data.withUnsafeBytes { bytes in try file.descriptor.writeAll(bytes, at: 0) }
        } catch let error as Errno {
            file.discard()
            throw SystemError("write", path: file.temporaryPath, errno: error)
        }
        try file.publish(replacing: true)
    }
}

private func hex(_ bytes: [UInt8]) -> String {
    bytes.map { String(format: "%02x", $0) }.joined()
}

private func bytes(fromHex text: String) -> [UInt8]? {
    guard text.count % 2 == 0 else { return nil }
    var result: [UInt8] = []
    var index = text.startIndex
    while index < text.endIndex {
        let next = text.index(index, offsetBy: 2)
        guard let byte = UInt8(text[index..<next], radix: 16) else { return nil }
        result.append(byte)
        index = next
    }
    return result
}

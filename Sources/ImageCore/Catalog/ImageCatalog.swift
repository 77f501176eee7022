// ImageCatalog: the images imgtool can fetch by name.
//
// The default catalog is embedded below as JSON, in the same format a catalog file uses:
//
//     { "extendsDefault": false,
//       "images": [ { "name": ..., "version": ..., "url": ..., "sha256": ..., ... } ] }
//
// Each image has the fields of `CatalogEntry` (`checksumURL` may stand in for `sha256`).
// A file with `"extendsDefault": true` adds its images to the default catalog, replacing
// default entries with the same name and version; otherwise it replaces the catalog.

import Foundation

/// A catalog file could not be read or is invalid.
public struct CatalogError: ImageError {
    public var path: String
    public var reason: String

    public init(path: String, reason: String) {
        self.path = path
        self.reason = reason
    }

    public var category: FailureCategory { .usage }
    public var description: String { "invalid catalog '\(path)': \(reason)" }
    public var remedy: String? { "fix the file, or run 'imgtool images' without --catalog to see the default catalog" }
}

/// No catalog entry matches a reference such as `RancherOS@v9`.
public struct UnknownImageError: ImageError {
    public var reference: String
    public var known: [String]

    public var category: FailureCategory { .usage }
    public var description: String { "unknown image '\(reference)'" }
    public var remedy: String? {
        known.isEmpty ? "the catalog is empty; give a catalog file with --catalog"
            : "choose one of: \(known.joined(separator: ", ")), or give a URL"
    }
}

public struct ImageCatalog: Sendable {
    /// The environment variable that names a catalog file when `--catalog` is not given.
    public static let environmentVariable = "IMGTOOL_CATALOG"

    public private(set) var entries: [CatalogEntry]

    public init(entries: [CatalogEntry]) {
        self.entries = entries
    }

    /// The embedded catalog: RancherOS v1.x images for bhyve, as published at
    /// download.freenas.org.
    public static let `default`: ImageCatalog = {
        do {
            return try ImageCatalog(json: Data(embeddedJSON.utf8), path: "<embedded catalog>", base: nil)
        } catch {
            fatalError("Bug in imgtool: the embedded catalog does not parse: \(error)")
        }
    }()

    /// Loads `path` on top of `base`: its images replace `base`, or extend it when the file
    /// sets `"extendsDefault": true`.
    public static func load(path: String, base: ImageCatalog = .default) throws -> ImageCatalog {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw CatalogError(path: path, reason: "it cannot be read (\(error.localizedDescription))")
        }
        return try ImageCatalog(json: data, path: path, base: base)
    }

    /// The catalog named by `path`, else by `IMGTOOL_CATALOG`, else the default.
    public static func load(path: String?, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> ImageCatalog {
        if let path { return try load(path: path) }
        if let path = environment[environmentVariable], !path.isEmpty { return try load(path: path) }
        return .default
    }

    private struct File: Decodable {
        var extendsDefault: Bool?
        var images: [CatalogEntry]
    }

    init(json: Data, path: String, base: ImageCatalog?) throws {
        let file: File
        do {
            file = try JSONDecoder().decode(File.self, from: json)
        } catch let DecodingError.keyNotFound(key, context) {
            throw CatalogError(path: path, reason: "missing field '\(key.stringValue)' at \(Self.location(context))")
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            throw CatalogError(path: path, reason: "wrong type at \(Self.location(context)): \(context.debugDescription)")
        } catch let DecodingError.dataCorrupted(context) {
            throw CatalogError(path: path, reason: "\(context.debugDescription) at \(Self.location(context))")
        } catch {
            throw CatalogError(path: path, reason: "\(error)")
        }

        for entry in file.images {
            try Self.validate(entry, path: path)
        }
        var entries = (file.extendsDefault ?? false) ? (base?.entries ?? []) : []
        for entry in file.images {
            entries.removeAll { $0.name == entry.name && $0.version == entry.version }
            entries.append(entry)
        }
        self.entries = entries
    }

    private static func location(_ context: DecodingError.Context) -> String {
        let path = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
        return path.isEmpty ? "top level" : path
    }

    private static func validate(_ entry: CatalogEntry, path: String) throws {
        let label = entry.reference
        if entry.name.isEmpty || entry.name.contains("@") {
            throw CatalogError(path: path, reason: "image name '\(entry.name)' must be non-empty and contain no '@'")
        }
        if entry.version.isEmpty {
            throw CatalogError(path: path, reason: "\(label) has an empty version")
        }
        guard let url = URL(string: entry.url), let scheme = url.scheme?.lowercased(), ["http", "https"].contains(scheme) else {
            throw CatalogError(path: path, reason: "\(label) has url '\(redactingPassword(in: entry.url))', which is not an http or https URL")
        }
        if let sha256 = entry.sha256, SHA256Digest(hex: sha256) == nil {
            throw CatalogError(path: path, reason: "\(label) has sha256 '\(sha256)', which is not 64 hex digits")
        }
        if entry.sha256 == nil && entry.checksumURL == nil {
            throw CatalogError(path: path, reason: "\(label) has neither sha256 nor checksumURL, so it could not be verified")
        }
        if let checksumURL = entry.checksumURL, URL(string: checksumURL)?.scheme == nil {
            throw CatalogError(path: path, reason: "\(label) has checksumURL '\(redactingPassword(in: checksumURL))', which is not a URL")
        }
        for (field, value) in [("kernel", entry.kernel), ("initrd", entry.initrd)]
        where value.isEmpty || value.contains("/") || value.contains(" ") {
            throw CatalogError(path: path, reason: "\(label) has \(field) '\(value)'; expected a file name under /boot without '/' or spaces")
        }
    }

    /// Returns the entry for `reference`: `NAME` (the newest version of that name) or
    /// `NAME@VERSION`. Names compare without regard to case; versions exactly.
    public func resolve(_ reference: String) throws -> CatalogEntry {
        let parts = reference.split(separator: "@", maxSplits: 1, omittingEmptySubsequences: false)
        let name = String(parts[0])
        let sameName = entries.filter { $0.name.caseInsensitiveCompare(name) == .orderedSame }
        let found: CatalogEntry?
        if parts.count == 2 {
            found = sameName.first { $0.version == parts[1] }
        } else {
            found = sameName.max { Self.versionPrecedes($0.version, $1.version) }
        }
        guard let found else {
            throw UnknownImageError(reference: reference, known: entries.map(\.reference))
        }
        return found
    }

    /// The entries sorted by name, then by version from oldest to newest.
    public var sortedEntries: [CatalogEntry] {
        entries.sorted {
            $0.name != $1.name ? $0.name < $1.name : Self.versionPrecedes($0.version, $1.version)
        }
    }

    /// Orders versions such as `v1.4.2` and `v1.10.0` by their numeric fields, so 10
    /// follows 4; fields that are not numbers compare as text.
    static func versionPrecedes(_ left: String, _ right: String) -> Bool {
        func fields(_ version: String) -> [Substring] {
            var text = Substring(version)
            if text.first == "v" || text.first == "V" { text = text.dropFirst() }
            return text.split(whereSeparator: { $0 == "." || $0 == "-" })
        }
        let a = fields(left), b = fields(right)
        for (x, y) in zip(a, b) where x != y {
            if let m = Int(x), let n = Int(y) { return m < n }
            return x < y
        }
        return a.count < b.count
    }

    static let embeddedJSON = """
    {
      "extendsDefault": false,
      "images": [
        {
          "name": "RancherOS", "version": "v1.1.3",
          "url": "http://download.freenas.org/bhyve-templates/rancheros-bhyve-v1.1.3/rancheros-bhyve-v1.1.3.img.gz",
          "sha256": "e9288df573e01f5468c1f7e4609fbeab481caa3ffc5855af9d003b49557dde84",
          "kernel": "vmlinuz-4.9.75-rancher", "initrd": "initrd-v1.1.3",
          "kernelArguments": ["printk.devkmsg=on", "rancher.state.dev=LABEL=RANCHER_STATE", "rancher.state.wait", "rancher.resize_device=/dev/sda"],
          "passwordForm": "plain", "splitsCommandLineOnSpaces": true
        },
        {
          "name": "RancherOS", "version": "v1.4.0",
          "url": "http://download.freenas.org/bhyve-templates/rancheros-bhyve-v1.4.0/rancheros-bhyve-v1.4.0.img.gz",
          "sha256": "9ba4676656fe4b43b93a3da9d512b378bc48f7ccf3c889e812f73dc11811b6b3",
          "kernel": "vmlinuz-4.14.32-rancher2", "initrd": "initrd-v1.4.0",
          "kernelArguments": ["printk.devkmsg=on", "rancher.state.dev=LABEL=RANCHER_STATE", "rancher.state.wait", "rancher.resize_device=/dev/sda"],
          "passwordForm": "plain", "splitsCommandLineOnSpaces": true
        },
        {
          "name": "RancherOS", "version": "v1.4.1",
          "url": "http://download.freenas.org/bhyve-templates/rancheros-bhyve-v1.4.1/rancheros-bhyve-v1.4.1.img.gz",
          "sha256": "8b6a3e04a0ecb8a4feaba469ee85908eaf71bb7bac60bbe41d860b37091a8b9f",
          "kernel": "vmlinuz-4.14.67-rancher2", "initrd": "initrd-v1.4.1",
          "kernelArguments": ["printk.devkmsg=on", "rancher.state.dev=LABEL=RANCHER_STATE", "rancher.state.wait", "rancher.resize_device=/dev/sda"],
          "passwordForm": "plain", "splitsCommandLineOnSpaces": true
        },
        {
          "name": "RancherOS", "version": "v1.4.2",
          "url": "http://download.freenas.org/bhyve-templates/rancheros-bhyve-v1.4.2/rancheros-bhyve-v1.4.2.img.gz",
          "sha256": "9913e05287fc79407b4949c095419d2369491c4d833f9887a1a88d853701bb87",
          "kernel": "vmlinuz-4.14.73-rancher", "initrd": "initrd-v1.4.2",
          "kernelArguments": ["printk.devkmsg=on", "rancher.state.dev=LABEL=RANCHER_STATE", "rancher.state.wait", "rancher.resize_device=/dev/sda"],
          "passwordForm": "plain", "splitsCommandLineOnSpaces": true
        }
      ]
    }
    """
}

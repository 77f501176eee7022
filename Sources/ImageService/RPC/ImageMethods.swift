// The vm.* methods that need the image catalog: listing, fetching, locating images,
// writing a guest's boot configuration, and the whole first start as one job.

import Foundation
import ImageCore

enum ImageMethods {
    static func register(in table: inout MethodTable) {
        table.register(MethodSpec("vm.list_images") { context in
            try context.parameters.expectAtMost(0)
            var images: [String: JSONValue] = [:]
            for entry in context.service.catalog.sortedEntries {
                // Sorted from oldest to newest, so the newest version of a name wins.
                images[entry.name] = .object([
                    "VERSION": .string(entry.version),
                    "URL": .string(entry.url),
                    "GZIPFILE": .string(entry.fileName),
                    "SHA256": .optional(entry.sha256),
                    "KERNEL": .string(entry.kernel),
                    "INITRD": .string(entry.initrd),
                ])
            }
            return .value(.object(images))
        })

        table.register(MethodSpec("vm.fetch_image") { context in
            try context.parameters.expectAtMost(2)
            let name = try context.parameters.string(0, "name")
            let force = try context.parameters.optionalBool(1, "force", default: false)
            let entry = try resolve(name, in: context.service)
            let sharefs = try context.service.sharefs.requireActive()
            let id = context.service.jobs.submit(
                method: context.method, arguments: redact(context.parameters.values, secretPositions: []),
                description: "download \(entry.reference)", lock: "container", messageIDs: context.messageIDs
            ) { job in
                do {
                    let summary = try Downloader().fetch(
                        entry, into: sharefs.isoFilesPath, force: force,
                        progress: job.progressHandler(description: "Downloading \(entry.fileName)", extra: JobContext.downloadCounts),
                        cancellation: job.cancellation)
                    return .string(summary.path)
                } catch var mismatch as DestinationMismatchError {
                    // The remedy names the `force` parameter, not the command line's --force.
                    mismatch.interface = .service
                    throw mismatch
                }
            }
            return .job(id)
        })

        table.register(MethodSpec("vm.image_path") { context in
            try context.parameters.expectAtMost(1)
            let entry = try resolve(try context.parameters.string(0, "name"), in: context.service)
            guard let sharefs = try context.service.sharefs.active() else { return .value(.bool(false)) }
            // The downloader publishes the file under its final name only after its SHA-256
            // matched, so a regular file there is the verified image.
            let path = "\(sharefs.isoFilesPath)/\(entry.fileName)"
            guard (try? linkStatus(path))??.isRegularFile == true else { return .value(.bool(false)) }
            return .value(.string(path))
        })

        table.register(MethodSpec("vm.write_container_conf", secretPositions: []) { context in
            try context.parameters.expectAtMost(1)
            let request = try GuestRequest(context.parameters[0], service: context.service, kind: .configuration)
            let disk = try context.service.paths.existingFile(request.rawPath, argument: "raw_path")
            let sharefs = try context.service.sharefs.requireActive()
            let result = try GrubConfigurations(sharefs: sharefs).write(
                vmID: request.vmID, vmName: request.vmName, rawPath: context.service.paths.absolutePath(of: disk),
                entry: request.entry, password: request.password)
            return .value(grubResult(result))
        })

        table.register(MethodSpec("vm.create_container") { context in
            try context.parameters.expectAtMost(1)
            return .job(try Provisioning.submit(context))
        })
    }

    static func resolve(_ name: String, in service: Service) throws(RPCError) -> CatalogEntry {
        do {
            return try service.catalog.resolve(name)
        } catch {
            throw RPCError.invalidParameter("name", "\(error)")
        }
    }

    static func grubResult(_ result: GrubWriteResult) -> JSONValue {
        .object([
            "directory": .string(result.directory),
            "device_map": .string(result.deviceMapPath),
            "grub_config": .string(result.grubConfigPath),
            "outcome": .string(String(describing: result.outcome)),
        ])
    }
}

/// The object `vm.write_container_conf` and `vm.create_container` take:
/// `{vm_id, vm_name, image, raw_path, password}`, and for `vm.create_container` also
/// `size` and `pool`. Any other key is rejected, as the NAS middleware rejects fields
/// its schema does not list.
struct GuestRequest {
    /// The method the object is for, which decides the keys it accepts.
    enum Kind {
        case configuration
        case provisioning

        var method: String { self == .configuration ? "vm.write_container_conf" : "vm.create_container" }

        var acceptedKeys: [String] {
            let common = ["vm_id", "vm_name", "image", "raw_path", "password"]
            return self == .configuration ? common : common + ["size", "pool"]
        }
    }

    var vmID: Int
    var vmName: String
    var entry: CatalogEntry
    var rawPath: String
    var password: GuestPassword
    var sizeText: String
    var pool: String?

    init(_ value: JSONValue?, service: Service, kind: Kind) throws(RPCError) {
        guard let members = value?.objectValue else {
            throw RPCError.invalidParameter("data", "expected an object with vm_id, vm_name, image, raw_path and password")
        }
        try ObjectKeys.rejectUnknown(in: members, accepted: kind.acceptedKeys, owner: kind.method) { key in
            kind == .configuration && Kind.provisioning.acceptedKeys.contains(key) ? "\(key) is a key of vm.create_container" : nil
        }
        func string(_ name: String) throws(RPCError) -> String {
            guard let value = members[name] else { throw RPCError.invalidParameter(name, "missing; expected a string") }
            guard let text = value.stringValue else {
                throw RPCError.invalidParameter(name, "expected a string, got \(value.typeDescription)")
            }
            return text
        }
        guard let sentID = members["vm_id"] else {
            throw RPCError.invalidParameter("vm_id", "missing; expected a VM ID from 1 to \(Int32.max)")
        }
        guard let id = sentID.int64Value, id > 0, id <= Int64(Int32.max) else {
            throw RPCError.invalidParameter("vm_id", "expected a VM ID from 1 to \(Int32.max), got \(sentID)")
        }
        vmID = Int(id)
        vmName = try string("vm_name")
        entry = try ImageMethods.resolve(members["image"]?.stringValue ?? "RancherOS", in: service)
        rawPath = try string("raw_path")
        password = GuestPassword(try string("password"))
        do {
            try password.validate(for: PasswordPolicy(entry: entry))
        } catch {
            throw RPCError.invalidParameter("password", error.reason)
        }
        switch members["size"] {
        case .string(let text)?: sizeText = text
        case .number(let text)?: sizeText = text
        case nil, .null?: sizeText = ""
        case let other?: throw RPCError.invalidParameter("size", "expected a string or a number, got \(other.typeDescription)")
        }
        if kind == .provisioning {
            do {
                _ = try DiskSize.parseResizeRequest(sizeText)
            } catch {
                throw RPCError.from(error)
            }
        }
        // The pool matters only when no sharefs is active yet, but a name that could never
        // be valid is rejected either way.
        switch members["pool"] {
        case nil, .null?:
            pool = nil
        case .string(let name)?:
            do {
                try Sharefs.validatePoolName(name)
            } catch {
                throw RPCError.invalidParameter("pool", "'\(name)': \(error.reason)" + (error.remedy.map { "; \($0)" } ?? ""))
            }
            pool = name
        case let other?:
            throw RPCError.invalidParameter("pool", "expected the name of a pool as a string, got \(other.typeDescription)")
        }
    }
}

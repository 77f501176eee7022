// The vm.* methods on sharefs, disks and configurations: the middleware's names and
// argument shapes, bound to ImageCore. Each method checks its arguments (paths through
// PathGuard) and then calls ImageCore. The methods that need the image catalog are in
// ImageMethods.swift.

import Foundation
import ImageCore

enum VMMethods {
    /// Decoding threads of a vm.decompress_gzip job: one, because the NAS's CPU serves
    /// everything else too.
    static let decompressThreads = 1

    /// Builds the options of a vm.decompress_gzip job. With `splitSingleStream` on one
    /// thread, a single gzip stream is decoded as one chunk, which keeps zero runs as holes.
    /// ImageCore logs no warnings, so that the job logs each once, with its id and the
    /// caller's paths.
    static func decompressOptions(progress: ProgressHandler?, cancellation: CancellationToken?) -> DecompressOptions {
        var options = DecompressOptions(threads: decompressThreads, progress: progress, cancellation: cancellation,
                                        splitSingleStream: true)
        options.logsWarnings = false
        return options
    }

    static func register(in table: inout MethodTable) {
        table.register(MethodSpec("vm.activate_sharefs") { context in
            try context.parameters.expectAtMost(1)
            let pool = try context.parameters.optionalString(0, "pool")
            _ = try context.service.sharefs.activate(pool: pool)
            return .value(.bool(true))
        })
        table.register(MethodSpec("vm.get_sharefs") { context in
            try context.parameters.expectAtMost(0)
            guard let active = try context.service.sharefs.active() else { return .value(.bool(false)) }
            return .value(.string(active.path))
        })
        table.register(MethodSpec("vm.get_download_status") { context in
            try context.parameters.expectAtMost(1)
            let id = try context.parameters.integer(0, "job_id")
            return .value(context.service.jobs.job(id) ?? .bool(false))
        })
        table.register(MethodSpec("vm.decompress_gzip") { context in
            try context.parameters.expectAtMost(2)
            let source = try context.service.paths.existingFile(try context.parameters.string(0, "src"), argument: "src")
            let destination = try context.service.paths.newFile(try context.parameters.string(1, "dst"), argument: "dst")
            let method = context.method
            let id = context.service.jobs.submit(
                method: context.method, arguments: redact(context.parameters.values, secretPositions: []),
                description: "inflate \(source.displayPath) into \(destination.displayPath)", messageIDs: context.messageIDs
            ) { job in
                let options = decompressOptions(progress: job.progressHandler(description: "inflating"),
                                                cancellation: job.cancellation)
                let summary: DecompressSummary
                do {
                    summary = try Decompressor.decompress(source: source.usablePath, destination: destination.usablePath,
                                                          options: options)
                } catch {
                    throw TranslatedError.wrap(error, source, destination)
                }
                let warnings = summary.warnings.map { destination.translate(source.translate($0)) }
                for warning in warnings {
                    Log.warning("jobs", "job \(job.id) \(method): \(warning)")
                }
                return decompressResult(summary, warnings: warnings, destination: destination)
            }
            return .job(id)
        })
        table.register(MethodSpec("vm.raw_resize") { context in
            try context.parameters.expectAtMost(2)
            let disk = try context.service.paths.existingFile(try context.parameters.string(0, "path"), argument: "path",
                                                              writable: true)
            let sizeText: String
            switch context.parameters[1] {
            case .string(let text)?: sizeText = text
            case .number(let text)?: sizeText = text
            case nil, .null?: sizeText = ""
            case let other?: throw RPCError.invalidParameter("size", "expected a string or a number, got \(other.typeDescription)")
            }
            // "0", an empty string or no size keeps the current size, as the NAS UI expects.
            guard let size = try DiskSize.parseResizeRequest(sizeText) else { return .value(.bool(true)) }
            do {
                let result = try RawDisk.resize(path: disk.usablePath, to: size)
                Log.info("service", "vm.raw_resize '\(disk.displayPath)': \(result.oldSize) -> \(result.newSize) bytes")
            } catch let DiskError.shrinkRejected(_, current, requested) {
                // ImageCore's remedy names the command line's --shrink, which this method has no
                // equivalent of: it never shrinks.
                throw RPCError.call(EINVAL, "EINVAL",
                                    "cannot shrink '\(disk.displayPath)' from \(current) to \(requested) bytes: vm.raw_resize never "
                                        + "shrinks a disk, because that destroys the data past the new end (give a size of at "
                                        + "least \(current) bytes, or \"0\" to keep the current size)")
            } catch {
                throw TranslatedError.wrap(error, disk)
            }
            return .value(.bool(true))
        })
        table.register(MethodSpec("vm.rm_container_conf") { context in
            try context.parameters.expectAtMost(1)
            let id = try context.parameters.integer(0, "id")
            guard id > 0, id <= Int64(Int32.max) else {
                throw RPCError.invalidParameter("id", "expected a VM ID from 1 to \(Int32.max), got \(id)")
            }
            let sharefs = try context.service.sharefs.requireActive()
            _ = try GrubConfigurations(sharefs: sharefs).remove(vmID: Int(id))
            return .value(.bool(true))
        })
    }
}

/// Builds the job result of vm.decompress_gzip. `warnings` lists what decoding ignored
/// (trailing data after the last gzip member), with the paths the caller sent.
private func decompressResult(_ summary: DecompressSummary, warnings: [String], destination: CheckedPath) -> JSONValue {
    .object([
        "path": .string(destination.displayPath),
        "format": .string(String(describing: summary.format)),
        "compressed_bytes": .integer(summary.compressedBytesRead),
        "bytes_written": .integer(summary.bytesWritten),
        "allocated_bytes": summary.allocatedBytes.map { .integer($0) } ?? .null,
        "seconds": .double((summary.elapsed * 1000).rounded() / 1000),
        "warnings": .array(warnings.map { .string($0) }),
    ])
}

/// An ImageCore error whose message named `/proc/self/fd/N` paths, rewritten to name the
/// paths the caller sent. The category and the errno stay those of the original error.
struct TranslatedError: ImageError {
    var original: any ImageError
    var message: String
    var remedyText: String?

    var category: FailureCategory { original.category }
    var description: String { message }
    var remedy: String? { remedyText }

    static func wrap(_ error: any Error, _ paths: CheckedPath...) -> any Error {
        guard let imageError = error as? any ImageError else { return error }
        if let system = imageError as? SystemError {
            var translated = system
            for path in paths { translated.path = path.translate(translated.path) }
            return translated
        }
        var message = imageError.description
        var remedy = imageError.remedy
        for path in paths {
            message = path.translate(message)
            remedy = remedy.map(path.translate)
        }
        return TranslatedError(original: imageError, message: message, remedyText: remedy)
    }
}

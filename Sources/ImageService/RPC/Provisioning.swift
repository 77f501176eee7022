// vm.create_container: the whole first start of a Docker VM as one job with one progress
// scale. It runs ImageCore's `Provisioner`, the same job as `imgtool provision`: sharefs,
// download with verification while inflating, resize, GRUB, and publication of the RAW
// file only after everything succeeded.

import Foundation
import ImageCore

enum Provisioning {
    /// The maximum number of decoding threads a provisioning job uses for an image already on disk.
    static let maximumInflateThreads = 4

    /// Returns the decoding threads for an image already on disk when `processorCount`
    /// CPUs are available: one per CPU, at least 1 and at most `maximumInflateThreads`.
    static func inflateThreads(processorCount: Int) -> Int {
        max(1, min(processorCount, maximumInflateThreads))
    }

    /// Checks the request, then starts the job; returns its id.
    static func submit(_ context: CallContext) throws -> Int64 {
        let request = try GuestRequest(context.parameters[0], service: context.service, kind: .provisioning)
        do {
            _ = try Sharefs.configDirectoryName(vmID: request.vmID, vmName: request.vmName)
        } catch {
            throw RPCError.invalidParameter("vm_name", error.reason)
        }
        let destination = try context.service.paths.newFile(request.rawPath, argument: "raw_path")
        let service = context.service
        // The job writes this path into device.map at its end; a path that cannot go
        // there is rejected now, before anything is downloaded.
        do {
            try GrubConfigurations.validateRawPath(service.paths.absolutePath(of: destination))
        } catch {
            throw RPCError.from(error)
        }
        return service.jobs.submit(
            method: context.method, arguments: redact(context.parameters.values, secretPositions: []),
            description: "create VM \(request.vmID) (\(request.vmName)) from \(request.entry.reference)",
            messageIDs: context.messageIDs
        ) { job in
            try run(request, destination: destination, service: service, job: job, method: context.method)
        }
    }

    private static func run(_ request: GuestRequest, destination: CheckedPath, service: Service, job: JobContext,
                            method: String) throws -> JSONValue {
        job.setProgress(percent: 0, description: "Checking the request")
        let size: DiskSize?
        do {
            size = try DiskSize.parseResizeRequest(request.sizeText)
        } catch {
            throw RPCError.from(error)
        }
        let provisioner = Provisioner(catalog: ImageCatalog(entries: [request.entry]), sharefs: service.sharefs)
        // An image already on disk is decoded in parallel chunks, which hold up to about
        // 120 MiB per thread. The NAS's CPU and memory serve everything else too.
        var provisionRequest = ProvisionRequest(
            image: request.entry.reference, rawPath: destination.usablePath, size: size, vmID: request.vmID,
            vmName: request.vmName, pool: request.pool, password: request.password,
            threads: inflateThreads(processorCount: ProcessInfo.processInfo.activeProcessorCount),
            deviceMapPath: service.paths.absolutePath(of: destination))
        provisionRequest.logsInflateWarnings = false
        let fileName = request.entry.fileName

        let summary: ProvisionSummary
        do {
            summary = try provisioner.run(provisionRequest, progress: { progress in
                job.setProgress(percent: progress.percent, description: describe(progress.step, fileName: fileName),
                                extra: progress.download.map(JobContext.downloadCounts) ?? .null)
            }, cancellation: job.cancellation)
        } catch var mismatch as DestinationMismatchError {
            // The remedy names vm.fetch_image's `force` parameter, not imgtool provision's
            // --force, because vm.create_container has no such option.
            mismatch.interface = .service
            throw TranslatedError.wrap(mismatch, destination)
        } catch {
            throw TranslatedError.wrap(error, destination)
        }
        // What inflation ignored, such as trailing data after the last gzip member. The
        // job logs it because ImageCore does not know the job id.
        for warning in summary.inflate.warnings {
            Log.warning("jobs", "job \(job.id) \(method): \(destination.translate(warning))")
        }
        return .object([
            "raw_path": .string(destination.displayPath),
            "image": .string(summary.imagePath),
            "sharefs": .string(summary.sharefs.path),
            "grub_config": .string(summary.grub.grubConfigPath),
            "size": .integer(summary.resize.newSize),
        ])
    }

    /// The job's `progress.description` for a provisioning step.
    private static func describe(_ step: String, fileName: String) -> String {
        switch step {
        case "check": return "Checking the request"
        case "sharefs": return "Preparing the sharefs"
        case "download+inflate": return "Downloading and inflating \(fileName)"
        case "inflate": return "Inflating \(fileName)"
        case "resize": return "Growing the disk"
        case "grub": return "Writing the boot configuration"
        case "publish": return "Publishing the disk"
        default: return "Done"
        }
    }
}

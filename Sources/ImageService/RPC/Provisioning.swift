// vm.create_container: the whole first start of a Docker VM as one job with one
// progress scale. It composes ImageCore's step calls: sharefs, fetch (with SHA-256
// verification), inflate, resize and GRUB. The shares of the scale are estimates of
// each step's time for a 4.4 GiB image on a slow link: the download dominates.
//
// TODO: replace the composition with ImageCore's provisioning operation once it exists;
// only `run` changes.

import Foundation
import ImageCore

enum Provisioning {
    /// Checks the request, then starts the job; returns its id.
    static func submit(_ context: CallContext) throws -> Int64 {
        let request = try GuestRequest(context.parameters[0], service: context.service, needsSize: true)
        let destination = try context.service.paths.newFile(request.rawPath, argument: "raw_path")
        let service = context.service
        return service.jobs.submit(
            method: context.method, arguments: redact(context.parameters.values, secretPositions: []),
            description: "create VM \(request.vmID) (\(request.vmName)) from \(request.entry.reference)",
            messageIDs: context.messageIDs
        ) { job in
            try run(request, destination: destination, service: service, job: job)
        }
    }

    private static func run(_ request: GuestRequest, destination: CheckedPath, service: Service, job: JobContext) throws -> JSONValue {
        job.setProgress(percent: 0, description: "Preparing the sharefs")
        let sharefs: ActiveSharefs
        let active = try service.sharefs.active()
        if let active, request.pool == nil {
            sharefs = active
        } else {
            sharefs = try service.sharefs.activate(pool: request.pool).sharefs
        }
        try job.cancellation.check("vm.create_container")

        let download = try Downloader().fetch(
            request.entry, into: sharefs.isoFilesPath,
            progress: job.progressHandler(description: "Downloading \(request.entry.fileName)", range: 1...50,
                                          extra: JobContext.downloadCounts),
            cancellation: job.cancellation)

        let inflateOptions = DecompressOptions(progress: job.progressHandler(description: "Inflating the image", range: 50...92),
                                               cancellation: job.cancellation)
        do {
            _ = try Decompressor.decompress(source: download.path, destination: destination.usablePath, options: inflateOptions)
        } catch {
            throw TranslatedError.wrap(error, destination)
        }

        // From here on the RAW file is ours: a failure removes it, so a retry can create it again.
        do {
            try job.cancellation.check("vm.create_container")
            job.setProgress(percent: 93, description: "Growing the disk")
            if let size = try DiskSize.parseResizeRequest(request.sizeText) {
                _ = try RawDisk.resize(path: destination.usablePath, to: size)
            }
            try job.cancellation.check("vm.create_container")
            job.setProgress(percent: 96, description: "Writing the boot configuration")
            let grub = try GrubConfigurations(sharefs: sharefs).write(
                vmID: request.vmID, vmName: request.vmName, rawPath: service.paths.absolutePath(of: destination),
                entry: request.entry, password: request.password)
            return .object([
                "raw_path": .string(destination.displayPath),
                "image": .string(download.path),
                "sharefs": .string(sharefs.path),
                "grub_config": .string(grub.grubConfigPath),
            ])
        } catch {
            unlink(destination.usablePath)
            throw TranslatedError.wrap(error, destination)
        }
    }
}

// Provisioner: the first start of a Docker VM as one job, from nothing to a bootable,
// grown RAW disk with its GRUB configuration.
//
// Steps, and what overlaps:
//
//     check     the RAW path must not exist; the password, size and image are validated
//     sharefs   the active sharefs, or activate one (POOL, or the first pool)
//     download  fetch the image into iso_files/ (resume, verify)  --+ concurrently, the
//     inflate   inflate it into the RAW file's temporary file     --+ inflater follows the
//                                                                      partial download
//     resize    grow the temporary file to the requested size (sparse)
//     grub      write device.map and grub.cfg for the guest
//     publish   rename the temporary file to the RAW path (never replacing)
//
// The RAW file stays under its temporary name until the downloaded image's SHA-256 has
// matched and every step has succeeded, so an interrupted job never leaves a partial disk
// under the final name. A later identical run removes the dead run's temporary files,
// resumes or reuses the download, and rebuilds the RAW file.
//
// The inflater reads the partial download through `DownloadFollower`, which ends the
// input only after verification. If inflating while downloading fails because the stream
// did (a bad resumed splice that the checksum later rejects, for example), the job waits
// for the verified file and inflates that from the start. If writing the RAW file fails
// (no space, an I/O error), the job stops the download, keeps its partial file for the
// next run, and fails at once.

import Foundation
import Synchronization

/// A provisioning request: the image, the disk to create and the guest it is for.
public struct ProvisionRequest: Sendable {
    /// A catalog reference ("RancherOS", "RancherOS@v1.4.0").
    public var image: String
    /// The RAW disk file to create; it must not exist.
    public var rawPath: String
    /// The size to grow the disk to; it may not be smaller than the inflated image. Nil
    /// keeps the inflated image's size.
    public var size: DiskSize?
    /// The RAW path that the guest's device.map names, or nil for `rawPath`. The service
    /// sets it because its `rawPath` is a `/proc/self/fd/N/NAME` name for the same file.
    public var deviceMapPath: String?
    public var vmID: Int
    public var vmName: String
    /// The pool for the sharefs when none is active yet (the first pool when nil).
    public var pool: String?
    public var password: GuestPassword
    /// Decoding threads for an image that is already downloaded.
    public var threads: Int
    /// Reserve the disk's blocks with fallocate instead of leaving it sparse.
    public var preallocate: Bool
    /// Whether inflation logs each of `DecompressSummary.warnings` itself (see
    /// `DecompressOptions.logsWarnings`). The service turns it off and logs them from
    /// `ProvisionSummary.inflate` with the job id.
    public var logsInflateWarnings = true

    public init(image: String, rawPath: String, size: DiskSize?, vmID: Int, vmName: String, pool: String? = nil,
                password: GuestPassword, threads: Int = ProcessInfo.processInfo.activeProcessorCount,
                preallocate: Bool = false, deviceMapPath: String? = nil) {
        self.image = image
        self.rawPath = rawPath
        self.size = size
        self.deviceMapPath = deviceMapPath
        self.vmID = vmID
        self.vmName = vmName
        self.pool = pool
        self.password = password
        self.threads = max(1, threads)
        self.preallocate = preallocate
    }
}

/// One observation of a provisioning job, on one scale for the whole job.
public struct ProvisionProgress: Sendable, Equatable {
    /// The step or steps running now: "check", "sharefs", "download+inflate", "inflate",
    /// "resize", "grub", "publish" or "done".
    public var step: String
    /// The whole job's progress, 0...100.
    public var percent: Double
    /// The download's latest progress, when it downloads.
    public var download: ProgressUpdate?
    /// The inflation's latest progress.
    public var inflate: ProgressUpdate?
    /// Seconds since the job started.
    public var elapsed: Double
}

public typealias ProvisionProgressHandler = @Sendable (ProvisionProgress) -> Void

/// When a step ran, in seconds from the start of the job.
public struct ProvisionStepTiming: Sendable, Equatable {
    public var name: String
    public var start: Double
    public var end: Double
    public var seconds: Double { end - start }
}

/// The outcome of a successful provisioning job.
public struct ProvisionSummary: Sendable {
    public var rawPath: String
    public var entry: CatalogEntry
    public var sharefs: ActiveSharefs
    public var imagePath: String
    public var download: DownloadSummary
    public var inflate: DecompressSummary
    public var resize: ResizeResult
    public var grub: GrubWriteResult
    /// Temporary files of earlier, interrupted runs that this run removed.
    public var removedLeftovers: [String]
    /// Inflations started: 1 normally; 2 when inflating during the download failed and
    /// the verified file was inflated again.
    public var inflateAttempts: Int
    public var steps: [ProvisionStepTiming]
    /// Seconds during which downloading and inflating ran at the same time.
    public var overlapSeconds: Double
    public var elapsed: Double
}

/// The requested size is smaller than the inflated image; nothing was published.
public struct ProvisionSizeError: ImageError {
    public var requested: Int64
    public var imageSize: Int64
    public var category: FailureCategory { .usage }
    public var description: String {
        "disk size \(requested) bytes is smaller than the inflated image (\(imageSize) bytes)"
    }
    public var remedy: String? { "give a size of at least \(imageSize) bytes" }
}

/// Runs provisioning jobs. One instance may run several jobs at once on different RAW
/// paths; fetches of the same image serialise on the downloader's lock file.
public final class Provisioner: Sendable {
    public let catalog: ImageCatalog
    public let sharefs: Sharefs
    public let downloader: Downloader

    public init(catalog: ImageCatalog, sharefs: Sharefs, downloader: Downloader = Downloader()) {
        self.catalog = catalog
        self.sharefs = sharefs
        self.downloader = downloader
    }

    /// Runs the whole job. Blocks the calling thread; the download runs on a second one.
    /// - Throws: `TargetExistsError` before any work when the RAW path exists; the
    ///   `ImageError` of the failing step otherwise. Nothing exists at the RAW path after
    ///   an error or cancellation.
    public func run(_ request: ProvisionRequest, force: Bool = false, progress: ProvisionProgressHandler? = nil,
                    cancellation: CancellationToken = CancellationToken()) throws -> ProvisionSummary {
        let job = ProvisionJob(request: request, progress: progress)

        // 1. Check everything that can be checked before any work.
        job.begin("check")
        if let existing = try Self.status(of: request.rawPath) {
            throw TargetExistsError(path: request.rawPath, kind: existing.kindDescription)
        }
        let entry = try catalog.resolve(request.image)
        try request.password.validate(for: PasswordPolicy(entry: entry))
        try GrubConfigurations.validateRawPath(request.deviceMapPath ?? request.rawPath)
        let configName = try Sharefs.configDirectoryName(vmID: request.vmID, vmName: request.vmName)
        // No image inflates to nothing: refuse before the download rather than after it.
        if let size = request.size, size.bytes == 0 {
            throw InvalidArgumentError(argument: "size", value: "0", reason: "a disk cannot be empty",
                                       remedy: "give at least the inflated image's size, for example 20G")
        }
        let removed = TemporaryFile.removeStale(inDirectoryOf: request.rawPath, subsystem: "provision")
        try cancellation.check("provisioning of '\(request.rawPath)'")
        // The RAW file's directory must take a new file (it exists, is writable) before the
        // sharefs is activated or anything is downloaded.
        let rawFile = try TemporaryFile(for: request.rawPath)
        do {
            // So must the size: a filesystem that cannot hold it (EFBIG) fails now, not
            // after the download. The file is sparse, so this allocates nothing.
            if let size = request.size {
                do {
                    try rawFile.descriptor.truncate(to: size.bytes)
                    try rawFile.descriptor.truncate(to: 0)
                } catch {
                    throw SystemError("set the size to \(size.bytes) bytes of", path: request.rawPath, errno: error)
                }
            }

            // 2. The sharefs.
            job.begin("sharefs")
            // The sharefs is shared by every Docker VM, so an active one is kept; `pool` only
            // chooses where to create one.
            let active: ActiveSharefs
            if let current = try sharefs.active() {
                active = current
            } else {
                active = try sharefs.activate(pool: request.pool).sharefs
            }
            try cancellation.check("provisioning of '\(request.rawPath)'")

            // 3. Download and inflate into the temporary RAW file.
            let (download, inflate, attempts) = try downloadAndInflate(entry: entry, sharefs: active, into: rawFile,
                                                                       request: request, force: force, job: job,
                                                                       cancellation: cancellation)
            try cancellation.check("provisioning of '\(request.rawPath)'")

            // 4. Grow the disk while it is still temporary.
            job.begin("resize")
            let resized: ResizeResult
            if let size = request.size {
                guard size.bytes >= inflate.bytesWritten else {
                    throw ProvisionSizeError(requested: size.bytes, imageSize: inflate.bytesWritten)
                }
                do {
                    resized = try RawDisk.resize(lockedDescriptor: rawFile.descriptor, path: rawFile.temporaryPath,
                                                 to: size, preallocate: request.preallocate)
                } catch var error as SystemError where error.path == rawFile.temporaryPath {
                    // Name the disk the caller asked for; the temporary file is gone after the job.
                    error.path = request.rawPath
                    throw error
                }
            } else {
                resized = ResizeResult(path: rawFile.temporaryPath, oldSize: inflate.bytesWritten,
                                       newSize: inflate.bytesWritten, allocation: .unchanged, wasRounded: false,
                                       requestedBytes: inflate.bytesWritten)
            }
            try cancellation.check("provisioning of '\(request.rawPath)'")

            // 5. The guest's boot configuration names the final RAW path.
            job.begin("grub")
            let createsConfiguration = try Self.status(of: "\(active.configsPath)/\(configName)") == nil
            let grub: GrubWriteResult
            do {
                grub = try GrubConfigurations(sharefs: active).write(vmID: request.vmID, vmName: request.vmName,
                                                                     rawPath: request.deviceMapPath ?? request.rawPath,
                                                                     entry: entry, password: request.password)

                // 6. Publish: the only moment the RAW path appears.
                job.begin("publish")
                try rawFile.publish()
            } catch {
                // A configuration this job created must not outlive it: if another process
                // created the RAW path meanwhile, the guest would boot that file.
                if createsConfiguration { Self.removeConfiguration(configName, in: active) }
                throw error
            }
            job.begin("done")
            Log.info("provision", "VM \(request.vmID): '\(request.rawPath)' ready from \(entry.reference)")

            return ProvisionSummary(rawPath: request.rawPath, entry: entry, sharefs: active, imagePath: download.path,
                                    download: download, inflate: inflate,
                                    resize: ResizeResult(path: request.rawPath, oldSize: resized.oldSize,
                                                         newSize: resized.newSize, allocation: resized.allocation,
                                                         wasRounded: resized.wasRounded,
                                                         requestedBytes: resized.requestedBytes),
                                    grub: grub, removedLeftovers: removed, inflateAttempts: attempts,
                                    steps: job.timings(), overlapSeconds: job.overlap(), elapsed: job.elapsed())
        } catch {
            rawFile.discard()
            throw error
        }
    }

    /// Fetches the image and inflates it into `rawFile`, overlapping the two when the
    /// image has to be downloaded. Returns when both succeeded.
    private func downloadAndInflate(entry: CatalogEntry, sharefs: ActiveSharefs, into rawFile: TemporaryFile,
                                    request: ProvisionRequest, force: Bool, job: ProvisionJob,
                                    cancellation: CancellationToken)
        throws -> (DownloadSummary, DecompressSummary, Int) {
        let follower = DownloadFollower(name: "\(sharefs.isoFilesPath)/\(entry.fileName)", cancellation: cancellation)
        // Stops only the download, when the disk cannot be written.
        let downloadCancellation = CancellationToken(parent: cancellation)
        let outcome = Mutex<Result<DownloadSummary, any Error>?>(nil)
        let finished = DispatchSemaphore(value: 0)
        let downloader = self.downloader
        let isoFiles = sharefs.isoFilesPath

        job.begin("download+inflate", timing: ["download"])
        let thread = Thread.named("download") {
            let result: Result<DownloadSummary, any Error>
            do {
                result = .success(try downloader.fetch(entry, into: isoFiles, force: force,
                                                       progress: { job.report(download: $0) },
                                                       observer: { follower.handle($0) },
                                                       cancellation: downloadCancellation))
            } catch var mismatch as DestinationMismatchError {
                // Provisioning has no destination option, so the fetch's remedy does not fit.
                mismatch.operation = .provision
                follower.fail(mismatch)
                result = .failure(mismatch)
            } catch {
                follower.fail(error)
                result = .failure(error)
            }
            job.end("download")
            outcome.withLock { $0 = result }
            finished.signal()
        }
        thread.start()
        func waitForDownload() throws -> DownloadSummary {
            finished.wait()
            return try outcome.withLock { $0! }.get()
        }

        // A verified file on disk is split into chunks (`splitSingleStream`); the stream
        // that follows the download is read as it arrives, on one thread.
        var options = DecompressOptions(threads: 1, progress: { job.report(inflate: $0) }, cancellation: cancellation,
                                        splitSingleStream: true)
        options.logsWarnings = request.logsInflateWarnings
        var attempts = 1
        switch follower.waitForStart() {
        case .failed:
            _ = try waitForDownload()
            preconditionFailure("Bug in imgtool: a failed download returned a result")

        case .reused(let path):
            // The verified file was already there: inflate it with every thread.
            let download = try waitForDownload()
            job.setStep("inflate", downloading: false)
            job.beginTiming("inflate")
            options.threads = request.threads
            let input = try FileInput(path: path)
            defer { input.close() }
            let inflate = try Decompressor.decompress(input: input, into: rawFile, options: options)
            job.end("inflate")
            return (download, inflate, attempts)

        case .downloading:
            job.beginTiming("inflate")
            do {
                let inflate = try Decompressor.decompress(input: follower, into: rawFile, options: options)
                let download = try waitForDownload()
                job.end("inflate")
                return (download, inflate, attempts)
            } catch let error as CancelledError {
                _ = try? waitForDownload()
                throw error
            } catch let error as SystemError where [rawFile.finalPath, rawFile.temporaryPath].contains(error.path) {
                // Writing the disk failed (no space, an I/O error): inflating the verified
                // file again would fail the same way, so the rest of the download is not
                // waited for. Its partial file stays for the next run to resume.
                downloadCancellation.cancel()
                do {
                    _ = try waitForDownload()
                } catch is CancelledError {
                    Log.info("provision", "stopped the download of '\(follower.name)' because writing '\(request.rawPath)' failed; the next run resumes it")
                } catch let downloadError {
                    // The write error is what the caller must fix; the download's own is logged.
                    Log.info("provision", "the download of '\(follower.name)' also failed after writing '\(request.rawPath)' failed: \(downloadError)")
                }
                throw error
            } catch {
                // Inflating the stream failed; the verified file decides.
                let download = try waitForDownload()
                Log.warning("provision", "inflating '\(follower.name)' during the download failed (\(error)); inflating the verified file again")
                attempts += 1
                job.setStep("inflate", downloading: false)
                do {
                    try rawFile.descriptor.truncate(to: 0)
                } catch {
                    throw SystemError("truncate", path: rawFile.temporaryPath, errno: error)
                }
                options.threads = request.threads
                let input = try FileInput(path: download.path)
                defer { input.close() }
                let inflate = try Decompressor.decompress(input: input, into: rawFile, options: options)
                job.end("inflate")
                return (download, inflate, attempts)
            }
        }
    }

    private static func removeConfiguration(_ name: String, in sharefs: ActiveSharefs) {
        do {
            let configs = try FileDescriptor.open(sharefs.configsPath, flags: O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
            defer { try? configs.close() }
            try TreeRemoval.remove(name, in: configs)
        } catch {
            Log.warning("provision", "could not remove '\(sharefs.configsPath)/\(name)' of the failed job: \(error)")
        }
    }

    private static func status(of path: String) throws -> FileStatus? {
        do {
            return try linkStatus(path)
        } catch {
            throw SystemError("inspect", path: path, errno: error)
        }
    }
}

/// The clock, step timings and combined progress of one job. Thread-safe: the download
/// thread and the inflating thread both report into it.
final class ProvisionJob: Sendable {
    private struct State {
        var step = "check"
        var downloading = true
        var download: ProgressUpdate?
        var inflate: ProgressUpdate?
        var starts: [String: Double] = [:]
        var ends: [String: Double] = [:]
        var order: [String] = []
        var lastSent: Double = -1
    }

    private let started = ContinuousClock.now
    private let handler: ProvisionProgressHandler?
    private let state = Mutex(State())
    /// The highest percent handed to `handler`. A restarted download or a second
    /// inflation lowers the computed percent, but a progress bar must never go back. The
    /// lock also keeps the two reporting threads from delivering out of order.
    private let delivered = Mutex(0.0)

    /// The share of the scale each part takes, in percent. Downloading and inflating
    /// overlap, so each has its own share; a job that reuses the image gives the
    /// download's share to inflation.
    static let downloadShare = 45.0
    static let inflateShare = 45.0
    static let resizeShare = 4.0
    static let grubShare = 4.0

    init(request: ProvisionRequest, progress: ProvisionProgressHandler?) {
        handler = progress
    }

    func elapsed() -> Double { (ContinuousClock.now - started).seconds }

    /// Starts step `name` (ending the previous steps' timings) and reports it.
    func begin(_ name: String, timing: [String]? = nil) {
        let now = elapsed()
        state.withLock { state in
            for open in state.order where state.ends[open] == nil && !(open == "download" || open == "inflate") {
                state.ends[open] = now
            }
            state.step = name
            for timed in timing ?? (name == "done" ? [] : [name]) where state.starts[timed] == nil {
                state.starts[timed] = now
                state.order.append(timed)
            }
        }
        send(force: true)
    }

    func beginTiming(_ name: String) {
        let now = elapsed()
        state.withLock { state in
            if state.starts[name] == nil {
                state.starts[name] = now
                state.order.append(name)
            }
        }
    }

    func end(_ name: String) {
        let now = elapsed()
        state.withLock { state in if state.ends[name] == nil { state.ends[name] = now } }
    }

    func setStep(_ name: String, downloading: Bool) {
        state.withLock { state in
            state.step = name
            state.downloading = downloading
        }
        send(force: true)
    }

    func report(download: ProgressUpdate) {
        state.withLock { $0.download = download }
        send(force: false)
    }

    func report(inflate: ProgressUpdate) {
        state.withLock { $0.inflate = inflate }
        send(force: false)
    }

    func timings() -> [ProvisionStepTiming] {
        let now = elapsed()
        return state.withLock { state in
            state.order.map { ProvisionStepTiming(name: $0, start: state.starts[$0] ?? 0, end: state.ends[$0] ?? now) }
        }
    }

    /// Seconds during which the download and the inflation both ran.
    func overlap() -> Double {
        let timings = self.timings()
        guard let download = timings.first(where: { $0.name == "download" }),
              let inflate = timings.first(where: { $0.name == "inflate" }) else { return 0 }
        return max(0, min(download.end, inflate.end) - max(download.start, inflate.start))
    }

    private func send(force: Bool) {
        guard let handler else { return }
        let now = elapsed()
        let snapshot: ProvisionProgress? = state.withLock { state in
            if !force, now - state.lastSent < 0.2 { return nil }
            state.lastSent = now
            return ProvisionProgress(step: state.step, percent: Self.percent(state), download: state.download,
                                     inflate: state.inflate, elapsed: now)
        }
        guard var snapshot else { return }
        delivered.withLock { highest in
            snapshot.percent = max(snapshot.percent, highest)
            highest = snapshot.percent
            handler(snapshot)
        }
    }

    private static func percent(_ state: State) -> Double {
        let downloaded = state.download.flatMap { $0.percent }.map { $0 / 100 } ?? 0
        let inflated = state.inflate.flatMap { $0.percent }.map { $0 / 100 } ?? 0
        var percent: Double
        if state.download == nil && !state.downloading || state.step == "inflate" && state.download == nil {
            percent = (downloadShare + inflateShare) * inflated
        } else {
            percent = downloadShare * downloaded + inflateShare * inflated
        }
        switch state.step {
        case "resize": percent = downloadShare + inflateShare
        case "grub": percent = downloadShare + inflateShare + resizeShare
        case "publish": percent = downloadShare + inflateShare + resizeShare + grubShare
        case "done": percent = 100
        default: break
        }
        return min(100, max(0, percent))
    }
}

// imgtool provision: the first start of a Docker VM's disk as one job.

#if canImport(Glibc)
import Glibc
#endif
import Foundation
import ImageCore

enum ProvisionCommand: Command {
    static let name = "provision"
    static let summary = "Provision a Docker VM disk end to end."
    static let help = """
    Usage: imgtool provision [IMAGE] --raw PATH --size SIZE --vm-id N --vm-name NAME
                             (--password-file FILE | --password-stdin) [--pool POOL]
                             [--threads N] [--preallocate] [--force] [--catalog FILE]
                             [--pools-root DIR] [--state-dir DIR]
                             [--progress auto|bar|json|none]

    Creates the RAW disk of a Docker VM from a catalog image, as one job:
      1. activates the sharefs if none is active (on POOL, or the first pool by name);
      2. downloads IMAGE (default: RancherOS, the newest entry) into the sharefs's
         iso_files/, resuming a partial download and verifying its SHA-256, or reuses
         the verified file;
      3. inflates it into PATH while it downloads; PATH appears only once the download's
         SHA-256 has matched and every step succeeded;
      4. grows the disk to SIZE (sparse);
      5. writes the guest's device.map and grub.cfg in configs/<N>_<NAME>/.
    PATH must not exist: an existing RAW file holds a guest's data and is never touched.
    An interrupted run leaves no file at PATH; running the same command again resumes the
    download and removes the interrupted run's temporary files.

    Options:
      --raw PATH            The RAW disk file to create (it must not exist).
      --size SIZE           The disk's size: bytes, or a number with K, M, G or T
                            (powers of 1024; KiB, MiB, GiB, TiB also accepted), for
                            example 20G. At least the inflated image's size.
      --vm-id N             The VM's numeric ID.
      --vm-name NAME        The VM's name.
      --password-file FILE  Read the guest's password from FILE ("-" for standard input).
      --password-stdin      Read the guest's password from standard input.
      --pool POOL           The pool for the sharefs when none is active yet.
      --threads N           Decoding threads for an image already downloaded (default:
                            the number of cores).
      --preallocate         Reserve the disk's blocks (fallocate) instead of a sparse file.
      --force               Download the image again even when a verified copy exists.
      --catalog FILE        An image catalog to use (or IMGTOOL_CATALOG).
      --pools-root DIR      The directory whose subdirectories are the pools (default
                            /mnt, or IMGTOOL_POOLS_ROOT).
      --state-dir DIR       Where the active sharefs is recorded (default /var/lib/imgtool,
                            or IMGTOOL_STATE_DIR).
      --progress MODE       auto (a bar on a terminal), bar, json (JSON lines on standard
                            output) or none.
    """

    static func run(_ arguments: [String], context: CommandContext) async throws -> Int32 {
        let options = try Arguments(arguments, options: sharefsOptions.union([
            "--raw", "--size", "--vm-id", "--vm-name", "--password-file", "--pool", "--threads", "--catalog", "--progress",
        ]), flags: ["--password-stdin", "--preallocate", "--force"])
        try options.requirePositionals(0...1, names: "[IMAGE]")
        let mode = try ProgressMode.parse(options.value("--progress"))

        guard let rawPath = options.value("--raw") else { throw UsageError(message: "missing option --raw") }
        guard let sizeText = options.value("--size") else { throw UsageError(message: "missing option --size") }
        guard options.value("--vm-id") != nil else { throw UsageError(message: "missing option --vm-id") }
        guard let vmName = options.value("--vm-name") else { throw UsageError(message: "missing option --vm-name") }
        let vmID = try options.integer("--vm-id", in: 1...Int(Int32.max))!
        let size = try DiskSize(parsing: sizeText)
        let threads = try options.integer("--threads", in: 1...1024) ?? ProcessInfo.processInfo.activeProcessorCount
        let password = try readPassword(options)

        let request = ProvisionRequest(image: options.positionals.first ?? "RancherOS", rawPath: absolutePath(rawPath),
                                       size: size, vmID: vmID, vmName: vmName, pool: options.value("--pool"),
                                       password: password, threads: threads, preallocate: options.flag("--preallocate"))
        let provisioner = Provisioner(catalog: try ImageCatalog.load(path: options.value("--catalog")),
                                      sharefs: Sharefs(configuration: sharefsConfiguration(options)))

        let display = ProvisionDisplay(mode: mode)
        let summary: ProvisionSummary
        do {
            summary = try await runBlocking {
                try provisioner.run(request, force: options.flag("--force"), progress: display.handler,
                                    cancellation: context.cancellation)
            }
        } catch {
            display.finish()
            throw error
        }
        display.finish()
        if mode == .json {
            ProvisionDisplay.printJSONSummary(summary)
        } else {
            ProvisionDisplay.printSummary(summary)
        }
        return 0
    }

    private static func readPassword(_ options: Arguments) throws -> GuestPassword {
        let file = options.value("--password-file")
        if options.flag("--password-stdin") {
            guard file == nil else { throw UsageError(message: "give either --password-file or --password-stdin, not both") }
            return try GuestPassword.read(from: FileDescriptor(rawValue: STDIN_FILENO), name: "standard input")
        }
        guard let file else {
            throw UsageError(message: "missing option --password-file FILE or --password-stdin")
        }
        if file == "-" { return try GuestPassword.read(from: FileDescriptor(rawValue: STDIN_FILENO), name: "standard input") }
        return try GuestPassword.read(fromFile: file)
    }

    private static func absolutePath(_ path: String) -> String {
        path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
    }
}

/// Runs blocking work on a thread of its own, so the async caller's executor stays free.
func runBlocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            continuation.resume(with: Result { try body() })
        }
        thread.stackSize = 8 << 20
        thread.start()
    }
}

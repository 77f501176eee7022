import ImageCore

enum SharefsCommand: Command {
    static let name = "sharefs"
    static let summary = "Activate or show the shared area for images and guest configurations."
    static let help = """
    Usage: imgtool sharefs activate [POOL] [--pools-root DIR] [--state-dir DIR]
           imgtool sharefs show [--pools-root DIR] [--state-dir DIR]

    The sharefs is the directory <pools root>/<pool>/.bhyve_containers, holding iso_files/
    (downloaded images) and configs/<vm id>_<vm name>/ (each guest's boot configuration).

    activate  Creates the sharefs on POOL, or without POOL on the first pool by byte-wise
              name (hidden directories and the boot pool are skipped), repairs missing
              subdirectories and records it as active. Running it again changes nothing.
    show      Prints the active sharefs's pool and path, or says that none is active.

    Options:
      --pools-root DIR  The directory whose subdirectories are the pools (default /mnt,
                        or IMGTOOL_POOLS_ROOT).
      --state-dir DIR   The directory of the state file that records the active sharefs
                        (default /var/lib/imgtool, or IMGTOOL_STATE_DIR).

    Environment:
      IMGTOOL_POOLS_ROOT  the pools root when --pools-root is not given
      IMGTOOL_STATE_DIR   the state directory when --state-dir is not given
      IMGTOOL_BOOT_POOL   comma-separated pools never chosen without POOL
                          (default boot-pool,freenas-boot; empty for none)
    """

    static func run(_ arguments: [String], context: CommandContext) async throws -> Int32 {
        let options = try Arguments(arguments, options: sharefsOptions)
        let sharefs = Sharefs(configuration: sharefsConfiguration(options))
        switch options.positionals.first {
        case "activate":
            try options.requirePositionals(1...2, names: "activate [POOL]")
            let activation = try sharefs.activate(pool: options.positionals.dropFirst().first)
            for directory in activation.createdDirectories { print("created '\(escapingControlCharacters(directory))'") }
            print("active sharefs: '\(escapingControlCharacters(activation.sharefs.path))' on pool '\(activation.sharefs.pool)'")
        case "show":
            try options.requirePositionals(1...1, names: "show")
            if let active = try sharefs.active() {
                print("active sharefs: '\(escapingControlCharacters(active.path))' on pool '\(active.pool)'")
            } else {
                print("no sharefs is active; run 'imgtool sharefs activate [POOL]'")
            }
        case let other?:
            throw UsageError(message: "unknown sharefs command '\(other)': expected activate or show")
        case nil:
            throw UsageError(message: "missing sharefs command: expected activate or show")
        }
        return 0
    }
}

/// The options every command that touches the sharefs accepts.
let sharefsOptions: Set<String> = ["--pools-root", "--state-dir"]

/// Builds the sharefs configuration from the environment, overridden by `--pools-root` and
/// `--state-dir` when given.
func sharefsConfiguration(_ options: Arguments) -> SharefsConfiguration {
    var configuration = SharefsConfiguration.fromEnvironment()
    if let root = options.value("--pools-root") { configuration.poolsRoot = root }
    if let state = options.value("--state-dir") { configuration.stateDirectory = state }
    return configuration
}

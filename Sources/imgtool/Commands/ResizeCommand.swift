import ImageCore

enum ResizeCommand: Command {
    static let name = "resize"
    static let summary = "Grow (or, with --shrink, shrink) a RAW disk file."
    static let help = """
    Usage: imgtool resize RAW SIZE [--preallocate] [--shrink]

    Sets the size of the RAW disk file RAW to SIZE. Growing is sparse and takes constant
    time: the new space is a hole until the guest writes to it.

    SIZE is a byte count or a number with a unit: K, M, G, T (or KiB, MiB, GiB, TiB), all
    powers of 1024, in any letter case, decimals allowed ("4.5G"). The size is rounded up
    to a multiple of 512 bytes, and the command says when it rounded.

    Options:
      --preallocate  Reserve disk space for the whole file with fallocate(2). Where the
                     filesystem cannot (ZFS, NFS and others), the command says so and
                     grows the file sparse instead.
      --shrink       Allow a size smaller than the current one. Shrinking destroys the
                     data past the new end; without this option it is rejected.

    The same size is a no-op. RAW must be a regular file; it is locked while it is resized.
    """

    static func run(_ arguments: [String], context: CommandContext) async throws -> Int32 {
        // "-1G" looks like an option to the parser; keep it as a positional, in its place,
        // so that the size parser rejects it with the accepted forms. After "--" every
        // argument is a positional.
        var optionArguments: [String] = []
        var positionalArguments: [String] = []
        var afterSeparator = false
        for argument in arguments {
            if afterSeparator || !argument.hasPrefix("-") || argument == "-" || looksLikeNegativeNumber(argument) {
                positionalArguments.append(argument)
            } else if argument == "--" {
                afterSeparator = true
            } else {
                optionArguments.append(argument)
            }
        }
        let options = try Arguments(optionArguments + ["--"] + positionalArguments, flags: ["--preallocate", "--shrink"])
        let positionals = options.positionals
        guard positionals.count == 2 else {
            if positionals.count < 2 { throw UsageError(message: "missing argument: expected RAW SIZE") }
            throw UsageError(message: "unexpected argument '\(positionals[2])': expected RAW SIZE")
        }
        let path = positionals[0]
        let size = try DiskSize(parsing: positionals[1])

        let result = try RawDisk.resize(path: path, to: size, preallocate: options.flag("--preallocate"),
                                        allowShrink: options.flag("--shrink"))
        printSummary(result)
        return 0
    }

    private static func looksLikeNegativeNumber(_ argument: String) -> Bool {
        guard argument.hasPrefix("-"), let second = argument.dropFirst().first else { return false }
        return second.isNumber || second == "."
    }

    private static func printSummary(_ result: ResizeResult) {
        let path = escapingControlCharacters(result.path)
        if result.wasRounded {
            print("note: rounded \(result.requestedBytes) bytes up to \(result.newSize) bytes, a multiple of 512")
        }
        switch result.allocation {
        case .unchanged:
            print("'\(path)' is already \(result.newSize) bytes; nothing changed")
        case .sparse:
            print("\(result.shrank ? "shrank" : "grew") '\(path)' from \(result.oldSize) to \(result.newSize) bytes")
        case .preallocated:
            print("grew '\(path)' from \(result.oldSize) to \(result.newSize) bytes with the space reserved")
        case .fellBackToSparse(let error):
            print("note: the filesystem cannot reserve space (fallocate: \(error)); growing sparse instead")
            print("grew '\(path)' from \(result.oldSize) to \(result.newSize) bytes")
        }
    }
}

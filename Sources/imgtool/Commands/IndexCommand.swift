import ImageCore

enum IndexCommand: Command {
    static let name = "index"
    static let summary = "Write a seek index (GZIDX) for a gzip file."
    static let help = """
    Usage: imgtool index SOURCE.gz [-o FILE] [--spacing BYTES]

    Decodes SOURCE.gz once and writes a seek index in indexed_gzip's GZIDX format, which
    'imgtool decompress --index FILE' and 'rapidgzip --import-index FILE' use to decode
    in parallel from the index's access points. Every member's CRC-32 is checked.

    Options:
      -o, --output FILE   the index file to create (default: SOURCE.gz.gzidx); an
                          existing file is never replaced
      --spacing BYTES     the uncompressed distance between access points, from 65536
                          to 1073741824 (default: 4194304); each point adds 32 KiB
    """

    static func run(_ arguments: [String], context: CommandContext) async throws -> Int32 {
        let parsed = try Arguments(arguments, options: ["-o", "--output", "--spacing"])
        try parsed.requirePositionals(1...1, names: "SOURCE.gz")
        let source = parsed.positionals[0]
        let output = parsed.value("--output") ?? parsed.value("-o") ?? source + ".gzidx"
        let spacing = try parsed.integer("--spacing", in: 65536...(1 << 30)) ?? GzipIndexBuilder.defaultSpacing
        if let existing = try? linkStatus(output) {
            throw TargetExistsError(path: output, kind: existing.kindDescription)
        }
        let index = try GzipIndexBuilder.build(path: source, spacing: spacing, cancellation: context.cancellation)
        try index.write(to: output)
        return 0
    }
}

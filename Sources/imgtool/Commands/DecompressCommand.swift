import ImageCore

enum DecompressCommand: Command {
    static let name = "decompress"
    static let summary = "Inflate a gzip or xz image into a new sparse RAW file."
    static let help = "Usage: imgtool decompress (not built yet)"

    static func run(_ arguments: [String], context: CommandContext) async throws -> Int32 {
        throw UsageError(message: "'imgtool decompress' is not built yet")
    }
}

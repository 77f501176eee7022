import ImageCore

enum IndexCommand: Command {
    static let name = "index"
    static let summary = "Write a seek index (GZIDX) for a gzip file."
    static let help = "Usage: imgtool index (not built yet)"

    static func run(_ arguments: [String], context: CommandContext) async throws -> Int32 {
        throw UsageError(message: "'imgtool index' is not built yet")
    }
}

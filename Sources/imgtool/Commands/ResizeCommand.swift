import ImageCore

enum ResizeCommand: Command {
    static let name = "resize"
    static let summary = "Grow (or, with --shrink, shrink) a RAW disk file."
    static let help = "Usage: imgtool resize (not built yet)"

    static func run(_ arguments: [String], context: CommandContext) async throws -> Int32 {
        throw UsageError(message: "'imgtool resize' is not built yet")
    }
}

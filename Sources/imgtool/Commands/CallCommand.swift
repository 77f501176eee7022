import ImageCore

enum CallCommand: Command {
    static let name = "call"
    static let summary = "Call a middleware method on a running server, like midclt."
    static let help = "Usage: imgtool call (not built yet)"

    static func run(_ arguments: [String], context: CommandContext) async throws -> Int32 {
        throw UsageError(message: "'imgtool call' is not built yet")
    }
}

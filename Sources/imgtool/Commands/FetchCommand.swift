import ImageCore

enum FetchCommand: Command {
    static let name = "fetch"
    static let summary = "Download an image with resume and SHA-256 verification."
    static let help = "Usage: imgtool fetch (not built yet)"

    static func run(_ arguments: [String], context: CommandContext) async throws -> Int32 {
        throw UsageError(message: "'imgtool fetch' is not built yet")
    }
}

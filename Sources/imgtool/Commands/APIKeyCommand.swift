import ImageCore

enum APIKeyCommand: Command {
    static let name = "apikey"
    static let summary = "Create, list or revoke API keys for the service."
    static let help = "Usage: imgtool apikey (not built yet)"

    static func run(_ arguments: [String], context: CommandContext) async throws -> Int32 {
        throw UsageError(message: "'imgtool apikey' is not built yet")
    }
}

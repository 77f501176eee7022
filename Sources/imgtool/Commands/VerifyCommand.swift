import ImageCore

enum VerifyCommand: Command {
    static let name = "verify"
    static let summary = "Check a file's SHA-256 against the catalog or a given hash."
    static let help = "Usage: imgtool verify (not built yet)"

    static func run(_ arguments: [String], context: CommandContext) async throws -> Int32 {
        throw UsageError(message: "'imgtool verify' is not built yet")
    }
}

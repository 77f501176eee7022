import ImageCore

enum ProvisionCommand: Command {
    static let name = "provision"
    static let summary = "Provision a Docker VM disk end to end."
    static let help = "Usage: imgtool provision (not built yet)"

    static func run(_ arguments: [String], context: CommandContext) async throws -> Int32 {
        throw UsageError(message: "'imgtool provision' is not built yet")
    }
}

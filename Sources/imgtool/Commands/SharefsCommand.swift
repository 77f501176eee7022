import ImageCore

enum SharefsCommand: Command {
    static let name = "sharefs"
    static let summary = "Activate or show the shared area for images and guest configurations."
    static let help = "Usage: imgtool sharefs (not built yet)"

    static func run(_ arguments: [String], context: CommandContext) async throws -> Int32 {
        throw UsageError(message: "'imgtool sharefs' is not built yet")
    }
}

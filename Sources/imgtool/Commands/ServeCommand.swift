import ImageCore

enum ServeCommand: Command {
    static let name = "serve"
    static let summary = "Serve the vm.* middleware methods over WebSocket."
    static let help = "Usage: imgtool serve (not built yet)"

    static func run(_ arguments: [String], context: CommandContext) async throws -> Int32 {
        throw UsageError(message: "'imgtool serve' is not built yet")
    }
}

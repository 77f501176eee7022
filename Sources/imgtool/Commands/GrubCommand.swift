import ImageCore

enum GrubCommand: Command {
    static let name = "grub"
    static let summary = "Write, update or remove a guest's GRUB configuration."
    static let help = "Usage: imgtool grub (not built yet)"

    static func run(_ arguments: [String], context: CommandContext) async throws -> Int32 {
        throw UsageError(message: "'imgtool grub' is not built yet")
    }
}

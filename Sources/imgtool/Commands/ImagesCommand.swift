import ImageCore

enum ImagesCommand: Command {
    static let name = "images"
    static let summary = "List the image catalog."
    static let help = "Usage: imgtool images (not built yet)"

    static func run(_ arguments: [String], context: CommandContext) async throws -> Int32 {
        throw UsageError(message: "'imgtool images' is not built yet")
    }
}

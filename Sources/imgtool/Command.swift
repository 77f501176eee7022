// The subcommand interface and the table of subcommands.

import ImageCore

/// One `imgtool` subcommand. `run` returns the exit status; failures are thrown as
/// `ImageError` values and printed by `main`.
protocol Command: Sendable {
    /// The word after `imgtool`.
    static var name: String { get }
    /// One line for `imgtool help`.
    static var summary: String { get }
    /// The full help text for `imgtool NAME --help`, starting with the usage line.
    static var help: String { get }
    static func run(_ arguments: [String], context: CommandContext) async throws -> Int32
}

/// What every command shares: the cancellation token that SIGINT and SIGTERM set.
struct CommandContext: Sendable {
    let cancellation: CancellationToken
}

let commands: [any Command.Type] = [
    DecompressCommand.self,
    IndexCommand.self,
    FetchCommand.self,
    ImagesCommand.self,
    VerifyCommand.self,
    ResizeCommand.self,
    SharefsCommand.self,
    GrubCommand.self,
    ProvisionCommand.self,
    ServeCommand.self,
    CallCommand.self,
    APIKeyCommand.self,
]

import Foundation
import ImageCore
import ImageService

enum ServeCommand: Command {
    static let name = "serve"
    static let summary = "Serve the vm.* middleware methods over WebSocket."
    static let help = """
    Usage: imgtool serve [--socket PATH] [--listen 127.0.0.1:PORT] [--pools-root DIR] [OPTIONS]

    Serves the middleware's JSON-RPC 2.0 protocol at /api/current and the older DDP-like
    protocol at /websocket. A root peer on the Unix socket is trusted; every other client
    logs in with an API key (see 'imgtool apikey'). Stops on SIGINT or SIGTERM.

    Options:
      --socket PATH           Unix socket to listen on (default \(ServiceConfiguration.defaultSocketPath)).
      --listen HOST:PORT      also listen on TCP; HOST must be loopback (127.0.0.1 or [::1]);
                              PORT 0 picks a free port, printed in the log.
      --pools-root DIR        directory holding the pools; caller paths must lie inside
                              (default /mnt).
      --api-keys FILE         API key store (default \(ServiceConfiguration.defaultAPIKeysPath)).
      --state-dir DIR         where the active sharefs is recorded
                              (default \(SharefsConfiguration.defaultStateDirectory), or IMGTOOL_STATE_DIR).
      --catalog FILE          image catalog to use instead of the embedded one
                              (default: IMGTOOL_CATALOG, else the embedded catalog).
      --max-message-bytes N   largest WebSocket message accepted, in bytes (default 1048576).
      --max-connections N     open connections allowed for root on the Unix socket,
                              and as many for other clients (default 256 each).
      --max-calls N           calls in flight per connection (default 32).
      --send-queue-bytes N    bytes queued for one client before it is disconnected
                              (default 8388608).
      --enable-test-methods   register test.* methods used by the test suites.

    Logs go to standard error at info level unless IMGTOOL_LOG says otherwise.
    """

    static func run(_ arguments: [String], context: CommandContext) async throws -> Int32 {
        let parsed = try Arguments(arguments, options: ["--socket", "--listen", "--pools-root", "--api-keys", "--state-dir", "--catalog",
                                                        "--max-message-bytes", "--max-connections", "--max-calls",
                                                        "--send-queue-bytes"],
                                   flags: ["--enable-test-methods"])
        try parsed.requirePositionals(0...0, names: "no positional arguments")
        var configuration = ServiceConfiguration()
        if let socket = parsed.value("--socket") { configuration.socketPath = socket }
        if let root = parsed.value("--pools-root") { configuration.poolsRoot = root }
        if let keys = parsed.value("--api-keys") { configuration.apiKeysPath = keys }
        configuration.catalogPath = parsed.value("--catalog")
        configuration.stateDirectory = parsed.value("--state-dir") ?? SharefsConfiguration.fromEnvironment().stateDirectory
        if let listen = parsed.value("--listen") {
            let (host, port) = try parseListenAddress(listen)
            configuration.tcpHost = host
            configuration.tcpPort = port
        }
        // 126 bytes is the smallest limit that still allows every control frame and a
        // short call; 1 GiB keeps one message within memory a NAS can spare.
        if let value = try parsed.integer("--max-message-bytes", in: 126...(1 << 30)) { configuration.maximumMessageBytes = value }
        if let value = try parsed.integer("--max-connections", in: 1...65_536) { configuration.maximumConnections = value }
        if let value = try parsed.integer("--max-calls", in: 1...4096) { configuration.maximumCallsInFlight = value }
        if let value = try parsed.integer("--send-queue-bytes", in: 4096...(1 << 30)) { configuration.sendQueueLimit = value }
        configuration.enableTestMethods = parsed.flag("--enable-test-methods")

        if ProcessInfo.processInfo.environment["IMGTOOL_LOG"] == nil { Log.level = .info }
        let service = try Service(configuration: configuration)
        try service.start()
        while !context.cancellation.isCancelled {
            try? await Task.sleep(for: .milliseconds(100))
        }
        service.stop()
        return 0
    }

    /// Splits `127.0.0.1:8080` or `[::1]:8080` into host and port.
    static func parseListenAddress(_ text: String) throws -> (String, UInt16) {
        let invalid = UsageError(message: "invalid --listen '\(text)': expected HOST:PORT, for example 127.0.0.1:6000 or [::1]:6000")
        guard let colon = text.lastIndex(of: ":") else { throw invalid }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, let port = UInt16(text[text.index(after: colon)...]) else { throw invalid }
        return (host, port)
    }
}

import Foundation
import ImageCore
import ImageService

enum CallCommand: Command {
    static let name = "call"
    static let summary = "Call a middleware method on a running server, like midclt."
    static let help = """
    Usage: imgtool call [--socket PATH | --url URL] [--api-key KEY] [-j] METHOD [ARG ...]

    Calls METHOD on a running 'imgtool serve' and prints the result: a string or number
    as it is, anything else as JSON. A pipe or a file gets the result unchanged. On a
    terminal, control characters and text-direction marks are escaped: in a string as
    \\u{...} and a backslash as \\\\, as in 'imgtool images', and in JSON as \\uXXXX, so
    the JSON still parses. Each ARG is parsed as JSON; an ARG that is not valid JSON is
    sent as a string, so 'imgtool call vm.image_path RancherOS' works. An ARG with the
    same key twice in one object is an error, as the server would reject it.

    Options:
      --socket PATH   the server's Unix socket (default \(ServiceConfiguration.defaultSocketPath)).
      --url URL       a TCP endpoint instead, for example ws://127.0.0.1:6000/api/current.
      --api-key KEY   log in with this API key first (also read from IMGTOOL_API_KEY).
      -j              METHOD starts a job: follow it with a progress bar on standard
                      error, print its result, and exit 1 when it ends FAILED or ABORTED.
                      SIGINT (Ctrl-C) stops following and exits 130; the job keeps
                      running, and the message says how to abort it.
    """

    static func run(_ arguments: [String], context: CommandContext) async throws -> Int32 {
        // A negative number is valid JSON, so "-1" is an ARG.
        let parsed = try Arguments(arguments, options: ["--socket", "--url", "--api-key"], flags: ["-j"],
                                   negativeNumbersArePositionals: true)
        guard let method = parsed.positionals.first else { throw UsageError(message: "missing METHOD") }
        if parsed.value("--socket") != nil, parsed.value("--url") != nil {
            throw UsageError(message: "--socket and --url exclude each other; give one")
        }
        let parameters = try parsed.positionals.dropFirst().map(parseArgument)

        let client: RPCClient
        if let url = parsed.value("--url") {
            client = try RPCClient(url: url)
        } else {
            client = try RPCClient(socketPath: parsed.value("--socket") ?? ServiceConfiguration.defaultSocketPath)
        }
        if let key = parsed.value("--api-key") ?? ProcessInfo.processInfo.environment["IMGTOOL_API_KEY"] {
            guard try client.call("auth.login_with_api_key", [.string(key)]) == .bool(true) else {
                throw RPCClientError(message: "login failed: the server rejected the API key")
            }
        }

        do {
            if parsed.flag("-j") {
                return try followJob(client, method: method, parameters: Array(parameters),
                                     cancellation: context.cancellation)
            }
            printResult(try client.call(method, Array(parameters)))
            return 0
        } catch let error as RPCError {
            // Validation reasons already start with the errno name, as the middleware's do.
            let prefix = "[\(error.errname)]"
            let reason = error.reason.hasPrefix(prefix) ? error.reason : "\(prefix) \(error.reason)"
            throw CallFailedError(method: method, reason: reason)
        }
    }

    /// Parses `text` as JSON, or returns it as a string when it is not JSON. An object
    /// with the same key twice is an error: it is JSON, so sending the text as a string
    /// would hide the mistake.
    static func parseArgument(_ text: String) throws -> JSONValue {
        do {
            return try JSONValue.parse(text)
        } catch let error where error.duplicateKey != nil {
            throw UsageError(message: "invalid ARG '\(text)': \(error.description)")
        } catch {
            return .string(text)
        }
    }

    /// Calls a job method, then prints the job's progress until it ends or `cancellation`
    /// stops the following.
    private static func followJob(_ client: RPCClient, method: String, parameters: [JSONValue],
                                  cancellation: CancellationToken) throws -> Int32 {
        _ = try client.call("core.subscribe", [.string("core.get_jobs")])
        var pending: [JSONValue] = []
        let result = try client.call(method, parameters) { pending.append($0) }
        guard let jobID = result.int64Value else {
            throw RPCClientError(message: "\(method) did not start a job: it returned \(result)")
        }
        let display = JobProgressBar(enabled: isatty(STDERR_FILENO) == 1)
        defer { display.finish() }

        // The job may have ended before the call's reply arrived; read its current state
        // once, then follow events.
        var job = try client.call("core.get_jobs", [.array([.array([.string("id"), .string("="), .integer(jobID)])]),
                                                     .object(["get": .bool(true)])]) { pending.append($0) }
        // The read below blocks until the server sends an event, which a job may not do
        // for minutes, so a watcher shuts the connection down once the token is cancelled.
        let watching = CancellationToken()
        let interrupt = client.interrupter()
        let watcher = Thread {
            while !watching.isCancelled {
                if cancellation.isCancelled {
                    interrupt()
                    return
                }
                Thread.sleep(forTimeInterval: 0.05)
            }
        }
        watcher.start()
        defer { watching.cancel() }
        while !(jobFinished(job)) {
            let message: JSONValue
            do {
                message = pending.isEmpty ? try client.receive() : pending.removeFirst()
            } catch where cancellation.isCancelled {
                display.finish()
                let text = "imgtool: stopped following job \(jobID) (\(method)); it keeps running on the server. "
                    + "Abort it with: imgtool call core.job_abort \(jobID)\n"
                FileHandle.standardError.write(Data(text.utf8))
                return FailureCategory.cancelled.rawValue
            }
            guard message["method"]?.stringValue == "collection_update", let parameters = message["params"],
                  parameters["id"]?.int64Value == jobID, let fields = parameters["fields"] else { continue }
            job = fields
            display.draw(job)
        }

        display.finish()
        switch job["state"]?.stringValue {
        case "SUCCESS":
            printResult(job["result"] ?? .null)
            return 0
        default:
            let state = job["state"]?.stringValue ?? "unknown"
            // The server's error quotes the paths callers sent, which may hold control
            // characters.
            let error = escapingControlCharacters(job["error"]?.stringValue ?? "no error message")
            FileHandle.standardError.write(Data("imgtool: job \(jobID) \(method) ended \(state): \(error)\n".utf8))
            return FailureCategory.failure.rawValue
        }
    }

    private static func jobFinished(_ job: JSONValue) -> Bool {
        ["SUCCESS", "FAILED", "ABORTED"].contains(job["state"]?.stringValue ?? "")
    }

    /// Prints a method's result: a string or number as it is, anything else as JSON. On a
    /// terminal, a string is escaped as `images` does, and JSON gets `\uXXXX` escapes for
    /// the control and text-direction characters it would otherwise contain as they are.
    private static func printResult(_ result: JSONValue) {
        switch result {
        case .string(let text): print(escapingForTerminal(text))
        case .number(let text): print(text)
        default: print(escapingJSONForTerminal(result.description))
        }
    }
}

/// A one-line bar on standard error for a job's `progress`: percent and description.
final class JobProgressBar {
    private let enabled: Bool
    private var drew = false

    init(enabled: Bool) { self.enabled = enabled }

    func draw(_ job: JSONValue) {
        guard enabled, let percent = job.value(atPath: "progress.percent")?.doubleValue else { return }
        let description = escapingControlCharacters(
            job.value(atPath: "progress.description")?.stringValue ?? job["method"]?.stringValue ?? "job")
        let width = 30
        let filled = min(width, max(0, Int(percent / 100 * Double(width))))
        let bar = String(repeating: "#", count: filled) + String(repeating: " ", count: width - filled)
        let line = "\r\u{1B}[K[\(bar)] " + String(format: "%5.1f%%", percent) + "  " + description
        FileHandle.standardError.write(Data(line.utf8))
        drew = true
    }

    /// Ends the bar's line so later output starts on a new line; safe to call twice.
    func finish() {
        if drew { FileHandle.standardError.write(Data("\n".utf8)) }
        drew = false
    }
}

/// A call that the server rejected. The server's reason escapes the keys it quotes
/// (a newline as `\u{A}`, a backslash doubled), so `report` escapes the control
/// characters that remain in it and leaves its backslashes as they are.
/// NOTE: a path that the reason quotes as sent keeps its backslashes too, so a path
/// that contains the six characters `\u{A}` reads like one with a newline.
struct CallFailedError: ImageError {
    var method: String
    var reason: String

    var category: FailureCategory { .failure }
    var description: String { "\(method) failed: \(reason)" }
}

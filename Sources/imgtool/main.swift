// imgtool: the command line. Each subcommand lives in Commands/ and calls ImageCore;
// this file dispatches, installs the signal handlers and turns errors into exit codes.

import Dispatch
import Foundation
import ImageCore
import Synchronization

let exitCodeHelp = """
Exit codes:
  0    success
  1    the operation failed (I/O error, permission, no space, a server error)
  2    invalid input data (corrupt or truncated stream, checksum mismatch)
  3    network failure after every retry
  64   invalid command line or argument
  73   the target already exists and was left untouched
  130  interrupted by SIGINT (143 for SIGTERM, 129 for SIGHUP); temporary files were removed
"""

func printGeneralHelp() {
    var text = "imgtool: download, verify and inflate disk images into sparse RAW files,\n"
    text += "grow them and write their GRUB configuration.\n\n"
    text += "Usage: imgtool COMMAND [ARGUMENTS]   (imgtool COMMAND --help for details)\n\nCommands:\n"
    for command in commands {
        text += "  " + command.name.padding(toLength: 12, withPad: " ", startingAt: 0) + command.summary + "\n"
    }
    text += "\nEnvironment:\n"
    text += "  IMGTOOL_LOG          log level: debug, info, warning (default), error\n"
    text += "  IMGTOOL_POOLS_ROOT   directory of the storage pools (default /mnt)\n"
    text += "  IMGTOOL_STATE_DIR    directory of imgtool's state, such as the active sharefs\n"
    text += "                       (default /var/lib/imgtool)\n"
    text += "  IMGTOOL_BOOT_POOL    comma-separated pools the sharefs never picks by itself\n"
    text += "                       (default boot-pool,freenas-boot)\n"
    text += "\n" + exitCodeHelp + "\n"
    print(text, terminator: "")
}

/// Prints `imgtool: <error>` and the remedy to standard error.
func report(_ error: any Error) -> Int32 {
    if let error = error as? any ImageError {
        let doublingBackslashes = !(error is CallFailedError)
        var line = "imgtool: \(escapingControlCharacters("\(error)", doublingBackslashes: doublingBackslashes))\n"
        if let remedy = error.remedy { line += "imgtool: hint: \(escapingControlCharacters(remedy))\n" }
        try? FileHandle.standardError.write(contentsOf: Data(line.utf8))
        return error.category.rawValue
    }
    try? FileHandle.standardError.write(contentsOf: Data("imgtool: \(escapingControlCharacters("\(error)"))\n".utf8))
    return FailureCategory.failure.rawValue
}

/// SIGINT, SIGTERM and SIGHUP cancel the running operation, which removes its temporary
/// files and returns. A second signal, or a first one not honoured within 10 seconds,
/// removes every registered temporary file and exits at once.
final class SignalHandling: Sendable {
    /// Shared with the signal sources' handlers, which run on a global queue.
    private final class State: Sendable {
        let cancellation = CancellationToken()
        let received = Atomic<Int32>(0)

        func handle(_ signalNumber: Int32) {
            let (exchanged, _) = received.compareExchange(expected: 0, desired: signalNumber,
                                                          ordering: .acquiringAndReleasing)
            if !exchanged { exitNow(signalNumber) }
            cancellation.cancel()
            DispatchQueue.global().asyncAfter(deadline: .now() + 10) { exitNow(signalNumber) }
        }
    }

    private let state = State()
    /// Kept alive for the life of the process; written once in init.
    private nonisolated(unsafe) let sources: [any DispatchSourceSignal]

    init() {
        var sources: [any DispatchSourceSignal] = []
        for signalNumber in [SIGINT, SIGTERM, SIGHUP] {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler { [state] in state.handle(signalNumber) }
            source.resume()
            sources.append(source)
        }
        self.sources = sources
    }

    var cancellation: CancellationToken { state.cancellation }

    /// The first signal received, or 0.
    var signalNumber: Int32 { state.received.load(ordering: .acquiring) }
}

func exitNow(_ signalNumber: Int32) -> Never {
    TemporaryFileRegistry.shared.removeAll()
    exit(128 + signalNumber)
}

// CommandLine.arguments replaces bytes that are not UTF-8 with U+FFFD, so a Latin-1 file
// name would silently name another file. Reject such an argument instead.
for index in 1..<Int(CommandLine.argc) {
    guard let raw = CommandLine.unsafeArgv[index], String(validatingCString: raw) == nil else { continue }
    exit(report(InvalidArgumentError(argument: "argument", value: String(cString: raw),
                                     reason: "it is not valid UTF-8, and imgtool handles paths as UTF-8",
                                     remedy: "rename the file to a UTF-8 name, or give a symbolic link with a UTF-8 name")))
}

let arguments = Array(CommandLine.arguments.dropFirst())
if let levelName = ProcessInfo.processInfo.environment["IMGTOOL_LOG"], let level = LogLevel(name: levelName) {
    Log.level = level
}

guard let commandName = arguments.first, !["help", "--help", "-h"].contains(commandName) else {
    if arguments.count > 1, let command = commands.first(where: { $0.name == arguments[1] }) {
        print(command.help)
    } else {
        printGeneralHelp()
    }
    exit(arguments.isEmpty ? 64 : 0)
}
if commandName == "--version" {
    print("imgtool \(ImageCoreVersion.current)")
    exit(0)
}
guard let command = commands.first(where: { $0.name == commandName }) else {
    exit(report(UsageError(message: "unknown command '\(commandName)'")))
}
let commandArguments = Array(arguments.dropFirst())
// Help is asked for only before `--`; after it, "--help" may be a file name.
let optionArguments = commandArguments.prefix { $0 != "--" }
if optionArguments.contains("--help") || optionArguments.contains("-h") {
    print(command.help)
    exit(0)
}

// Without this, a reader that goes away (`--progress json | head -1`) kills the process
// with SIGPIPE and leaves its temporary file. Writes then fail with EPIPE instead.
signal(SIGPIPE, SIG_IGN)
let signals = SignalHandling()
let context = CommandContext(cancellation: signals.cancellation)
do {
    let status = try await command.run(commandArguments, context: context)
    exit(status)
} catch {
    var status = report(error)
    if status == FailureCategory.cancelled.rawValue, signals.signalNumber != 0 {
        status = 128 + signals.signalNumber
    }
    TemporaryFileRegistry.shared.removeAll()
    exit(status)
}

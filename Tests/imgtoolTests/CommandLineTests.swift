// Tests of the built `imgtool` binary: help text and exit codes.

import Foundation
import Testing

/// The `imgtool` binary built next to this test bundle.
func imgtoolBinary() -> String {
    let bundle = Bundle.main.bundleURL.deletingLastPathComponent()
    let candidates = [bundle.appendingPathComponent("imgtool").path,
                      URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("imgtool").path]
    return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates[0]
}

func runImgtool(_ arguments: [String], in directory: URL? = nil) throws -> (status: Int32, output: String, error: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: imgtoolBinary())
    process.arguments = arguments
    if let directory { process.currentDirectoryURL = directory }
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    let errData = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errData, as: UTF8.self))
}

/// Runs `imgtool` with standard input, output and error on a pseudo-terminal, through
/// Python's `pty` module, and returns its exit status and everything it wrote. The
/// terminal turns each "\n" into "\r\n".
func runImgtoolOnTerminal(_ arguments: [String]) throws -> (status: Int32, output: String) {
    let script = #"""
    import os, pty, sys
    pid, master = pty.fork()
    if pid == 0:
        os.execv(sys.argv[1], sys.argv[1:])
    output = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    sys.stdout.buffer.write(output)
    sys.exit(os.waitstatus_to_exitcode(status))
    """#
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["python3", "-c", script, imgtoolBinary()] + arguments
    let out = Pipe()
    process.standardOutput = out
    try process.run()
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: outData, as: UTF8.self))
}

@Suite struct CommandLineTests {
    @Test func helpListsExitCodes() throws {
        let result = try runImgtool(["help"])
        #expect(result.status == 0)
        #expect(result.output.contains("73   the target already exists"))
    }

    @Test func helpLinesFitWideTerminal() throws {
        // Help is wrapped by hand; a line over 96 columns wraps mid-word in a terminal
        // of 100 columns. The usage lines are the longest, at 93.
        let general = try runImgtool(["--help"])
        #expect(general.status == 0)
        let commandsSection = general.output.components(separatedBy: "Commands:\n").last ?? ""
        let commands = commandsSection.split(separator: "\n").prefix { $0.hasPrefix("  ") }
            .compactMap { $0.split(separator: " ").first.map(String.init) }
        #expect(commands.contains("fetch"))
        var helps = [("imgtool --help", general.output)]
        for command in commands {
            helps.append(("imgtool \(command) --help", try runImgtool([command, "--help"]).output))
        }
        for (name, text) in helps {
            for line in text.split(separator: "\n") {
                #expect(line.count <= 96, "\(name): \(line.count) columns: \(line)")
            }
        }
    }

    @Test func helpAfterDoubleDashIsFileName() throws {
        // After `--`, "--help" is a file name: resize reports that it does not exist
        // instead of printing its usage.
        let result = try runImgtool(["resize", "--", "--help", "1M"])
        #expect(result.status == 1)
        #expect(result.error.contains("'--help'"))
        #expect(!result.output.contains("Usage:"))
    }

    @Test func unknownCommandExits64() throws {
        let result = try runImgtool(["frobnicate"])
        #expect(result.status == 64)
        #expect(result.error.contains("unknown command 'frobnicate'"))
    }
}

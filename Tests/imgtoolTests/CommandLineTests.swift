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

@Suite struct CommandLineTests {
    @Test func helpListsExitCodes() throws {
        let result = try runImgtool(["help"])
        #expect(result.status == 0)
        #expect(result.output.contains("73   the target already exists"))
    }

    @Test func unknownCommandExits64() throws {
        let result = try runImgtool(["frobnicate"])
        #expect(result.status == 64)
        #expect(result.error.contains("unknown command 'frobnicate'"))
    }
}

// Helpers shared by ImageCore's tests: scratch directories, running real tools,
// hashing and allocation checks.

import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A fresh directory under the system's temporary directory, removed by `remove()`.
struct ScratchDirectory {
    let path: String

    init(_ label: String = #function) throws {
        let safe = label.filter { $0.isLetter || $0.isNumber }
        var template = Array("\(NSTemporaryDirectory())/imgtool-test-\(safe.prefix(40))-XXXXXX".utf8CString)
        let created = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        guard created != nil else { throw POSIXError(.EIO) }
        path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    func file(_ name: String) -> String { "\(path)/\(name)" }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// The result of a finished process.
struct ProcessResult {
    var status: Int32
    var standardOutput: Data
    var standardError: String
    var outputText: String { String(decoding: standardOutput, as: UTF8.self) }
}

/// Runs `executable` (a path, or a name looked up in PATH) to completion.
/// Output is collected through files, so large outputs cannot deadlock a pipe.
@discardableResult
func runProcess(_ executable: String, _ arguments: [String], input: Data? = nil,
                environment: [String: String]? = nil) throws -> ProcessResult {
    let process = Process()
    if executable.contains("/") {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
    } else {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [executable] + arguments
    }
    if let environment { process.environment = environment }
    let scratch = try ScratchDirectory("process")
    defer { scratch.remove() }
    _ = FileManager.default.createFile(atPath: scratch.file("out"), contents: nil)
    _ = FileManager.default.createFile(atPath: scratch.file("err"), contents: nil)
    let out = try FileHandle(forWritingTo: URL(fileURLWithPath: scratch.file("out")))
    let err = try FileHandle(forWritingTo: URL(fileURLWithPath: scratch.file("err")))
    process.standardOutput = out
    process.standardError = err
    if let input {
        _ = FileManager.default.createFile(atPath: scratch.file("in"), contents: input)
        process.standardInput = try FileHandle(forReadingFrom: URL(fileURLWithPath: scratch.file("in")))
    } else {
        process.standardInput = FileHandle.nullDevice
    }
    try process.run()
    process.waitUntilExit()
    try out.close()
    try err.close()
    return ProcessResult(status: process.terminationStatus,
                         standardOutput: try Data(contentsOf: URL(fileURLWithPath: scratch.file("out"))),
                         standardError: String(decoding: try Data(contentsOf: URL(fileURLWithPath: scratch.file("err"))), as: UTF8.self))
}

/// Runs a shell command line (`/bin/sh -c`) and returns its result.
@discardableResult
func shell(_ command: String) throws -> ProcessResult {
    try runProcess("/bin/sh", ["-c", command])
}

/// The SHA-256 of a file as lower-case hex, computed by the real `sha256sum`.
func sha256sum(_ path: String) throws -> String {
    let result = try runProcess("sha256sum", [path])
    return String(result.outputText.prefix(64))
}

/// Bytes allocated on disk for `path` (`st_blocks * 512`).
func allocatedBytes(_ path: String) -> Int64 {
    var info = stat()
    guard stat(path, &info) == 0 else { return -1 }
    return Int64(info.st_blocks) * 512
}

/// The size of `path` in bytes, or -1 when it does not exist.
func fileSize(_ path: String) -> Int64 {
    var info = stat()
    guard stat(path, &info) == 0 else { return -1 }
    return Int64(info.st_size)
}

/// True when something (a file, a link, anything) exists at `path`.
func pathExists(_ path: String) -> Bool {
    var info = stat()
    return lstat(path, &info) == 0
}

/// True when `tool` is on PATH.
func toolAvailable(_ tool: String) -> Bool {
    (try? runProcess("/bin/sh", ["-c", "command -v \(tool)"]))?.status == 0
}

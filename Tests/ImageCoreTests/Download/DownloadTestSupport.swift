// Servers for the download tests: a real nginx and the project's fault-injection server
// (Tests/fixtures/fault_server.py), both on 127.0.0.1, started and stopped by each test.

import Foundation
#if canImport(Glibc)
import Glibc
#endif
@testable import ImageCore

/// The repository's root, found from this file's path.
let repositoryRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<4 { url.deleteLastPathComponent() }
    return url.path
}()

struct ServerStartError: Error, CustomStringConvertible {
    var description: String
}

/// A child process that is stopped by its pid.
final class ChildServer {
    let process: Process

    /// The signal that ends the server. Python keeps SIGTERM ignored when the test runner
    /// passes it down ignored, so the fault server gets SIGKILL; nginx installs its own
    /// handlers, and SIGTERM lets its master stop the worker too.
    let stopSignal: Int32

    init(process: Process, stopSignal: Int32) {
        self.process = process
        self.stopSignal = stopSignal
    }

    /// Sends `stopSignal` to the child's pid, waits up to 5 s, then sends SIGKILL.
    func stop() {
        guard process.isRunning else { return }
        kill(process.processIdentifier, stopSignal)
        let deadline = Date().addingTimeInterval(5)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    deinit { stop() }
}

/// The fault-injection server serving `root`; each request is logged to `logPath`.
final class FaultServer {
    let port: Int
    let logPath: String
    private let child: ChildServer

    init(root: String, logPath: String, tlsCertificate: (cert: String, key: String)? = nil) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        var arguments = ["python3", "\(repositoryRoot)/Tests/fixtures/fault_server.py", "--root", root, "--log", logPath]
        if let tlsCertificate { arguments += ["--tls-cert", tlsCertificate.cert, "--tls-key", tlsCertificate.key] }
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.standardError
        try process.run()
        child = ChildServer(process: process, stopSignal: SIGKILL)
        self.logPath = logPath
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)

        var line = Data()
        while !line.contains(UInt8(ascii: "\n")) {
            let byte = output.fileHandleForReading.readData(ofLength: 1)
            if byte.isEmpty { throw ServerStartError(description: "fault_server.py exited before it printed its port") }
            line.append(byte)
        }
        let text = String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard text.hasPrefix("PORT "), let port = Int(text.dropFirst(5)) else {
            throw ServerStartError(description: "fault_server.py printed '\(text)' instead of its port")
        }
        self.port = port
    }

    func url(_ path: String, scheme: String = "http") -> String { "\(scheme)://127.0.0.1:\(port)/\(path)" }

    /// One logged request.
    struct Request: Decodable {
        var url: String
        var range: String?
        var if_range: String?
        var accept_encoding: String?
        var status: Int
        var sent: Int64
    }

    /// The requests served so far, in order. The server logs a file response after its
    /// last byte, which the client may have read a moment earlier, so this waits until the
    /// log has not changed for 150 ms.
    func requests() throws -> [Request] {
        var text = try String(contentsOfFile: logPath, encoding: .utf8)
        while true {
            usleep(150_000)
            let again = try String(contentsOfFile: logPath, encoding: .utf8)
            if again == text { break }
            text = again
        }
        return try text.split(separator: "\n").map { try JSONDecoder().decode(Request.self, from: Data($0.utf8)) }
    }

    func stop() { child.stop() }
}

/// A real nginx serving `root` on a free loopback port, with an access log that records
/// the status, body bytes sent and the Range header of each request.
final class NginxServer {
    let port: Int
    let accessLogPath: String
    private let child: ChildServer

    init(root: String, directory: String, limitRate: String? = nil) throws {
        port = try freePort()
        accessLogPath = "\(directory)/access.log"
        let rate = limitRate.map { "limit_rate \($0);" } ?? ""
        // Worker processes run as 'nobody' when the master is root, and could not read a
        // mode-0700 scratch directory; 'user root' keeps them as root in that case.
        let user = geteuid() == 0 ? "user root;" : ""
        let configuration = """
        \(user)
        worker_processes 1;
        error_log \(directory)/error.log;
        pid \(directory)/nginx.pid;
        events { worker_connections 64; }
        http {
            log_format ranges '$status $body_bytes_sent "$http_range" "$http_if_range" "$request_uri"';
            access_log \(accessLogPath) ranges;
            client_body_temp_path \(directory)/tmp;
            proxy_temp_path \(directory)/tmp;
            fastcgi_temp_path \(directory)/tmp;
            uwsgi_temp_path \(directory)/tmp;
            scgi_temp_path \(directory)/tmp;
            server {
                listen 127.0.0.1:\(port);
                root \(root);
                \(rate)
            }
        }
        """
        try FileManager.default.createDirectory(atPath: "\(directory)/tmp", withIntermediateDirectories: true)
        try configuration.write(toFile: "\(directory)/nginx.conf", atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["nginx", "-p", directory, "-c", "\(directory)/nginx.conf", "-g", "daemon off;"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        child = ChildServer(process: process, stopSignal: SIGTERM)
        try waitUntilListening(port: port, process: process, name: "nginx")
    }

    func url(_ path: String) -> String { "http://127.0.0.1:\(port)/\(path)" }

    /// One access-log line.
    struct Request {
        var status: Int
        var bytesSent: Int64
        /// The Range header, or nil when none was sent.
        var range: String?
    }

    func requests() throws -> [Request] {
        guard let text = try? String(contentsOfFile: accessLogPath, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").map { line in
            let fields = line.split(separator: " ", maxSplits: 2)
            let quoted = line.split(separator: "\"")
            let range = quoted.count > 1 && quoted[1] != "-" ? String(quoted[1]) : nil
            return Request(status: Int(fields[0]) ?? 0, bytesSent: Int64(fields[1]) ?? -1, range: range)
        }
    }

    func stop() { child.stop() }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read, close).
func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw ServerStartError(description: "socket() failed") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
    }
    guard bound == 0 else { throw ServerStartError(description: "bind() failed") }
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// Waits up to 10 s until something accepts connections on 127.0.0.1:`port`.
func waitUntilListening(port: Int, process: Process, name: String) throws {
    let deadline = Date().addingTimeInterval(10)
    while Date() < deadline {
        guard process.isRunning else { throw ServerStartError(description: "\(name) exited at start") }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        close(fd)
        if connected == 0 { return }
        usleep(20_000)
    }
    throw ServerStartError(description: "\(name) did not listen on port \(port) within 10 s")
}

/// Writes `count` pseudo-random bytes (a fixed generator, so failures reproduce) to `path`
/// and returns them.
@discardableResult
func writeRandomFile(_ path: String, count: Int, seed: UInt64 = 0x9E37_79B9_7F4A_7C15) throws -> Data {
    var state = seed
    var bytes = [UInt8](repeating: 0, count: count)
    for index in 0..<count {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        bytes[index] = UInt8(truncatingIfNeeded: state >> 33)
    }
    let data = Data(bytes)
    try data.write(to: URL(fileURLWithPath: path))
    return data
}

/// Collects download events from any thread.
final class EventRecorder: @unchecked Sendable {
    private let lock = NSLock()
    private var recorded: [DownloadEvent] = []

    var observer: DownloadObserver { { [self] event in lock.withLock { recorded.append(event) } } }
    var events: [DownloadEvent] { lock.withLock { recorded } }

    var restarts: [String] {
        events.compactMap { if case .restarted(_, let reason) = $0 { return reason } else { return nil } }
    }
}

/// Download options for tests: quick retries and a short stall timeout.
func testOptions(retries: Int = 5, stall: Duration = .seconds(2)) -> DownloadOptions {
    DownloadOptions(stallTimeout: stall, retries: retries, retryDelay: .milliseconds(20),
                    maximumRetryDelay: .milliseconds(100), connectTimeout: .seconds(5))
}

/// The path of the built `imgtool` executable, beside the test bundle.
func imgtoolExecutable() -> String {
    let bundle = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    let candidates = [bundle.appendingPathComponent("imgtool").path,
                      "\(repositoryRoot)/.build/debug/imgtool"]
    return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates[0]
}

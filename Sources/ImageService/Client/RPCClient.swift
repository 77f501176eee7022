// RPCClient: a small blocking JSON-RPC 2.0 client over WebSocket, for `imgtool call`.
// It masks its frames as a client must, replies to pings with pongs, and hands notifications that
// arrive while it waits for a reply to a callback. Not thread-safe: one thread uses it.

import Foundation
import ImageCore

public struct RPCClientError: ImageError {
    public var message: String
    public init(message: String) { self.message = message }
    public var category: FailureCategory { .failure }
    public var description: String { message }
}

public final class RPCClient {
    private let socket: Socket
    private var reader: SocketReader
    private var nextID: Int64 = 1
    private let frames = FrameReader(expectMasked: false, maximumPayload: 1 << 30)

    /// Connects to the Unix socket at `socketPath`, path /api/current.
    public convenience init(socketPath: String) throws {
        try self.init(socket: Socket.connectUnix(path: socketPath), host: "localhost", path: "/api/current")
    }

    /// Connects to `ws://HOST:PORT/api/current` (numeric addresses only). A URL without
    /// a path means /api/current.
    public convenience init(url: String) throws {
        guard let components = URLComponents(string: url), components.scheme == "ws",
              let host = components.host, let port = components.port, (1...65_535).contains(port) else {
            throw InvalidArgumentError(argument: "--url", value: url, reason: "expected ws://HOST:PORT/api/current",
                                       remedy: "for example ws://127.0.0.1:6000/api/current")
        }
        // The client speaks only JSON-RPC 2.0. The DDP endpoint /websocket replies to its
        // request with a message that has no id, so the reply it waits for never comes.
        guard components.path.isEmpty || components.path == "/api/current" else {
            throw InvalidArgumentError(argument: "--url", value: url,
                                       reason: "the path '\(components.path)' is not /api/current, the only endpoint 'imgtool call' speaks",
                                       remedy: "use ws://\(host):\(port)/api/current")
        }
        // The client sends neither a query nor credentials, so it rejects them rather than
        // drop them without a word.
        let extra = [components.query.map { "a query ('?\($0)')" }, components.fragment.map { "a fragment ('#\($0)')" },
                     components.user.map { _ in "a user name" }].compactMap { $0 }
        guard extra.isEmpty else {
            throw InvalidArgumentError(argument: "--url", value: url,
                                       reason: "it has \(extra.joined(separator: " and ")), which 'imgtool call' does not send",
                                       remedy: "use ws://\(host):\(port)/api/current, and --api-key for a key")
        }
        let path = "/api/current"
        let bareHost = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
        try self.init(socket: Socket.connectTCP(host: bareHost, port: UInt16(port)), host: host, path: path)
    }

    private init(socket: Socket, host: String, path: String) throws {
        self.socket = socket
        self.reader = SocketReader(socket: socket)
        let (request, key) = Handshake.clientRequest(path: path, host: host)
        try socket.sendAll(Array(request.utf8))
        let head = try reader.readHTTPHead(limit: Handshake.maximumHeadBytes)
        let lines = head.components(separatedBy: "\r\n")
        guard let status = lines.first, status.hasPrefix("HTTP/1.1 101") else {
            throw RPCClientError(message: "the server rejected the WebSocket upgrade: \(lines.first ?? "no status line")")
        }
        let expected = Handshake.acceptValue(forKey: key)
        guard lines.contains(where: { $0.lowercased().hasPrefix("sec-websocket-accept:") && $0.hasSuffix(expected) }) else {
            throw RPCClientError(message: "the server's Sec-WebSocket-Accept does not match the request's key")
        }
    }

    deinit {
        try? socket.sendAll(Frame.close(code: CloseCode.normal).encoded(mask: RPCClient.randomMask()))
        socket.close()
    }

    private static func randomMask() -> (UInt8, UInt8, UInt8, UInt8) {
        (UInt8.random(in: 0...255), UInt8.random(in: 0...255), UInt8.random(in: 0...255), UInt8.random(in: 0...255))
    }

    /// Returns a function that shuts the connection down from any thread, so that a
    /// `receive` blocked on another thread throws. The client is unusable afterwards.
    public func interrupter() -> @Sendable () -> Void {
        { [socket] in socket.shutdown() }
    }

    /// Sends one message.
    public func send(_ message: JSONValue) throws {
        try socket.sendAll(Frame(opcode: .text, payload: message.encoded).encoded(mask: RPCClient.randomMask()))
    }

    /// Reads the next message and replies to any ping that comes first.
    public func receive() throws -> JSONValue {
        var buffer: [UInt8] = []
        while true {
            let frame: Frame
            do {
                frame = try frames.next(from: &reader)
            } catch is EndOfStream {
                throw RPCClientError(message: "the server closed the connection")
            }
            switch frame.opcode {
            case .ping:
                try socket.sendAll(Frame(opcode: .pong, payload: frame.payload).encoded(mask: RPCClient.randomMask()))
            case .pong:
                continue
            case .close:
                let code = frame.payload.count >= 2 ? Int(frame.payload[0]) << 8 | Int(frame.payload[1]) : 1005
                let reason = String(decoding: frame.payload.dropFirst(2), as: UTF8.self)
                throw RPCClientError(message: "the server closed the connection with code \(code)\(reason.isEmpty ? "" : ": \(reason)")")
            case .text, .binary, .continuation:
                buffer.append(contentsOf: frame.payload)
                if frame.fin { return try JSONValue.parse(buffer) }
            }
        }
    }

    /// Calls `method` and returns its result; notifications that arrive meanwhile go to
    /// `onNotification`. A call error is thrown as `RPCError`.
    public func call(_ method: String, _ parameters: [JSONValue] = [],
                     onNotification: (JSONValue) -> Void = { _ in }) throws -> JSONValue {
        let id = nextID
        nextID += 1
        try send(.object(["jsonrpc": .string("2.0"), "id": .integer(id), "method": .string(method),
                          "params": .array(parameters)]))
        while true {
            let message = try receive()
            guard message["id"]?.int64Value == id else {
                onNotification(message)
                continue
            }
            if let error = message["error"] {
                throw RPCClient.decodeError(error)
            }
            return message["result"] ?? .null
        }
    }

    static func decodeError(_ error: JSONValue) -> RPCError {
        let data = error["data"]
        let reason = data?["reason"]?.stringValue ?? error["message"]?.stringValue ?? "unknown error"
        return RPCError(code: Int(error["code"]?.int64Value ?? -32001), message: error["message"]?.stringValue ?? "",
                        errno: Int32(truncatingIfNeeded: data?["error"]?.int64Value ?? 0),
                        errname: data?["errname"]?.stringValue ?? "ERROR", reason: reason,
                        extra: data?["extra"] ?? .null)
    }
}

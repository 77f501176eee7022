// The HTTP/1.1 Upgrade that opens a WebSocket (RFC 6455, section 4).
//
// The server reads the request head (at most `maximumHeadBytes`), checks the upgrade
// headers, and answers 101 with Sec-WebSocket-Accept = base64(SHA-1(key + GUID)).
// Any Host is accepted: clients on the Unix socket send a placeholder host.

import CCrypto
import Foundation

/// The GUID that RFC 6455 appends to the client's key before hashing.
let webSocketGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/// A parsed HTTP request head.
public struct HTTPRequestHead: Sendable {
    public var method: String
    public var target: String
    public var version: String
    /// Header names in lower case; repeated headers are joined with ", ".
    public var headers: [String: String]

    /// Parses the text before the blank line. Returns nil for anything malformed.
    public static func parse(_ text: String) -> HTTPRequestHead? {
        var lines = text.components(separatedBy: "\r\n")
        guard !lines.isEmpty else { return nil }
        let requestLine = lines.removeFirst().split(separator: " ", omittingEmptySubsequences: false)
        guard requestLine.count == 3, requestLine[2].hasPrefix("HTTP/1.") else { return nil }
        var headers: [String: String] = [:]
        for line in lines where !line.isEmpty {
            guard let colon = line.firstIndex(of: ":") else { return nil }
            let name = line[..<colon].trimmingCharacters(in: .whitespaces).lowercased()
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            guard !name.isEmpty else { return nil }
            if let existing = headers[name] {
                headers[name] = existing + ", " + value
            } else {
                headers[name] = value
            }
        }
        return HTTPRequestHead(method: String(requestLine[0]), target: String(requestLine[1]),
                               version: String(requestLine[2]), headers: headers)
    }

    /// Whether a comma-separated header contains `token`, compared without case.
    public func header(_ name: String, containsToken token: String) -> Bool {
        guard let value = headers[name] else { return false }
        return value.split(separator: ",").contains { $0.trimmingCharacters(in: .whitespaces).lowercased() == token }
    }

    /// The target's path without a query string.
    public var path: String {
        String(target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? "")
    }
}

/// Why a handshake failed: the HTTP status to answer with and a one-line reason.
public struct HandshakeError: Error, CustomStringConvertible, Sendable {
    public var status: Int
    public var reason: String
    public var description: String { "HTTP \(status): \(reason)" }
}

public enum Handshake {
    /// The largest request head the server reads before it answers 431.
    public static let maximumHeadBytes = 16 * 1024
    /// The time a client has to send its whole request head.
    public static let headTimeLimit: Duration = .seconds(10)

    /// Computes Sec-WebSocket-Accept for a client's Sec-WebSocket-Key.
    public static func acceptValue(forKey key: String) -> String {
        let input = Array((key + webSocketGUID).utf8)
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var size: UInt32 = 0
        let succeeded = input.withUnsafeBytes { bytes in
            EVP_Digest(bytes.baseAddress, bytes.count, &digest, &size, EVP_sha1(), nil)
        }
        precondition(succeeded == 1, "Bug in imgtool: libcrypto's SHA-1 failed on an in-memory buffer")
        return Data(digest.prefix(Int(size))).base64EncodedString()
    }

    /// Checks an upgrade request; returns the key to answer.
    public static func validate(_ request: HTTPRequestHead) throws(HandshakeError) -> String {
        guard request.method == "GET" else { throw HandshakeError(status: 405, reason: "method \(request.method) is not GET") }
        guard request.headers["upgrade"]?.lowercased() == "websocket" else {
            throw HandshakeError(status: 426, reason: "missing 'Upgrade: websocket'")
        }
        guard request.header("connection", containsToken: "upgrade") else {
            throw HandshakeError(status: 400, reason: "missing 'Connection: Upgrade'")
        }
        guard request.headers["sec-websocket-version"] == "13" else {
            throw HandshakeError(status: 426, reason: "unsupported Sec-WebSocket-Version; only 13 is supported")
        }
        guard let key = request.headers["sec-websocket-key"], let decoded = Data(base64Encoded: key), decoded.count == 16 else {
            throw HandshakeError(status: 400, reason: "missing or invalid Sec-WebSocket-Key")
        }
        return key
    }

    /// The 101 response for `key`.
    public static func switchingProtocols(key: String) -> String {
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Accept: \(acceptValue(forKey: key))\r\n\r\n"
    }

    /// A short plain-text error response that closes the connection.
    public static func errorResponse(status: Int, reason: String) -> String {
        let phrases = [400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 426: "Upgrade Required",
                       431: "Request Header Fields Too Large", 503: "Service Unavailable"]
        let body = reason + "\n"
        var response = "HTTP/1.1 \(status) \(phrases[status] ?? "Error")\r\nContent-Type: text/plain; charset=utf-8\r\n"
        if status == 426 { response += "Sec-WebSocket-Version: 13\r\n" }
        response += "Content-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body
        return response
    }

    /// The client's request for `path`, with a random key; returns the request and the key.
    public static func clientRequest(path: String, host: String) -> (request: String, key: String) {
        let nonce = (0..<16).map { _ in UInt8.random(in: 0...255) }
        let key = Data(nonce).base64EncodedString()
        let request = "GET \(path) HTTP/1.1\r\nHost: \(host)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\n\r\n"
        return (request, key)
    }
}

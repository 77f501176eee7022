// Stream sockets for the service: listening on a Unix path or a loopback TCP port,
// accepting, reading through a buffer, and sending without SIGPIPE.
//
// Every call retries EINTR. A `Socket` closes its descriptor exactly once, in `close()`;
// `shutdown` may be called from another thread to wake a blocked read or send, which is
// how a connection is aborted.

#if canImport(Glibc)
import Glibc
#endif
import CSystem
import Foundation
import ImageCore
import Synchronization

/// A socket failure, naming the operation and the address.
public struct SocketError: ImageError {
    public var operation: String
    public var address: String
    public var errno: Errno
    public var category: FailureCategory { .failure }
    public var description: String { "\(operation) \(address) failed: \(errno)" }
    public var remedy: String? {
        switch errno.rawValue {
        case EADDRINUSE: return "stop the process that uses that address, or choose another one"
        case ENOENT, ECONNREFUSED: return "check that 'imgtool serve' is running and listens there"
        case EACCES, EPERM: return "check the permissions of the socket and its directory"
        default: return nil
        }
    }
}

/// The credentials of the process at the other end of a Unix socket (SO_PEERCRED).
public struct PeerCredentials: Sendable, Equatable {
    public var pid: Int32
    public var uid: UInt32
    public var gid: UInt32
}

public final class Socket: Sendable {
    public let descriptor: Int32
    private let closed = Atomic<Bool>(false)

    public init(descriptor: Int32) { self.descriptor = descriptor }

    deinit { close() }

    /// Closes the descriptor once; later calls do nothing.
    public func close() {
        let (exchanged, _) = closed.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing)
        if exchanged { _ = Glibc.close(descriptor) }
    }

    /// Shuts down both directions (`shutdown(2)`), which wakes a read or send blocked in
    /// another thread. The descriptor stays open until `close`.
    public func shutdown() {
        if !closed.load(ordering: .acquiring) { _ = Glibc.shutdown(descriptor, Int32(SHUT_RDWR)) }
    }

    /// Shuts down the sending direction only, after a close frame went out.
    public func shutdownWrite() {
        if !closed.load(ordering: .acquiring) { _ = Glibc.shutdown(descriptor, Int32(SHUT_WR)) }
    }

    /// Reads up to `count` bytes; returns an empty array at end of stream.
    public func receive(upTo count: Int) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: count)
        let received = try buffer.withUnsafeMutableBytes { bytes in
            try retrying { recv(descriptor, bytes.baseAddress, bytes.count, 0) }
        }
        buffer.removeLast(count - received)
        return buffer
    }

    /// Sends all of `bytes` (`send(2)` with MSG_NOSIGNAL, so a closed peer gives EPIPE
    /// instead of killing the process).
    public func sendAll(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let sent = try bytes.withUnsafeBytes { buffer in
                let rest = UnsafeRawBufferPointer(rebasing: buffer[offset...])
                return try retrying { send(descriptor, rest.baseAddress, rest.count, Int32(MSG_NOSIGNAL)) }
            }
            offset += sent
        }
    }

    /// Sets SO_SNDTIMEO: a send that cannot make progress for `seconds` fails with EAGAIN.
    public func setSendTimeout(seconds: Int) {
        var value = timeval(tv_sec: seconds, tv_usec: 0)
        _ = setsockopt(descriptor, SOL_SOCKET, SO_SNDTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Sets SO_RCVTIMEO: a receive that gets no byte for `duration` fails with EAGAIN.
    public func setReceiveTimeout(_ duration: Duration) {
        let microseconds = max(duration.components.attoseconds / 1_000_000_000_000, 1)
        var value = timeval(tv_sec: Int(duration.components.seconds), tv_usec: Int(microseconds))
        _ = setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Reads the peer's credentials (SO_PEERCRED); returns nil on sockets other than Unix ones.
    public func peerCredentials() -> PeerCredentials? {
        var credentials = imgtool_peer_credentials()
        guard imgtool_peer_credentials(descriptor, &credentials) == 0 else { return nil }
        return PeerCredentials(pid: credentials.pid, uid: credentials.uid, gid: credentials.gid)
    }

    /// Accepts one connection; returns the socket and the peer's address as text.
    public func accept() throws -> (Socket, String) {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let fd = try withUnsafeMutablePointer(to: &storage) { pointer in
            try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                try retrying { Glibc.accept(descriptor, address, &length) }
            }
        }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        return (Socket(descriptor: fd), Socket.describe(storage))
    }

    // MARK: Creating sockets

    /// Listens on a Unix socket at `path` with mode `mode`. A stale socket file (one that
    /// no process accepts on) is removed first; a live one is an error.
    public static func listenUnix(path: String, mode: mode_t = 0o666, backlog: Int32 = 128) throws -> Socket {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(path.utf8)
        guard pathBytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw InvalidArgumentError(argument: "--socket", value: path, reason: "the path is longer than 107 bytes",
                                       remedy: "choose a shorter socket path")
        }
        if let status = try? linkStatus(path) {
            guard (status.mode & S_IFMT) == S_IFSOCK else {
                throw InvalidArgumentError(argument: "--socket", value: path, reason: "a \(status.kindDescription) exists there",
                                           remedy: "remove it or choose another socket path")
            }
            if (try? connectUnix(path: path)) != nil {
                throw SocketError(operation: "listen on", address: path, errno: Errno(rawValue: EADDRINUSE))
            }
            unlink(path)
        }

        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SocketError(operation: "create socket for", address: path, errno: .current) }
        let socket = Socket(descriptor: fd)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in pathBytes.enumerated() { buffer[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard bound == 0 else { throw SocketError(operation: "bind", address: path, errno: .current) }
        // Any local user may connect: only root peers are trusted without an API key.
        chmod(path, mode)
        guard listen(fd, backlog) == 0 else { throw SocketError(operation: "listen on", address: path, errno: .current) }
        return socket
    }

    /// Returns `host:port` for messages, with an IPv6 address in brackets as in a URL
    /// (`[::1]:6000`), so that the port stays apart from the address.
    public static func endpointLabel(host: String, port: UInt16) -> String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    /// Listens on `host:port` over TCP. `host` must be a loopback address (127.0.0.0/8 or
    /// ::1): the service has no TLS, so it never listens on an external interface.
    public static func listenTCP(host: String, port: UInt16, backlog: Int32 = 128) throws -> Socket {
        let fd: Int32
        if host.contains(":") {
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_port = port.bigEndian
            guard inet_pton(AF_INET6, host, &address.sin6_addr) == 1, host == "::1" else {
                throw loopbackError(host)
            }
            fd = try bindTCP(family: AF_INET6, address: &address, label: "[\(host)]:\(port)")
        } else {
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = port.bigEndian
            guard inet_pton(AF_INET, host, &address.sin_addr) == 1, UInt32(bigEndian: address.sin_addr.s_addr) >> 24 == 127 else {
                throw loopbackError(host)
            }
            fd = try bindTCP(family: AF_INET, address: &address, label: "\(host):\(port)")
        }
        guard listen(fd, backlog) == 0 else {
            let error = Errno.current
            _ = Glibc.close(fd)
            throw SocketError(operation: "listen on", address: "\(host):\(port)", errno: error)
        }
        return Socket(descriptor: fd)
    }

    /// The port a TCP socket is bound to (useful after binding port 0).
    public var localPort: UInt16? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let result = withUnsafeMutablePointer(to: &storage) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        guard result == 0 else { return nil }
        switch Int32(storage.ss_family) {
        case AF_INET: return withUnsafeBytes(of: storage) { UInt16(bigEndian: $0.load(as: sockaddr_in.self).sin_port) }
        case AF_INET6: return withUnsafeBytes(of: storage) { UInt16(bigEndian: $0.load(as: sockaddr_in6.self).sin6_port) }
        default: return nil
        }
    }

    /// Connects to a Unix socket.
    public static func connectUnix(path: String) throws -> Socket {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(path.utf8)
        guard pathBytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw InvalidArgumentError(argument: "socket path", value: path, reason: "the path is longer than 107 bytes")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in pathBytes.enumerated() { buffer[index] = byte }
        }
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SocketError(operation: "create socket for", address: path, errno: .current) }
        let socket = Socket(descriptor: fd)
        let connected = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard connected == 0 else { throw SocketError(operation: "connect to", address: path, errno: .current) }
        return socket
    }

    /// Connects to `host:port` over TCP (numeric IPv4 or IPv6 addresses only).
    public static func connectTCP(host: String, port: UInt16) throws -> Socket {
        let label = endpointLabel(host: host, port: port)
        if host.contains(":") {
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_port = port.bigEndian
            guard inet_pton(AF_INET6, host, &address.sin6_addr) == 1 else {
                throw InvalidArgumentError(argument: "host", value: host, reason: "not a numeric IP address")
            }
            return try connectTCP(family: AF_INET6, address: &address, label: label)
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else {
            throw InvalidArgumentError(argument: "host", value: host, reason: "not a numeric IP address",
                                       remedy: "use 127.0.0.1 or ::1")
        }
        return try connectTCP(family: AF_INET, address: &address, label: label)
    }

    private static func connectTCP<Address>(family: Int32, address: inout Address, label: String) throws -> Socket {
        let fd = Glibc.socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SocketError(operation: "create socket for", address: label, errno: .current) }
        let socket = Socket(descriptor: fd)
        let connected = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<Address>.size))
            }
        }
        guard connected == 0 else { throw SocketError(operation: "connect to", address: label, errno: .current) }
        return socket
    }

    private static func bindTCP<Address>(family: Int32, address: inout Address, label: String) throws -> Int32 {
        let fd = Glibc.socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SocketError(operation: "create socket for", address: label, errno: .current) }
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        let bound = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<Address>.size))
            }
        }
        guard bound == 0 else {
            let error = Errno.current
            _ = Glibc.close(fd)
            throw SocketError(operation: "bind", address: label, errno: error)
        }
        return fd
    }

    private static func loopbackError(_ host: String) -> InvalidArgumentError {
        InvalidArgumentError(argument: "--listen", value: host, reason: "not a loopback address; the TCP listener has no TLS",
                             remedy: "use 127.0.0.1:PORT or [::1]:PORT, and a TLS proxy for remote clients")
    }

    /// Returns the text of the NUL-terminated `characters`.
    private static func decodeCString(_ characters: [CChar]) -> String {
        let bytes = characters.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func describe(_ storage: sockaddr_storage) -> String {
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        switch Int32(storage.ss_family) {
        case AF_INET:
            var address = withUnsafeBytes(of: storage) { $0.load(as: sockaddr_in.self) }
            inet_ntop(AF_INET, &address.sin_addr, &text, socklen_t(text.count))
            return "\(decodeCString(text)):\(UInt16(bigEndian: address.sin_port))"
        case AF_INET6:
            var address = withUnsafeBytes(of: storage) { $0.load(as: sockaddr_in6.self) }
            inet_ntop(AF_INET6, &address.sin6_addr, &text, socklen_t(text.count))
            return "[\(decodeCString(text))]:\(UInt16(bigEndian: address.sin6_port))"
        case AF_UNIX:
            return "unix"
        default:
            return "unknown"
        }
    }
}

@inline(__always)
private func retrying<T: FixedWidthInteger>(_ body: () -> T) throws(Errno) -> T {
    while true {
        let result = body()
        if result != -1 { return result }
        let error = Errno.current
        if error != .interrupted { throw error }
    }
}

/// The end of the stream came before the bytes a reader needed.
public struct EndOfStream: Error {}

/// Buffered reads from a socket, for the frame reader and the HTTP head.
public struct SocketReader: ByteSource {
    public let socket: Socket
    private var buffer: [UInt8] = []
    private var start = 0
    private let chunk = 64 * 1024

    public init(socket: Socket) { self.socket = socket }

    private mutating func fill() throws {
        if start > 0, start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        }
        let bytes = try socket.receive(upTo: chunk)
        if bytes.isEmpty { throw EndOfStream() }
        buffer.append(contentsOf: bytes)
    }

    public mutating func readExactly(_ count: Int) throws -> [UInt8] {
        if count == 0 { return [] }
        while buffer.count - start < count {
            if start > 0 {
                buffer.removeFirst(start)
                start = 0
            }
            try fill()
        }
        let result = Array(buffer[start..<start + count])
        start += count
        return result
    }

    /// Reads up to and including the blank line that ends an HTTP head; returns the head
    /// without it. Throws `HandshakeError` 431 past `limit` bytes, and 408 when the head
    /// is not complete `timeLimit` after the call, however slowly its bytes trickle in.
    /// A time limit leaves SO_RCVTIMEO set, so the caller resets it.
    public mutating func readHTTPHead(limit: Int, timeLimit: Duration? = nil) throws -> String {
        let deadline = timeLimit.map { ContinuousClock.now + $0 }
        let terminator: [UInt8] = [13, 10, 13, 10]
        var searched = start
        while true {
            let available = buffer.count - start
            if available >= 4 {
                var index = max(start, searched - 3)
                while index + 4 <= buffer.count {
                    if buffer[index] == 13, buffer[index..<index + 4].elementsEqual(terminator) {
                        if index - start > limit {
                            throw HandshakeError(status: 431, reason: "request head longer than \(limit) bytes")
                        }
                        let head = String(decoding: buffer[start..<index], as: UTF8.self)
                        start = index + 4
                        return head
                    }
                    index += 1
                }
                searched = buffer.count
            }
            if available > limit { throw HandshakeError(status: 431, reason: "request head longer than \(limit) bytes") }
            if let deadline, let timeLimit {
                let remaining = deadline - ContinuousClock.now
                guard remaining > .zero else {
                    throw HandshakeError(status: 408, reason: "request head not complete after \(timeLimit.components.seconds) s")
                }
                socket.setReceiveTimeout(remaining)
            }
            try fill()
        }
    }
}

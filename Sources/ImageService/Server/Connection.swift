// Connection: one WebSocket client, with a reader thread and a writer thread.
//
// The reader thread performs the HTTP upgrade, reads frames, assembles messages
// (fragments, interleaved control frames, UTF-8 checked across fragments) and hands
// each message to its `Session`. Every outgoing frame goes through a bounded outbox
// that the writer thread drains, so no other thread ever blocks on this client's
// socket. When the outbox would exceed `sendQueueLimit` bytes, or a send makes no
// progress for `sendTimeout` seconds, the client is too slow: the connection is
// aborted rather than allowed to hold memory or stall job events for everyone.

import Dispatch
import Foundation
import ImageCore
import Synchronization

public final class Connection: Sendable {
    public let id: UInt64
    public let socket: Socket
    /// The peer's address ("unix" on the Unix socket).
    public let peer: String
    /// SO_PEERCRED of a Unix-socket peer; nil over TCP.
    public let credentials: PeerCredentials?
    let service: Service

    private struct Outbox {
        var frames: [[UInt8]] = []
        var bytes = 0
        /// No more frames are accepted (a close frame was queued, or the client is gone).
        var closed = false
        var aborted = false
    }

    private let outbox = Mutex(Outbox())
    private let wake = DispatchSemaphore(value: 0)
    private let writerFinished = DispatchSemaphore(value: 0)

    init(id: UInt64, socket: Socket, peer: String, credentials: PeerCredentials?, service: Service) {
        self.id = id
        self.socket = socket
        self.peer = peer
        self.credentials = credentials
        self.service = service
    }

    /// Starts the reader and writer threads.
    func start() {
        Thread.named("conn\(id)-write") { [self] in runWriter() }.start()
        Thread.named("conn\(id)-read") { [self] in runReader() }.start()
    }

    // MARK: Sending

    /// Queues a text message. Returns false when the connection no longer sends.
    @discardableResult
    public func send(_ message: JSONValue) -> Bool {
        enqueue(Frame(opcode: .text, payload: message.encoded).encoded())
    }

    /// Queues a text frame that is already encoded.
    @discardableResult
    func send(frame: [UInt8]) -> Bool {
        enqueue(frame)
    }

    /// Queues a close frame; nothing is sent after it.
    func sendClose(code: UInt16?, reason: String = "") {
        enqueue(Frame.close(code: code, reason: reason).encoded(), closing: true)
    }

    @discardableResult
    private func enqueue(_ bytes: [UInt8], closing: Bool = false) -> Bool {
        let limit = service.configuration.sendQueueLimit
        let accepted: Bool? = outbox.withLock { outbox in
            if outbox.closed { return false }
            if outbox.bytes + bytes.count > limit, !closing {
                outbox.closed = true
                outbox.aborted = true
                outbox.frames.removeAll()
                outbox.bytes = 0
                return nil
            }
            outbox.frames.append(bytes)
            outbox.bytes += bytes.count
            if closing { outbox.closed = true }
            return true
        }
        guard let accepted else {
            Log.warning("service", "connection \(id) (\(peer)): send queue over \(limit) bytes; disconnecting the slow client")
            socket.shutdown()
            wake.signal()
            return false
        }
        if accepted { wake.signal() }
        return accepted
    }

    /// Stops all traffic at once: blocked reads and sends return.
    func abort() {
        outbox.withLock { outbox in
            outbox.closed = true
            outbox.aborted = true
            outbox.frames.removeAll()
        }
        socket.shutdown()
        wake.signal()
    }

    private func runWriter() {
        defer { writerFinished.signal() }
        socket.setSendTimeout(seconds: service.configuration.sendTimeoutSeconds)
        while true {
            wake.wait()
            let (frames, done, aborted) = outbox.withLock { outbox -> ([[UInt8]], Bool, Bool) in
                let frames = outbox.frames
                outbox.frames.removeAll()
                return (frames, outbox.closed, outbox.aborted)
            }
            if aborted { return }
            for frame in frames {
                do {
                    try socket.sendAll(frame)
                } catch {
                    if let errno = error as? Errno, errno == .wouldBlock {
                        Log.warning("service", "connection \(id) (\(peer)): no send progress for \(service.configuration.sendTimeoutSeconds) s; disconnecting")
                    }
                    abort()
                    return
                }
                outbox.withLock { $0.bytes -= frame.count }
            }
            if done, outbox.withLock({ $0.frames.isEmpty }) {
                socket.shutdownWrite()
                return
            }
        }
    }

    // MARK: Reading

    private func runReader() {
        var reader = SocketReader(socket: socket)
        var session: Session?
        defer {
            session?.end()
            outbox.withLock { $0.closed = true }
            wake.signal()
            writerFinished.wait()
            drainInput(&reader)
            socket.close()
            service.connectionEnded(self)
        }

        let protocolKind: Session.ProtocolKind
        do {
            protocolKind = try performHandshake(&reader)
        } catch {
            if let error = error as? HandshakeError {
                Log.info("service", "connection \(id) (\(peer)): handshake rejected: \(error)")
                try? socket.sendAll(Array(Handshake.errorResponse(status: error.status, reason: error.reason).utf8))
            }
            return
        }
        let activeSession = Session(kind: protocolKind, connection: self, service: service)
        session = activeSession

        let assembler = MessageAssembler(maximumMessageBytes: service.configuration.maximumMessageBytes)
        let frames = FrameReader(expectMasked: true, maximumPayload: UInt64(service.configuration.maximumMessageBytes))
        while true {
            let frame: Frame
            do {
                frame = try frames.next(from: &reader)
            } catch let error as WebSocketProtocolError {
                closeForError(error)
                return
            } catch {
                return
            }
            switch assembler.accept(frame) {
            case .none:
                continue
            case .message(let bytes, let isText):
                activeSession.handle(bytes, isText: isText)
            case .ping(let payload):
                enqueue(Frame(opcode: .pong, payload: payload).encoded())
            case .close(let code):
                sendClose(code: code)
                return
            case .violation(let error):
                closeForError(error)
                return
            }
        }
    }

    private func closeForError(_ error: WebSocketProtocolError) {
        Log.info("service", "connection \(id) (\(peer)): closing with \(error.closeCode): \(error.reason)")
        sendClose(code: error.closeCode, reason: error.reason)
    }

    private func performHandshake(_ reader: inout SocketReader) throws -> Session.ProtocolKind {
        let text = try reader.readHTTPHead(limit: Handshake.maximumHeadBytes, timeLimit: Handshake.headTimeLimit)
        guard let request = HTTPRequestHead.parse(text) else {
            throw HandshakeError(status: 400, reason: "malformed HTTP request")
        }
        let kind: Session.ProtocolKind
        switch request.path {
        case "/api/current": kind = .jsonRPC
        case "/websocket": kind = .ddp
        default: throw HandshakeError(status: 404, reason: "no endpoint at \(request.path); use /api/current or /websocket")
        }
        let key = try Handshake.validate(request)
        try socket.sendAll(Array(Handshake.switchingProtocols(key: key).utf8))
        var timeout = timeval(tv_sec: 0, tv_usec: 0)
        setsockopt(socket.descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        return kind
    }

    /// Reads what the client still sends (at most 1 MiB, at most 2 seconds) after our
    /// close frame went out, so that closing the socket with unread input does not reset
    /// the connection before the client has read the close frame.
    private func drainInput(_ reader: inout SocketReader) {
        if outbox.withLock({ $0.aborted }) { return }
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(socket.descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var drained = 0
        while drained < 1 << 20, let bytes = try? socket.receive(upTo: 64 * 1024), !bytes.isEmpty {
            drained += bytes.count
        }
    }
}

/// Turns frames into messages; the reader thread owns it.
final class MessageAssembler {
    enum Result {
        case none
        case message([UInt8], isText: Bool)
        case ping([UInt8])
        /// The peer closed; the value is the code to echo, or nil for an empty close.
        case close(UInt16?)
        case violation(WebSocketProtocolError)
    }

    let maximumMessageBytes: Int
    private var openOpcode: Opcode?
    private var buffer: [UInt8] = []
    private var validator = UTF8Validator()

    init(maximumMessageBytes: Int) { self.maximumMessageBytes = maximumMessageBytes }

    func accept(_ frame: Frame) -> Result {
        switch frame.opcode {
        case .ping:
            return .ping(frame.payload)
        case .pong:
            return .none
        case .close:
            return closeResult(frame.payload)
        case .text, .binary:
            if openOpcode != nil {
                return .violation(WebSocketProtocolError(CloseCode.protocolError, "new data frame while a fragmented message is open"))
            }
            openOpcode = frame.opcode
            buffer = []
            validator = UTF8Validator()
            return append(frame)
        case .continuation:
            if openOpcode == nil {
                return .violation(WebSocketProtocolError(CloseCode.protocolError, "continuation frame without an open message"))
            }
            return append(frame)
        }
    }

    private func append(_ frame: Frame) -> Result {
        if buffer.count + frame.payload.count > maximumMessageBytes {
            return .violation(WebSocketProtocolError(CloseCode.messageTooBig,
                                                     "message exceeds the limit of \(maximumMessageBytes) bytes"))
        }
        let isText = openOpcode == .text
        if isText, !validator.feed(frame.payload) {
            return .violation(WebSocketProtocolError(CloseCode.invalidPayload, "text message is not valid UTF-8"))
        }
        buffer.append(contentsOf: frame.payload)
        guard frame.fin else { return .none }
        if isText, !validator.isComplete {
            return .violation(WebSocketProtocolError(CloseCode.invalidPayload, "text message ends inside a UTF-8 sequence"))
        }
        let message = buffer
        buffer = []
        openOpcode = nil
        return .message(message, isText: isText)
    }

    private func closeResult(_ payload: [UInt8]) -> Result {
        if payload.isEmpty { return .close(nil) }
        if payload.count == 1 {
            return .violation(WebSocketProtocolError(CloseCode.protocolError, "close frame with a 1-byte payload"))
        }
        let code = UInt16(payload[0]) << 8 | UInt16(payload[1])
        if !CloseCode.isValidOnWire(code) {
            return .violation(WebSocketProtocolError(CloseCode.protocolError, "invalid close code \(code)"))
        }
        if !UTF8Validator.isValid(payload.dropFirst(2)) {
            return .violation(WebSocketProtocolError(CloseCode.invalidPayload, "close reason is not valid UTF-8"))
        }
        return .close(code)
    }
}

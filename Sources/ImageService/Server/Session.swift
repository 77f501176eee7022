// Session: one client's protocol state on top of a connection.
//
// Two protocols share the method table:
// - JSON-RPC 2.0 at /api/current: `{"jsonrpc":"2.0","id":...,"method":...,"params":[...]}`.
//   A request without an `id` member is a notification and gets no reply, even on
//   error. Batches are not supported: a batch gets one -32600 error per element, and
//   an empty batch one -32600 error object. Job events arrive as `collection_update`
//   notifications.
// - The DDP-like protocol at /websocket: `connect`/`connected`, `method`/`result`,
//   `sub`/`ready`, `unsub`/`nosub`, `ping`/`pong`, and `added`/`changed` messages.
//
// Calls run on Dispatch's global queue, at most `maximumCallsInFlight` per session; a
// call over the limit is answered with EBUSY. The reader thread never waits for a call,
// except that a JSON-RPC notification over the limit waits (up to 30 s) for a slot, since
// it has no reply that could carry EBUSY. A DDP `method` message always gets a `result`,
// so it is a call, never a notification.

import Dispatch
import Foundation
import ImageCore
import Synchronization

public final class Session: Sendable {
    public enum ProtocolKind: Sendable {
        case jsonRPC, ddp
    }

    public let kind: ProtocolKind
    let connection: Connection
    let service: Service

    private struct State {
        var authenticatedAs: String?
        /// With `legacy_jobs` false (set by core.set_options) a job call's reply waits for
        /// the job's end and carries its result.
        var legacyJobs = true
        var ddpConnected = false
        var callsInFlight = 0
        /// Subscription id to job-manager observer token.
        var subscriptions: [String: UInt64] = [:]
        var ended = false
    }

    private let state = Mutex(State())

    /// Subscriptions one connection may hold. Clients need a few; each one costs memory
    /// and work on every job event.
    static let maximumSubscriptions = 64

    init(kind: ProtocolKind, connection: Connection, service: Service) {
        self.kind = kind
        self.connection = connection
        self.service = service
        if Service.isTrusted(connection.credentials) {
            state.withLock { $0.authenticatedAs = "root (uid 0 on the Unix socket)" }
        }
        let who = connection.credentials.map { "uid \($0.uid), pid \($0.pid)" } ?? "no credentials"
        Log.info("service", "connection \(connection.id) from \(connection.peer) (\(who)) opened \(kind == .jsonRPC ? "/api/current" : "/websocket")")
    }

    public var isAuthenticated: Bool { state.withLock { $0.authenticatedAs != nil } }
    public var legacyJobs: Bool { state.withLock { $0.legacyJobs } }

    public func setLegacyJobs(_ value: Bool) { state.withLock { $0.legacyJobs = value } }

    public func authenticate(as name: String) {
        state.withLock { $0.authenticatedAs = name }
        Log.info("service", "connection \(connection.id) authenticated as \(name)")
    }

    /// Ends the login of a client that logged in with an API key and drops its
    /// subscriptions, because job events are for authenticated clients only. Root on the
    /// Unix socket stays trusted, since its trust comes from the peer's uid.
    public func logout() {
        let trusted = Service.isTrusted(connection.credentials)
        let (previous, tokens) = state.withLock { state -> (String?, [UInt64]) in
            let previous = state.authenticatedAs
            if trusted { return (previous, []) }
            state.authenticatedAs = nil
            defer { state.subscriptions.removeAll() }
            return (previous, Array(state.subscriptions.values))
        }
        for token in tokens { service.jobs.removeObserver(token) }
        if let previous, !trusted {
            Log.info("service", "connection \(connection.id) logged out (was \(previous)); \(tokens.count) subscriptions ended")
        }
    }

    /// Ends the session: drops its subscriptions. Called once by the connection.
    func end() {
        let tokens = state.withLock { state -> [UInt64] in
            state.ended = true
            defer { state.subscriptions.removeAll() }
            return Array(state.subscriptions.values)
        }
        for token in tokens { service.jobs.removeObserver(token) }
        Log.info("service", "connection \(connection.id) from \(connection.peer) closed")
    }

    // MARK: Subscriptions

    /// Subscribes to `event` (only `core.get_jobs` exists); returns the subscription id.
    public func subscribe(_ event: String) throws(RPCError) -> String {
        guard event == "core.get_jobs" || event.hasPrefix("core.get_jobs:") else {
            throw RPCError.invalidParameter("event", "unknown event '\(event)'; the only event is core.get_jobs")
        }
        let id = UUID().uuidString
        let kind = self.kind
        if state.withLock({ $0.subscriptions.count }) >= Session.maximumSubscriptions {
            Log.warning("service", "connection \(connection.id): subscription to \(event) rejected: \(Session.maximumSubscriptions) already open")
            throw RPCError.call(EBUSY, "EBUSY", "too many subscriptions on this connection (limit \(Session.maximumSubscriptions)); unsubscribe first")
        }
        let token = service.jobs.addObserver { [connection] event in
            let frame = event.frames.frame(for: kind) {
                let body: [String: JSONValue] = ["msg": .string(event.kind.rawValue), "collection": .string("core.get_jobs"),
                                                 "id": .integer(event.id), "fields": event.fields]
                switch kind {
                case .jsonRPC:
                    return .object(["jsonrpc": .string("2.0"), "method": .string("collection_update"), "params": .object(body)])
                case .ddp:
                    return .object(body)
                }
            }
            connection.send(frame: frame)
        }
        let ended = state.withLock { state -> Bool in
            if !state.ended { state.subscriptions[id] = token }
            return state.ended
        }
        if ended { service.jobs.removeObserver(token) }
        return id
    }

    /// Ends subscription `id`; returns false when it does not exist.
    @discardableResult
    public func unsubscribe(_ id: String) -> Bool {
        guard let token = state.withLock({ $0.subscriptions.removeValue(forKey: id) }) else { return false }
        service.jobs.removeObserver(token)
        return true
    }

    // MARK: Messages

    func handle(_ bytes: [UInt8], isText: Bool) {
        let message: JSONValue
        do {
            message = try JSONValue.parse(bytes)
        } catch {
            // The reply's `data.reason` and the log line carry the same parser reason.
            Log.info("service", "connection \(connection.id): message rejected: \(error.description)")
            switch kind {
            case .jsonRPC: replyError(id: .null, RPCError.parse(error.description))
            case .ddp: connection.send(.object(["msg": .string("error"), "reason": .string(error.description)]))
            }
            return
        }
        switch kind {
        case .jsonRPC: handleJSONRPC(message)
        case .ddp: handleDDP(message)
        }
    }

    private func handleJSONRPC(_ message: JSONValue) {
        if case .array(let elements) = message {
            if elements.isEmpty {
                replyError(id: .null, .invalidRequest("empty batch"))
                return
            }
            let errors: [JSONValue] = elements.map { element in
                var id: JSONValue = .null
                if let candidate = element["id"], JSONRPCRequest.isValidID(candidate) { id = candidate }
                return JSONRPCRequest.errorResponse(id: id, .invalidRequest("batch requests are not supported; send one request per message"))
            }
            connection.send(.array(errors))
            return
        }
        let request: JSONRPCRequest
        do {
            request = try JSONRPCRequest(message)
        } catch {
            var id: JSONValue = .null
            if let candidate = message["id"], JSONRPCRequest.isValidID(candidate) { id = candidate }
            replyError(id: id, error)
            return
        }
        if let error = request.parameterError {
            if let id = request.id { replyError(id: id, error) }
            return
        }
        call(request.method, parameters: request.parameters, requestID: request.id,
             isNotification: request.id == nil) { [self] outcome in
            guard let id = request.id else { return }
            switch outcome {
            case .success(let value):
                connection.send(.object(["jsonrpc": .string("2.0"), "id": id, "result": value]))
            case .failure(let error):
                replyError(id: id, error)
            }
        }
    }

    private func replyError(id: JSONValue, _ error: RPCError) {
        connection.send(JSONRPCRequest.errorResponse(id: id, error))
    }

    private func handleDDP(_ message: JSONValue) {
        guard let kindName = message["msg"]?.stringValue else {
            connection.send(.object(["msg": .string("error"), "reason": .string("message has no 'msg' member")]))
            return
        }
        if kindName == "connect" {
            state.withLock { $0.ddpConnected = true }
            connection.send(.object(["msg": .string("connected"), "session": .string(UUID().uuidString)]))
            return
        }
        guard state.withLock({ $0.ddpConnected }) else {
            connection.send(.object(["msg": .string("failed"), "version": .string("1")]))
            return
        }
        switch kindName {
        case "ping":
            var pong: [String: JSONValue] = ["msg": .string("pong")]
            if let id = message["id"] { pong["id"] = id }
            connection.send(.object(pong))
        case "method":
            let id = message["id"] ?? .null
            guard let method = message["method"]?.stringValue else {
                connection.send(.object(["msg": .string("result"), "id": id,
                                         "error": RPCError.invalidRequest("'method' must be a string").dataObject]))
                return
            }
            let parameters = message["params"] ?? .array([])
            guard let list = parameters.arrayValue else {
                connection.send(.object(["msg": .string("result"), "id": id,
                                         "error": RPCError.invalidParameter("params", "expected an array").dataObject]))
                return
            }
            call(method, parameters: list, requestID: nil, isNotification: false) { [connection] outcome in
                switch outcome {
                case .success(let value):
                    connection.send(.object(["msg": .string("result"), "id": id, "result": value]))
                case .failure(let error):
                    connection.send(.object(["msg": .string("result"), "id": id, "error": error.dataObject]))
                }
            }
        case "sub":
            // A missing id gets a random one, which `ready` names. An id of another type
            // is an error, because `unsub` could never name the subscription.
            if let sent = message["id"], sent.stringValue == nil {
                rejectSubscriptionID(sent)
                return
            }
            let id = message["id"]?.stringValue ?? UUID().uuidString
            let name = message["name"]?.stringValue ?? ""
            guard isAuthenticated else {
                connection.send(.object(["msg": .string("nosub"), "id": .string(id),
                                         "error": RPCError.notAuthenticated("sub \(name)").dataObject]))
                return
            }
            do {
                let subscription = try subscribe(name)
                let replaced = state.withLock { state -> UInt64? in
                    // The client names DDP subscriptions; keep its id for `unsub`.
                    guard let token = state.subscriptions.removeValue(forKey: subscription) else { return nil }
                    defer { state.subscriptions[id] = token }
                    return state.subscriptions[id]
                }
                // A repeated id replaces its earlier subscription. Without this, the earlier
                // observer would no longer be in the table, so neither unsub nor the
                // connection's end would remove it.
                if let replaced { service.jobs.removeObserver(replaced) }
                connection.send(.object(["msg": .string("ready"), "subs": .array([.string(id)])]))
            } catch {
                connection.send(.object(["msg": .string("nosub"), "id": .string(id), "error": error.dataObject]))
            }
        case "unsub":
            if let sent = message["id"], sent.stringValue == nil {
                rejectSubscriptionID(sent)
                return
            }
            let id = message["id"]?.stringValue ?? ""
            unsubscribe(id)
            connection.send(.object(["msg": .string("nosub"), "id": .string(id)]))
        case "pong":
            break
        default:
            // The type comes back only when it is short: the frame may be up to the frame
            // limit, and nothing from it should echo without bound.
            let typeText = kindName.count <= 32
                ? "'" + escapingControlCharacters(kindName, formatCharacters: true) + "'"
                : "of \(kindName.count) characters"
            connection.send(.object(["msg": .string("error"), "reason": .string(
                "unknown message type \(typeText); use connect, ping, pong, method, sub or unsub")]))
        }
    }

    /// Replies `nosub` with an error to a DDP `sub` or `unsub` whose id is not a string.
    private func rejectSubscriptionID(_ id: JSONValue) {
        let error = RPCError.invalidParameter("id", "expected the subscription id as a string, got \(id.typeDescription)")
        connection.send(.object(["msg": .string("nosub"), "id": id, "error": error.dataObject]))
    }

    // MARK: Calls

    /// Runs `method` on the global queue and passes the outcome to `reply`.
    /// - Parameters:
    ///   - requestID: the JSON-RPC request id, nil for notifications and DDP. A job lists
    ///     it in `message_ids`, and the reply can wait for the job's end with it.
    ///   - isNotification: true when no reply reaches the client. A call over the limit
    ///     then waits for a slot, because no reply could carry EBUSY.
    private func call(_ method: String, parameters: [JSONValue], requestID: JSONValue?, isNotification: Bool,
                      reply: @escaping @Sendable (Result<JSONValue, RPCError>) -> Void) {
        guard let spec = service.methods.spec(method) else {
            Log.info("service", "connection \(connection.id): call \(method): method does not exist")
            reply(.failure(.methodNotFound(method)))
            return
        }
        if spec.requiresAuthentication, !isAuthenticated {
            Log.info("service", "connection \(connection.id): call \(method) rejected: not authenticated")
            reply(.failure(.notAuthenticated(method)))
            return
        }
        let limit = service.configuration.maximumCallsInFlight
        let admit = { [self] in
            state.withLock { state -> Bool in
                guard state.callsInFlight < limit else { return false }
                state.callsInFlight += 1
                return true
            }
        }
        var admitted = admit()
        if !admitted, isNotification {
            // A notification cannot be answered with EBUSY, so the reader waits for a slot
            // instead: a client that floods notifications is slowed down, not ignored.
            // The wait is bounded so a session whose calls hang still reads its socket.
            let deadline = ContinuousClock.now + .seconds(30)
            while !admitted, ContinuousClock.now < deadline {
                usleep(1_000)
                admitted = admit()
            }
            if !admitted {
                Log.warning("service", "connection \(connection.id): notification \(method) dropped: \(limit) calls still in flight after 30 s")
                return
            }
        }
        guard admitted else {
            Log.info("service", "connection \(connection.id): call \(method) rejected with EBUSY: calls in flight at the limit (\(limit), --max-calls)")
            reply(.failure(.call(EBUSY, "EBUSY", "too many calls in flight on this connection (limit \(limit)); wait for replies before sending more")))
            return
        }

        let context = CallContext(method: method, parameters: Parameters(values: parameters, method: method), session: self,
                                  service: service, messageIDs: requestID.map { [$0] } ?? [])
        let connectionID = connection.id
        DispatchQueue.global().async { [self] in
            let started = ContinuousClock.now
            let finish: @Sendable (Result<JSONValue, RPCError>) -> Void = { [self] outcome in
                state.withLock { $0.callsInFlight -= 1 }
                let milliseconds = String(format: "%.1f", (ContinuousClock.now - started).seconds * 1000)
                switch outcome {
                case .success: Log.info("service", "connection \(connectionID): call \(method) succeeded in \(milliseconds) ms")
                case .failure(let error): Log.info("service", "connection \(connectionID): call \(method) failed in \(milliseconds) ms: \(error.errname)")
                }
                reply(outcome)
            }
            do {
                switch try spec.handler(context) {
                case .value(let value):
                    finish(.success(value))
                case .job(let id):
                    if legacyJobs || requestID == nil {
                        finish(.success(.integer(id)))
                    } else {
                        service.jobs.whenFinished(id) { result, error in
                            finish(error.map { .failure($0) } ?? .success(result))
                        }
                    }
                }
            } catch {
                finish(.failure(RPCError.from(error)))
            }
        }
    }
}

/// A checked JSON-RPC 2.0 request.
struct JSONRPCRequest {
    /// The request id, or nil for a notification (no `id` member at all).
    var id: JSONValue?
    var method: String
    var parameters: [JSONValue]
    /// Set when `params` is not an array: the request is answered with this error.
    var parameterError: RPCError?

    init(_ message: JSONValue) throws(RPCError) {
        guard let members = message.objectValue else {
            throw RPCError.invalidRequest("a request must be a JSON object, got \(message.typeDescription)")
        }
        if let id = members["id"] {
            guard JSONRPCRequest.isValidID(id) else {
                throw RPCError.invalidRequest("'id' must be a string, a number or null, got \(id.typeDescription)")
            }
            self.id = id
        }
        guard members["jsonrpc"] == .string("2.0") else {
            throw RPCError.invalidRequest("'jsonrpc' must be \"2.0\"")
        }
        guard let method = members["method"]?.stringValue else {
            throw RPCError.invalidRequest("'method' must be a string")
        }
        self.method = method
        switch members["params"] {
        case nil, .null?: parameters = []
        case .array(let list)?: parameters = list
        case let other?:
            // Structurally a valid request (JSON-RPC allows by-name params), so a
            // notification of this kind still gets no reply.
            parameters = []
            parameterError = RPCError.invalidParameter("params", "expected an array of positional parameters, got \(other.typeDescription)")
        }
    }

    static func isValidID(_ id: JSONValue) -> Bool {
        switch id {
        case .string, .number, .null: return true
        default: return false
        }
    }

    static func errorResponse(id: JSONValue, _ error: RPCError) -> JSONValue {
        .object(["jsonrpc": .string("2.0"), "id": id, "error": error.jsonRPCObject])
    }
}

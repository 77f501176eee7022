// How a failed call is reported to a client, in both protocols.
//
// JSON-RPC 2.0 (`/api/current`) uses the middleware's codes: -32700 parse error,
// -32600 invalid request, -32601 method not found, -32602 invalid parameters, -32001 a
// call that failed. `data` carries the middleware's error fields: `error` (an errno
// number), `errname`, `reason`, `trace` and `extra` (for validation failures a list of
// `[attribute, message, errno]`). Every error carries `data`, parse errors and invalid
// requests included, so a client learns why its message was rejected. The DDP-like
// protocol (`/websocket`) sends the same `data` object as its `error` member.

import Foundation
import ImageCore

/// A call that failed, carrying everything both protocols report.
public struct RPCError: Error, Sendable, CustomStringConvertible {
    public var code: Int
    public var message: String
    /// The errno number reported as `data.error`.
    public var errno: Int32
    public var errname: String
    public var reason: String
    /// `[[attribute, message, errno]]` for validation failures, otherwise null.
    public var extra: JSONValue
    /// The middleware's `type` member: "VALIDATION" for invalid parameters, else null.
    public var type: String?

    public var description: String { "\(errname): \(reason)" }

    /// The JSON-RPC `error` object: code, message and data.
    public var jsonRPCObject: JSONValue {
        .object(["code": .integer(code), "message": .string(message), "data": dataObject])
    }

    /// The `data` object: errno, errname, reason, trace and extra.
    public var dataObject: JSONValue {
        .object([
            "error": .integer(errno),
            "errname": .string(errname),
            "reason": .string(reason),
            "trace": .null,
            "extra": extra,
            "type": .optional(type),
        ])
    }

    enum ParseCodes {
        static let parse = -32700
        static let invalidRequest = -32600
        static let methodNotFound = -32601
        static let invalidParams = -32602
        static let callError = -32001
    }

    /// A message that is not JSON. `reason` reaches the client in `data` and the log, and
    /// a value in the message may be a password or an API key. So the parser's reasons
    /// give a byte offset and quote at most an object key (one sent twice), never a value.
    public static func parse(_ reason: String) -> RPCError {
        RPCError(code: ParseCodes.parse, message: "Parse error", errno: EINVAL, errname: "EINVAL", reason: reason, extra: .null)
    }

    /// JSON that is not a request object. Like a parse error's, `reason` names members
    /// and JSON types, never a value from the message.
    public static func invalidRequest(_ reason: String) -> RPCError {
        RPCError(code: ParseCodes.invalidRequest, message: "Invalid Request", errno: EINVAL, errname: "EINVAL",
                 reason: reason, extra: .null)
    }

    public static func methodNotFound(_ name: String) -> RPCError {
        RPCError(code: ParseCodes.methodNotFound, message: "Method does not exist", errno: ENOSYS, errname: "ENOMETHOD",
                 reason: "method '\(name)' does not exist", extra: .null)
    }

    /// A validation failure on one argument: `attribute` names it, `message` says why.
    public static func invalidParameter(_ attribute: String, _ message: String) -> RPCError {
        RPCError(code: ParseCodes.invalidParams, message: "Invalid params", errno: EINVAL, errname: "EINVAL",
                 reason: "[EINVAL] \(attribute): \(message)",
                 extra: .array([.array([.string(attribute), .string(message), .integer(EINVAL)])]), type: "VALIDATION")
    }

    /// A call that failed with an errno and a reason.
    public static func call(_ errno: Int32, _ errname: String, _ reason: String) -> RPCError {
        RPCError(code: ParseCodes.callError, message: "Method call error", errno: errno, errname: errname,
                 reason: reason, extra: .null)
    }

    /// The middleware's errno for a call made before authentication.
    public static let notAuthenticatedErrno: Int32 = 207

    public static func notAuthenticated(_ method: String) -> RPCError {
        call(notAuthenticatedErrno, "ENOTAUTHENTICATED", "not authenticated: log in with auth.login_with_api_key before calling \(method)")
    }

    /// Maps any error from ImageCore or the adapter to an RPC error.
    public static func from(_ error: any Error) -> RPCError {
        if let error = error as? RPCError { return error }
        if let error = error as? InvalidArgumentError {
            var reason = error.reason
            if let remedy = error.remedy { reason += "; \(remedy)" }
            return invalidParameter(error.argument, "'\(error.value)': \(reason)")
        }
        if let error = error as? any ImageError {
            var reason = error.description
            if let remedy = error.remedy { reason += " (\(remedy))" }
            let (number, name) = errnoFor(error)
            return call(number, name, reason)
        }
        return call(EFAULT, "EFAULT", String(describing: error))
    }

    private static func errnoFor(_ error: any ImageError) -> (Int32, String) {
        if let system = error as? SystemError {
            return (system.errno.rawValue, errnoName(system.errno.rawValue))
        }
        if case .busy = error as? DiskError { return (EBUSY, "EBUSY") }
        switch error.category {
        case .failure: return (EFAULT, "EFAULT")
        case .invalidData: return (EBADMSG, "EBADMSG")
        case .network: return (ENETUNREACH, "ENETUNREACH")
        case .usage: return (EINVAL, "EINVAL")
        case .targetExists: return (EEXIST, "EEXIST")
        case .cancelled: return (ECANCELED, "ECANCELED")
        }
    }

    /// The symbolic name of an errno number, for `errname`.
    static func errnoName(_ number: Int32) -> String {
        let names: [Int32: String] = [
            EPERM: "EPERM", ENOENT: "ENOENT", EIO: "EIO", EBADF: "EBADF", EAGAIN: "EAGAIN", ENOMEM: "ENOMEM",
            EACCES: "EACCES", EFAULT: "EFAULT", EBUSY: "EBUSY", EEXIST: "EEXIST", EXDEV: "EXDEV",
            ENOTDIR: "ENOTDIR", EISDIR: "EISDIR", EINVAL: "EINVAL", EFBIG: "EFBIG", ENOSPC: "ENOSPC",
            EROFS: "EROFS", ELOOP: "ELOOP", ENAMETOOLONG: "ENAMETOOLONG", ENOSYS: "ENOSYS",
            EOPNOTSUPP: "EOPNOTSUPP", EDQUOT: "EDQUOT", ECANCELED: "ECANCELED", ETIMEDOUT: "ETIMEDOUT",
        ]
        return names[number] ?? "E\(number)"
    }
}

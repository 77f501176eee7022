// The method table: every callable name, whether it needs a logged-in caller, and the
// code that runs it. Methods share one calling convention: positional parameters in,
// a JSON result or a job id out.

import Foundation
import ImageCore

/// What a method returns: a value, or the id of the job it started.
public enum MethodOutcome: Sendable {
    case value(JSONValue)
    case job(Int64)
}

/// Everything a method may use for one call.
public struct CallContext: Sendable {
    public let method: String
    public let parameters: Parameters
    public let session: Session
    public let service: Service
    /// The request ids a job started by this call should carry in `message_ids`.
    public let messageIDs: [JSONValue]
}

/// One method: its name, rules and handler.
public struct MethodSpec: Sendable {
    public var name: String
    /// Whether the caller must be authenticated (a trusted peer or a valid API key).
    public var requiresAuthentication = true
    /// Positions of parameters that hold secrets: they are redacted from job arguments.
    public var secretPositions: Set<Int> = []
    public var handler: @Sendable (CallContext) throws -> MethodOutcome

    public init(_ name: String, requiresAuthentication: Bool = true, secretPositions: Set<Int> = [],
                handler: @escaping @Sendable (CallContext) throws -> MethodOutcome) {
        self.name = name
        self.requiresAuthentication = requiresAuthentication
        self.secretPositions = secretPositions
        self.handler = handler
    }
}

/// Positional parameters with typed accessors that throw -32602 naming the argument.
public struct Parameters: Sendable {
    public let values: [JSONValue]
    public let method: String

    public subscript(index: Int) -> JSONValue? { index < values.count ? values[index] : nil }

    /// Rejects calls with more than `count` parameters.
    public func expectAtMost(_ count: Int) throws(RPCError) {
        if values.count > count {
            throw RPCError.invalidParameter(method, "expected at most \(count) parameter\(count == 1 ? "" : "s"), got \(values.count)")
        }
    }

    public func string(_ index: Int, _ name: String) throws(RPCError) -> String {
        guard let value = self[index] else { throw RPCError.invalidParameter(name, "missing; expected a string") }
        guard let text = value.stringValue else {
            throw RPCError.invalidParameter(name, "expected a string, got \(value.typeDescription)")
        }
        return text
    }

    public func optionalString(_ index: Int, _ name: String) throws(RPCError) -> String? {
        guard let value = self[index], !value.isNull else { return nil }
        guard let text = value.stringValue else {
            throw RPCError.invalidParameter(name, "expected a string or null, got \(value.typeDescription)")
        }
        return text
    }

    public func integer(_ index: Int, _ name: String) throws(RPCError) -> Int64 {
        guard let value = self[index] else { throw RPCError.invalidParameter(name, "missing; expected an integer") }
        guard let number = value.int64Value else {
            throw RPCError.invalidParameter(name, "expected an integer, got \(value.typeName == "number" ? value.description : value.typeDescription)")
        }
        return number
    }

    public func optionalBool(_ index: Int, _ name: String, default fallback: Bool) throws(RPCError) -> Bool {
        guard let value = self[index], !value.isNull else { return fallback }
        guard let flag = value.boolValue else {
            throw RPCError.invalidParameter(name, "expected true or false, got \(value.typeDescription)")
        }
        return flag
    }
}

/// Replaces secrets in a call's parameters before they are stored in a job or logged:
/// the positions listed in `secretPositions`, and members of objects whose names mark
/// secrets (password, key, api_key, secret, token).
func redact(_ parameters: [JSONValue], secretPositions: Set<Int>) -> JSONValue {
    .array(parameters.enumerated().map { index, value in
        secretPositions.contains(index) ? .string("********") : redactMembers(value)
    })
}

private let secretNames: Set<String> = ["password", "passwd", "key", "api_key", "apikey", "secret", "token"]

private func redactMembers(_ value: JSONValue) -> JSONValue {
    switch value {
    case .object(let members):
        var redacted: [String: JSONValue] = [:]
        for (name, member) in members {
            redacted[name] = secretNames.contains(name.lowercased()) ? .string("********") : redactMembers(member)
        }
        return .object(redacted)
    case .array(let elements):
        return .array(elements.map(redactMembers))
    default:
        return value
    }
}

/// The table the service dispatches on.
public struct MethodTable: Sendable {
    private var methods: [String: MethodSpec] = [:]

    public init() {}

    public mutating func register(_ spec: MethodSpec) {
        precondition(methods[spec.name] == nil, "Bug in imgtool: method \(spec.name) registered twice")
        methods[spec.name] = spec
    }

    public func spec(_ name: String) -> MethodSpec? { methods[name] }

    public var names: [String] { methods.keys.sorted() }
}

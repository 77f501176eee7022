// The core.* and auth.* methods: session options, jobs, subscriptions, login.

import Foundation
import ImageCore

enum CoreMethods {
    static func register(in table: inout MethodTable) {
        table.register(MethodSpec("core.ping", requiresAuthentication: false) { _ in .value(.string("pong")) })

        table.register(MethodSpec("core.set_options", requiresAuthentication: false) { context in
            try context.parameters.expectAtMost(1)
            guard let options = context.parameters[0]?.objectValue else {
                throw RPCError.invalidParameter("options", "expected an object such as {\"legacy_jobs\": false}")
            }
            for (name, value) in options {
                switch name {
                case "legacy_jobs":
                    guard let flag = value.boolValue else { throw RPCError.invalidParameter("options.legacy_jobs", "expected true or false") }
                    context.session.setLegacyJobs(flag)
                case "private_methods", "py_exceptions":
                    // Accepted for the middleware's clients; they change nothing here.
                    guard value.boolValue != nil else { throw RPCError.invalidParameter("options.\(name)", "expected true or false") }
                default:
                    throw RPCError.invalidParameter("options.\(name)", "unknown option; expected legacy_jobs, private_methods or py_exceptions")
                }
            }
            return .value(.null)
        })

        table.register(MethodSpec("core.get_jobs") { context in
            try context.parameters.expectAtMost(2)
            let query = try JobQuery(filters: context.parameters[0], options: context.parameters[1])
            return .value(try query.apply(to: context.service.jobs.allJobs()))
        })

        table.register(MethodSpec("core.job_abort") { context in
            try context.parameters.expectAtMost(1)
            let id = try context.parameters.integer(0, "id")
            try context.service.jobs.abort(id)
            return .value(.null)
        })

        table.register(MethodSpec("core.subscribe") { context in
            try context.parameters.expectAtMost(1)
            let event = try context.parameters.string(0, "event")
            return .value(.string(try context.session.subscribe(event)))
        })

        table.register(MethodSpec("core.unsubscribe") { context in
            try context.parameters.expectAtMost(1)
            let id = try context.parameters.string(0, "id")
            guard context.session.unsubscribe(id) else {
                throw RPCError.invalidParameter("id", "no subscription '\(id)' on this connection")
            }
            return .value(.null)
        })

        table.register(MethodSpec("auth.login_with_api_key", requiresAuthentication: false, secretPositions: [0]) { context in
            try context.parameters.expectAtMost(1)
            let key = try context.parameters.string(0, "api_key")
            return .value(.bool(login(context, key: key)))
        })

        table.register(MethodSpec("auth.login_ex", requiresAuthentication: false, secretPositions: [0]) { context in
            try context.parameters.expectAtMost(1)
            let request = try APIKeyLogin(context.parameters[0])
            let succeeded = login(context, key: request.apiKey)
            return .value(.object(["response_type": .string(succeeded ? "SUCCESS" : "AUTH_ERR")]))
        })

        table.register(MethodSpec("auth.logout", requiresAuthentication: false) { context in
            try context.parameters.expectAtMost(0)
            context.session.logout()
            return .value(.null)
        })
    }

    private static func login(_ context: CallContext, key: String) -> Bool {
        guard let record = context.service.keys.verify(key) else {
            Log.warning("service", "connection \(context.session.connection.id): login with an invalid API key")
            return false
        }
        context.session.authenticate(as: "API key \(record.id) (\(record.name))")
        return true
    }
}

/// The login object of `auth.login_ex`: `{mechanism, username, api_key, login_options}`.
/// Only the mechanism API_KEY_PLAIN exists here, and any key the middleware's schema for
/// it does not list is rejected. Messages never quote a value, so the API key does not
/// reach an error reply.
struct APIKeyLogin {
    static let acceptedKeys = ["mechanism", "username", "api_key", "login_options"]
    /// The middleware's `login_options` keys. `user_info` requests the user's details in
    /// the reply, which imgtool cannot give, because its API keys belong to no user account.
    static let acceptedOptions = ["user_info"]
    /// The mechanisms of the middleware's `auth.login_ex` (TrueNAS 24.10 API reference).
    static let middlewareMechanisms: Set = ["PASSWORD_PLAIN", "API_KEY_PLAIN", "AUTH_TOKEN_PLAIN", "OTP_TOKEN"]

    var apiKey: String

    init(_ value: JSONValue?) throws(RPCError) {
        guard let members = value?.objectValue else {
            throw RPCError.invalidParameter("login_data", "expected an object with mechanism, username and api_key")
        }
        // Another mechanism takes other keys (PASSWORD_PLAIN takes a password), so the
        // mechanism is the mistake to report, before its keys.
        if let mechanism = members["mechanism"]?.stringValue, mechanism != "API_KEY_PLAIN" {
            // Only the middleware's names are quoted, in case a client sent its key in
            // the wrong member.
            let named = Self.middlewareMechanisms.contains(mechanism) ? "'\(mechanism)'" : "the mechanism sent"
            throw RPCError.invalidParameter("login_data.mechanism", "\(named) is not supported; use API_KEY_PLAIN")
        }
        try ObjectKeys.rejectUnknown(in: members, accepted: Self.acceptedKeys, owner: "auth.login_ex",
                                     attributePrefix: "login_data.")

        guard let mechanism = members["mechanism"] else {
            throw RPCError.invalidParameter("login_data.mechanism", "missing; expected \"API_KEY_PLAIN\"")
        }
        guard mechanism.stringValue != nil else {
            throw RPCError.invalidParameter("login_data.mechanism",
                                            "expected the string \"API_KEY_PLAIN\", got \(mechanism.typeDescription)")
        }
        // The username is not compared with anything, because imgtool's API keys belong to
        // no user account. A client sends it because the middleware requires it.
        if let username = members["username"], username.stringValue == nil {
            throw RPCError.invalidParameter("login_data.username", "expected a string, got \(username.typeDescription)")
        }
        guard let key = members["api_key"] else {
            throw RPCError.invalidParameter("login_data.api_key", "missing; expected the key as a string")
        }
        guard let text = key.stringValue else {
            throw RPCError.invalidParameter("login_data.api_key", "expected the key as a string, got \(key.typeDescription)")
        }
        apiKey = text
        try Self.checkOptions(members["login_options"])
    }

    /// Checks `login_options`, which changes nothing here: the reply carries only
    /// `response_type`, whatever the value of `user_info`.
    private static func checkOptions(_ value: JSONValue?) throws(RPCError) {
        guard let value, value != .null else { return }
        guard let options = value.objectValue else {
            throw RPCError.invalidParameter("login_data.login_options",
                                            "expected an object such as {\"user_info\": false}, got \(value.typeDescription)")
        }
        try ObjectKeys.rejectUnknown(in: options, accepted: acceptedOptions, owner: "login_options",
                                     attributePrefix: "login_data.login_options.")
        if let userInfo = options["user_info"], userInfo.boolValue == nil {
            throw RPCError.invalidParameter("login_data.login_options.user_info",
                                            "expected true or false, got \(userInfo.typeDescription)")
        }
    }
}

/// Methods that exist only with `enableTestMethods`, for the test suites.
enum TestMethods {
    static func register(in table: inout MethodTable) {
        // test.hold seconds: a call, not a job, that returns "held" after `seconds` (at
        // most 60). It keeps its call slot that long in either protocol, for the tests of
        // --max-calls.
        table.register(MethodSpec("test.hold") { context in
            try context.parameters.expectAtMost(1)
            let seconds = context.parameters[0]?.doubleValue ?? 1
            guard seconds >= 0, seconds <= 60 else {
                throw RPCError.invalidParameter("seconds", "expected 0 to 60 seconds, got \(seconds)")
            }
            usleep(UInt32(seconds * 1_000_000))
            return .value(.string("held"))
        })

        // test.sleep seconds [options]: a job that sleeps in 10 ms steps, reports progress
        // and stops at once when aborted. Options: lock (a lock name), fail (end FAILED),
        // password (redacted from the job's arguments), result (the string it returns
        // in place of "slept").
        table.register(MethodSpec("test.sleep") { context in
            let seconds = context.parameters[0]?.doubleValue ?? 1
            let options = context.parameters[1]?.objectValue ?? [:]
            let fail = options["fail"]?.boolValue ?? false
            let id = context.service.jobs.submit(
                method: context.method, arguments: redact(context.parameters.values, secretPositions: []),
                description: "sleep \(seconds) s", lock: options["lock"]?.stringValue, messageIDs: context.messageIDs
            ) { job in
                let steps = max(1, Int(seconds * 100))
                for step in 0..<steps {
                    try job.cancellation.check("test.sleep")
                    usleep(10_000)
                    job.setProgress(percent: Double(step + 1) * 100 / Double(steps), description: "sleeping",
                                    extra: .object(["step": .integer(step + 1), "steps": .integer(steps)]))
                }
                if fail { throw InvalidArgumentError(argument: "fail", value: "true", reason: "the caller asked the job to fail") }
                return .string(options["result"]?.stringValue ?? "slept")
            }
            return .job(id)
        })
    }
}

// The check that an object parameter carries only the keys its method accepts, as the NAS
// middleware rejects fields its schema does not list. The messages quote keys, never
// values, because a value may be a password or an API key.

import ImageCore

enum ObjectKeys {
    /// Throws -32602 naming the first unknown key of `members` (in sorted order), the
    /// accepted key it seems meant for, the other unknown keys, and the keys `owner`
    /// accepts.
    /// - Parameters:
    ///   - accepted: the keys `owner` accepts, in the order the message lists them.
    ///   - owner: the method or object that accepts them, such as `vm.create_container`.
    ///   - attributePrefix: what the error's attribute puts before the key, such as
    ///     `login_data.`.
    ///   - note: text for the first unknown key, added in brackets after the accepted
    ///     keys, or nil.
    static func rejectUnknown(in members: [String: JSONValue], accepted: [String], owner: String,
                              attributePrefix: String = "", note: (String) -> String? = { _ in nil }) throws(RPCError) {
        let unknown = members.keys.filter { !accepted.contains($0) }.sorted()
        guard let first = unknown.first else { return }

        var message = "unknown key \(quoted(first))"
        if let meant = acceptedKey(resembling: first, among: accepted) {
            message += ", did you mean '\(meant)'? Keys are case-sensitive and contain no spaces"
        }
        message += "; \(owner) accepts " + listing(accepted)
        if let note = note(first) {
            message += " (\(note))"
        }
        if unknown.count > 1 {
            message += "; other unknown keys: " + unknown.dropFirst().map(quoted).joined(separator: ", ")
        }
        throw RPCError.invalidParameter(attributePrefix + first, message)
    }

    /// Returns `keys` as "a, b and c", or "only a" for one key.
    private static func listing(_ keys: [String]) -> String {
        guard let last = keys.last else { return "no keys" }
        if keys.count == 1 { return "only \(last)" }
        return keys.dropLast().joined(separator: ", ") + " and " + last
    }

    /// Returns `key` in single quotes, with control and format characters escaped: a
    /// zero-width space or a newline in a key is otherwise invisible or breaks the message.
    private static func quoted(_ key: String) -> String {
        "'" + escapingControlCharacters(key, formatCharacters: true) + "'"
    }

    /// Returns the accepted key that `key` equals once whitespace and format characters
    /// are removed and letters are lowercased, such as `vm_id` for " VM_ID".
    private static func acceptedKey(resembling key: String, among accepted: [String]) -> String? {
        var visible = String.UnicodeScalarView()
        for scalar in key.unicodeScalars where !scalar.properties.isWhitespace && scalar.properties.generalCategory != .format {
            visible.append(scalar)
        }
        let folded = String(visible).lowercased()
        return accepted.first { $0 == folded }
    }
}

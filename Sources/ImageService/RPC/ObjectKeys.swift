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
        } else if let meant = acceptedKey(misspelledAs: first, among: accepted) {
            message += ", did you mean '\(meant)'?"
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

    /// Returns the accepted key that `key` is most likely a misspelling of: the only one
    /// within two edits (a letter added, removed, replaced, or two neighbours swapped),
    /// such as `api_key` for `api_kye`. Keys of four characters or fewer get no guess,
    /// since two edits turn them into too many others.
    private static func acceptedKey(misspelledAs key: String, among accepted: [String]) -> String? {
        let typed = Array(key.lowercased().unicodeScalars)
        guard typed.count > 4, typed.count <= 64 else { return nil }
        let close = accepted.filter { editDistance(typed, Array($0.unicodeScalars)) <= 2 }
        return close.count == 1 ? close[0] : nil
    }

    /// Returns the number of single-character insertions, deletions, substitutions and
    /// swaps of adjacent characters that turn `a` into `b` (optimal string alignment).
    static func editDistance(_ a: [Unicode.Scalar], _ b: [Unicode.Scalar]) -> Int {
        guard !a.isEmpty else { return b.count }
        guard !b.isEmpty else { return a.count }
        // Rows of the distance table: before the previous character of `a`, at it, and now.
        var older = [Int](repeating: 0, count: b.count + 1)
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                let substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)
                current[j] = min(previous[j] + 1, current[j - 1] + 1, substitution)
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                    current[j] = min(current[j], older[j - 2] + 1)
                }
            }
            (older, previous, current) = (previous, current, older)
        }
        return previous[b.count]
    }
}

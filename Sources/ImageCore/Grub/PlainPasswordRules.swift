// The rules a clear-text password must follow to reach RancherOS 1.x unchanged.
//
// The value travels grub.cfg -> GRUB's parser -> the kernel command line -> RancherOS,
// which undoes only `\"` and `\'`, reads the value with a YAML 1.1 parser (go-yaml v2)
// and converts the result back to text. Each rule below names the stage that would
// change the value. The YAML rules are conservative: a few values that go-yaml would
// return unchanged (for example "?a") are rejected too, because they look like syntax.
// No reason quotes the password or any part of it.

enum PlainPasswordRules {
    /// Returns why `bytes` cannot be used as a plain password, or nil when it can.
    static func problem(with bytes: [UInt8], splitsOnSpaces: Bool) -> String? {
        guard let text = String(validating: bytes, as: UTF8.self) else {
            return "the password is not valid UTF-8, which the guest's YAML parser rejects"
        }
        for scalar in text.unicodeScalars {
            if scalar == "\n" || scalar == "\r" {
                return "the password contains a line break, which would give chpasswd a second line"
            }
            // YAML 1.1 also breaks lines at U+2028 and U+2029: the guest's parser drops
            // them at either end of the value and reads a `#` after one as a comment.
            if scalar == "\u{2028}" || scalar == "\u{2029}" {
                return "the password contains a Unicode line or paragraph separator, which the guest's YAML parser reads as a line break"
            }
            if scalar.properties.generalCategory == .control {
                return "the password contains a tab or another control character"
            }
            // YAML 1.1 excludes these two from its printable characters, so the guest's
            // parser rejects the whole command-line value.
            if scalar == "\u{FFFE}" || scalar == "\u{FFFF}" {
                return "the password contains U+FFFE or U+FFFF, which the guest's YAML parser rejects as non-printable"
            }
        }
        if text.contains("\\") {
            return "the password contains a backslash: GRUB doubles it on the kernel command line and the guest does not undo that"
        }
        if text.contains("\"") {
            return "the password contains a double quote, which changes how the kernel and the guest split the command line"
        }
        if splitsOnSpaces, text.contains(" ") {
            return "the password contains a space, and this guest (RancherOS before 1.5.5) splits the kernel command line on every space"
        }
        return yamlProblem(text)
    }

    /// Characters that start YAML syntax when they open a plain value. `#` starts a
    /// comment, `&` an anchor, `*` an alias, `!` a tag, quotes a quoted string, `|` and `>`
    /// a block scalar, `%` a directive. `@` and `` ` `` are reserved. Brackets and braces
    /// open flow collections, `-`, `?` and `:` are block indicators, `,` separates.
    static let leadingIndicators: Set<Character> = ["#", "&", "*", "!", "'", "\"", "|", ">", "%", "@", "`",
                                                    "[", "]", "{", "}", "-", "?", ":", ","]

    /// YAML 1.1 booleans and nulls in the spellings go-yaml v2 resolves ("y" and "n"
    /// included), compared without regard to case to stay on the safe side.
    static let reservedWords: Set<String> = ["y", "yes", "n", "no", "true", "false", "on", "off", "null", "~"]

    static func yamlProblem(_ text: String) -> String? {
        guard let first = text.first, let last = text.last else { return "the password is empty" }
        if leadingIndicators.contains(first) {
            return "the password starts with a character that the guest's YAML parser reads as syntax (one of # & * ! ' \" | > % @ ` [ ] { } - ? : ,)"
        }
        if text.unicodeScalars.first == "\u{FEFF}" {
            return "the password starts with a byte order mark (U+FEFF), which the guest's YAML parser drops"
        }
        if first == " " || last == " " {
            return "the password starts or ends with a space, which the guest's YAML parser drops"
        }
        if text.contains(": ") || last == ":" {
            return "the password contains ': ' or ends with ':', which the guest's YAML parser reads as a mapping"
        }
        if text.contains(" #") {
            return "the password contains ' #', which the guest's YAML parser reads as the start of a comment"
        }
        if reservedWords.contains(text.lowercased()) {
            return "the guest's YAML parser reads the password as a boolean or null (y, yes, n, no, true, false, on, off, null, ~), not as text"
        }
        if text == "<<" || text == "=" {
            return "the guest's YAML parser reads the password as a special key ('<<' or '='), not as text"
        }
        if looksLikeYAMLNumber(text), !isCanonicalDecimal(text) {
            return "the guest's YAML parser reads the password as a number whose text differs (leading zeros, a sign, '_', hex, octal, a fraction or an exponent)"
        }
        if looksLikeTimestamp(text) {
            return "the guest's YAML parser may read the password as a date"
        }
        return nil
    }

    /// True for text that a YAML 1.1 parser resolves to an int or a float. These are the
    /// YAML 1.1 int and float patterns, plus anything that starts with a digit, a sign or
    /// a point and parses as a number, as go-yaml v2 tries.
    static func looksLikeYAMLNumber(_ text: String) -> Bool {
        let patterns = [
            // go-yaml v2 parses ints with strconv.ParseInt(text, 0, 64), which reads "0B101"
            // and "0o17" too from Go 1.13 on.
            #"[-+]?0[bB][01_]+"#,
            #"[-+]?0[oO][0-7_]+"#,
            #"[-+]?0[0-7_]+"#,
            #"[-+]?(0|[1-9][0-9_]*)"#,
            #"[-+]?0x[0-9a-fA-F_]+"#,
            #"[-+]?[1-9][0-9_]*(:[0-5]?[0-9])+"#,
            #"[-+]?([0-9][0-9_]*)?\.[0-9_]*([eE][-+]?[0-9]+)?"#,
            #"[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+\.[0-9_]*"#,
            #"[-+]?\.(inf|Inf|INF)"#,
            #"\.(nan|NaN|NAN)"#,
        ]
        for pattern in patterns {
            if let regex = try? Regex(pattern), (try? regex.wholeMatch(in: text)) != nil { return true }
        }
        guard let first = text.first, first.isASCII, first.isNumber || first == "+" || first == "-" || first == "." else {
            return false
        }
        return Double(text) != nil
    }

    /// True for `0` or a decimal without leading zeros that fits in Int64: the number's
    /// text is then the same after the parse.
    static func isCanonicalDecimal(_ text: String) -> Bool {
        guard let value = Int64(text), value >= 0 else { return false }
        return String(value) == text
    }

    /// True for text that starts like a YAML 1.1 timestamp, `YYYY-M-D`.
    static func looksLikeTimestamp(_ text: String) -> Bool {
        guard let regex = try? Regex(#"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([Tt ].*)?"#) else { return false }
        return (try? regex.wholeMatch(in: text)) != nil
    }
}

// GrubScript: the grub.cfg that boots a guest, and the quoting GRUB's parser needs.
//
// GRUB reads grub.cfg with shell-like rules. Blanks separate words. Unquoted, the
// characters `{ } | & $ ; < >` are special and a backslash escapes the next character.
// Inside double quotes `$` still expands variables. Inside single quotes every character
// is literal up to the next `'`. So a word is written single-quoted whenever it contains
// anything outside a small safe set, and a `'` inside is written as `'\''`. Adjacent
// quoted and unquoted parts form one word, as in a POSIX shell.
//
// The generated file (one menu entry, booted at once):
//
//     set timeout=0
//     set default=RancherOS
//
//     menuentry "bhyve-image" --id RancherOS {
//         set root=(hd0,msdos1)
//         linux /boot/<kernel> rancher.password='<password>' <kernel arguments>
//         initrd /boot/<initrd>
//     }

enum GrubScript {
    /// The kernel command-line key that carries the password.
    static let passwordKey = "rancher.password="

    /// Bytes that never need quoting in a GRUB word.
    private static let safeBytes = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-/=,:+@".utf8)

    /// Returns `word` as GRUB must read it back: unchanged when every byte is safe, otherwise
    /// single-quoted with each `'` written as `'\''`. The word must not contain a line
    /// break, which the line-by-line rewrite could not handle.
    static func quote(_ word: String) -> String {
        precondition(!word.contains("\n") && !word.contains("\r"), "Bug in imgtool: a GRUB word contains a line break")
        if !word.isEmpty, word.utf8.allSatisfy(safeBytes.contains) { return word }
        return "'" + word.replacingAll("'", with: #"'\''"#) + "'"
    }

    /// Returns the password word of the `linux` line: the key, then the value always
    /// single-quoted so that `$` in a crypt hash is never expanded.
    static func passwordWord(value: String) -> String {
        precondition(!value.contains("\n") && !value.contains("\r"), "Bug in imgtool: a password value contains a line break")
        return passwordKey + "'" + value.replacingAll("'", with: #"'\''"#) + "'"
    }

    /// Renders the whole grub.cfg for `entry` with `passwordWord` already quoted.
    static func configuration(entry: CatalogEntry, passwordWord: String) throws(InvalidArgumentError) -> String {
        try validateBootFileName(entry.kernel, argument: "kernel")
        try validateBootFileName(entry.initrd, argument: "initrd")
        var linux = ["linux", quote("/boot/" + entry.kernel), passwordWord]
        for argument in entry.kernelArguments {
            guard !argument.isEmpty, !argument.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
                throw InvalidArgumentError(argument: "kernel argument", value: argument,
                                           reason: "a kernel argument must be non-empty without control characters")
            }
            linux.append(quote(argument))
        }
        return """
        set timeout=0
        set default=RancherOS

        menuentry "bhyve-image" --id RancherOS {
        \tset root=(hd0,msdos1)
        \t\(linux.joined(separator: " "))
        \tinitrd \(quote("/boot/" + entry.initrd))
        }

        """
    }

    /// Rejects kernel and initrd names that are not one plain file name under /boot.
    static func validateBootFileName(_ name: String, argument: String) throws(InvalidArgumentError) {
        let allowed = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._+-".utf8)
        guard !name.isEmpty, !name.hasPrefix("."), name.utf8.allSatisfy(allowed.contains) else {
            throw InvalidArgumentError(argument: argument, value: name,
                                       reason: "expected a file name under /boot made of letters, digits, '.', '_', '+' and '-'")
        }
    }

    /// Returns the byte ranges of the words in one line, by GRUB's quoting rules. A word
    /// ends at an unquoted blank, and quotes and backslashes keep blanks inside it. An
    /// unterminated quote runs to the end of the line.
    static func wordRanges(in line: [UInt8]) -> [Range<Int>] {
        var ranges: [Range<Int>] = []
        var index = 0
        while index < line.count {
            while index < line.count, line[index] == UInt8(ascii: " ") || line[index] == UInt8(ascii: "\t") { index += 1 }
            guard index < line.count else { break }
            let start = index
            while index < line.count, line[index] != UInt8(ascii: " "), line[index] != UInt8(ascii: "\t") {
                switch line[index] {
                case UInt8(ascii: "'"):
                    index += 1
                    while index < line.count, line[index] != UInt8(ascii: "'") { index += 1 }
                    index = min(index + 1, line.count)
                case UInt8(ascii: "\""):
                    index += 1
                    while index < line.count, line[index] != UInt8(ascii: "\"") {
                        index += line[index] == UInt8(ascii: "\\") ? 2 : 1
                    }
                    index = min(index + 1, line.count)
                case UInt8(ascii: "\\"):
                    index = min(index + 2, line.count)
                default:
                    index += 1
                }
            }
            ranges.append(start..<index)
        }
        return ranges
    }

    /// Returns the value of a word after GRUB's quote removal, or nil when the value
    /// depends on a variable (`$` outside single quotes).
    static func unquote(_ word: ArraySlice<UInt8>) -> [UInt8]? {
        var value: [UInt8] = []
        var index = word.startIndex
        while index < word.endIndex {
            let byte = word[index]
            switch byte {
            case UInt8(ascii: "'"):
                index += 1
                while index < word.endIndex, word[index] != UInt8(ascii: "'") {
                    value.append(word[index])
                    index += 1
                }
                index += 1
            case UInt8(ascii: "\""):
                index += 1
                while index < word.endIndex, word[index] != UInt8(ascii: "\"") {
                    if word[index] == UInt8(ascii: "$") { return nil }
                    if word[index] == UInt8(ascii: "\\"), index + 1 < word.endIndex,
                       [UInt8(ascii: "$"), UInt8(ascii: "\""), UInt8(ascii: "\\")].contains(word[index + 1]) {
                        index += 1
                    }
                    value.append(word[index])
                    index += 1
                }
                index += 1
            case UInt8(ascii: "\\"):
                if index + 1 < word.endIndex { value.append(word[index + 1]) }
                index += 2
            case UInt8(ascii: "$"):
                return nil
            default:
                value.append(byte)
                index += 1
            }
        }
        return value
    }
}

extension String {
    /// Returns the string with every occurrence of `target` replaced by `replacement`.
    func replacingAll(_ target: String, with replacement: String) -> String {
        split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}

// A test-only model of the password's trip, written from GRUB's and RancherOS's rules
// independently of ImageCore's own scanner:
//
// 1. GRUB's script lexer (GRUB 2, grub-core/script/yylex.l) splits a grub.cfg line into
//    words. Blanks separate words and `{ } | & ; < >` are operators. `'...'` is literal,
//    `"..."` expands `$` and lets `\` escape `$ " \`, and an unquoted `\` escapes any
//    character. `#` at the start of a word starts a comment. No variable is defined in a
//    generated grub.cfg, so every expansion yields nothing.
// 2. GRUB builds the kernel command line from the words after the kernel path
//    (grub-core/lib/cmdline.c): a backslash before every `\`, `'` and `"`, double quotes
//    around a word with a space, one space between words.
// 3. RancherOS 1.x before 1.5.5 splits /proc/cmdline on every space, takes the text after
//    `rancher.password=`, and undoes `\"` and `\'`. The YAML step runs in PyYAML.

import Foundation

/// One token of a GRUB script line.
enum GrubToken: Equatable {
    /// A word after quote removal and expansion.
    case word([UInt8])
    /// An unquoted operator character, which ends a word.
    case operatorCharacter(UInt8)
}

enum GrubModel {
    private static let operators = Set("{}|&;<>".utf8)

    /// Splits one line into tokens by GRUB's lexer rules. Also reports whether any `$`
    /// expansion happened, which would change the word.
    static func split(_ line: [UInt8]) -> (tokens: [GrubToken], expanded: Bool) {
        var tokens: [GrubToken] = []
        var expanded = false
        var word: [UInt8] = []
        var inWord = false
        var index = 0

        func endWord() {
            if inWord { tokens.append(.word(word)) }
            word = []
            inWord = false
        }

        /// Skips a variable reference starting after `$`; returns the index after it.
        func skipVariable(from start: Int) -> Int {
            var position = start
            guard position < line.count else { return position }
            if line[position] == UInt8(ascii: "{") {
                while position < line.count, line[position] != UInt8(ascii: "}") { position += 1 }
                return min(position + 1, line.count)
            }
            if "?#@*0123456789".utf8.contains(line[position]) { return position + 1 }
            while position < line.count, line[position] == UInt8(ascii: "_") || isAlphanumeric(line[position]) {
                position += 1
            }
            return position
        }

        while index < line.count {
            let byte = line[index]
            if byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") {
                endWord()
                index += 1
            } else if operators.contains(byte) {
                endWord()
                tokens.append(.operatorCharacter(byte))
                index += 1
            } else if byte == UInt8(ascii: "#") && !inWord {
                break
            } else if byte == UInt8(ascii: "'") {
                inWord = true
                index += 1
                while index < line.count, line[index] != UInt8(ascii: "'") {
                    word.append(line[index])
                    index += 1
                }
                index += 1
            } else if byte == UInt8(ascii: "\"") {
                inWord = true
                index += 1
                while index < line.count, line[index] != UInt8(ascii: "\"") {
                    if line[index] == UInt8(ascii: "\\"), index + 1 < line.count,
                       "$\"\\".utf8.contains(line[index + 1]) {
                        word.append(line[index + 1])
                        index += 2
                    } else if line[index] == UInt8(ascii: "$") {
                        expanded = true
                        index = skipVariable(from: index + 1)
                    } else {
                        word.append(line[index])
                        index += 1
                    }
                }
                index += 1
            } else if byte == UInt8(ascii: "\\") {
                inWord = true
                if index + 1 < line.count { word.append(line[index + 1]) }
                index += 2
            } else if byte == UInt8(ascii: "$") {
                inWord = true
                expanded = true
                index = skipVariable(from: index + 1)
            } else {
                inWord = true
                word.append(byte)
                index += 1
            }
        }
        endWord()
        return (tokens, expanded)
    }

    /// Builds the kernel command line as GRUB does from `words`, the arguments after the kernel.
    static func kernelCommandLine(_ words: [[UInt8]]) -> [UInt8] {
        var line: [UInt8] = []
        for (position, word) in words.enumerated() {
            if position > 0 { line.append(UInt8(ascii: " ")) }
            let hasSpace = word.contains(UInt8(ascii: " "))
            if hasSpace { line.append(UInt8(ascii: "\"")) }
            for byte in word {
                if byte == UInt8(ascii: "\\") || byte == UInt8(ascii: "'") || byte == UInt8(ascii: "\"") {
                    line.append(UInt8(ascii: "\\"))
                }
                line.append(byte)
            }
            if hasSpace { line.append(UInt8(ascii: "\"")) }
        }
        return line
    }

    /// Extracts the `rancher.password` value as RancherOS before 1.5.5 reads it from
    /// `commandLine`, before its YAML parse.
    static func rancherPasswordValue(_ commandLine: [UInt8]) -> [UInt8]? {
        let key = Array("rancher.password=".utf8)
        for field in commandLine.split(separator: UInt8(ascii: " ")) where field.starts(with: key) {
            var value: [UInt8] = []
            var index = field.startIndex + key.count
            while index < field.endIndex {
                if field[index] == UInt8(ascii: "\\"), index + 1 < field.endIndex,
                   field[index + 1] == UInt8(ascii: "\"") || field[index + 1] == UInt8(ascii: "'") {
                    index += 1
                }
                value.append(field[index])
                index += 1
            }
            return value
        }
        return nil
    }

    /// Parses each value with PyYAML, a YAML 1.1 parser as the guest uses, and returns the
    /// text the guest would hand to chpasswd. A string stays as is, a number or boolean is
    /// printed as Go prints it, null becomes empty, and anything else becomes nil.
    static func yamlTexts(_ values: [[UInt8]]) throws -> [String?] {
        let script = """
        import json, sys, yaml
        out = []
        for value in json.load(sys.stdin):
            try:
                parsed = yaml.safe_load(value)
            except Exception:
                out.append(None); continue
            if isinstance(parsed, bool): out.append("true" if parsed else "false")
            elif parsed is None: out.append("")
            elif isinstance(parsed, (int, float, str)): out.append(str(parsed))
            else: out.append(None)
        json.dump(out, sys.stdout)
        """
        let input = try JSONSerialization.data(withJSONObject: values.map { String(decoding: $0, as: UTF8.self) })
        let result = try runProcess("python3", ["-c", script], input: input)
        guard result.status == 0 else { throw POSIXError(.EIO) }
        return try JSONDecoder().decode([String?].self, from: result.standardOutput)
    }
}

private func isAlphanumeric(_ byte: UInt8) -> Bool {
    (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
        || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
}

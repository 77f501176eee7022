// Data output that scripts read, shown safely when a person reads it on a terminal.

import Foundation
import ImageCore

/// Returns `text` for standard output. A pipe or a file gets `text` unchanged, because
/// scripts read those bytes. A terminal gets control characters, text-direction marks
/// and backslashes escaped, as `ls` escapes names on a terminal, so a name from a file
/// or catalog cannot move the cursor, send an escape sequence or reverse the line.
func escapingForTerminal(_ text: String, standardOutputIsTerminal: Bool = isatty(STDOUT_FILENO) == 1) -> String {
    standardOutputIsTerminal ? escapingControlCharacters(text) : text
}

/// Returns the JSON text `json` for standard output. A pipe or a file gets it unchanged.
/// A terminal gets the characters that `escapingForTerminal` escapes and JSON leaves as
/// they are (C1 controls such as U+009B, U+2028, text-direction marks) as `\uXXXX`
/// escapes, so the text is still valid JSON with the same value. JSON already escapes
/// the C0 controls, and these characters can only occur inside its strings.
func escapingJSONForTerminal(_ json: String, standardOutputIsTerminal: Bool = isatty(STDOUT_FILENO) == 1) -> String {
    guard standardOutputIsTerminal else { return json }
    var result = ""
    for scalar in json.unicodeScalars {
        let text = String(scalar)
        // escapingControlCharacters decides which characters a terminal must not receive.
        if escapingControlCharacters(text, doublingBackslashes: false) == text {
            result += text
        } else {
            for unit in text.utf16 {
                let hex = String(unit, radix: 16)
                result += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            }
        }
    }
    return result
}

/// Returns the number of terminal columns `text` takes: 2 for each wide East Asian
/// character and wide emoji, 0 for combining marks and invisible format characters,
/// 1 for the rest. The ranges cover the common wide blocks, not every Unicode
/// East Asian Width entry, so a rare wide character can still shift a column.
func terminalWidth(_ text: String) -> Int {
    text.unicodeScalars.reduce(0) { width, scalar in
        switch scalar.properties.generalCategory {
        case .nonspacingMark, .enclosingMark, .format: return width
        default: break
        }
        switch scalar.value {
        case 0x1100...0x115F, 0x2E80...0x303E, 0x3041...0x33FF, 0x3400...0x4DBF, 0x4E00...0x9FFF,
             0xA000...0xA4CF, 0xAC00...0xD7A3, 0xF900...0xFAFF, 0xFE30...0xFE4F, 0xFF00...0xFF60,
             0xFFE0...0xFFE6, 0x1F300...0x1F64F, 0x1F900...0x1F9FF, 0x20000...0x3FFFD:
            return width + 2
        default:
            return width + 1
        }
    }
}

/// Returns `text` followed by spaces up to `columns` terminal columns (see
/// `terminalWidth`), and at least one space.
func paddedForTerminal(_ text: String, to columns: Int) -> String {
    text + String(repeating: " ", count: max(1, columns - terminalWidth(text)))
}

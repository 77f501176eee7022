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

/// Returns the number of terminal columns `text` takes, scalar by scalar as glibc's
/// wcswidth counts them. A wide East Asian character and an emoji drawn as an emoji by
/// default (Emoji_Presentation) take 2. Combining marks, invisible format characters and
/// the Hangul vowels and final consonants that join the syllable before them take 0, and
/// the rest 1. Compared once with glibc 2.36's wcwidth over every scalar it defines, the
/// counts differed only at U+1171E. The wide ranges are whole blocks taken from Unicode's East
/// Asian Width data, so a wide character that Unicode adds outside them counts as one.
/// NOTE: an emoji sequence joined by U+200D counts as the sum of its emoji, and a
/// character with the emoji selector U+FE0F as its text form, as wcwidth counts them;
/// terminals that draw such a sequence as one emoji show it in two columns.
func terminalWidth(_ text: String) -> Int {
    text.unicodeScalars.reduce(0) { $0 + terminalColumns(of: $1) }
}

private func terminalColumns(of scalar: Unicode.Scalar) -> Int {
    switch scalar.value {
    case 0xAD, 0x600...0x605, 0x6DD, 0x70F, 0x890...0x891, 0x8E2, 0x110BD, 0x110CD:
        // Format characters that terminals draw: the soft hyphen as a hyphen, the others
        // as signs above or before the digits that follow.
        return 1
    case 0x1F1E6...0x1F1FF:
        // A flag is two of these regional indicators, drawn in two columns together.
        return 1
    case 0x1160...0x11FF, 0xD7B0...0xD7FF:
        // A decomposed Hangul syllable (as macOS stores file names) is a leading
        // consonant, two columns wide, followed by these.
        return 0
    default:
        break
    }
    switch scalar.properties.generalCategory {
    case .nonspacingMark, .enclosingMark, .format: return 0
    default: break
    }
    if scalar.properties.isEmojiPresentation { return 2 }
    switch scalar.value {
    case 0x1100...0x115F, 0x2329...0x232A, 0x2E80...0x303E, 0x3041...0x33FF, 0x3400...0x9FFF,
         0xA000...0xA4CF, 0xA960...0xA97F, 0xAC00...0xD7A3, 0xF900...0xFAFF, 0xFE10...0xFE19,
         0xFE30...0xFE6F, 0xFF00...0xFF60, 0xFFE0...0xFFE6, 0x16FE0...0x18DFF, 0x1AFF0...0x1B2FF,
         0x1F200...0x1F2FF, 0x20000...0x3FFFD:
        return 2
    default:
        return 1
    }
}

/// Returns `text` followed by spaces up to `columns` terminal columns (see
/// `terminalWidth`), and at least one space.
func paddedForTerminal(_ text: String, to columns: Int) -> String {
    text + String(repeating: " ", count: max(1, columns - terminalWidth(text)))
}

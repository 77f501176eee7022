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

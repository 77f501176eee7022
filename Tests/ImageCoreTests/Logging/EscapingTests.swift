// Messages quote paths and names that users chose; `escapingControlCharacters` keeps
// them from breaking a line, reaching the terminal as escape sequences, or reading
// backwards.

import Testing
@testable import ImageCore

@Suite("Escaping quoted values")
struct EscapingTests {
    @Test("breaking characters become escapes", arguments: [
        ("a\nb", "a\\u{A}b"),
        ("\u{1B}[2K", "\\u{1B}[2K"),
        ("tab\there", "tab\\u{9}here"),
        ("next\u{85}line", "next\\u{85}line"),
        ("line\u{2028}sep", "line\\u{2028}sep"),
        ("para\u{2029}sep", "para\\u{2029}sep"),
        ("evil\u{202E}war.exe", "evil\\u{202E}war.exe"),
        ("isolate\u{2066}x\u{2069}", "isolate\\u{2066}x\\u{2069}"),
        ("arabic\u{061C}mark", "arabic\\u{61C}mark"),
        ("marks\u{200E}\u{200F}", "marks\\u{200E}\\u{200F}"),
        ("c1\u{9B}31m", "c1\\u{9B}31m"),
    ])
    func breakingCharacters(_ form: (String, String)) {
        #expect(escapingControlCharacters(form.0) == form.1)
    }

    @Test("format characters on request")
    func formatCharacters() {
        #expect(escapingControlCharacters("vm\u{200B}_id", formatCharacters: true) == "vm\\u{200B}_id")
        #expect(escapingControlCharacters("\u{FEFF}id", formatCharacters: true) == "\\u{FEFF}id")
        #expect(escapingControlCharacters("vm\u{200B}_id") == "vm\u{200B}_id")
    }

    @Test("other text stays as it is", arguments: ["/mnt/tank/disk.raw", "café", "cafe\u{301}", "disque dur 😀", "👩\u{200D}💻", "שלום", "a/b", ""])
    func otherText(_ text: String) {
        #expect(escapingControlCharacters(text) == text)
    }

    @Test("backslash is doubled", arguments: [
        ("a\\u{A}b", "a\\\\u{A}b"),
        ("C:\\dir", "C:\\\\dir"),
        ("\\", "\\\\"),
        ("\\\n", "\\\\\\u{A}"),
    ])
    func backslash(_ form: (String, String)) {
        #expect(escapingControlCharacters(form.0) == form.1)
    }

    @Test("backslash kept on request")
    func backslashKept() {
        let serverReason = "unknown key 'a\\\\b'; other: 'k\\u{A}'\n"
        #expect(escapingControlCharacters(serverReason, doublingBackslashes: false) == "unknown key 'a\\\\b'; other: 'k\\u{A}'\\u{A}")
        #expect(escapingControlCharacters("a\\b", doublingBackslashes: false) == "a\\b")
    }

    @Test("escaped text names one input")
    func unambiguous() {
        let newline = escapingControlCharacters("a\nb")
        let sixCharacters = escapingControlCharacters("a\\u{A}b")
        #expect(newline == "a\\u{A}b")
        #expect(sixCharacters == "a\\\\u{A}b")
        #expect(newline != sixCharacters)
    }
}

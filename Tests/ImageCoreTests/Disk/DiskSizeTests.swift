import Testing
@testable import ImageCore

@Suite struct DiskSizeTests {
    /// Text, exact bytes requested, bytes after rounding up to 512.
    static let acceptedForms: [(String, Int64, Int64)] = [
        ("0", 0, 0),
        ("512", 512, 512),
        ("1", 1, 512),                                  // one byte rounds up to one sector
        ("1000", 1000, 1024),
        ("10737418240", 10_737_418_240, 10_737_418_240),
        ("1K", 1024, 1024),
        ("1k", 1024, 1024),
        ("1KiB", 1024, 1024),
        ("1kib", 1024, 1024),
        ("3M", 3 << 20, 3 << 20),
        ("3MiB", 3 << 20, 3 << 20),
        ("3mIb", 3 << 20, 3 << 20),
        ("20G", 20 << 30, 20 << 30),
        ("20g", 20 << 30, 20 << 30),
        ("20GiB", 20 << 30, 20 << 30),
        ("2T", 2 << 40, 2 << 40),
        ("2tib", 2 << 40, 2 << 40),
        ("4.5G", 4_831_838_208, 4_831_838_208),         // 4.5 * 2^30
        ("0.5K", 512, 512),
        ("0.1K", 103, 512),                             // 102.4 rounds up to 103 bytes, then 512
        ("1.5", 2, 512),                                // 1.5 bytes rounds up to 2
        ("1.250M", 1_310_720, 1_310_720),               // trailing zeros in the fraction carry no value
        ("0.000000000000000001T", 1, 512),              // 2^40 / 10^18 rounds up to 1 byte
        ("8388607T", 9_223_370_937_343_148_032, 9_223_370_937_343_148_032), // (2^23 - 1) * 2^40
        ("9223372036854775296", 9_223_372_036_854_775_296, 9_223_372_036_854_775_296), // the largest multiple of 512
    ]

    @Test(arguments: acceptedForms)
    func acceptedFormHasExactBytes(_ form: (String, Int64, Int64)) throws {
        let size = try DiskSize(parsing: form.0)
        #expect(size.requestedBytes == form.1)
        #expect(size.bytes == form.2)
        #expect(size.wasRounded == (form.1 != form.2))
    }

    /// Text and a word the reason must contain.
    static let rejectedForms: [(String, String)] = [
        ("", "empty"),
        ("-1", "negative"),
        ("-1G", "negative"),
        ("20gG", "unknown unit 'gG'"),
        ("1KB", "unknown unit 'KB'"),
        ("abc", "start with a digit"),
        (".5G", "start with a digit"),
        ("5.G", "decimal point"),
        ("1.5.5", "unknown unit '.5'"),
        ("0x10", "unknown unit 'x10'"),
        ("1e9", "unknown unit 'e9'"),
        ("+1G", "start with a digit"),
        ("8388608T", "exceeds the maximum"),            // exactly 2^63
        ("9223372036854775807", "rounded up"),          // Int64.max, but not after rounding to 512
        ("99999999999999999999", "exceeds the maximum"),
        ("1.0000000000000000001G", "18 decimal places"),
        ("10\u{212A}", "unknown unit"),                 // the Kelvin sign, which lowercases to "k"
        ("10\u{212A}iB", "unknown unit"),
    ]

    @Test(arguments: rejectedForms)
    func rejectedFormNamesReasonAndForms(_ form: (String, String)) {
        #expect {
            _ = try DiskSize(parsing: form.0)
        } throws: { error in
            guard let error = error as? InvalidArgumentError else { return false }
            let message = error.description
            return message.contains("'\(form.0)'") && message.contains(form.1) && message.contains(DiskSize.acceptedForms)
        }
    }

    /// Text with whitespace, the whitespace the reason must name, and the fix the remedy
    /// must give.
    static let whitespaceForms: [(String, String, String)] = [
        (" 10G", "a space at the start", "'10G'"),
        ("10G ", "a space at the end", "'10G'"),
        (" 8G ", "a space at the start", "'8G'"),
        ("1 G", "a space inside", "'1G'"),
        ("\t10G", "a tab at the start", "'10G'"),
        ("10G\t", "a tab at the end", "'10G'"),
        ("10G\n", "U+000A at the end", "'10G'"),
        ("10\u{00A0}G", "U+00A0 inside", "'10G'"),
        ("   ", "a space at the start", "such as '10G'"),
    ]

    @Test(arguments: whitespaceForms)
    func whitespaceIsRejectedWithFix(_ form: (String, String, String)) {
        #expect {
            _ = try DiskSize(parsing: form.0)
        } throws: { error in
            guard let error = error as? InvalidArgumentError else { return false }
            return error.value == form.0 && error.reason.contains("whitespace") && error.reason.contains(form.1)
                && (error.remedy ?? "").contains(form.2)
        }
    }

    /// Format characters such as a zero-width space or a byte order mark are invisible in
    /// a pasted size, so the reason must name them rather than an unknown unit.
    static let invisibleForms: [(String, String, String)] = [
        ("10\u{200B}G", "U+200B inside", "'10G'"),
        ("\u{FEFF}10G", "U+FEFF at the start", "'10G'"),
        ("10G\u{2060}", "U+2060 at the end", "'10G'"),
    ]

    @Test(arguments: invisibleForms)
    func invisibleCharacterIsRejectedWithFix(_ form: (String, String, String)) {
        #expect {
            _ = try DiskSize(parsing: form.0)
        } throws: { error in
            guard let error = error as? InvalidArgumentError else { return false }
            return error.value == form.0 && error.reason.contains(form.1) && (error.remedy ?? "").contains(form.2)
        }
    }

    @Test(arguments: [" 20", "20 ", "\t20", " 0"])
    func resizeRequestWithWhitespaceIsRejected(_ text: String) {
        #expect(throws: InvalidArgumentError.self) { _ = try DiskSize.parseResizeRequest(text) }
    }

    @Test func resizeRequestOfOnlySpacesNamesKeepForm() {
        #expect {
            _ = try DiskSize.parseResizeRequest("  ")
        } throws: { error in
            guard let error = error as? InvalidArgumentError else { return false }
            return error.reason.contains("whitespace") && (error.remedy ?? "").contains("empty string or \"0\"")
        }
    }

    @Test func resizeRequestBareNumberIsGiB() throws {
        let size = try #require(try DiskSize.parseResizeRequest("20"))
        #expect(size.bytes == 20 << 30)
    }

    @Test func resizeRequestWithUnitIsExact() throws {
        let size = try #require(try DiskSize.parseResizeRequest("512M"))
        #expect(size.bytes == 512 << 20)
    }

    @Test func resizeRequestDecimalGiB() throws {
        let size = try #require(try DiskSize.parseResizeRequest("1.5"))
        #expect(size.bytes == 3 << 29)
    }

    @Test(arguments: ["0", "", "0G", "0.0"])
    func resizeRequestZeroKeepsSize(_ text: String) throws {
        #expect(try DiskSize.parseResizeRequest(text) == nil)
    }

    @Test func resizeRequestNegativeIsRejected() {
        #expect(throws: InvalidArgumentError.self) { _ = try DiskSize.parseResizeRequest("-5") }
    }
}

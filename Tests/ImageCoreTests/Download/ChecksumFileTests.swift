// ChecksumFile parsing: every form of sha256sum output seen on download sites.

import Foundation
import Testing
@testable import ImageCore

@Suite struct ChecksumFileTests {
    static let emptyHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    static let otherHash = "9913e05287fc79407b4949c095419d2369491c4d833f9887a1a88d853701bb87"

    @Test func textModeEntry() {
        let file = ChecksumFile(parsing: "\(Self.emptyHash)  x.img.gz\n")
        #expect(file.entry(named: "x.img.gz")?.digest.hex == Self.emptyHash)
        #expect(file.entry(named: "x.img.gz")?.isBinary == false)
    }

    @Test func binaryModeEntry() {
        let file = ChecksumFile(parsing: "\(Self.emptyHash) *x.img.gz\n")
        #expect(file.entry(named: "x.img.gz")?.digest.hex == Self.emptyHash)
        #expect(file.entry(named: "x.img.gz")?.isBinary == true)
    }

    @Test func singleSpaceEntry() {
        let file = ChecksumFile(parsing: "\(Self.emptyHash) x.img.gz")
        #expect(file.entry(named: "x.img.gz")?.digest.hex == Self.emptyHash)
    }

    @Test func shortMultibyteLineIsSkipped() {
        // 40 characters of 2 UTF-8 bytes each: more than 65 bytes, fewer than 65 characters.
        let junk = String(repeating: "\u{E9}", count: 40)
        let file = ChecksumFile(parsing: "\(junk)\n\(Self.emptyHash)  x\n")
        #expect(file.entries.count == 1)
        #expect(file.entry(named: "x")?.digest.hex == Self.emptyHash)
    }

    @Test func crlfLineEnds() {
        let file = ChecksumFile(parsing: "\(Self.otherHash)  a\r\n\(Self.emptyHash)  x\r\n")
        #expect(file.entry(named: "x")?.digest.hex == Self.emptyHash)
        #expect(file.entry(named: "a")?.digest.hex == Self.otherHash)
    }

    @Test func byteOrderMarkBinaryMarkerAndCRLF() {
        let file = ChecksumFile(parsing: "\u{FEFF}\(Self.emptyHash) *x\r\n")
        #expect(file.entry(named: "x")?.digest.hex == Self.emptyHash)
    }

    @Test func byteOrderMarkFromRawBytes() {
        let bytes: [UInt8] = [0xEF, 0xBB, 0xBF] + Array("\(Self.emptyHash) *x\r\n".utf8)
        let file = ChecksumFile(parsing: String(decoding: bytes, as: UTF8.self))
        #expect(file.entry(named: "x")?.digest.hex == Self.emptyHash)
    }

    @Test func commentsAndBlankLinesAreSkipped() {
        let text = "# SHA-256 sums of the release\n\n   \n\(Self.emptyHash)  x\n# end\n"
        let file = ChecksumFile(parsing: text)
        #expect(file.entries.count == 1)
        #expect(file.entry(named: "x")?.digest.hex == Self.emptyHash)
    }

    @Test func upperCaseHex() {
        let file = ChecksumFile(parsing: "\(Self.emptyHash.uppercased())  x\n")
        #expect(file.entry(named: "x")?.digest.hex == Self.emptyHash)
    }

    @Test func pgpClearSignedWrapper() {
        let text = """
        -----BEGIN PGP SIGNED MESSAGE-----
        Hash: SHA256

        \(Self.otherHash)  rancheros.img.gz
        - \(Self.emptyHash)  x
        -----BEGIN PGP SIGNATURE-----

        iQIzBAEBCAAdFiEE\(Self.otherHash)
        -----END PGP SIGNATURE-----
        """
        let file = ChecksumFile(parsing: text)
        // Two signed entries; the dash-escaped line counts, the signature block does not.
        #expect(file.entries.count == 2)
        #expect(file.entry(named: "x")?.digest.hex == Self.emptyHash)
        #expect(file.entry(named: "rancheros.img.gz")?.digest.hex == Self.otherHash)
    }

    @Test func bsdTaggedEntry() {
        let file = ChecksumFile(parsing: "SHA256 (x.img.gz) = \(Self.emptyHash)\n")
        #expect(file.entry(named: "x.img.gz")?.digest.hex == Self.emptyHash)
    }

    @Test func openSSLDigestEntries() {
        // `openssl dgst -sha256 FILE` prints `SHA2-256(FILE)= HEX` in OpenSSL 3.0 and
        // `SHA256(FILE)= HEX` in OpenSSL 1.1.
        let text = "SHA2-256(x.img.gz)= \(Self.emptyHash)\r\nSHA256(y.img.gz)= \(Self.otherHash.uppercased())\n"
        let file = ChecksumFile(parsing: text)
        #expect(file.entries.count == 2)
        #expect(file.entry(named: "x.img.gz")?.digest.hex == Self.emptyHash)
        #expect(file.entry(named: "y.img.gz")?.digest.hex == Self.otherHash)
    }

    @Test func openSSLOtherDigestIsSkipped() {
        let sha512 = String(repeating: "ab", count: 64)
        let file = ChecksumFile(parsing: "SHA2-512(x.img.gz)= \(sha512)\nSHA512(x.img.gz)= \(sha512)\n")
        #expect(file.entries.isEmpty)
    }

    @Test func bareHashFileAppliesToAnyName() {
        // A `NAME.sha256` file beside a download often contains the hash alone.
        for text in ["\(Self.emptyHash)\n", "\(Self.emptyHash.uppercased())\r\n", "\u{FEFF}\(Self.emptyHash)", "# SHA-256\n\(Self.emptyHash) \n\n"] {
            let file = ChecksumFile(parsing: text)
            #expect(file.entry(named: "x.img.gz")?.digest.hex == Self.emptyHash, "text: \(text.debugDescription)")
            #expect(file.entry(named: "x.img.gz")?.fileName == "x.img.gz")
        }
    }

    @Test func bareHashAmongOtherLinesIsIgnored() {
        let beside = ChecksumFile(parsing: "\(Self.emptyHash)\n\(Self.otherHash)  y.img.gz\n")
        #expect(beside.entry(named: "x.img.gz") == nil)
        let twoHashes = ChecksumFile(parsing: "\(Self.emptyHash)\n\(Self.otherHash)\n")
        #expect(twoHashes.entry(named: "x.img.gz") == nil)
    }

    @Test func escapedFileName() {
        let file = ChecksumFile(parsing: "\\\(Self.emptyHash)  a\\\\b\\nc\n")
        #expect(file.entries.first?.fileName == "a\\b\nc")
    }

    @Test func exactNameWinsOverPathSuffix() {
        let text = "\(Self.otherHash)  old/x\n\(Self.emptyHash)  x\n"
        let file = ChecksumFile(parsing: text)
        #expect(file.entry(named: "x")?.digest.hex == Self.emptyHash)
    }

    @Test func nameWithDirectoryMatchesLastComponent() {
        let file = ChecksumFile(parsing: "\(Self.emptyHash)  ./images/x.img.gz\n")
        #expect(file.entry(named: "x.img.gz")?.digest.hex == Self.emptyHash)
    }

    @Test func similarNameDoesNotMatch() {
        let file = ChecksumFile(parsing: "\(Self.emptyHash)  x.img.gz.sig\n\(Self.emptyHash)  xx.img.gz\n")
        #expect(file.entry(named: "x.img.gz") == nil)
    }

    @Test func malformedLinesAreIgnored() {
        let text = """
        \(Self.emptyHash.dropLast())  short
        \(Self.emptyHash.dropLast())g  notHex
        \(Self.emptyHash)
        md5sum-style d41d8cd98f00b204e9800998ecf8427e  y
        """
        #expect(ChecksumFile(parsing: text).entries.isEmpty)
    }
}

@Suite struct SHA256Tests {
    @Test func emptyInput() {
        #expect(SHA256.hash(Data()).hex == ChecksumFileTests.emptyHash)
    }

    @Test func knownVector() {
        // FIPS 180-2, appendix B.1: SHA-256("abc").
        #expect(SHA256.hash(Data("abc".utf8)).hex == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    @Test func streamingEqualsOneShot() {
        let data = Data((0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        let hasher = SHA256()
        for start in stride(from: 0, to: data.count, by: 7_777) {
            hasher.update(data[start..<min(start + 7_777, data.count)])
        }
        #expect(hasher.count == 100_000)
        #expect(hasher.finalize() == SHA256.hash(data))
    }

    @Test func fileHashMatchesSha256sum() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        try writeRandomFile(scratch.file("f"), count: 3_000_001)
        #expect(try SHA256.hash(fileAt: scratch.file("f")).hex == sha256sum(scratch.file("f")))
    }

    @Test func hexParsing() {
        #expect(SHA256Digest(hex: ChecksumFileTests.emptyHash.uppercased())?.hex == ChecksumFileTests.emptyHash)
        #expect(SHA256Digest(hex: "00") == nil)
        #expect(SHA256Digest(hex: String(repeating: "z", count: 64)) == nil)
    }
}

@Suite struct DownloadResponseTests {
    @Test func contentRangeForms() {
        #expect(ContentRange("bytes 100-199/200") == ContentRange(first: 100, last: 199, total: 200))
        #expect(ContentRange("bytes 0-99/*")?.total == nil)
        #expect(ContentRange("bytes */5000")?.first == nil)
        #expect(ContentRange("bytes */5000")?.total == 5000)
    }

    @Test func invalidContentRanges() {
        for header in ["bytes 10-5/100", "bytes 0-100/100", "items 0-1/2", "bytes */*", "bytes 5/10", "bytes -1-5/10"] {
            #expect(ContentRange(header) == nil, "\(header)")
        }
    }

    @Test func stateValidatorComparison() {
        let state = DownloadState(url: "u", finalURL: "u", etag: "\"a\"", lastModified: "Mon", expectedLength: 10, sha256: "h")
        #expect(state.matches(etag: "\"a\"", lastModified: "Tue", length: 10))
        #expect(!state.matches(etag: "\"b\"", lastModified: "Mon", length: 10))
        #expect(!state.matches(etag: "\"a\"", lastModified: "Mon", length: 11))
        #expect(state.matches(etag: nil, lastModified: "Mon", length: nil))
        #expect(!state.matches(etag: nil, lastModified: "Tue", length: 10))
    }

    @Test func dnsFailureInPlainWords() {
        // CURLE_COULDNT_RESOLVE_HOST is 6 in curl.h.
        let failure = AttemptFailure.from(curlCode: 6, message: "Could not resolve host: mirror.invalid",
                                          url: "http://mirror.invalid/x.gz")
        #expect(failure.reason == "the host name 'mirror.invalid' could not be resolved (DNS lookup failed)")
        #expect(!failure.retryable)
    }

    @Test func headerLinesStartNewResponseOnStatus() {
        var headers = ResponseHeaders()
        headers.consume(line: "HTTP/1.1 302 Found\r\n")
        headers.consume(line: "Location: /b\r\n")
        headers.consume(line: "HTTP/1.1 206 Partial Content\r\n")
        headers.consume(line: "Content-Range: bytes 5-9/10\r\n")
        #expect(headers.statusCode == 206)
        #expect(headers["location"] == nil)
        #expect(headers["content-range"] == "bytes 5-9/10")
    }
}

@Suite struct ResumedProgressTests {
    @Test func rateCountsOnlyBytesAfterResume() {
        let updates = Recorded<ProgressUpdate>()
        let reporter = ProgressReporter(step: "download") { updates.append($0) }
        reporter.measureRate(from: 900_000)
        usleep(100_000)

        reporter.finish(completed: 1_000_000, total: 2_000_000)

        // 100 000 new bytes in at least 0.1 s: at most 1 000 000 bytes/s, where counting
        // the resumed 900 000 bytes too would give up to ten times that.
        #expect(updates.values.first!.bytesPerSecond <= 1_000_000)
        #expect(updates.values.first!.bytesPerSecond > 0)
    }
}

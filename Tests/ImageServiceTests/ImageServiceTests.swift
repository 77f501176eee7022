// Unit tests of the service's building blocks: JSON, framing, UTF-8, the handshake,
// job queries, redaction, path checks, the job manager, the inflation options, the replies to
// rejected messages and the auth.login_ex object. The protocol as clients see
// it is tested end to end in Tests/python with real WebSocket clients.

import Foundation
import Synchronization
@testable import ImageCore
import Testing
@testable import ImageService

/// A byte source over an in-memory buffer, for the frame reader.
struct BufferSource: ByteSource {
    var bytes: [UInt8]
    var offset = 0

    mutating func readExactly(_ count: Int) throws -> [UInt8] {
        guard bytes.count - offset >= count else { throw EndOfStream() }
        defer { offset += count }
        return Array(bytes[offset..<offset + count])
    }
}

@Suite("JSONValue")
struct JSONValueTests {
    @Test("number literals survive a round trip")
    func numberLiterals() throws {
        for literal in ["0", "-0", "1.0", "1e3", "9007199254740993", "-12.5E-3"] {
            #expect(try JSONValue.parse(literal).description == literal)
        }
    }

    @Test("strings with escapes and surrogate pairs")
    func stringEscapes() throws {
        let value = try JSONValue.parse(#""a\"b\\c\n\u00e9\ud83d\ude00""#)
        #expect(value == .string("a\"b\\c\né😀"))
        #expect(value.description == #""a\"b\\c\né😀""#)
    }

    @Test("duplicate keys are rejected", arguments: [#"{"a":1,"a":2}"#, #"{"a":1,"b":{"c":1,"c":1}}"#, #"{"\u0061":1,"a":2}"#])
    func duplicateKeys(text: String) {
        let error = #expect(throws: JSONParseError.self) { try JSONValue.parse(text) }
        #expect(error?.reason.contains("appears twice in one object") == true)
    }

    @Test("canonically equal keys rejected")
    func canonicallyEqualKeys() {
        let error = #expect(throws: JSONParseError.self) { try JSONValue.parse(#"{"caf\u00e9":1,"cafe\u0301":2}"#) }
        #expect(error?.duplicateKey == "caf\u{E9}")
        #expect(error?.reason.contains("the keys 'caf\u{E9}' and 'cafe\u{301}'") == true)
        #expect(error?.reason.contains("U+0063 U+0061 U+0066 U+00E9 and U+0063 U+0061 U+0066 U+0065 U+0301") == true)
        #expect(error?.reason.contains("canonical equivalence") == true)
    }

    /// The log and `imgtool call` escape the reason once more, and that escape doubles
    /// backslashes, so the reason quotes the key as sent rather than JSON-encoded.
    @Test("duplicate key quoted as sent")
    func duplicateKeyQuotedAsSent() throws {
        let error = #expect(throws: JSONParseError.self) { try JSONValue.parse(#"{"x\\y\n":1,"x\\y\n":2}"#) }
        let reason = try #require(error?.reason)
        #expect(reason.contains("the key 'x\\y\n' appears twice"))
        #expect(escapingControlCharacters(reason).contains(#"the key 'x\\y\u{A}' appears twice"#))
    }

    @Test("equal keys in separate objects")
    func keysInSeparateObjects() throws {
        let value = try JSONValue.parse(#"[{"a":1},{"a":2}]"#)
        #expect(value.arrayValue?.count == 2)
    }

    /// The reason gives the escape's offset (the byte of its backslash), not its code unit,
    /// because the string may be a password and the reason reaches the client and the log.
    @Test("lone surrogates are rejected",
          arguments: [(#""\ud800""#, 1), (#""\udc00""#, 1), (#""a\ud800\u0041""#, 2), (#""\ud800x""#, 1)])
    func loneSurrogates(text: String, offset: Int) throws {
        let error = #expect(throws: JSONParseError.self) { try JSONValue.parse(text) }
        let reason = try #require(error?.reason)
        #expect(reason.contains("surrogate without its other half"))
        #expect(!reason.lowercased().contains("d800"))
        #expect(!reason.lowercased().contains("dc00"))
        #expect(error?.offset == offset)
    }

    @Test("invalid texts are rejected", arguments: ["", "{", "[1,]", "01", "1.", "\"\u{01}\"", "tru", "{\"a\" 1}", "1 2", "\"\\x\""])
    func invalidTexts(text: String) {
        #expect(throws: JSONParseError.self) { try JSONValue.parse(text) }
    }

    @Test("nesting deeper than the limit is rejected")
    func nestingLimit() throws {
        let deep = String(repeating: "[", count: JSONValue.maximumDepth + 1) + String(repeating: "]", count: JSONValue.maximumDepth + 1)
        #expect(throws: JSONParseError.self) { try JSONValue.parse(deep) }
        let allowed = String(repeating: "[", count: JSONValue.maximumDepth) + String(repeating: "]", count: JSONValue.maximumDepth)
        #expect(try JSONValue.parse(allowed).arrayValue != nil)
    }

    @Test("integral accessors accept 5.0 and reject 5.5")
    func integerAccessor() {
        #expect(JSONValue.number("5.0").int64Value == 5)
        #expect(JSONValue.number("5.5").int64Value == nil)
        #expect(JSONValue.string("5").int64Value == nil)
    }

    @Test("dotted paths read nested members")
    func dottedPaths() throws {
        let value = try JSONValue.parse(#"{"progress":{"percent":50}}"#)
        #expect(value.value(atPath: "progress.percent") == .number("50"))
        #expect(value.value(atPath: "progress.missing") == nil)
    }
}

@Suite("UTF8Validator")
struct UTF8ValidatorTests {
    @Test("a code point split across feeds is valid")
    func splitCodePoint() {
        var validator = UTF8Validator()
        let firstAccepted = validator.feed([0xF0, 0x90])
        #expect(firstAccepted)
        #expect(!validator.isComplete)
        let secondAccepted = validator.feed([0x80, 0x80])
        #expect(secondAccepted)
        #expect(validator.isComplete)
    }

    @Test("invalid sequences are rejected", arguments: [[0xC0, 0xAF], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xFF], [0x80]] as [[UInt8]])
    func invalidSequences(bytes: [UInt8]) {
        #expect(!UTF8Validator.isValid(bytes))
    }
}

@Suite("FrameReader")
struct FrameReaderTests {
    let reader = FrameReader(expectMasked: true, maximumPayload: 100_000)

    @Test("a masked frame is unmasked")
    func maskedFrame() throws {
        var source = BufferSource(bytes: Frame(opcode: .text, payload: Array("hello".utf8)).encoded(mask: (1, 2, 3, 4)))
        let frame = try reader.next(from: &source)
        #expect(frame.payload == Array("hello".utf8))
        #expect(frame.fin)
    }

    @Test("16-bit and 64-bit lengths are read")
    func extendedLengths() throws {
        for count in [70_000, 200] {
            let payload = [UInt8](repeating: 0x41, count: count)
            var source = BufferSource(bytes: Frame(opcode: .binary, payload: payload).encoded(mask: (9, 9, 9, 9)))
            #expect(try reader.next(from: &source).payload.count == count)
        }
    }

    @Test("an unmasked client frame is a protocol error")
    func unmasked() {
        var source = BufferSource(bytes: Frame(opcode: .text, payload: [0x31]).encoded())
        #expect(throws: WebSocketProtocolError.self) { try reader.next(from: &source) }
    }

    @Test("a frame over the limit closes with 1009 before its payload is read")
    func overLimit() {
        // Only the header is present: the reader must reject on the length alone.
        var source = BufferSource(bytes: [0x81, 0xFF, 0, 0, 0, 0, 0, 0x10, 0, 0])
        do {
            _ = try reader.next(from: &source)
            Issue.record("expected an error")
        } catch let error as WebSocketProtocolError {
            #expect(error.closeCode == CloseCode.messageTooBig)
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test("close codes allowed on the wire")
    func closeCodes() {
        #expect(CloseCode.isValidOnWire(1000))
        #expect(!CloseCode.isValidOnWire(1005))
        #expect(!CloseCode.isValidOnWire(1006))
        #expect(!CloseCode.isValidOnWire(999))
        #expect(CloseCode.isValidOnWire(4000))
    }
}

@Suite("MessageAssembler")
struct MessageAssemblerTests {
    @Test("a ping between fragments does not break the message")
    func pingBetweenFragments() {
        let assembler = MessageAssembler(maximumMessageBytes: 1000)
        guard case .none = assembler.accept(Frame(fin: false, opcode: .text, payload: Array("Hel".utf8))) else {
            Issue.record("first fragment should not complete a message")
            return
        }
        guard case .ping(let payload) = assembler.accept(Frame(opcode: .ping, payload: [0x78])) else {
            Issue.record("ping expected")
            return
        }
        #expect(payload == [0x78])
        guard case .message(let bytes, let isText) = assembler.accept(Frame(opcode: .continuation, payload: Array("lo".utf8))) else {
            Issue.record("message expected")
            return
        }
        #expect(bytes == Array("Hello".utf8))
        #expect(isText)
    }

    @Test("total size over the limit closes with 1009")
    func totalLimit() {
        let assembler = MessageAssembler(maximumMessageBytes: 10)
        _ = assembler.accept(Frame(fin: false, opcode: .text, payload: [UInt8](repeating: 0x20, count: 6)))
        guard case .violation(let error) = assembler.accept(Frame(opcode: .continuation, payload: [UInt8](repeating: 0x20, count: 6))) else {
            Issue.record("violation expected")
            return
        }
        #expect(error.closeCode == 1009)
    }

    @Test("an empty close is echoed empty, a 1-byte close is 1002")
    func closeFrames() {
        let assembler = MessageAssembler(maximumMessageBytes: 10)
        guard case .close(let code) = assembler.accept(Frame(opcode: .close, payload: [])) else {
            Issue.record("close expected")
            return
        }
        #expect(code == nil)
        guard case .violation(let error) = assembler.accept(Frame(opcode: .close, payload: [3])) else {
            Issue.record("violation expected")
            return
        }
        #expect(error.closeCode == 1002)
    }
}

@Suite("Handshake")
struct HandshakeTests {
    @Test("accept value matches the example in RFC 6455 section 1.3")
    func acceptValue() {
        #expect(Handshake.acceptValue(forKey: "dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    }

    @Test("request without Upgrade is rejected with 426")
    func missingUpgrade() throws {
        let head = try #require(HTTPRequestHead.parse("GET /api/current HTTP/1.1\r\nHost: x\r\nConnection: Upgrade"))
        #expect(throws: HandshakeError.self) { try Handshake.validate(head) }
    }
}

@Suite("JobQuery")
struct JobQueryTests {
    let jobs: [JSONValue] = [
        .object(["id": .integer(1), "state": .string("SUCCESS"), "method": .string("vm.fetch_image")]),
        .object(["id": .integer(2), "state": .string("FAILED"), "method": .string("vm.decompress_gzip")]),
        .object(["id": .integer(3), "state": .string("RUNNING"), "method": .string("vm.fetch_image")]),
    ]

    func ids(_ filters: String, _ options: String = "{}") throws -> [Int64] {
        let query = try JobQuery(filters: try JSONValue.parse(filters), options: try JSONValue.parse(options))
        return try query.apply(to: jobs).arrayValue?.compactMap { $0["id"]?.int64Value } ?? []
    }

    @Test("equality and prefix filters")
    func filters() throws {
        #expect(try ids(#"[["method","=","vm.fetch_image"]]"#) == [1, 3])
        #expect(try ids(#"[["method","^","vm.dec"]]"#) == [2])
        #expect(try ids(#"[["id","nin",[1,2]]]"#) == [3])
    }

    @Test("descending order, offset and limit")
    func options() throws {
        #expect(try ids("[]", #"{"order_by":["-id"],"offset":1,"limit":1}"#) == [2])
    }

    @Test("an unknown operator is a validation error")
    func unknownOperator() {
        #expect(throws: RPCError.self) { try JobQuery(filters: try! JSONValue.parse(#"[["id","like",1]]"#), options: nil) }
    }
}

@Suite("Redaction")
struct RedactionTests {
    @Test("secret positions and secret member names are replaced")
    func redaction() throws {
        let redacted = redact([.string("vm"), .object(["password": .string("p&w"), "size": .string("20G")])], secretPositions: [0])
        #expect(redacted == .array([.string("********"), .object(["password": .string("********"), "size": .string("20G")])]))
    }
}

@Suite("PathGuard")
struct PathGuardTests {
    @Test("paths are taken relative to the root and '..' is rejected")
    func relativePaths() throws {
        let guardian = try PathGuard(root: "/tmp/")
        #expect(try guardian.relativePath("/tmp/a/b", argument: "x") == "a/b")
        #expect(try guardian.relativePath("a//b", argument: "x") == "a/b")
        #expect(throws: RPCError.self) { try guardian.relativePath("a/../b", argument: "x") }
        #expect(throws: RPCError.self) { try guardian.relativePath("/etc/passwd", argument: "x") }
    }

    /// Runs `body` with a guard of a new temporary root that contains the directory
    /// `tank`, and with the root's path. The root is removed afterwards.
    private func withTankRoot(_ body: (PathGuard, String) throws -> Void) throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("pathguard-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: root + "/tank", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        try body(try PathGuard(root: root), root)
    }

    // A file to create is expected not to exist, so the message must name its missing
    // directory, not the file.
    @Test("a new file in a missing directory names the directory")
    func newFileMissingDirectory() throws {
        try withTankRoot { guardian, _ in
            let error = #expect(throws: RPCError.self) { try guardian.newFile("tank/missing/disk.raw", argument: "dst") }
            #expect(error?.reason.contains("the directory 'tank/missing' does not exist") == true)
            #expect(error?.reason.contains("'tank/missing/disk.raw' does not exist") == false)
        }
    }

    // The caller's text is kept, but the slashes that separated the file's name from its
    // directory are not part of the directory's name.
    @Test("missing directory drops trailing slashes")
    func newFileMissingDirectorySlashes() throws {
        try withTankRoot { guardian, root in
            let error = #expect(throws: RPCError.self) { try guardian.newFile("tank//missing//disk.raw", argument: "dst") }
            #expect(error?.reason.contains("the directory 'tank//missing' does not exist") == true)
            let absolute = #expect(throws: RPCError.self) { try guardian.newFile(root + "/missing///disk.raw", argument: "dst") }
            #expect(absolute?.reason.contains("the directory '\(root)/missing' does not exist") == true)
        }
    }

    // A name over 255 bytes can never be created, so it is rejected before a job starts.
    @Test("a new file's overlong name is rejected up front")
    func newFileNameTooLong() throws {
        try withTankRoot { guardian, _ in
            let name = String(repeating: "x", count: 300)
            let error = #expect(throws: RPCError.self) { try guardian.newFile("tank/\(name)", argument: "dst") }
            #expect(error?.reason.contains("longer than the file system allows") == true)
        }
    }

    // POSIX resolves 'disk.raw/' only when disk.raw is a directory, and the command line
    // fails on it with ENOTDIR, so the guard must not drop the slash and open the file.
    @Test("existing file with trailing slash")
    func existingFileTrailingSlash() throws {
        try withTankRoot { guardian, root in
            #expect(FileManager.default.createFile(atPath: root + "/tank/disk.raw", contents: Data("x".utf8)))
            for value in ["tank/disk.raw/", "tank/disk.raw//", root + "/tank/disk.raw/"] {
                let error = #expect(throws: RPCError.self) { try guardian.existingFile(value, argument: "path", writable: true) }
                #expect(error?.reason.contains("names a directory") == true, "\(value)")
            }
            let checked = try guardian.existingFile("tank/disk.raw", argument: "path")
            #expect(checked.relativePath == "tank/disk.raw")
        }
    }

    // The root itself is inside the root: it is a directory, not an outside path.
    @Test("the root itself is not called outside")
    func rootItselfIsInside() throws {
        let guardian = try PathGuard(root: "/tmp")
        #expect(try guardian.relativePath("/tmp", argument: "x") == ".")
        let error = #expect(throws: RPCError.self) { try guardian.newFile("/tmp", argument: "dst") }
        #expect(error?.reason.contains("outside") == false)
        #expect(error?.reason.contains("names a directory") == true)
    }

    // ImageCore logs the /proc/self/fd names it was given, such as a temporary file beside
    // the destination. The admin must read the caller's names instead.
    @Test("log names caller paths")
    func logLinesNameCallersPaths() throws {
        try withTankRoot { guardian, _ in
            let lines = Mutex<[String]>([])
            let previousSink = Log.sink, previousLevel = Log.level
            Log.sink = { _, _, message in lines.withLock { $0.append(message) } }
            Log.level = .info
            defer {
                Log.sink = previousSink
                Log.level = previousLevel
            }
            var destination: CheckedPath? = try guardian.newFile("tank/disk.raw", argument: "dst")
            let usablePath = destination!.usablePath
            let directory = String(usablePath[..<usablePath.lastIndex(of: "/")!])
            let marker = "log-alias-\(UUID().uuidString)"

            Log.info("test", "\(marker) published '\(usablePath)'")
            Log.info("test", "\(marker) removed '\(directory)/.disk.raw.tmp'")
            destination = nil
            Log.info("test", "\(marker) after release '\(usablePath)'")

            let logged = lines.withLock { $0 }.filter { $0.hasPrefix(marker) }
            #expect(logged.count == 3)
            #expect(logged.first == "\(marker) published 'tank/disk.raw'")
            #expect(logged.dropFirst().first == "\(marker) removed 'tank/.disk.raw.tmp'")
            #expect(logged.last == "\(marker) after release '\(usablePath)'")
        }
    }

    // A caller's path may contain a newline or an escape sequence. Shown in a log line in
    // place of its /proc/self/fd name, it must neither start a forged line nor reach the
    // terminal as a control sequence.
    // `Log.render` is what every sink receives. Calling it directly keeps this test off
    // the shared `Log.sink`, which other tests swap while they run in parallel.
    @Test("log escapes caller path controls")
    func logLinesEscapeControlCharacters() throws {
        try withTankRoot { guardian, _ in
            let destination = try guardian.newFile("tank/a\nimgtool[service] info: forged\u{1B}[2K.raw", argument: "dst")
            let line = withExtendedLifetime(destination) { Log.render("published '\(destination.usablePath)'") }

            #expect(line == #"published 'tank/a\u{A}imgtool[service] info: forged\u{1B}[2K.raw'"#)
            #expect(!line.contains("\n"))
            #expect(!line.contains("\u{1B}"))
        }
    }

    // A caller's path is text it chose, and may contain another job's /proc/self/fd name.
    // Each alias applies to the message as logged, never to a name another alias put in.
    @Test("aliases skip caller paths")
    func logAliasesApplyOnce() throws {
        try withTankRoot { guardian, root in
            #expect(FileManager.default.createFile(atPath: root + "/tank/b.raw", contents: Data("x".utf8)))
            let other = try guardian.existingFile("tank/b.raw", argument: "src")
            let descriptorDirectory = "tank" + other.usablePath
            try FileManager.default.createDirectory(atPath: root + "/" + descriptorDirectory, withIntermediateDirectories: true)
            let destination = try guardian.newFile(descriptorDirectory + "/x.raw", argument: "dst")

            let line = withExtendedLifetime((other, destination)) { Log.render("published '\(destination.usablePath)'") }

            #expect(line == "published '\(descriptorDirectory)/x.raw'")
        }
    }

    // Descriptors are numbered from the lowest free one, so with many connections open
    // the source can be descriptor 7 and the destination's directory descriptor 70.
    @Test("translation skips a longer descriptor number")
    func translationSkipsLongerDescriptor() {
        let source = CheckedPath(displayPath: "tank/in.gz", relativePath: "tank/in.gz",
                                 usablePath: "/proc/self/fd/7", descriptor: -1)
        let destination = CheckedPath(displayPath: "tank/out.raw", relativePath: "tank/out.raw",
                                      usablePath: "/proc/self/fd/70/out.raw", descriptor: -1)

        let text = "read '/proc/self/fd/7', write '/proc/self/fd/70/out.raw'"
        #expect(source.translate(text) == "read 'tank/in.gz', write '/proc/self/fd/70/out.raw'")

        let error = SystemError("create", path: destination.usablePath, errno: Errno(rawValue: ENOSPC))
        let translated = TranslatedError.wrap(error, source, destination) as? SystemError
        #expect(translated?.path == "tank/out.raw")
    }
}

@Suite("RPCClient")
struct RPCClientTests {
    // The client speaks only JSON-RPC 2.0. On the DDP endpoint the server replies to its
    // request with {"msg": "failed"}, which carries no id, so the client waited forever.
    @Test("a URL path other than /api/current is rejected", arguments: ["/websocket", "/websocket/", "/", "/api"])
    func otherPathRejected(path: String) {
        #expect(throws: InvalidArgumentError.self) { try RPCClient(url: "ws://127.0.0.1:1\(path)") }
    }

    // The client sends no query and no credentials, so a URL with them is rejected
    // rather than shortened without a word.
    @Test("a URL with a query, fragment or user is rejected",
          arguments: ["ws://127.0.0.1:1/api/current?x=1", "ws://127.0.0.1:1/api/current#top",
                      "ws://bob:pw@127.0.0.1:1/api/current"])
    func extraURLPartsRejected(url: String) {
        let error = #expect(throws: InvalidArgumentError.self) { try RPCClient(url: url) }
        #expect(error?.reason.contains("which 'imgtool call' does not send") == true)
    }

    // Nothing listens on port 1, so a URL that passes validation fails to connect.
    @Test("no path and /api/current pass validation", arguments: ["", "/api/current"])
    func endpointPathAccepted(path: String) {
        #expect(throws: SocketError.self) { try RPCClient(url: "ws://127.0.0.1:1\(path)") }
    }

    // An IPv6 address in a message is bracketed, as in the URL, so the port is readable.
    @Test("a failed IPv6 connection names [host]:port")
    func ipv6AddressBracketed() {
        let error = #expect(throws: SocketError.self) { try RPCClient(url: "ws://[::1]:1/api/current") }
        #expect("\(error.map { "\($0)" } ?? "")".contains("[::1]:1"))
    }
}

@Suite("JobManager")
struct JobManagerTests {
    @Test("jobs under one lock run one after the other")
    func lockSerialises() async throws {
        let manager = JobManager()
        let first = manager.submit(method: "a", arguments: .array([]), lock: "container") { _ in
            usleep(100_000)
            return .null
        }
        let second = manager.submit(method: "b", arguments: .array([]), lock: "container") { _ in .null }
        #expect(first == 1)
        #expect(second == 2)
        #expect(manager.jobState(second) == .waiting)
        while manager.jobState(second) != .success { try await Task.sleep(for: .milliseconds(10)) }
        #expect(manager.jobState(first) == .success)
    }

    @Test("only the last 3 finished jobs are kept with a limit of 3")
    func retention() async throws {
        let manager = JobManager(retainedJobs: 3)
        // One lock makes the jobs finish in submission order; without it they run at once
        // and any three of them may be the last to finish.
        for _ in 0..<5 { _ = manager.submit(method: "m", arguments: .array([]), lock: "retention") { _ in .null } }
        while manager.allJobs().contains(where: { $0["state"] != .string("SUCCESS") }) {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(manager.allJobs().compactMap { $0["id"]?.int64Value } == [3, 4, 5])
    }

    // A call's error reply carries the remedy, and a job's error must too: a failed
    // vm.create_container reported "disk size ... is smaller than the inflated image"
    // without the size to give.
    @Test("a failed job's error includes the remedy")
    func failedJobKeepsRemedy() async throws {
        let manager = JobManager()
        let id = manager.submit(method: "m", arguments: .array([])) { _ in
            throw SystemError("write", path: "tank/disk.raw", errno: .noSpace)
        }
        while manager.jobState(id)?.isFinished != true { try await Task.sleep(for: .milliseconds(10)) }
        #expect(manager.jobState(id) == .failed)
        let job = try #require(manager.job(id))
        let error = try #require(job["error"]?.stringValue)
        #expect(error.contains("write 'tank/disk.raw' failed"))
        #expect(error.contains("free space on that filesystem"))
    }
}

@Suite("Inflation options")
struct InflationOptionsTests {
    @Test("vm.decompress_gzip decodes a stream as one chunk")
    func decompressOptions() {
        let token = CancellationToken()
        let options = VMMethods.decompressOptions(progress: { _ in }, cancellation: token)
        #expect(options.splitSingleStream)
        #expect(options.threads == VMMethods.decompressThreads)
        #expect(options.threads == 1)
        #expect(options.cancellation === token)
        #expect(options.progress != nil)
        #expect(options.index == nil)
        #expect(options.indexOutput == nil)
        #expect(!options.logsWarnings, "the job logs warnings with its id and the caller's paths")
    }

    @Test("provisioning uses at most 4 inflation threads",
          arguments: [(0, 1), (1, 1), (2, 2), (3, 3), (4, 4), (5, 4), (8, 4), (128, 4)])
    func provisioningThreads(processors: Int, expected: Int) {
        #expect(Provisioning.inflateThreads(processorCount: processors) == expected)
        #expect(Provisioning.inflateThreads(processorCount: processors) <= Provisioning.maximumInflateThreads)
    }
}

@Suite struct RPCErrnoTests {
    @Test func busyDiskIsEBUSY() {
        let error = RPCError.from(DiskError.busy(path: "/mnt/tank/vm.raw"))

        #expect(error.errno == EBUSY)
        #expect(error.errname == "EBUSY")
    }
}

@Suite("Rejected messages")
struct RejectedMessageTests {
    static let password = "Tr0ub4dor&3"
    static let apiKey = "1-" + String(repeating: "k3Y", count: 21) + "z"

    /// Returns the error a JSON-RPC session replies with for `text`, or nil for a valid
    /// request: the parser's reason as -32700, else the request check's -32600.
    static func rejection(_ text: String) -> RPCError? {
        let message: JSONValue
        do {
            message = try JSONValue.parse(text)
        } catch {
            return RPCError.parse(error.description)
        }
        do {
            _ = try JSONRPCRequest(message)
            return nil
        } catch {
            return error
        }
    }

    @Test("a parse error carries data with the reason")
    func parseErrorData() throws {
        let object = RPCError.parse("invalid JSON at byte 1: expected a string key").jsonRPCObject
        #expect(object["code"] == .integer(-32700))
        #expect(object["message"] == .string("Parse error"))
        let data = try #require(object["data"])
        #expect(data["error"] == .integer(Int(EINVAL)))
        #expect(data["errname"] == .string("EINVAL"))
        #expect(data["reason"] == .string("invalid JSON at byte 1: expected a string key"))
        #expect(data["trace"] == .null)
        #expect(data["extra"] == .null)
    }

    @Test("an invalid request carries data with the reason")
    func invalidRequestData() throws {
        let error = try #require(Self.rejection(#"{"jsonrpc":"1.0","id":1,"method":"core.ping"}"#))
        let object = error.jsonRPCObject
        #expect(object["code"] == .integer(-32600))
        #expect(object["message"] == .string("Invalid Request"))
        let data = try #require(object["data"])
        #expect(data["error"] == .integer(Int(EINVAL)))
        #expect(data["errname"] == .string("EINVAL"))
        #expect(data["reason"] == .string(#"'jsonrpc' must be "2.0""#))
        #expect(data["trace"] == .null)
        #expect(data["extra"] == .null)
    }

    /// Each text is a login or a guest request broken in one way, with the secret in the
    /// value that the parser or the request check stops at, or next to it.
    @Test("reasons quote no password or API key", arguments: [
        #"{"jsonrpc":"2.0","id":1,"method":"auth.login_with_api_key","params":["KEY""#,
        #"{"jsonrpc":"2.0","id":1,"method":"auth.login_with_api_key","params":["KEY"]}x"#,
        #"{"jsonrpc":"2.0","id":1,"method":"auth.login_with_api_key","params":["KEY"],"params":["KEY"]}"#,
        #"{"jsonrpc":"2.0","id":1,"method":"auth.login_with_api_key","params":["KEY\q"]}"#,
        #"{"jsonrpc":"2.0","id":1,"method":"vm.write_container_conf","params":[{"password":"PASS\ud83d"}]}"#,
        #"{"jsonrpc":"2.0","id":1,"method":"vm.write_container_conf","params":[{"password":"PASS\ude00x"}]}"#,
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"vm.write_container_conf\",\"params\":[{\"password\":\"PASS\u{01}\"}]}",
        #"{"jsonrpc":"2.0","id":1,"method":"vm.write_container_conf","params":[{"password":"PASS"}] "#,
        #"{"jsonrpc":"2.0","id":1,"method":"vm.write_container_conf","params":[{"password":"PASS","password":"PASS"}]}"#,
        #"{"jsonrpc":"2.0","id":1,"method":"auth.login_ex","params":[{"api_key":"KEY"}],"x":tru}"#,
        #"{"jsonrpc":"1.0","id":1,"method":"auth.login_with_api_key","params":["KEY"]}"#,
        #"{"jsonrpc":"2.0","id":["KEY"],"method":"auth.login_with_api_key","params":["KEY"]}"#,
        #"{"jsonrpc":"2.0","id":1,"method":["KEY"],"params":["PASS"]}"#,
        #""KEY""#,
        #"["KEY","PASS"]"#,
    ])
    func reasonsQuoteNoSecret(template: String) throws {
        let text = template.replacingOccurrences(of: "KEY", with: Self.apiKey)
            .replacingOccurrences(of: "PASS", with: Self.password)
        let error = try #require(Self.rejection(text), "the text must be rejected")
        let reply = JSONRPCRequest.errorResponse(id: .null, error).description
        #expect(!reply.contains(Self.apiKey))
        #expect(!reply.contains(Self.password))
        #expect(reply.contains(#""reason":"#))
    }
}

@Suite("auth.login_ex object")
struct APIKeyLoginTests {
    static let apiKey = "1-" + String(repeating: "k3Y", count: 21) + "z"

    /// Returns the attribute and the message of a validation error's one `extra` entry.
    func validation(_ error: RPCError) -> (attribute: String?, message: String?) {
        let entry = error.extra.arrayValue?.first?.arrayValue
        return (entry?.first?.stringValue, entry?.dropFirst().first?.stringValue)
    }

    func rejection(_ members: [String: JSONValue]) -> RPCError? {
        do {
            _ = try APIKeyLogin(.object(members))
            return nil
        } catch {
            return error
        }
    }

    @Test("every accepted key together")
    func acceptedKeys() throws {
        let login = try APIKeyLogin(.object([
            "mechanism": .string("API_KEY_PLAIN"), "username": .string("root"), "api_key": .string(Self.apiKey),
            "login_options": .object(["user_info": .bool(true)]),
        ]))
        #expect(login.apiKey == Self.apiKey)
    }

    @Test("optional keys absent or null")
    func optionalKeys() throws {
        let bare = try APIKeyLogin(.object(["mechanism": .string("API_KEY_PLAIN"), "api_key": .string(Self.apiKey)]))
        #expect(bare.apiKey == Self.apiKey)
        let nullOptions = try APIKeyLogin(.object(["mechanism": .string("API_KEY_PLAIN"), "api_key": .string(Self.apiKey),
                                                   "login_options": .null]))
        #expect(nullOptions.apiKey == Self.apiKey)
    }

    @Test("unknown key named with accepted keys")
    func unknownKey() throws {
        let error = try #require(rejection([
            "mechanism": .string("API_KEY_PLAIN"), "username": .string("root"), "api_key": .string(Self.apiKey),
            "otp_token": .string("123456"),
        ]))
        #expect(error.code == -32602)
        #expect(error.extra == .array([.array([
            .string("login_data.otp_token"),
            .string("unknown key 'otp_token'; auth.login_ex accepts mechanism, username, api_key and login_options"),
            .integer(Int(EINVAL)),
        ])]))
    }

    @Test("misspelt api_key suggested, value hidden")
    func misspeltAPIKey() throws {
        let error = try #require(rejection(["mechanism": .string("API_KEY_PLAIN"), "API_KEY": .string(Self.apiKey)]))
        #expect(error.reason.contains("unknown key 'API_KEY', did you mean 'api_key'?"))
        #expect(!error.description.contains(Self.apiKey))
        #expect(!error.dataObject.description.contains(Self.apiKey))
    }

    @Test("misspelling within two edits suggested")
    func misspelling() throws {
        let error = try #require(rejection(["mechanism": .string("API_KEY_PLAIN"), "api_kye": .string(Self.apiKey)]))
        #expect(error.reason.contains("unknown key 'api_kye', did you mean 'api_key'?; auth.login_ex accepts"))
        #expect(!error.reason.contains("case-sensitive"))
        #expect(!error.dataObject.description.contains(Self.apiKey))
    }

    @Test("short or distant keys get no guess")
    func noGuess() throws {
        for key in ["user", "apikey_value_x", "usr_nm"] {
            let error = try #require(rejection(["mechanism": .string("API_KEY_PLAIN"), "api_key": .string(Self.apiKey),
                                                key: .string("x")]))
            #expect(!error.reason.contains("did you mean"), "\(key)")
        }
    }

    @Test("edit distance counts a swap as one", arguments: [
        ("api_kye", "api_key", 1), ("usrname", "username", 1), ("mechansim", "mechanism", 1),
        ("kitten", "sitting", 3), ("", "abc", 3), ("abc", "", 3), ("same", "same", 0),
    ])
    func editDistance(_ a: String, _ b: String, _ expected: Int) {
        #expect(ObjectKeys.editDistance(Array(a.unicodeScalars), Array(b.unicodeScalars)) == expected)
    }

    @Test("several unknown keys are all named")
    func severalUnknownKeys() throws {
        let error = try #require(rejection(["mechanism": .string("API_KEY_PLAIN"), "api_key": .string(Self.apiKey),
                                            "password": .string("x"), "token": .string("y")]))
        #expect(error.reason.hasPrefix("[EINVAL] login_data.password: unknown key 'password'"))
        #expect(error.reason.hasSuffix("; other unknown keys: 'token'"))
    }

    @Test("other mechanism reported before keys")
    func otherMechanism() throws {
        let error = try #require(rejection(["mechanism": .string("PASSWORD_PLAIN"), "username": .string("root"),
                                            "password": .string("x")]))
        #expect(validation(error).attribute == "login_data.mechanism")
        #expect(validation(error).message == "'PASSWORD_PLAIN' is not supported; use API_KEY_PLAIN")
    }

    @Test("API key as mechanism not quoted")
    func keyAsMechanism() throws {
        let error = try #require(rejection(["mechanism": .string(Self.apiKey), "api_key": .string(Self.apiKey)]))
        #expect(validation(error).message == "the mechanism sent is not supported; use API_KEY_PLAIN")
        #expect(!error.dataObject.description.contains(Self.apiKey))
    }

    @Test("wrong types named without value", arguments: [
        ("mechanism", JSONValue.integer(1), "login_data.mechanism", #"expected the string "API_KEY_PLAIN", got a number"#),
        ("username", .integer(0), "login_data.username", "expected a string, got a number"),
        ("api_key", .array([]), "login_data.api_key", "expected the key as a string, got an array"),
        ("login_options", .string("user_info"), "login_data.login_options",
         #"expected an object such as {"user_info": false}, got a string"#),
    ])
    func wrongTypes(key: String, value: JSONValue, attribute: String, message: String) throws {
        var members: [String: JSONValue] = ["mechanism": .string("API_KEY_PLAIN"), "api_key": .string(Self.apiKey)]
        members[key] = value
        let error = try #require(rejection(members))
        #expect(validation(error).attribute == attribute)
        #expect(validation(error).message == message)
    }

    @Test("a missing api_key is named")
    func missingAPIKey() throws {
        let error = try #require(rejection(["mechanism": .string("API_KEY_PLAIN"), "username": .string("root")]))
        #expect(validation(error).attribute == "login_data.api_key")
        #expect(validation(error).message == "missing; expected the key as a string")
    }

    @Test("login_options takes boolean user_info")
    func loginOptions() throws {
        let base: [String: JSONValue] = ["mechanism": .string("API_KEY_PLAIN"), "api_key": .string(Self.apiKey)]
        var unknown = base
        unknown["login_options"] = .object(["user_info": .bool(false), "otp": .bool(true)])
        let unknownError = try #require(rejection(unknown))
        #expect(validation(unknownError).attribute == "login_data.login_options.otp")
        #expect(validation(unknownError).message == "unknown key 'otp'; login_options accepts only user_info")

        var wrongType = base
        wrongType["login_options"] = .object(["user_info": .string("yes")])
        let typeError = try #require(rejection(wrongType))
        #expect(validation(typeError).attribute == "login_data.login_options.user_info")
        #expect(validation(typeError).message == "expected true or false, got a string")
    }
}

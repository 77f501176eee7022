// Every file under fixtures/inflate/ against its expected result in expected.tsv.

import Foundation
import Testing
@testable import ImageCore

@Suite struct FixtureTests {
    struct Fixture: CustomTestStringConvertible, Sendable {
        var file: String
        var result: String
        /// The exact output, or nil when the file must be rejected.
        var output: [UInt8]?
        var testDescription: String { file }
    }

    static let directory = RealisticImageTests.repositoryRoot + "/fixtures/inflate"

    static func fixtures() throws -> [Fixture] {
        let table = try String(contentsOfFile: directory + "/expected.tsv", encoding: .utf8)
        return table.split(separator: "\n").filter { !$0.hasPrefix("#") }.map { line in
            let fields = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            return Fixture(file: fields[0], result: fields[1], output: fields[2] == "-" ? nil : bytes(hex: fields[2]))
        }
    }

    @Test func manifestListsEveryFile() throws {
        let listed = Set(try Self.fixtures().map(\.file))
        let present = Set(try directoryNames(Self.directory)).subtracting(["expected.tsv", "README.md"])
        #expect(listed == present)
    }

    @Test(arguments: try fixtures())
    func fixtureGivesExpectedResult(fixture: Fixture) throws {
        let input = try readFile(Self.directory + "/" + fixture.file)
        for engine in DeflateEngine.allCases {
            guard let expected = fixture.output else {
                #expect(throws: InflateError.self, "\(engine)") { _ = try inflateInMemory(input, engine: engine) }
                continue
            }
            let (output, summary) = try inflateInMemory(input, engine: engine)
            expectEqualBytes(output, expected, "\(engine)")
            #expect(summary.warnings.count == (fixture.result == "warning" ? 1 : 0), "\(engine)")
        }
    }
}

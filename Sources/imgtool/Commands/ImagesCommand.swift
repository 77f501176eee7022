// imgtool images: list the image catalog.

import Foundation
import ImageCore

enum ImagesCommand: Command {
    static let name = "images"
    static let summary = "List the image catalog."
    static let help = """
    Usage: imgtool images [--catalog FILE] [--json]

    Lists the images 'imgtool fetch' knows by name, oldest to newest; a bare name such as
    RancherOS means the newest version. A pipe or a file receives the catalog's text
    unchanged. On a terminal, control characters and text-direction marks are shown as
    \\u{...} escapes and a backslash as \\\\.

    Options:
      --catalog FILE   a catalog file to use instead of the default (or IMGTOOL_CATALOG);
                       with "extendsDefault": true its images are added to the default ones
      --json           print the catalog as JSON, in the catalog file format
    """

    static func run(_ arguments: [String], context: CommandContext) async throws -> Int32 {
        let parsed = try Arguments(arguments, options: ["--catalog"], flags: ["--json"])
        try parsed.requirePositionals(0...0, names: "no arguments")
        let catalog = try ImageCatalog.load(path: parsed.value("--catalog"))
        let entries = catalog.sortedEntries

        if parsed.flag("--json") {
            struct File: Encodable { var images: [CatalogEntry] }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(File(images: entries)), as: UTF8.self))
            return 0
        }

        let newest = Set(entries.compactMap { try? catalog.resolve($0.name).reference })
        let rows = entries.map { entry in
            let label = escapingForTerminal(entry.reference) + (newest.contains(entry.reference) ? " (newest)" : "")
            return (label: label, url: escapingForTerminal(redactingPassword(in: entry.url)))
        }
        // Columns on a terminal, not characters: a CJK name takes two per character.
        let width = max(5, rows.map { terminalWidth($0.label) }.max() ?? 0)
        print(paddedForTerminal("IMAGE", to: width + 2) + "URL")
        for row in rows {
            print(paddedForTerminal(row.label, to: width + 2) + row.url)
        }
        return 0
    }
}

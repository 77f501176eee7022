// imgtool images: list the image catalog.

import Foundation
import ImageCore

enum ImagesCommand: Command {
    static let name = "images"
    static let summary = "List the image catalog."
    static let help = """
    Usage: imgtool images [--catalog FILE] [--json]

    Lists the images 'imgtool fetch' knows by name, oldest to newest; a bare name such as
    RancherOS means the newest version.

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
        let width = max(5, entries.map { $0.reference.count + (newest.contains($0.reference) ? 9 : 0) }.max() ?? 0)
        print("IMAGE".padding(toLength: width + 2, withPad: " ", startingAt: 0) + "URL")
        for entry in entries {
            var label = entry.reference
            if newest.contains(label) { label += " (newest)" }
            print(label.padding(toLength: width + 2, withPad: " ", startingAt: 0) + redactingPassword(in: entry.url))
        }
        return 0
    }
}

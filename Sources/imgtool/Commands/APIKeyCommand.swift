import Foundation
import ImageCore
import ImageService

enum APIKeyCommand: Command {
    static let name = "apikey"
    static let summary = "Create, list or revoke API keys for the service."
    static let help = """
    Usage: imgtool apikey create NAME [--api-keys FILE]
           imgtool apikey list [--api-keys FILE]
           imgtool apikey revoke ID [--api-keys FILE]

    'create' prints the new key once; only its salted SHA-256 is stored, so a lost key
    cannot be shown again (revoke it and create another). Clients send the key with
    auth.login_with_api_key or auth.login_ex (mechanism API_KEY_PLAIN).

    Options:
      --api-keys FILE   the key store that 'imgtool serve' reads
                        (default \(ServiceConfiguration.defaultAPIKeysPath)).
    """

    static func run(_ arguments: [String], context: CommandContext) async throws -> Int32 {
        let parsed = try Arguments(arguments, options: ["--api-keys"])
        guard let action = parsed.positionals.first else {
            throw UsageError(message: "missing action: expected create, list or revoke")
        }
        let store = try APIKeyStore(path: parsed.value("--api-keys") ?? ServiceConfiguration.defaultAPIKeysPath)
        switch action {
        case "create":
            try parsed.requirePositionals(2...2, names: "create NAME")
            let (record, key) = try store.create(name: parsed.positionals[1])
            FileHandle.standardError.write(Data("imgtool: created API key \(record.id) '\(escapingControlCharacters(record.name))'; store it now, it is not shown again\n".utf8))
            print(key)
        case "list":
            try parsed.requirePositionals(1...1, names: "list")
            for record in store.keys {
                let created = Date(timeIntervalSince1970: Double(record.created) / 1000)
                // An escaped tab or newline cannot split the name into a forged column or row.
                print("\(record.id)\t\(escapingControlCharacters(record.name))\t\(ISO8601DateFormatter().string(from: created))")
            }
        case "revoke":
            try parsed.requirePositionals(2...2, names: "revoke ID")
            guard let id = Int(parsed.positionals[1]) else {
                throw UsageError(message: "invalid ID '\(parsed.positionals[1])': expected the number 'imgtool apikey list' shows")
            }
            guard try store.revoke(id: id) else {
                throw UsageError(message: "no API key with ID \(id); 'imgtool apikey list' shows the existing ones")
            }
        default:
            throw UsageError(message: "unknown action '\(action)': expected create, list or revoke")
        }
        return 0
    }
}

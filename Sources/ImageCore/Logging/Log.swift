// Logging for ImageCore and ImageService.
//
// The library logs through `Log`; the front end decides where lines go and from which
// level, by setting `Log.sink` and `Log.level`. The default writes to standard error at
// `warning` and above. Messages carry the ids involved and never a secret.

import Foundation
import Synchronization

public enum LogLevel: Int, Sendable, Comparable, CaseIterable {
    case debug, info, warning, error

    public static func < (lhs: LogLevel, rhs: LogLevel) -> Bool { lhs.rawValue < rhs.rawValue }

    public var name: String {
        switch self {
        case .debug: return "debug"
        case .info: return "info"
        case .warning: return "warning"
        case .error: return "error"
        }
    }

    public init?(name: String) {
        guard let level = LogLevel.allCases.first(where: { $0.name == name.lowercased() }) else { return nil }
        self = level
    }
}

public enum Log {
    public typealias Sink = @Sendable (LogLevel, String, String) -> Void

    private struct Configuration {
        var level: LogLevel = .warning
        var sink: Sink = Log.standardErrorSink
        /// Path aliases by token, applied to every message before it reaches the sink.
        var pathAliases: [Int: (path: String, name: String)] = [:]
        var nextAliasToken = 0
    }

    private static let configuration = Mutex(Configuration())

    /// The lowest level that is written.
    public static var level: LogLevel {
        get { configuration.withLock { $0.level } }
        set { configuration.withLock { $0.level = newValue } }
    }

    /// Receives (level, subsystem, message) for every line at or above `level`.
    public static var sink: Sink {
        get { configuration.withLock { $0.sink } }
        set { configuration.withLock { $0.sink = newValue } }
    }

    /// Writes `imgtool[subsystem] level: message` to standard error.
    public static let standardErrorSink: Sink = { level, subsystem, message in
        FileHandle.standardError.write(Data("imgtool[\(subsystem)] \(level.name): \(message)\n".utf8))
    }

    /// Makes every later log line show `name` in place of `path`, until
    /// `removePathAlias` is called with the returned token. The service registers each
    /// `/proc/self/fd/N` path it hands to ImageCore with the path its caller sent, so the
    /// admin reads the caller's path. An occurrence of `path` followed by a digit is left
    /// alone, because it is another descriptor's path.
    public static func addPathAlias(_ path: String, shownAs name: String) -> Int {
        configuration.withLock { configuration in
            configuration.nextAliasToken += 1
            configuration.pathAliases[configuration.nextAliasToken] = (path, name)
            return configuration.nextAliasToken
        }
    }

    public static func removePathAlias(_ token: Int) {
        _ = configuration.withLock { $0.pathAliases.removeValue(forKey: token) }
    }

    public static func debug(_ subsystem: String, _ message: @autoclosure () -> String) { write(.debug, subsystem, message) }
    public static func info(_ subsystem: String, _ message: @autoclosure () -> String) { write(.info, subsystem, message) }
    public static func warning(_ subsystem: String, _ message: @autoclosure () -> String) { write(.warning, subsystem, message) }
    public static func error(_ subsystem: String, _ message: @autoclosure () -> String) { write(.error, subsystem, message) }

    private static func write(_ level: LogLevel, _ subsystem: String, _ message: () -> String) {
        let (minimum, sink) = configuration.withLock { ($0.level, $0.sink) }
        guard level >= minimum else { return }
        sink(level, subsystem, render(message()))
    }

    /// Returns `message` as the sink receives it: with the path aliases applied and
    /// control characters escaped.
    static func render(_ message: String) -> String {
        let aliases = configuration.withLock { Array($0.pathAliases.values) }
        return escapingControlCharacters(replacingPaths(aliases, in: message))
    }

    /// Returns `text` with each alias path replaced by its name in one pass, so that a name
    /// (a path the caller chose) is never searched for another alias. At each place the
    /// longest matching path wins: `/proc/self/fd/7/disk.raw` before its directory
    /// `/proc/self/fd/7`. As in `replacingPath`, a match followed by a digit is skipped.
    static func replacingPaths(_ aliases: [(path: String, name: String)], in text: String) -> String {
        let longestFirst = aliases.filter { !$0.path.isEmpty }.sorted { $0.path.count > $1.path.count }
        guard !longestFirst.isEmpty else { return text }
        var result = ""
        var rest = text[...]
        while true {
            var earliest: (range: Range<Substring.Index>, name: String)?
            for alias in longestFirst {
                guard let match = firstMatch(of: alias.path, in: rest) else { continue }
                if earliest == nil || match.lowerBound < earliest!.range.lowerBound {
                    earliest = (match, alias.name)
                }
            }
            guard let earliest else { return result + rest }
            result += rest[..<earliest.range.lowerBound]
            result += earliest.name
            rest = rest[earliest.range.upperBound...]
        }
    }

    /// Returns the first occurrence of `path` in `text` that no digit follows.
    private static func firstMatch(of path: String, in text: Substring) -> Range<Substring.Index>? {
        var searched = text
        while let match = searched.range(of: path) {
            let followedByDigit = text[match.upperBound...].first.map { ("0"..."9").contains($0) } ?? false
            if !followedByDigit { return match }
            searched = text[match.upperBound...]
        }
        return nil
    }
}

/// Returns `text` with each control character, line or paragraph separator and
/// text-direction control written as a `\u{...}` escape, and each backslash doubled.
/// Messages quote paths and names that callers chose: a newline in one would start a
/// forged line, an escape sequence would reach the terminal, and U+202E would make the
/// rest read backwards. Doubling the backslash keeps the output unambiguous, because a
/// name that contains the six characters `\u{A}` is written `\\u{A}` and only a newline
/// is written `\u{A}`. With `formatCharacters`, every invisible format character
/// (U+200B, U+FEFF) is escaped too, for short identifiers; text keeps them, because
/// emoji and scripts join with U+200D. With `doublingBackslashes` false, backslashes are
/// kept as they are, for text that already went through this escape in part (a server's
/// message that quotes a key), so that its escapes are not escaped a second time.
public func escapingControlCharacters(_ text: String, formatCharacters: Bool = false,
                                      doublingBackslashes: Bool = true) -> String {
    func needsEscape(_ scalar: Unicode.Scalar) -> Bool {
        if scalar == "\\" { return doublingBackslashes }
        switch scalar.properties.generalCategory {
        case .control, .lineSeparator, .paragraphSeparator: return true
        case .format where formatCharacters: return true
        default: return Sharefs.isControlOrDirection(scalar)
        }
    }
    guard text.unicodeScalars.contains(where: needsEscape) else { return text }
    var result = String.UnicodeScalarView()
    for scalar in text.unicodeScalars {
        if scalar == "\\", doublingBackslashes {
            result.append(contentsOf: "\\\\".unicodeScalars)
        } else if needsEscape(scalar) {
            result.append(contentsOf: "\\u{\(String(scalar.value, radix: 16, uppercase: true))}".unicodeScalars)
        } else {
            result.append(scalar)
        }
    }
    return String(result)
}

/// Returns `text` with each occurrence of `path` replaced by `replacement`, except where a
/// digit follows it: `/proc/self/fd/7` is not the start of `/proc/self/fd/70`.
public func replacingPath(_ path: String, with replacement: String, in text: String) -> String {
    guard !path.isEmpty else { return text }
    var result = ""
    var rest = text[...]
    while let match = rest.range(of: path) {
        result += rest[..<match.lowerBound]
        let followedByDigit = rest[match.upperBound...].first.map { ("0"..."9").contains($0) } ?? false
        result += followedByDigit ? rest[match] : replacement[...]
        rest = rest[match.upperBound...]
    }
    return result + rest
}

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

    public static func debug(_ subsystem: String, _ message: @autoclosure () -> String) { write(.debug, subsystem, message) }
    public static func info(_ subsystem: String, _ message: @autoclosure () -> String) { write(.info, subsystem, message) }
    public static func warning(_ subsystem: String, _ message: @autoclosure () -> String) { write(.warning, subsystem, message) }
    public static func error(_ subsystem: String, _ message: @autoclosure () -> String) { write(.error, subsystem, message) }

    private static func write(_ level: LogLevel, _ subsystem: String, _ message: () -> String) {
        let (minimum, sink) = configuration.withLock { ($0.level, $0.sink) }
        guard level >= minimum else { return }
        sink(level, subsystem, message())
    }
}

// Progress display for the terminal: a bar with rate and time left on standard error,
// JSON lines on standard output, or nothing.

import Foundation
import ImageCore
import Synchronization

enum ProgressMode: String, CaseIterable {
    case auto, bar, json, none

    /// Parses `--progress`; nil (no option) means `auto`.
    static func parse(_ text: String?) throws -> ProgressMode {
        guard let text else { return .auto }
        guard let mode = ProgressMode(rawValue: text) else {
            throw UsageError(message: "invalid --progress '\(text)': expected auto, bar, json or none")
        }
        return mode
    }
}

/// Draws `ProgressUpdate` values. `auto` draws a bar when standard error is a terminal.
final class ProgressDisplay: Sendable {
    private let mode: ProgressMode
    private let drewBar = Atomic<Bool>(false)

    init(_ mode: ProgressMode) {
        self.mode = mode == .auto ? (isatty(STDERR_FILENO) == 1 ? .bar : .none) : mode
    }

    /// The handler to pass to ImageCore, or nil when nothing is shown.
    var handler: ProgressHandler? {
        switch mode {
        case .none, .auto: return nil
        case .bar: return { [self] progress in drawBar(progress) }
        case .json: return { progress in ProgressDisplay.printJSON(progress) }
        }
    }

    /// Ends the bar's line so later output starts on a new line.
    func finish() {
        if drewBar.load(ordering: .acquiring) { try? FileHandle.standardError.write(contentsOf: Data("\n".utf8)) }
    }

    private func drawBar(_ progress: ProgressUpdate) {
        drewBar.store(true, ordering: .releasing)
        let width = 30
        var line = "\r\u{1B}[K"
        if let percent = progress.percent {
            let filled = Int(percent / 100 * Double(width))
            line += "[" + String(repeating: "#", count: filled) + String(repeating: " ", count: width - filled) + "] "
            line += String(format: "%5.1f%% ", percent)
        }
        line += formatBytes(progress.completed)
        if let total = progress.total { line += " / " + formatBytes(total) }
        line += "  " + formatBytes(Int64(progress.bytesPerSecond)) + "/s"
        if let left = progress.secondsLeft { line += "  ETA " + formatDuration(left) }
        line += "  " + progress.step
        try? FileHandle.standardError.write(contentsOf: Data(line.utf8))
    }

    static func printJSON(_ progress: ProgressUpdate) {
        var object: [String: Any] = [
            "step": progress.step,
            "completed": progress.completed,
            "bytes_per_second": (progress.bytesPerSecond * 10).rounded() / 10,
            "elapsed": (progress.elapsed * 1000).rounded() / 1000,
        ]
        object["total"] = progress.total ?? NSNull()
        object["percent"] = progress.percent.map { ($0 * 100).rounded() / 100 } ?? NSNull()
        object["seconds_left"] = progress.secondsLeft.map { ($0 * 10).rounded() / 10 } ?? NSNull()
        if let written = progress.written { object["written"] = written }
        if let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) {
            try? FileHandle.standardOutput.write(contentsOf: data + Data("\n".utf8))
        }
    }
}

/// `1.5 GiB`-style text for a byte count.
func formatBytes(_ count: Int64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    var value = Double(count)
    var unit = 0
    while value >= 1024, unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    return unit == 0 ? "\(count) B" : String(format: "%.1f %@", value, units[unit])
}

/// `1:05:09` or `5:09`-style text for seconds.
func formatDuration(_ seconds: Double) -> String {
    let total = Int(seconds.rounded())
    let hours = total / 3600, minutes = (total % 3600) / 60, rest = total % 60
    return hours > 0 ? String(format: "%d:%02d:%02d", hours, minutes, rest) : String(format: "%d:%02d", minutes, rest)
}

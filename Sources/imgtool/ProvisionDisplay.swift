// Progress and summary output for `imgtool provision`: one bar for the whole job with
// the current step named, or the same numbers as JSON lines.

import Foundation
import ImageCore
import Synchronization

final class ProvisionDisplay: Sendable {
    private let mode: ProgressMode
    private let drewBar = Atomic<Bool>(false)

    init(mode: ProgressMode) {
        self.mode = mode == .auto ? (isatty(STDERR_FILENO) == 1 ? .bar : .none) : mode
    }

    var handler: ProvisionProgressHandler? {
        switch mode {
        case .none, .auto: return nil
        case .bar: return { [self] progress in drawBar(progress) }
        case .json: return { progress in ProvisionDisplay.printJSON(progress) }
        }
    }

    func finish() {
        if drewBar.load(ordering: .acquiring) { FileHandle.standardError.write(Data("\n".utf8)) }
    }

    private func drawBar(_ progress: ProvisionProgress) {
        drewBar.store(true, ordering: .releasing)
        let width = 30
        let filled = Int(progress.percent / 100 * Double(width))
        var line = "\r\u{1B}[K[" + String(repeating: "#", count: filled) + String(repeating: " ", count: width - filled) + "] "
        line += String(format: "%5.1f%% %@", progress.percent, progress.step)
        if let download = progress.download, progress.step.contains("download") {
            line += "  download " + formatBytes(download.completed)
            if let total = download.total { line += "/" + formatBytes(total) }
            line += " " + formatBytes(Int64(download.bytesPerSecond)) + "/s"
        }
        if let inflate = progress.inflate, progress.step.contains("inflate"), let written = inflate.written {
            line += "  inflated " + formatBytes(written)
        }
        line += "  " + formatDuration(progress.elapsed)
        FileHandle.standardError.write(Data(line.utf8))
    }

    static func printJSON(_ progress: ProvisionProgress) {
        var object: [String: Any] = [
            "step": progress.step,
            "percent": (progress.percent * 100).rounded() / 100,
            "elapsed": (progress.elapsed * 1000).rounded() / 1000,
        ]
        if let download = progress.download {
            object["download"] = ["completed": download.completed, "total": download.total ?? NSNull(),
                                  "bytes_per_second": download.bytesPerSecond.rounded()] as [String: Any]
        }
        if let inflate = progress.inflate {
            object["inflate"] = ["completed": inflate.completed, "total": inflate.total ?? NSNull(),
                                 "written": inflate.written ?? 0] as [String: Any]
        }
        writeJSONLine(object)
    }

    static func printSummary(_ summary: ProvisionSummary) {
        var text = "provisioned '\(summary.rawPath)' from \(summary.entry.reference)\n"
        text += "  image     '\(summary.imagePath)' (\(summary.download.reused ? "reused, verified" : "downloaded \(formatBytes(summary.download.bytesDownloaded)), verified"))\n"
        text += "  disk      \(formatBytes(summary.resize.newSize)) (\(summary.resize.newSize) bytes), inflated \(formatBytes(summary.inflate.bytesWritten)), allocated \(formatBytes(summary.inflate.allocatedBytes ?? 0))\n"
        text += "  grub      '\(summary.grub.grubConfigPath)'\n"
        text += "  device    '\(summary.grub.deviceMapPath)'\n"
        for path in summary.removedLeftovers { text += "  removed   '\(path)' (left by an interrupted run)\n" }
        text += "  steps    "
        text += summary.steps.map { String(format: " %@ %.2fs", $0.name, $0.seconds) }.joined(separator: ",")
        text += String(format: "\n  total     %.2fs, download and inflation overlapped %.2fs\n", summary.elapsed, summary.overlapSeconds)
        print(text, terminator: "")
    }

    static func printJSONSummary(_ summary: ProvisionSummary) {
        let object: [String: Any] = [
            "result": "success",
            "raw_path": summary.rawPath,
            "image": summary.entry.reference,
            "image_path": summary.imagePath,
            "image_reused": summary.download.reused,
            "bytes_downloaded": summary.download.bytesDownloaded,
            "inflated_bytes": summary.inflate.bytesWritten,
            "allocated_bytes": summary.inflate.allocatedBytes ?? 0,
            "disk_size": summary.resize.newSize,
            "grub_cfg": summary.grub.grubConfigPath,
            "device_map": summary.grub.deviceMapPath,
            "inflate_attempts": summary.inflateAttempts,
            "steps": summary.steps.map { ["name": $0.name, "start": $0.start, "seconds": $0.seconds] as [String: Any] },
            "overlap_seconds": summary.overlapSeconds,
            "elapsed": summary.elapsed,
        ]
        writeJSONLine(object)
    }

    private static func writeJSONLine(_ object: [String: Any]) {
        if let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) {
            FileHandle.standardOutput.write(data + Data("\n".utf8))
        }
    }
}

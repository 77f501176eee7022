// A job: a long call that runs in the background and reports progress, in the shape the
// middleware's clients read from `core.get_jobs`.

import Foundation
import ImageCore

/// A job's state. A job starts WAITING (for example behind a lock), runs, and ends in
/// exactly one of SUCCESS, FAILED or ABORTED.
public enum JobState: String, Sendable {
    case waiting = "WAITING"
    case running = "RUNNING"
    case success = "SUCCESS"
    case failed = "FAILED"
    case aborted = "ABORTED"

    public var isFinished: Bool { self == .success || self == .failed || self == .aborted }
}

/// One job's record, as the manager stores it.
struct JobRecord: Sendable {
    var id: Int64
    var method: String
    /// The call's arguments with passwords and keys already replaced.
    var arguments: JSONValue
    var description: String?
    var lock: String?
    var state: JobState = .waiting
    var percent: Double?
    var progressDescription: String?
    var progressExtra: JSONValue = .null
    var result: JSONValue = .null
    var error: String?
    var exception: String?
    var excInfo: JSONValue = .null
    /// The error as a client receives it when it waits for the job's end.
    var rpcError: RPCError?
    var timeStarted: Date
    var timeFinished: Date?
    var messageIDs: [JSONValue]

    /// The job in the middleware's `core.get_jobs` shape.
    var json: JSONValue {
        .object([
            "id": .integer(id),
            "method": .string(method),
            "arguments": arguments,
            "transient": .bool(false),
            "description": .optional(description),
            "abortable": .bool(true),
            "logs_path": .null,
            "logs_excerpt": .null,
            "progress": .object([
                "percent": percent.map { .double(($0 * 100).rounded() / 100) } ?? .null,
                "description": .optional(progressDescription),
                "extra": progressExtra,
            ]),
            "result": result,
            "result_encoding_error": .null,
            "error": .optional(error),
            "exception": .optional(exception),
            "exc_info": excInfo,
            "state": .string(state.rawValue),
            "time_started": JobRecord.date(timeStarted),
            "time_finished": timeFinished.map(JobRecord.date) ?? .null,
            "credentials": .null,
            "message_ids": .array(messageIDs),
        ])
    }

    /// A time as the middleware sends it: `{"$date": milliseconds since 1970}`.
    static func date(_ date: Date) -> JSONValue {
        .object(["$date": .integer(Int64((date.timeIntervalSince1970 * 1000).rounded()))])
    }
}

/// What a running job sees: its id, its cancellation token and a way to report progress.
public final class JobContext: Sendable {
    public let id: Int64
    public let cancellation: CancellationToken
    private let manager: JobManager

    init(id: Int64, cancellation: CancellationToken, manager: JobManager) {
        self.id = id
        self.cancellation = cancellation
        self.manager = manager
    }

    /// Sets the job's progress. `percent` is 0...100; `extra` is free-form (a fetch sends
    /// `{downloaded, total}`).
    public func setProgress(percent: Double?, description: String?, extra: JSONValue = .null) {
        manager.updateProgress(id: id, percent: percent, description: description, extra: extra)
    }

    /// A progress handler for ImageCore that maps one step's 0...100 % onto `range` of the
    /// job's single scale, so a job made of several steps shows one bar. `extra` turns an
    /// update into the `extra` object.
    public func progressHandler(
        description: String, range: ClosedRange<Double> = 0...100,
        extra: @escaping @Sendable (ProgressUpdate) -> JSONValue = JobContext.byteCounts
    ) -> ProgressHandler {
        { [self] update in
            let fraction = (update.percent ?? 0) / 100
            let percent = range.lowerBound + fraction * (range.upperBound - range.lowerBound)
            setProgress(percent: percent, description: description, extra: extra(update))
        }
    }

    /// `extra` for a generic step: bytes completed and the total.
    public static let byteCounts: @Sendable (ProgressUpdate) -> JSONValue = { update in
        var object: [String: JSONValue] = ["completed": .integer(update.completed),
                                           "total": update.total.map { .integer($0) } ?? .null]
        if let written = update.written { object["written"] = .integer(written) }
        return .object(object)
    }

    /// `extra` for a download, as the middleware's fetch job reported it.
    public static let downloadCounts: @Sendable (ProgressUpdate) -> JSONValue = { update in
        .object(["downloaded": .integer(update.completed), "total": update.total.map { .integer($0) } ?? .null])
    }
}

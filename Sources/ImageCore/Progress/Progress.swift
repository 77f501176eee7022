// Progress and cancellation for long operations.
//
// The library produces `ProgressUpdate` values; every front end (terminal bar, JSON lines, job
// events) reads the same numbers. Producers call `ProgressReporter.update` as often as
// they like: it computes rate and time left and forwards at most `interval` apart, plus
// the final value from `finish`.

import Foundation
import Synchronization

/// One observation of a long operation.
public struct ProgressUpdate: Sendable, Equatable, Codable {
    /// The step running now, for example "inflate" or "download".
    public var step: String
    /// Work done in the step's own unit (bytes of compressed input consumed, bytes
    /// downloaded). 64-bit: images over 4 GiB are normal.
    public var completed: Int64
    /// The total of `completed`, or nil when unknown (a chunked download).
    public var total: Int64?
    /// Bytes written to the output so far, holes included, when the step writes a file.
    public var written: Int64?
    /// Average rate of `completed` per second since the step started.
    public var bytesPerSecond: Double
    /// Estimated seconds left, or nil when the total or the rate is unknown.
    public var secondsLeft: Double?
    /// Seconds since the step started.
    public var elapsed: Double

    public init(step: String, completed: Int64, total: Int64?, written: Int64? = nil,
                bytesPerSecond: Double = 0, secondsLeft: Double? = nil, elapsed: Double = 0) {
        self.step = step
        self.completed = completed
        self.total = total
        self.written = written
        self.bytesPerSecond = bytesPerSecond
        self.secondsLeft = secondsLeft
        self.elapsed = elapsed
    }

    /// Percentage done in 0...100, or nil when the total is unknown. Never NaN.
    public var percent: Double? {
        guard let total else { return nil }
        if total <= 0 { return 100 }
        return min(100, max(0, Double(completed) * 100 / Double(total)))
    }
}

/// Receives progress; called from whichever thread does the work.
public typealias ProgressHandler = @Sendable (ProgressUpdate) -> Void

/// Rate-limits and annotates progress for one step. Thread-safe.
public final class ProgressReporter: Sendable {
    private struct State {
        var lastSent: ContinuousClock.Instant?
        var finished = false
        /// Where the rate is measured from; see `measureRate(from:)`.
        var rateBaseCompleted: Int64 = 0
        var rateBaseTime: ContinuousClock.Instant?
    }

    public let step: String
    private let handler: ProgressHandler?
    private let interval: Duration
    private let started = ContinuousClock.now
    private let state = Mutex(State())

    /// - Parameter interval: the minimum time between two forwarded updates.
    public init(step: String, interval: Duration = .milliseconds(200), handler: ProgressHandler?) {
        self.step = step
        self.interval = interval
        self.handler = handler
    }

    /// Records the current position; forwards it unless one was forwarded under
    /// `interval` ago.
    public func update(completed: Int64, total: Int64?, written: Int64? = nil) {
        guard let handler else { return }
        let now = ContinuousClock.now
        let send = state.withLock { state -> Bool in
            if state.finished { return false }
            if let last = state.lastSent, now - last < interval { return false }
            state.lastSent = now
            return true
        }
        if send { handler(snapshot(completed: completed, total: total, written: written, at: now)) }
    }

    /// Measures rate and time left from `completed` at this moment onwards, for work that
    /// resumes part-way (a download that continues from a partial file) or starts over.
    public func measureRate(from completed: Int64) {
        let now = ContinuousClock.now
        state.withLock { state in
            state.rateBaseCompleted = completed
            state.rateBaseTime = now
        }
    }

    /// Forwards the final position once, whatever the interval.
    public func finish(completed: Int64, total: Int64?, written: Int64? = nil) {
        guard let handler else { return }
        let first = state.withLock { state -> Bool in
            defer { state.finished = true }
            return !state.finished
        }
        if first { handler(snapshot(completed: completed, total: total, written: written, at: .now)) }
    }

    private func snapshot(completed: Int64, total: Int64?, written: Int64?, at now: ContinuousClock.Instant) -> ProgressUpdate {
        let elapsed = (now - started).seconds
        let (baseCompleted, baseTime) = state.withLock { ($0.rateBaseCompleted, $0.rateBaseTime ?? started) }
        let rateElapsed = (now - baseTime).seconds
        let rate = rateElapsed > 0 ? max(0, Double(completed - baseCompleted) / rateElapsed) : 0
        var left: Double?
        if let total, rate > 0 { left = max(0, Double(total - completed) / rate) }
        return ProgressUpdate(step: step, completed: completed, total: total, written: written,
                        bytesPerSecond: rate, secondsLeft: left, elapsed: elapsed)
    }
}

extension Duration {
    /// The duration in seconds as a Double.
    public var seconds: Double {
        let parts = components
        return Double(parts.seconds) + Double(parts.attoseconds) / 1e18
    }
}

/// A cancellation flag shared by an operation and whoever may stop it (a signal handler,
/// a job abort). Long loops call `check` between pieces of work.
public final class CancellationToken: Sendable {
    private let flag = Atomic<Bool>(false)
    private let parent: CancellationToken?

    /// Creates a token that is cancelled by its own `cancel` or by `parent`'s, so one part
    /// of an operation can be stopped without stopping the rest.
    public init(parent: CancellationToken? = nil) {
        self.parent = parent
    }

    public var isCancelled: Bool { flag.load(ordering: .acquiring) || parent?.isCancelled == true }

    public func cancel() { flag.store(true, ordering: .releasing) }

    /// Throws `CancelledError` naming `operation` once the token is cancelled.
    public func check(_ operation: String) throws(CancelledError) {
        if isCancelled { throw CancelledError(operation) }
    }
}

// JobManager: creates, runs, aborts and remembers jobs, and tells observers what changed.
//
// Threads: every running job has its own thread, because ImageCore's calls block for the
// whole operation. All job records live in one Mutex-protected `State`; a job's thread
// touches them only through the manager. Events leave through one serial queue,
// enqueued while the lock is held, so each observer sees a job's events in the order
// they happened: `added`, then `changed` events, the last with the final state.
//
// Rate limit: a progress update produces a `changed` event at most every
// `progressInterval`; updates in between are merged into one event sent when the
// interval ends. A state change is sent at once and carries the full job object.
//
// Locks: a job created with a lock name waits (WAITING) while another job holds that
// name, and the lock passes to the next waiting job, in creation order, when the holder
// finishes.

import Dispatch
import Foundation
import ImageCore
import Synchronization

/// One job event for observers: `added` when the job is created, `changed` afterwards.
public struct JobEvent: Sendable {
    public enum Kind: String, Sendable {
        case added, changed
    }

    public var kind: Kind
    public var id: Int64
    /// The whole job object: events carry full objects, so a client never merges fields.
    public var fields: JSONValue
    /// The event's frame per protocol, encoded by the first subscriber that needs it.
    let frames = EncodedFrames()
}

/// Frames encoded once and then shared: with many subscribers, encoding each event
/// once per subscriber made event delivery fall behind, and the undelivered events piled
/// up in memory without bound.
final class EncodedFrames: Sendable {
    private let frames = Mutex<[Session.ProtocolKind: [UInt8]]>([:])

    /// Returns the frame for `kind`, encoding `message()` on first use.
    func frame(for kind: Session.ProtocolKind, _ message: () -> JSONValue) -> [UInt8] {
        if let frame = frames.withLock({ $0[kind] }) { return frame }
        let frame = Frame(opcode: .text, payload: message().encoded).encoded()
        frames.withLock { $0[kind] = frame }
        return frame
    }
}

/// The code a job runs; its return value becomes the job's `result`.
public typealias JobBody = @Sendable (JobContext) throws -> JSONValue

public final class JobManager: Sendable {
    /// How many finished jobs are kept; older ones are dropped, oldest first.
    public let retainedJobs: Int
    /// The minimum time between two progress events of one job.
    public let progressInterval: Duration

    private struct State {
        var jobs: [Int64: JobRecord] = [:]
        /// Job ids in creation order, for listing and for dropping the oldest.
        var order: [Int64] = []
        var nextID: Int64 = 1
        var bodies: [Int64: JobBody] = [:]
        var tokens: [Int64: CancellationToken] = [:]
        var lockHolders: [String: Int64] = [:]
        var lockQueues: [String: [Int64]] = [:]
        /// Jobs with a progress update not yet sent, and when each last sent one.
        var dirty: Set<Int64> = []
        var lastProgressEvent: [Int64: ContinuousClock.Instant] = [:]
        var flushScheduled = false
        var finishWaiters: [Int64: [@Sendable (JSONValue, RPCError?) -> Void]] = [:]
        var observers: [UInt64: @Sendable (JobEvent) -> Void] = [:]
        var nextObserver: UInt64 = 1
        var running = 0
    }

    private let state = Mutex(State())
    private let events = DispatchQueue(label: "imgtool.jobs.events")

    public init(retainedJobs: Int = 1000, progressInterval: Duration = .milliseconds(250)) {
        self.retainedJobs = retainedJobs
        self.progressInterval = progressInterval
    }

    // MARK: Observers

    /// Registers `observer` for every job event; returns a token for `removeObserver`.
    /// The observer runs on the manager's event queue and must not block.
    public func addObserver(_ observer: @escaping @Sendable (JobEvent) -> Void) -> UInt64 {
        state.withLock { state in
            let token = state.nextObserver
            state.nextObserver += 1
            state.observers[token] = observer
            return token
        }
    }

    public func removeObserver(_ token: UInt64) {
        _ = state.withLock { $0.observers.removeValue(forKey: token) }
    }

    /// Calls `completion` with the result (or error) once job `id` has finished, at once
    /// when it already has. Returns false for an unknown id.
    @discardableResult
    public func whenFinished(_ id: Int64, _ completion: @escaping @Sendable (JSONValue, RPCError?) -> Void) -> Bool {
        let (known, finished): (Bool, JobRecord?) = state.withLock { state in
            guard let job = state.jobs[id] else { return (false, nil) }
            if job.state.isFinished { return (true, job) }
            state.finishWaiters[id, default: []].append(completion)
            return (true, nil)
        }
        if let finished { completion(finished.result, finished.rpcError) }
        return known
    }

    /// Waits until no job runs, or until `timeout` passes; returns whether none runs.
    public func waitUntilIdle(timeout: Duration) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while runningCount > 0 {
            if ContinuousClock.now >= deadline { return false }
            usleep(20_000)
        }
        return true
    }

    // MARK: Creating and reading jobs

    /// Creates a job and starts it, or queues it while `lock` is held by another job.
    /// - Parameters:
    ///   - arguments: the call's arguments, with secrets already redacted.
    ///   - messageIDs: request ids that wait for this job's end.
    public func submit(method: String, arguments: JSONValue, description: String? = nil, lock: String? = nil,
                       messageIDs: [JSONValue] = [], body: @escaping JobBody) -> Int64 {
        let id: Int64 = state.withLock { state in
            let id = state.nextID
            state.nextID += 1
            let record = JobRecord(id: id, method: method, arguments: arguments, description: description, lock: lock,
                                   timeStarted: Date(), messageIDs: messageIDs)
            state.jobs[id] = record
            state.order.append(id)
            state.bodies[id] = body
            state.tokens[id] = CancellationToken()
            emit(.added, record, in: &state)
            Log.info("jobs", "job \(id) \(method) created (WAITING)\(lock.map { " under lock '\($0)'" } ?? "")")
            if let lock, let holder = state.lockHolders[lock] {
                state.lockQueues[lock, default: []].append(id)
                Log.info("jobs", "job \(id) waits for lock '\(lock)' held by job \(holder)")
            } else {
                if let lock { state.lockHolders[lock] = id }
                start(id, in: &state)
            }
            return id
        }
        return id
    }

    /// The job object for `id`, or nil when no such job is kept.
    public func job(_ id: Int64) -> JSONValue? {
        state.withLock { $0.jobs[id]?.json }
    }

    /// The state of job `id`, or nil.
    public func jobState(_ id: Int64) -> JobState? {
        state.withLock { $0.jobs[id]?.state }
    }

    /// Every kept job, oldest first.
    public func allJobs() -> [JSONValue] {
        state.withLock { state in state.order.compactMap { state.jobs[$0]?.json } }
    }

    /// How many jobs are running now.
    public var runningCount: Int { state.withLock { $0.running } }

    /// Aborts job `id`: a waiting job ends ABORTED at once; a running one is cancelled and
    /// ends ABORTED when its operation stops. A finished job is left as it is.
    public func abort(_ id: Int64) throws(RPCError) {
        let known: Bool = state.withLock { state in
            guard let job = state.jobs[id] else { return false }
            switch job.state {
            case .waiting:
                if let lock = job.lock { state.lockQueues[lock]?.removeAll { $0 == id } }
                Log.info("jobs", "job \(id) aborted while WAITING")
                finish(id, state: .aborted, result: .null, error: CancelledError(job.method), in: &state)
            case .running:
                Log.info("jobs", "job \(id) abort requested")
                state.tokens[id]?.cancel()
            case .success, .failed, .aborted:
                break
            }
            return true
        }
        if !known { throw RPCError.call(ENOENT, "ENOENT", "job \(id) does not exist") }
    }

    // MARK: Running

    private func start(_ id: Int64, in state: inout State) {
        guard var job = state.jobs[id], let body = state.bodies[id], let token = state.tokens[id] else { return }
        job.state = .running
        state.jobs[id] = job
        state.running += 1
        emit(.changed, job, in: &state)
        Log.info("jobs", "job \(id) \(job.method) RUNNING")
        let context = JobContext(id: id, cancellation: token, manager: self)
        let method = job.method
        let thread = Thread.named("job-\(id)") { [self] in
            let started = ContinuousClock.now
            do {
                try token.check(method)
                let result = try body(context)
                complete(id, result: result, error: nil, elapsed: ContinuousClock.now - started)
            } catch {
                complete(id, result: .null, error: error, elapsed: ContinuousClock.now - started)
            }
        }
        thread.start()
    }

    private func complete(_ id: Int64, result: JSONValue, error: (any Error)?, elapsed: Duration) {
        state.withLock { state in
            guard let job = state.jobs[id] else { return }
            state.running -= 1
            let cancelled = error is CancelledError || (error != nil && state.tokens[id]?.isCancelled == true)
            let final: JobState = error == nil ? .success : (cancelled ? .aborted : .failed)
            let seconds = String(format: "%.3f", elapsed.seconds)
            if let error {
                Log.info("jobs", "job \(id) \(job.method) \(final.rawValue) after \(seconds) s: \(error)")
            } else {
                Log.info("jobs", "job \(id) \(job.method) SUCCESS after \(seconds) s")
            }
            finish(id, state: final, result: result, error: error, in: &state)
            if let lock = job.lock, state.lockHolders[lock] == id {
                state.lockHolders[lock] = nil
                if var queue = state.lockQueues[lock], !queue.isEmpty {
                    let next = queue.removeFirst()
                    state.lockQueues[lock] = queue
                    state.lockHolders[lock] = next
                    start(next, in: &state)
                }
            }
        }
    }

    /// Records the final state, sends the final `changed`, wakes waiters and drops the
    /// oldest finished jobs beyond `retainedJobs`.
    private func finish(_ id: Int64, state final: JobState, result: JSONValue, error: (any Error)?, in state: inout State) {
        guard var job = state.jobs[id] else { return }
        job.state = final
        job.result = result
        job.timeFinished = Date()
        if final == .success {
            job.percent = 100
        }
        if let error {
            let rpcError = RPCError.from(error)
            job.rpcError = rpcError
            // The remedy goes with the message, as it does in a call's error reply.
            var message = String(describing: error)
            if let remedy = (error as? any ImageError)?.remedy { message += " (\(remedy))" }
            job.error = final == .aborted ? "Job aborted: \(message)" : message
            job.exception = "\(type(of: error)): \(error)"
            job.excInfo = .object([
                "type": .string(final == .aborted ? "CancelledError" : "CallError"),
                "repr": .string("\(type(of: error))(\(String(reflecting: String(describing: error))))"),
                "errno": .integer(rpcError.errno),
                "extra": rpcError.extra,
            ])
        }
        state.jobs[id] = job
        state.bodies[id] = nil
        state.tokens[id] = nil
        state.dirty.remove(id)
        state.lastProgressEvent[id] = nil
        emit(.changed, job, in: &state)
        if let waiters = state.finishWaiters.removeValue(forKey: id) {
            let (result, rpcError) = (job.result, job.rpcError)
            events.async { for waiter in waiters { waiter(result, rpcError) } }
        }
        dropOldJobs(in: &state)
    }

    private func dropOldJobs(in state: inout State) {
        var excess = state.order.count - retainedJobs
        guard excess > 0 else { return }
        var kept: [Int64] = []
        kept.reserveCapacity(state.order.count)
        for id in state.order {
            if excess > 0, let job = state.jobs[id], job.state.isFinished {
                state.jobs[id] = nil
                excess -= 1
            } else {
                kept.append(id)
            }
        }
        state.order = kept
    }

    // MARK: Progress and events

    func updateProgress(id: Int64, percent: Double?, description: String?, extra: JSONValue) {
        state.withLock { state in
            guard var job = state.jobs[id], job.state == .running else { return }
            if let percent { job.percent = min(100, max(0, percent)) }
            if let description { job.progressDescription = description }
            job.progressExtra = extra
            state.jobs[id] = job
            let now = ContinuousClock.now
            if let last = state.lastProgressEvent[id], now - last < progressInterval {
                state.dirty.insert(id)
                scheduleFlush(after: progressInterval - (now - last), in: &state)
            } else {
                state.lastProgressEvent[id] = now
                emit(.changed, job, in: &state)
            }
        }
    }

    private func scheduleFlush(after delay: Duration, in state: inout State) {
        guard !state.flushScheduled else { return }
        state.flushScheduled = true
        let nanoseconds = Int(delay.components.seconds) * 1_000_000_000 + Int(delay.components.attoseconds / 1_000_000_000)
        events.asyncAfter(deadline: .now() + .nanoseconds(max(0, nanoseconds))) { [self] in flushProgress() }
    }

    private func flushProgress() {
        state.withLock { state in
            state.flushScheduled = false
            let now = ContinuousClock.now
            var earliest: Duration?
            for id in state.dirty {
                guard let job = state.jobs[id] else { continue }
                let last = state.lastProgressEvent[id] ?? now - progressInterval
                if now - last >= progressInterval {
                    state.dirty.remove(id)
                    state.lastProgressEvent[id] = now
                    emit(.changed, job, in: &state)
                } else {
                    let wait = progressInterval - (now - last)
                    earliest = min(earliest ?? wait, wait)
                }
            }
            if let earliest { scheduleFlush(after: earliest, in: &state) }
        }
    }

    /// Queues `job` for every observer. Called with the lock held, so events queue in the
    /// order their changes happened.
    private func emit(_ kind: JobEvent.Kind, _ job: JobRecord, in state: inout State) {
        let observers = Array(state.observers.values)
        guard !observers.isEmpty else { return }
        let event = JobEvent(kind: kind, id: job.id, fields: job.json)
        events.async { for observer in observers { observer(event) } }
    }
}

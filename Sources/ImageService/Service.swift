// ImageService: the adapter that serves ImageCore as the NAS middleware's `vm.*` methods.
//
// It contains no image logic. A method table maps each name to an ImageCore call, a job
// manager runs the long ones, and a WebSocket server speaks the middleware's two
// protocols on a Unix socket and, optionally, on a loopback TCP port.
//
// Threads: one accept thread per listener, a reader and a writer thread per connection,
// one thread per running job, and Dispatch's global queue for calls. Every bound below
// is enforced where the resource is taken.

import Dispatch
import Foundation
import ImageCore
import Synchronization

/// Settings for `imgtool serve`.
public struct ServiceConfiguration: Sendable {
    /// The Unix socket path used when `--socket` is not given.
    public static let defaultSocketPath = "/run/imgtool/imgtool.sock"
    /// The API key store used when `--api-keys` is not given.
    public static let defaultAPIKeysPath = "/var/lib/imgtool/api-keys.json"

    public var socketPath = ServiceConfiguration.defaultSocketPath
    /// A loopback TCP address to listen on as well, or nil.
    public var tcpHost: String?
    public var tcpPort: UInt16 = 0
    /// The directory that contains the pools (`/mnt` on the NAS). Caller paths must lie inside it.
    public var poolsRoot = "/mnt"
    public var apiKeysPath = ServiceConfiguration.defaultAPIKeysPath
    /// The directory of the file that records the active sharefs (see `SharefsConfiguration`).
    public var stateDirectory = SharefsConfiguration.defaultStateDirectory
    /// The largest WebSocket message accepted, in bytes; larger ones close with 1009.
    public var maximumMessageBytes = 1 << 20
    /// The maximum number of open connections of each kind: trusted (root on the Unix
    /// socket) and other. The next one of that kind gets HTTP 503 and is closed. Each kind
    /// has its own allowance, so clients that never log in cannot lock out root.
    public var maximumConnections = 256
    /// Calls one connection may have running; more get EBUSY.
    public var maximumCallsInFlight = 32
    /// Bytes queued for one client before it counts as too slow and is disconnected.
    public var sendQueueLimit = 8 << 20
    /// Seconds a send may make no progress before the client is disconnected.
    public var sendTimeoutSeconds = 30
    /// A catalog file to use instead of the embedded one (else IMGTOOL_CATALOG).
    public var catalogPath: String?
    /// Registers the `test.*` methods that the test suites use to drive the job machinery
    /// and the call limit without disk images: a cancellable sleep job (`test.sleep`) and
    /// a call that keeps its slot for a given time (`test.hold`).
    public var enableTestMethods = false

    public init() {}
}

public final class Service: Sendable {
    public let configuration: ServiceConfiguration
    public let jobs: JobManager
    public let paths: PathGuard
    public let keys: APIKeyStore
    public let methods: MethodTable
    public let sharefs: Sharefs
    public let catalog: ImageCatalog

    private struct State {
        var listeners: [Socket] = []
        var connections: [UInt64: Connection] = [:]
        var nextConnection: UInt64 = 1
        var stopping = false
    }

    private let state = Mutex(State())

    public init(configuration: ServiceConfiguration) throws {
        self.configuration = configuration
        self.jobs = JobManager()
        self.paths = try PathGuard(root: configuration.poolsRoot)
        self.keys = try APIKeyStore(path: configuration.apiKeysPath)
        self.sharefs = Sharefs(configuration: SharefsConfiguration(poolsRoot: self.paths.root,
                                                                   stateDirectory: configuration.stateDirectory))
        self.catalog = try ImageCatalog.load(path: configuration.catalogPath)
        var table = MethodTable()
        CoreMethods.register(in: &table)
        VMMethods.register(in: &table)
        ImageMethods.register(in: &table)
        if configuration.enableTestMethods { TestMethods.register(in: &table) }
        self.methods = table
    }

    /// Opens the listeners and starts accepting. Returns the TCP port actually bound
    /// (useful with port 0), or nil without a TCP listener.
    @discardableResult
    public func start() throws -> UInt16? {
        let directory = URL(fileURLWithPath: configuration.socketPath).deletingLastPathComponent().path
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let unix = try Socket.listenUnix(path: configuration.socketPath)
        var listeners = [unix]
        var port: UInt16?
        if let host = configuration.tcpHost {
            let tcp = try Socket.listenTCP(host: host, port: configuration.tcpPort)
            port = tcp.localPort
            listeners.append(tcp)
        }
        state.withLock { $0.listeners = listeners }
        for (index, listener) in listeners.enumerated() {
            let label = index == 0 ? configuration.socketPath : Socket.endpointLabel(host: configuration.tcpHost!, port: port ?? 0)
            Thread.named("accept-\(index)") { [self] in acceptLoop(listener, label: label) }.start()
        }
        var where_ = "unix:\(configuration.socketPath)"
        if let host = configuration.tcpHost, let port { where_ += " and tcp:\(Socket.endpointLabel(host: host, port: port))" }
        Log.info("service", "imgtool \(ImageCoreVersion.current) serving on \(where_), pools root \(configuration.poolsRoot), \(methods.names.count) methods")
        return port
    }

    /// Stops accepting, closes every connection, aborts running jobs and removes the
    /// socket. Waits up to 10 seconds for aborted jobs to remove their temporary files.
    public func stop() {
        let (listeners, connections) = state.withLock { state -> ([Socket], [Connection]) in
            state.stopping = true
            return (state.listeners, Array(state.connections.values))
        }
        for listener in listeners {
            listener.shutdown()
            listener.close()
        }
        unlink(configuration.socketPath)
        for connection in connections { connection.abort() }
        for job in jobs.allJobs() {
            if let id = job["id"]?.int64Value, let state = job["state"]?.stringValue, state == "RUNNING" || state == "WAITING" {
                try? jobs.abort(id)
            }
        }
        if !jobs.waitUntilIdle(timeout: .seconds(10)) {
            Log.warning("service", "\(jobs.runningCount) jobs still running 10 s after their abort; exiting anyway")
        }
        Log.info("service", "stopped; \(connections.count) connections closed")
    }

    private func acceptLoop(_ listener: Socket, label: String) {
        while true {
            let accepted: (Socket, String)
            do {
                accepted = try listener.accept()
            } catch {
                if state.withLock({ $0.stopping }) { return }
                if let errno = error as? Errno, errno.rawValue == EMFILE || errno.rawValue == ENFILE {
                    Log.error("service", "accept on \(label) failed: \(errno); retrying in 100 ms")
                    usleep(100_000)
                    continue
                }
                Log.error("service", "accept on \(label) failed: \(error); listener stopped")
                return
            }
            let (socket, peer) = accepted
            let credentials = peer == "unix" ? socket.peerCredentials() : nil
            let trusted = Service.isTrusted(credentials)
            let connection: Connection? = state.withLock { state in
                guard !state.stopping else { return nil }
                let open = state.connections.values.count { Service.isTrusted($0.credentials) == trusted }
                guard open < configuration.maximumConnections else { return nil }
                let connection = Connection(id: state.nextConnection, socket: socket, peer: peer,
                                            credentials: credentials, service: self)
                state.nextConnection += 1
                state.connections[connection.id] = connection
                return connection
            }
            guard let connection else {
                let kind = trusted ? "trusted (root on the Unix socket)" : "untrusted"
                Log.warning("service", "connection from \(peer) rejected: \(configuration.maximumConnections) \(kind) connections open")
                try? socket.sendAll(Array(Handshake.errorResponse(status: 503, reason: "too many connections").utf8))
                socket.close()
                continue
            }
            connection.start()
        }
    }

    /// Returns whether a peer with `credentials` (nil over TCP) is trusted without
    /// logging in, which only root on the Unix socket is.
    static func isTrusted(_ credentials: PeerCredentials?) -> Bool {
        credentials?.uid == 0
    }

    func connectionEnded(_ connection: Connection) {
        _ = state.withLock { $0.connections.removeValue(forKey: connection.id) }
    }

    /// How many connections are open now.
    public var connectionCount: Int { state.withLock { $0.connections.count } }
}

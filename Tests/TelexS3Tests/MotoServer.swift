// A moto_server (moto's S3 API server, from PyPI) in a child process, for tests against a real S3 API on
// loopback. Self-contained (Foundation only) so other test targets can copy this file as it is.
//
// Use it as a suite trait: `@Suite(.motoServer) struct MyTests { ... MotoServer.current ... }` starts one
// server for the whole suite on a free port and stops it after the suite's last test. If moto_server is not
// installed the suite FAILS (never skips), saying how to install it.
import Foundation
import Glibc
import Synchronization
import Testing

/// One moto_server process on 127.0.0.1; `stop()` and `start()` restart it on the same port (its data is lost).
actor MotoServer {
    /// The server of the running suite (set by the `.motoServer` trait).
    @TaskLocal static var current: MotoServer?

    let port: Int
    let executable: String
    let logPath: String
    private var process: Process?
    private var exited: ExitSignal?

    nonisolated var endpoint: URL { URL(string: "http://127.0.0.1:\(port)")! }

    private init(port: Int, executable: String) {
        self.port = port
        self.executable = executable
        self.logPath = NSTemporaryDirectory() + "moto-\(getpid())-\(port).log"
    }

    /// The suite's server; fails the test when it runs outside a `.motoServer` suite.
    static func shared() throws -> MotoServer {
        guard let current else { throw MotoServerError("no moto_server: put the suite under the .motoServer trait") }
        return current
    }

    /// Starts a server on a free port (a few tries, in case another process takes the port first).
    static func launch() async throws -> MotoServer {
        let executable = try findExecutable()
        var lastError: (any Error)?
        for _ in 0..<3 {
            let server = MotoServer(port: try freePort(), executable: executable)
            do {
                try await server.start()
                return server
            } catch {
                lastError = error
            }
        }
        throw lastError!
    }

    /// Starts the process (again) on this server's port and waits until it accepts connections.
    func start() async throws {
        guard process == nil else { return }
        guard FileManager.default.createFile(atPath: logPath, contents: nil) else {
            throw MotoServerError("cannot create the moto_server log \(logPath)")
        }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["-H", "127.0.0.1", "-p", "\(port)"]
        process.standardOutput = log
        process.standardError = log
        let exited = ExitSignal()
        process.terminationHandler = { _ in exited.signal() }
        try process.run()
        try? log.close()
        self.process = process
        self.exited = exited

        let deadline = ContinuousClock.now + .seconds(30)
        while !Self.accepts(port: port) {
            if exited.hasExited || ContinuousClock.now > deadline {
                await stop()
                let output = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
                let why = exited.hasExited ? "it exited" : "no answer in 30 s"
                throw MotoServerError(
                    "moto_server on port \(port) did not start (\(why)): " + output.suffix(2000)
                )
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Kills the process and waits for it to exit; connections to the port are refused afterwards. SIGKILL, not
    /// SIGTERM: the child inherits the test runner's signal mask, in which SIGTERM is blocked (moto keeps nothing).
    func stop() async {
        guard let process, let exited else { return }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        await exited.wait()
        self.process = nil
        self.exited = nil
    }

    /// Turns on moto's authentication and returns the access key of a new IAM user allowed everything. From then
    /// on every request must be signed with a known key, and moto checks the signature (recomputing it with
    /// botocore), so wrong credentials are answered 403. Runs python3 with boto3 (a dependency of moto).
    func requireAuthentication() async throws -> (accessKeyID: String, secretAccessKey: String) {
        let script = """
            import boto3, json, sys, urllib.request
            endpoint, user = sys.argv[1], sys.argv[2]
            iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                               aws_access_key_id="setup", aws_secret_access_key="setup")
            iam.create_user(UserName=user)
            iam.put_user_policy(UserName=user, PolicyName="everything", PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
            key = iam.create_access_key(UserName=user)["AccessKey"]
            urllib.request.urlopen(urllib.request.Request(endpoint + "/moto-api/reset-auth", data=b"0",
                                   method="POST", headers={"Content-Type": "text/plain"}))
            print(key["AccessKeyId"])
            print(key["SecretAccessKey"])
            """
        let outputPath = logPath + ".credentials"
        defer { try? FileManager.default.removeItem(atPath: outputPath) }
        guard FileManager.default.createFile(atPath: outputPath, contents: nil) else {
            throw MotoServerError("cannot create \(outputPath)")
        }
        let output = try FileHandle(forWritingTo: URL(fileURLWithPath: outputPath))
        let python = Process()
        python.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        let user = "telex-\(UUID().uuidString.prefix(8))"
        python.arguments = ["python3", "-c", script, endpoint.absoluteString, user]
        python.standardOutput = output
        python.standardError = output
        let exited = ExitSignal()
        python.terminationHandler = { _ in exited.signal() }
        try python.run()
        try? output.close()
        await exited.wait()
        let text = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
        let lines = text.split(separator: "\n").map(String.init)
        guard python.terminationStatus == 0, lines.count == 2 else {
            throw MotoServerError("could not turn on moto's authentication: \(text.suffix(2000))")
        }
        return (lines[0], lines[1])
    }

    /// Deletes the server's output file (kept when the suite failed, for its requests and errors).
    func removeLog() {
        try? FileManager.default.removeItem(atPath: logPath)
    }

    /// Whether something accepts TCP connections on 127.0.0.1:port.
    private static func accepts(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = loopback(port: port)
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }

    /// A port nothing listens on now: bind port 0, read the port the kernel chose, close.
    private static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw MotoServerError("socket() failed: errno \(errno)") }
        defer { close(fd) }
        var address = loopback(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard bound else { throw MotoServerError("cannot bind a free port: errno \(errno)") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    private static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        return address
    }

    /// `$MOTO_SERVER`, or moto_server on the PATH.
    private static func findExecutable() throws -> String {
        let environment = ProcessInfo.processInfo.environment
        if let explicit = environment["MOTO_SERVER"], !explicit.isEmpty { return explicit }
        for directory in (environment["PATH"] ?? "").split(separator: ":") {
            let candidate = "\(directory)/moto_server"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw MotoServerError(
            "moto_server is not installed (not on PATH, MOTO_SERVER not set): the S3 tests need it;"
                + " install it with pip install 'moto[server]'"
        )
    }
}

struct MotoServerError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Process exit as something to await (Process's terminationHandler runs on a Foundation thread).
private final class ExitSignal: Sendable {
    private let state = Mutex<(exited: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    var hasExited: Bool { state.withLock { $0.exited } }

    func signal() {
        let waiters = state.withLock { state in
            state.exited = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    func wait() async {
        await withCheckedContinuation { continuation in
            let done = state.withLock { state in
                if state.exited { return true }
                state.waiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }
}

/// Runs the suite with one moto_server, stopped after the suite's last test.
struct MotoServerTrait: SuiteTrait, TestScoping {
    var isRecursive: Bool { false }

    func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        let server = try await MotoServer.launch()
        do {
            try await MotoServer.$current.withValue(server) { try await function() }
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
        await server.removeLog()
    }
}

extension Trait where Self == MotoServerTrait {
    /// One moto_server for the whole suite: `MotoServer.current` inside its tests.
    static var motoServer: Self { MotoServerTrait() }
}

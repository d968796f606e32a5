import ArgumentParser
import TelexClient

/// `--tls`, `--tls-ca`, `--tls-cert`, `--tls-key` and `--tls-server-name`: TLS to the broker. Any of them turns
/// TLS on; the broker's certificate and name are always verified.
public struct TLSOptions: ParsableArguments {
    @Flag(name: .customLong("tls"), help: "Connect with TLS, trusting the system's CA certificates.")
    public var enabled = false

    @Option(name: .customLong("tls-ca"), help: ArgumentHelp(
        "PEM file of the CA that signed the broker's certificate (turns TLS on); trusted instead of the system's CAs.",
        valueName: "PEM"))
    public var caPath: String?

    @Option(name: .customLong("tls-cert"), help: ArgumentHelp(
        "PEM client certificate chain, for a broker that asks for one (mutual TLS). Needs --tls-key.",
        valueName: "PEM"))
    public var certificatePath: String?

    @Option(name: .customLong("tls-key"), help: ArgumentHelp("PEM private key of --tls-cert.", valueName: "PEM"))
    public var keyPath: String?

    @Option(name: .customLong("tls-server-name"), help: ArgumentHelp(
        "Name the broker's certificate must carry, if not the host of --server.", valueName: "NAME"))
    public var serverName: String?

    public init() {}

    public func validate() throws {
        if (certificatePath == nil) != (keyPath == nil) {
            throw ValidationError(
                "--tls-cert and --tls-key go together: give both for a client certificate, or neither")
        }
    }

    /// The TLS configuration these options describe, or nil (plaintext) when none is given.
    public func configuration() throws -> ClientTLSConfiguration? {
        try validate()
        guard enabled || caPath != nil || certificatePath != nil || serverName != nil else { return nil }
        return ClientTLSConfiguration(
            trustRoots: caPath.map { .file($0) } ?? .system, certificateChainPath: certificatePath,
            privateKeyPath: keyPath, serverName: serverName)
    }
}

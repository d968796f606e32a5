import ArgumentParser
import Foundation
import TelexClient
import TelexProtocol

/// `--server`, `--client-name`, the token options and the TLS options, shared by every Telex command-line tool.
public struct ConnectionOptions: ParsableArguments {
    @Option(help: "Broker address HOST:PORT (env TELEX_SERVER). Default 127.0.0.1:7420.")
    public var server: String?

    @Option(help: "Name shown in the broker's logs.")
    public var clientName: String?

    @OptionGroup public var credentials: TokenOptions
    @OptionGroup public var tls: TLSOptions

    public init() {}

    /// The client configuration these options describe.
    public func configuration(defaultName: String) throws -> ClientConfiguration {
        var configuration = ClientConfiguration(clientName: clientName ?? defaultName)
        configuration.authToken = try credentials.resolve()
        if let address = server ?? ProcessInfo.processInfo.environment["TELEX_SERVER"] {
            do {
                try configuration.setServer(address)
            } catch {
                throw ValidationError(error.message)
            }
        }
        configuration.tls = try tls.configuration()
        return configuration
    }
}

/// Writes a message to standard error.
public func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}

/// The text a tool prints for an error: the Telex message without its code for the common cases.
public func describe(_ error: Error) -> String {
    if let error = error as? PublishError {
        return "\(describe(error.underlying)) (\(error.acknowledgedRecordCount) records were acknowledged before it stopped)"
    }
    if let error = error as? TelexError {
        return [.connectionFailed, .invalidEvent, .tlsFailure].contains(error.code) ? error.message : "\(error.code.name): \(error.message)"
    }
    return "\(error)"
}

/// The exit status for a failed connect: 77 (EX_NOPERM) when the broker refused the credentials, 69
/// (EX_UNAVAILABLE) when it could not be reached or spoken to.
public func connectExitCode(_ error: any Error) -> Int32 {
    (error as? TelexError)?.code == .authenticationFailed ? 77 : 69
}

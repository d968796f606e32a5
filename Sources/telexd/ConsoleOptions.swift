import ArgumentParser
import TelexConsole
import TelexServer

/// `--console-address`: where the web console listens (off by default).
struct ConsoleOptions: ParsableArguments {
    @Option(name: .customLong("console-address"), help: ArgumentHelp(
        "Serve the web console (topics, events, articles, consumers) on HOST:PORT, with the broker's logins; HTTPS "
            + "with --tls-cert/--tls-key. Env TELEX_CONSOLE_ADDRESS. Default: off.", valueName: "HOST:PORT"))
    var address: String?

    /// The console's configuration, if it is on. Exits 64 for plaintext beyond loopback, like the broker's refusal.
    func configuration(
        tls: ServerTLSConfiguration?, allowPlaintext: Bool, environment: [String: String]
    ) throws -> ConsoleConfiguration? {
        guard let text = address ?? environment["TELEX_CONSOLE_ADDRESS"], !text.isEmpty else { return nil }
        let address = try listenAddress(text, naming: "console address") { host, port in
            ConsoleEndpoint.plaintextRefusal(host: host, port: port, tls: tls, allowPlaintext: allowPlaintext)
        }
        return ConsoleConfiguration(host: address.host, port: address.port)
    }
}

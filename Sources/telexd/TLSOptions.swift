import ArgumentParser
import Foundation
import TelexServer

/// telexd's TLS flags, each with its `TELEX_*` variable (flags win), and the plaintext refusal.
struct TLSOptions: ParsableArguments {
    @Option(name: .customLong("tls-cert"), help: ArgumentHelp(
        "PEM certificate chain (server certificate first); with --tls-key turns TLS on. Env TELEX_TLS_CERT.",
        valueName: "PEM"))
    var certificatePath: String?
    @Option(name: .customLong("tls-key"), help: ArgumentHelp(
        "PEM private key of --tls-cert. Env TELEX_TLS_KEY.", valueName: "PEM"))
    var keyPath: String?
    @Option(name: .customLong("tls-ca"), help: ArgumentHelp(
        "PEM CA that signs client certificates (mutual TLS). Env TELEX_TLS_CA.", valueName: "PEM"))
    var clientCAPath: String?
    @Option(name: .customLong("tls-client-auth"), help: ArgumentHelp(
        "optional|required: whether clients must present a certificate signed by --tls-ca. "
            + "Env TELEX_TLS_CLIENT_AUTH. Default required when --tls-ca is given.", valueName: "MODE"))
    var clientAuthentication: String?
    @Flag(name: .customLong("allow-plaintext"), help: ArgumentHelp(
        "Listen without TLS on an address other than loopback (a trusted network only). "
            + "Env TELEX_ALLOW_PLAINTEXT=true."))
    var allowPlaintext = false

    /// Sets `configuration.tls` from these options and the environment; throws `ValidationError` for flags that
    /// do not fit together, and prints the one-line refusal and exits 64 for plaintext beyond loopback.
    func apply(to configuration: inout ServerConfiguration, environment: [String: String]) throws {
        let certificate = certificatePath ?? environment["TELEX_TLS_CERT"]
        let key = keyPath ?? environment["TELEX_TLS_KEY"]
        let clientCA = clientCAPath ?? environment["TELEX_TLS_CA"]
        let authText = clientAuthentication ?? environment["TELEX_TLS_CLIENT_AUTH"]
        let allow = try allowsPlaintext(environment: environment)
        switch (certificate, key) {
        case (let certificate?, let key?):
            let authentication: ServerTLSConfiguration.ClientAuthentication
            switch (authText, clientCA) {
            case (nil, nil): authentication = .none
            case (nil, _?): authentication = .required
            case (let text?, _):
                guard let mode = ServerTLSConfiguration.ClientAuthentication(rawValue: text), mode != .none else {
                    throw ValidationError("--tls-client-auth must be optional or required, not '\(text)'")
                }
                guard clientCA != nil else { throw ValidationError("--tls-client-auth \(text) needs --tls-ca") }
                authentication = mode
            }
            configuration.tls = ServerTLSConfiguration(
                certificateChainPath: certificate, privateKeyPath: key, clientCAPath: clientCA,
                clientAuthentication: authentication)
        case (nil, nil):
            guard clientCA == nil, authText == nil else {
                throw ValidationError("--tls-ca and --tls-client-auth need --tls-cert and --tls-key")
            }
        default:
            throw ValidationError("--tls-cert and --tls-key go together: give both to turn TLS on")
        }
        if let refusal = configuration.plaintextRefusal(allowPlaintext: allow) {
            FileHandle.standardError.write(Data((refusal + "\n").utf8))
            throw ExitCode(64)
        }
    }
}

extension TLSOptions {
    /// Whether plaintext beyond loopback is allowed (`--allow-plaintext`, or `TELEX_ALLOW_PLAINTEXT` true or false),
    /// for the broker and the metrics endpoint alike.
    func allowsPlaintext(environment: [String: String]) throws -> Bool {
        if allowPlaintext { return true }
        guard let raw = environment["TELEX_ALLOW_PLAINTEXT"] else { return false }
        guard let value = Bool(raw) else { throw ValidationError("TELEX_ALLOW_PLAINTEXT=\(raw) is not true or false") }
        return value
    }
}

import NIOCore
import NIOPosix
import NIOSSL
import TelexProtocol

/// TLS on the broker's listener: the certificate chain and key it presents, and optionally the CA that signs
/// client certificates (mutual TLS). TLS 1.2 is the minimum; 1.3 is negotiated whenever the client offers it.
///
/// The files are read when the server starts and again on `TelexServer.reload()`; a connection keeps the
/// certificate it was accepted with.
public struct ServerTLSConfiguration: Sendable, Equatable {
    /// Whether clients must present a certificate signed by `clientCAPath`.
    public enum ClientAuthentication: String, Sendable, CaseIterable {
        /// Client certificates are neither asked for nor checked.
        case none
        /// A client may present a certificate; one that it presents must verify against `clientCAPath`.
        case optional
        /// A client must present a certificate that verifies against `clientCAPath`, or the handshake fails.
        case required
    }

    /// PEM file with the broker's certificate first, then any intermediates.
    public var certificateChainPath: String
    /// PEM file with the private key of the first certificate in `certificateChainPath`.
    public var privateKeyPath: String
    /// PEM file of the CA(s) that sign client certificates; needed unless `clientAuthentication` is `.none`.
    /// Default nil.
    public var clientCAPath: String?
    /// Whether clients must, may or need not present a certificate. Default `.none`.
    public var clientAuthentication: ClientAuthentication

    public init(
        certificateChainPath: String, privateKeyPath: String, clientCAPath: String? = nil,
        clientAuthentication: ClientAuthentication = .none
    ) {
        self.certificateChainPath = certificateChainPath
        self.privateKeyPath = privateKeyPath
        self.clientCAPath = clientCAPath
        self.clientAuthentication = clientAuthentication
    }

    /// `makeSSLContext()` on NIO's shared thread pool, for the HTTP endpoints' startup (metrics, console).
    public func loadSSLContext() async throws -> NIOSSLContext {
        try await NIOThreadPool.singleton.runIfActive { try self.makeSSLContext() }
    }

    /// Reads the files and builds the TLS context new connections use. Blocking file I/O: call it off the event
    /// loops. Throws `invalidRequest` naming the file that could not be used.
    public func makeSSLContext() throws(TelexError) -> NIOSSLContext {
        let chain: [NIOSSLCertificate]
        let key: NIOSSLPrivateKey
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certificateChainPath)
        } catch {
            throw TelexError(.invalidRequest, "TLS certificate chain \(certificateChainPath) cannot be used: \(error)")
        }
        guard !chain.isEmpty else {
            throw TelexError(.invalidRequest, "TLS certificate chain \(certificateChainPath) holds no PEM certificate")
        }
        do {
            key = try NIOSSLPrivateKey(file: privateKeyPath, format: .pem)
        } catch {
            throw TelexError(.invalidRequest, "TLS private key \(privateKeyPath) cannot be used: \(error)")
        }
        var tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        tls.minimumTLSVersion = .tlsv12
        tls.maximumTLSVersion = .tlsv13
        switch clientAuthentication {
        case .none:
            tls.certificateVerification = .none
        case .optional, .required:
            guard let clientCAPath else {
                throw TelexError(.invalidRequest,
                    "client authentication '\(clientAuthentication.rawValue)' needs a client CA (--tls-ca)")
            }
            do {
                tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(clientCAPath))
            } catch {
                throw TelexError(.invalidRequest, "TLS client CA \(clientCAPath) cannot be used: \(error)")
            }
            tls.certificateVerification =
                clientAuthentication == .required ? .noHostnameVerification : .optionalVerification
        }
        do {
            return try NIOSSLContext(configuration: tls)
        } catch {
            throw TelexError(.invalidRequest,
                "TLS certificate \(certificateChainPath) and key \(privateKeyPath) cannot be used together: \(error)")
        }
    }
}

extension ServerConfiguration {
    /// Why this configuration must not be served: plaintext (`tls` nil) on an address other than loopback,
    /// unless `allowPlaintext`. Nil when it may. The text is one line that says how to fix it.
    public func plaintextRefusal(allowPlaintext: Bool) -> String? {
        Self.plaintextRefusal(host: host, port: port, tls: tls, allowPlaintext: allowPlaintext, doing: "listen")
    }

    /// The refusal of plaintext beyond loopback, for the broker's port (`doing` "listen") and the metrics
    /// endpoint's ("serve metrics").
    public static func plaintextRefusal(
        host: String, port: Int, tls: ServerTLSConfiguration?, allowPlaintext: Bool, doing: String
    ) -> String? {
        guard tls == nil, !allowPlaintext, !isLoopback(host) else { return nil }
        return "telexd: refusing to \(doing) on \(hostAndPort(host, port)) in plaintext; pass --tls-cert and "
            + "--tls-key, or --allow-plaintext on a trusted network"
    }

    /// `host:port`, with an IPv6 host in brackets.
    static func hostAndPort(_ host: String, _ port: Int) -> String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    /// Whether `host` names only the loopback interface: `localhost`, 127.0.0.0/8 or `::1`. Any other name or
    /// address (including `0.0.0.0` and `::`, which mean every interface) is not loopback.
    public static func isLoopback(_ host: String) -> Bool {
        let bare = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        if bare.lowercased() == "localhost" { return true }
        guard let address = try? SocketAddress(ipAddress: bare, port: 0) else { return false }
        switch address {
        case .v4: return address.ipAddress?.hasPrefix("127.") == true
        case .v6: return address.ipAddress == "::1"
        case .unixDomainSocket: return true
        }
    }
}

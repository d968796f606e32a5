import NIOCore
import NIOSSL
import TelexProtocol

/// TLS to the broker: the CAs trusted to sign its certificate, an optional client certificate for mutual TLS,
/// and the name its certificate must carry. The broker's certificate and name are always verified.
public struct ClientTLSConfiguration: Sendable, Equatable {
    /// Where the CAs that may sign the broker's certificate come from.
    public enum TrustRoots: Sendable, Equatable {
        /// The operating system's trust store (on Debian, `/etc/ssl/certs`).
        case system
        /// The PEM certificates in this file, and no others (a private CA).
        case file(String)
    }

    /// The CAs trusted to sign the broker's certificate. Default `.system`.
    public var trustRoots: TrustRoots
    /// PEM certificate chain presented to a broker that asks for one (mutual TLS). Default nil.
    public var certificateChainPath: String?
    /// PEM private key of `certificateChainPath`'s first certificate. Default nil.
    public var privateKeyPath: String?
    /// The name the broker's certificate must carry, also sent as SNI. Default nil: the configured host (for an IP
    /// address, the certificate must list that address).
    public var serverName: String?

    public init(
        trustRoots: TrustRoots = .system, certificateChainPath: String? = nil, privateKeyPath: String? = nil,
        serverName: String? = nil
    ) {
        self.trustRoots = trustRoots
        self.certificateChainPath = certificateChainPath
        self.privateKeyPath = privateKeyPath
        self.serverName = serverName
    }

    /// Reads the files and builds the TLS context of one connection (blocking file reads of a few KiB).
    /// Throws `tlsFailure` naming the file that could not be used.
    func makeSSLContext() throws(TelexError) -> NIOSSLContext {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv12
        tls.maximumTLSVersion = .tlsv13
        tls.certificateVerification = .fullVerification
        switch trustRoots {
        case .system:
            tls.trustRoots = .default
        case .file(let path):
            do {
                tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(path))
            } catch {
                throw TelexError(.tlsFailure, "the CA file \(path) (--tls-ca) cannot be used: \(error)")
            }
        }
        switch (certificateChainPath, privateKeyPath) {
        case (nil, nil):
            break
        case (let chainPath?, let keyPath?):
            do {
                tls.certificateChain = try NIOSSLCertificate.fromPEMFile(chainPath).map { .certificate($0) }
            } catch {
                throw TelexError(.tlsFailure,
                    "the client certificate \(chainPath) (--tls-cert) cannot be used: \(error)")
            }
            do {
                tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: keyPath, format: .pem))
            } catch {
                throw TelexError(.tlsFailure, "the client key \(keyPath) (--tls-key) cannot be used: \(error)")
            }
        default:
            throw TelexError(.tlsFailure, "a client certificate needs both --tls-cert and --tls-key")
        }
        do {
            return try NIOSSLContext(configuration: tls)
        } catch {
            throw TelexError(.tlsFailure, "TLS cannot be set up with these files: \(error)")
        }
    }

    /// The DNS name to verify and send as SNI for a connection to `host`; nil when the name is an IP address,
    /// which is then verified against the addresses the certificate lists.
    func hostnameToVerify(host: String) -> String? {
        let name = serverName ?? host
        return (try? SocketAddress(ipAddress: name, port: 0)) == nil ? name : nil
    }
}

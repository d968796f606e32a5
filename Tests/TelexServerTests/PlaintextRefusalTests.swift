import Testing

@testable import TelexServer

@Suite("Secure by default", .timeLimit(.minutes(1)))
struct PlaintextRefusalTests {
    @Test("plaintext on a non-loopback address is refused with one line that says how to fix it")
    func refusal() {
        let configuration = ServerConfiguration(host: "0.0.0.0")
        #expect(configuration.plaintextRefusal(allowPlaintext: false)
            == "telexd: refusing to listen on 0.0.0.0:7420 in plaintext; pass --tls-cert and --tls-key, "
                + "or --allow-plaintext on a trusted network")
        #expect(ServerConfiguration(host: "::", port: 7500).plaintextRefusal(allowPlaintext: false)?
            .hasPrefix("telexd: refusing to listen on [::]:7500 in plaintext") == true)
        #expect(ServerConfiguration(host: "broker.newsroom.internal").plaintextRefusal(allowPlaintext: false) != nil)
        #expect(!(configuration.plaintextRefusal(allowPlaintext: false) ?? "").contains("\n"))
    }

    @Test("loopback stays plaintext by default; --allow-plaintext and TLS lift the refusal")
    func allowed() {
        for host in ["127.0.0.1", "127.0.0.2", "localhost", "LOCALHOST", "::1", "[::1]"] {
            #expect(ServerConfiguration(host: host).plaintextRefusal(allowPlaintext: false) == nil, "\(host)")
        }
        #expect(ServerConfiguration().plaintextRefusal(allowPlaintext: false) == nil)
        #expect(ServerConfiguration(host: "0.0.0.0").plaintextRefusal(allowPlaintext: true) == nil)
        let tls = ServerTLSConfiguration(certificateChainPath: "server.pem", privateKeyPath: "server.key")
        #expect(ServerConfiguration(host: "0.0.0.0", tls: tls).plaintextRefusal(allowPlaintext: false) == nil)
    }

    @Test("loopback means 127.0.0.0/8, ::1 and localhost only")
    func loopback() {
        #expect(ServerConfiguration.isLoopback("127.255.0.1"))
        #expect(!ServerConfiguration.isLoopback("0.0.0.0"))
        #expect(!ServerConfiguration.isLoopback("::"))
        #expect(!ServerConfiguration.isLoopback("192.168.1.20"))
        #expect(!ServerConfiguration.isLoopback("128.0.0.1"))
        #expect(!ServerConfiguration.isLoopback("localhost.example.org"))
    }
}

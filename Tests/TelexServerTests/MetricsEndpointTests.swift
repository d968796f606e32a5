import MetricsTestKit
import Testing

@testable import TelexServer

@Suite("Metrics endpoint configuration", .timeLimit(.minutes(1)))
struct MetricsEndpointConfigurationTests {
    @Test("HOST:PORT parses, with brackets for IPv6; anything else does not")
    func address() {
        #expect(MetricsEndpoint.parseAddress("127.0.0.1:9464")! == ("127.0.0.1", 9464))
        #expect(MetricsEndpoint.parseAddress("[::1]:9464")! == ("::1", 9464))
        #expect(MetricsEndpoint.parseAddress("metrics.internal:0")! == ("metrics.internal", 0))
        for bad in ["9464", ":9464", "host:", "host:port", "host:70000"] {
            #expect(MetricsEndpoint.parseAddress(bad) == nil, "\(bad)")
        }
    }

    @Test("a plaintext endpoint beyond loopback is refused like the broker, unless allowed or over TLS")
    func refusal() {
        #expect(MetricsEndpoint.plaintextRefusal(host: "0.0.0.0", port: 9464, tls: nil, allowPlaintext: false)
            == "telexd: refusing to serve metrics on 0.0.0.0:9464 in plaintext; pass --tls-cert and --tls-key, "
                + "or --allow-plaintext on a trusted network")
        #expect(MetricsEndpoint.plaintextRefusal(host: "127.0.0.1", port: 9464, tls: nil, allowPlaintext: false) == nil)
        #expect(MetricsEndpoint.plaintextRefusal(host: "0.0.0.0", port: 9464, tls: nil, allowPlaintext: true) == nil)
        let tls = ServerTLSConfiguration(certificateChainPath: "c.pem", privateKeyPath: "k.pem")
        #expect(MetricsEndpoint.plaintextRefusal(host: "0.0.0.0", port: 9464, tls: tls, allowPlaintext: false) == nil)
    }

    @Test("a server records into the factory it is given, not the global one")
    func injectedFactory() async throws {
        let testMetrics = TestMetrics()
        var configuration = ServerConfiguration(port: 0)
        configuration.metricsMaxTopics = 1
        let server = TelexServer(configuration: configuration, logger: .init(label: "test"), metricsFactory: testMetrics)
        server.metrics.connections.increment()
        server.metrics.topic("news.world").publishedEvents.increment(by: 3)
        server.metrics.topic("news.sport").publishedEvents.increment(by: 2)
        #expect(try testMetrics.expectMeter("telex_connections").lastValue == 1)
        #expect(try testMetrics.expectCounter("telex_published_events_total", [("topic", "news.world")]).totalValue == 3)
        #expect(try testMetrics.expectCounter("telex_published_events_total", [("topic", "_other")]).totalValue == 2)
        try await server.shutdown()
    }
}

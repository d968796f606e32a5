import ArgumentParser
import Foundation
import Logging
import Metrics
import Prometheus
import TelexServer

/// `--metrics-address` and `--metrics-max-topics`: where the Prometheus endpoint listens, and the label cap.
struct MetricsOptions: ParsableArguments {
    @Option(name: .customLong("metrics-address"), help: ArgumentHelp(
        "Serve GET /metrics and /healthz on HOST:PORT (HTTPS with --tls-cert/--tls-key). "
            + "Env TELEX_METRICS_ADDRESS. Default: off.", valueName: "HOST:PORT"))
    var address: String?
    @Option(name: .customLong("metrics-max-topics"), help: ArgumentHelp(
        "Most topics (and consumers) with a label of their own; the rest are summed under \"_other\". "
            + "Env TELEX_METRICS_MAX_TOPICS. Default 1000.", valueName: "N"))
    var maxTopics: Int?

    /// The endpoint's address, if metrics are on; sets the label cap. Exits 64 for plaintext beyond loopback, like
    /// the broker's own refusal.
    func apply(
        to configuration: inout ServerConfiguration, allowPlaintext: Bool, environment: [String: String]
    ) throws -> (host: String, port: Int)? {
        if let text = maxTopics.map(String.init) ?? environment["TELEX_METRICS_MAX_TOPICS"] {
            guard let value = Int(text), value >= 0 else {
                throw ValidationError("metrics max topics must be a whole number ≥ 0, not '\(text)'")
            }
            configuration.metricsMaxTopics = value
        }
        guard let text = address ?? environment["TELEX_METRICS_ADDRESS"], !text.isEmpty else { return nil }
        return try listenAddress(text, naming: "metrics address") { host, port in
            MetricsEndpoint.plaintextRefusal(host: host, port: port, tls: configuration.tls, allowPlaintext: allowPlaintext)
        }
    }

    /// Bootstraps swift-metrics with a Prometheus registry (the one process-wide bootstrap) and returns the registry.
    static func bootstrapPrometheus() -> PrometheusCollectorRegistry {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.valueHistogramBuckets["telex_group_commit_records"] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096]
        MetricsSystem.bootstrap(factory)
        return registry
    }
}

/// `text` as `HOST:PORT` for an HTTP endpoint of telexd (metrics, console); exits 64 with `refusal`'s line when it
/// names one (plaintext beyond loopback, like the broker's own refusal).
func listenAddress(
    _ text: String, naming what: String, refusal: (_ host: String, _ port: Int) -> String?
) throws -> (host: String, port: Int) {
    guard let address = MetricsEndpoint.parseAddress(text) else {
        throw ValidationError("\(what) '\(text)' is not HOST:PORT")
    }
    if let refusal = refusal(address.host, address.port) {
        FileHandle.standardError.write(Data((refusal + "\n").utf8))
        throw ExitCode(64)
    }
    return address
}

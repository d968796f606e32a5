import TelexProtocol

/// How a `TelexClient` connects, batches and retries. A Sendable value; each field documents its default.
public struct ClientConfiguration: Sendable {
    /// Broker host. Default `127.0.0.1`.
    public var host: String
    /// Broker port. Default 7420.
    public var port: Int
    /// Sent in HELLO and shown in broker logs. Default `telex-client`.
    public var clientName: String
    /// Sent in HELLO when the broker requires a token. Default empty.
    public var authToken: String
    /// Time allowed to connect and complete the handshake. Default 5 s.
    public var connectTimeout: Duration
    /// Time allowed for any reply (an ack includes the broker's fsync). Default 30 s.
    public var requestTimeout: Duration
    /// Most publish batches awaiting their ack at once. Default 64.
    public var publishWindow: Int
    /// Most records per batch. Default 64.
    public var maxBatchRecords: Int
    /// Most uncompressed record bytes per batch. Default 512 KiB.
    public var maxBatchBytes: Int
    /// Codec for published batches. Default zlib.
    public var codec: Codec
    /// Compression level for codec zlib: 0 (stored), 1 (fastest) to 12 (smallest) with libdeflate; zlib's own
    /// scale ends at 9. Levels outside the implementation's range are clamped into it. Default 1.
    public var compressionLevel: Int32
    /// Library that writes and reads codec-zlib batches (the bytes on the wire are RFC 1950 streams either way;
    /// `.zlib` is the reference, kept for comparison). Default `.libdeflate`.
    public var deflateImplementation: DeflateImplementation
    /// Batches a subscription lets the broker send ahead of the consumer. Default 64.
    public var subscriptionCredit: UInt32
    /// Connection attempts before an operation fails (authentication and version errors are not retried). Default 8.
    public var maxReconnectAttempts: Int
    /// First reconnect delay, doubled each attempt up to `maxReconnectDelay`. Default 100 ms.
    public var initialReconnectDelay: Duration
    /// Longest reconnect delay. Default 5 s.
    public var maxReconnectDelay: Duration
    /// Largest frame accepted from the broker. Default 16 MiB.
    public var maxFrameSize: Int
    /// TLS to the broker (trust roots, client certificate, server name). Default nil: plaintext.
    public var tls: ClientTLSConfiguration?

    public init(
        host: String = "127.0.0.1", port: Int = 7420, clientName: String = "telex-client", authToken: String = "",
        connectTimeout: Duration = .seconds(5), requestTimeout: Duration = .seconds(30), publishWindow: Int = 64,
        maxBatchRecords: Int = 64, maxBatchBytes: Int = 512 << 10, codec: Codec = .zlib, compressionLevel: Int32 = 1,
        deflateImplementation: DeflateImplementation = .libdeflate,
        subscriptionCredit: UInt32 = 64, maxReconnectAttempts: Int = 8, initialReconnectDelay: Duration = .milliseconds(100),
        maxReconnectDelay: Duration = .seconds(5), maxFrameSize: Int = 16 << 20, tls: ClientTLSConfiguration? = nil
    ) {
        self.host = host
        self.port = port
        self.clientName = clientName
        self.authToken = authToken
        self.connectTimeout = connectTimeout
        self.requestTimeout = requestTimeout
        self.publishWindow = publishWindow
        self.maxBatchRecords = maxBatchRecords
        self.maxBatchBytes = maxBatchBytes
        self.codec = codec
        self.compressionLevel = compressionLevel
        self.deflateImplementation = deflateImplementation
        self.subscriptionCredit = subscriptionCredit
        self.maxReconnectAttempts = maxReconnectAttempts
        self.initialReconnectDelay = initialReconnectDelay
        self.maxReconnectDelay = maxReconnectDelay
        self.maxFrameSize = maxFrameSize
        self.tls = tls
    }

    /// Parses `HOST:PORT`, `HOST` or `:PORT` into host and port.
    public mutating func setServer(_ address: String) throws(TelexError) {
        var text = Substring(address)
        if text.hasPrefix("[") , let close = text.firstIndex(of: "]") {
            host = String(text[text.index(after: text.startIndex)..<close])
            text = text[text.index(after: close)...]
            if text.hasPrefix(":") {
                guard let value = Int(text.dropFirst()), (1...65535).contains(value) else {
                    throw TelexError(.invalidRequest, "server '\(address)': port must be 1-65535")
                }
                port = value
            }
            return
        }
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count <= 2 else { throw TelexError(.invalidRequest, "server '\(address)' is not HOST:PORT") }
        if !parts[0].isEmpty { host = String(parts[0]) }
        if parts.count == 2 {
            guard let value = Int(parts[1]), (1...65535).contains(value) else {
                throw TelexError(.invalidRequest, "server '\(address)': port '\(parts[1])' must be 1-65535")
            }
            port = value
        }
    }
}

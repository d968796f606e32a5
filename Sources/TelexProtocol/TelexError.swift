/// The one error type Telex throws: a stable numeric code, a human message, and where it happened.
///
/// Codes below 1000 travel on the wire in ERROR frames (see Protocol/PROTOCOL.md, "Error codes");
/// codes from 1000 up are raised locally by the client library and never sent.
public struct TelexError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A stable error code. Compare with the static members; unknown wire codes are kept as they are.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let rawValue: UInt16
        public init(rawValue: UInt16) { self.rawValue = rawValue }

        /// The frame could not be parsed: truncated, a field overruns the frame, or trailing bytes.
        public static let malformedFrame = Code(rawValue: 1)
        /// The frame header names a protocol version this peer does not speak.
        public static let unsupportedVersion = Code(rawValue: 2)
        /// The frame header names a message type this peer does not know.
        public static let unknownMessageType = Code(rawValue: 3)
        /// The frame's length prefix is above the receiver's maximum frame size.
        public static let frameTooLarge = Code(rawValue: 4)
        /// A record batch failed its CRC check.
        public static let corruptBatch = Code(rawValue: 5)
        /// A record batch's header, record count or lengths disagree with its bytes.
        public static let invalidBatch = Code(rawValue: 6)
        /// A record batch would inflate past the receiver's limit.
        public static let batchTooLarge = Code(rawValue: 7)
        /// A topic name or subscription pattern is not valid.
        public static let invalidTopic = Code(rawValue: 8)
        /// The topic does not exist (and publishing may not create it).
        public static let topicNotFound = Code(rawValue: 9)
        /// The requested offset is outside the log.
        public static let offsetOutOfRange = Code(rawValue: 10)
        /// The subscription id is not active on this connection.
        public static let unknownSubscription = Code(rawValue: 11)
        /// The subscription id is already in use on this connection.
        public static let duplicateSubscription = Code(rawValue: 12)
        /// The request is well-formed but its values are not acceptable (e.g. an empty consumer name).
        public static let invalidRequest = Code(rawValue: 13)
        /// A request other than HELLO arrived before the handshake.
        public static let handshakeRequired = Code(rawValue: 14)
        /// The authentication token was rejected.
        public static let authenticationFailed = Code(rawValue: 15)
        /// The broker failed to read or write its log; the request was not applied.
        public static let storageFailure = Code(rawValue: 16)
        /// The broker is shutting down.
        public static let shuttingDown = Code(rawValue: 17)
        /// A produced batch's sequence number is older than the broker remembers.
        public static let sequenceOutOfOrder = Code(rawValue: 18)
        /// An invariant broke inside the broker.
        public static let internalError = Code(rawValue: 19)
        /// The authenticated principal may not do this: publish to the topic, subscribe to the pattern, or use the
        /// consumer name.
        public static let notAuthorized = Code(rawValue: 20)
        /// The broker already has its maximum of open connections; it closes this one.
        public static let tooManyConnections = Code(rawValue: 21)
        /// HELLO did not arrive within the broker's handshake timeout; it closes the connection.
        public static let handshakeTimeout = Code(rawValue: 22)
        /// Creating the topic would exceed the broker's maximum number of topics.
        public static let tooManyTopics = Code(rawValue: 23)
        /// The principal created topics faster than the broker's topic creation rate allows.
        public static let rateLimited = Code(rawValue: 24)
        /// The connection already has the broker's maximum number of subscriptions.
        public static let tooManySubscriptions = Code(rawValue: 25)
        /// Stored records the read needed are damaged on the broker's disk; the message names the topic and the
        /// lost offsets. A subscription that asked to skip damaged ranges gets the records after them instead.
        public static let dataLoss = Code(rawValue: 26)

        /// Client-side: the connection could not be made or was lost.
        public static let connectionFailed = Code(rawValue: 1000)
        /// Client-side: the operation did not complete in time.
        public static let timeout = Code(rawValue: 1001)
        /// Client-side: an event failed validation (field named in the message).
        public static let invalidEvent = Code(rawValue: 1002)
        /// Client-side: the client was closed.
        public static let closed = Code(rawValue: 1003)
        /// Client-side: TLS could not be set up: the broker does not speak TLS on that port, its certificate was
        /// not trusted or not valid for its name, it refused the client certificate, or a file could not be read.
        /// Not retried.
        public static let tlsFailure = Code(rawValue: 1004)

        public var name: String {
            switch self {
            case .malformedFrame: "MALFORMED_FRAME"
            case .unsupportedVersion: "UNSUPPORTED_VERSION"
            case .unknownMessageType: "UNKNOWN_MESSAGE_TYPE"
            case .frameTooLarge: "FRAME_TOO_LARGE"
            case .corruptBatch: "CORRUPT_BATCH"
            case .invalidBatch: "INVALID_BATCH"
            case .batchTooLarge: "BATCH_TOO_LARGE"
            case .invalidTopic: "INVALID_TOPIC"
            case .topicNotFound: "TOPIC_NOT_FOUND"
            case .offsetOutOfRange: "OFFSET_OUT_OF_RANGE"
            case .unknownSubscription: "UNKNOWN_SUBSCRIPTION"
            case .duplicateSubscription: "DUPLICATE_SUBSCRIPTION"
            case .invalidRequest: "INVALID_REQUEST"
            case .handshakeRequired: "HANDSHAKE_REQUIRED"
            case .authenticationFailed: "AUTHENTICATION_FAILED"
            case .storageFailure: "STORAGE_FAILURE"
            case .shuttingDown: "SHUTTING_DOWN"
            case .sequenceOutOfOrder: "SEQUENCE_OUT_OF_ORDER"
            case .internalError: "INTERNAL_ERROR"
            case .notAuthorized: "NOT_AUTHORIZED"
            case .tooManyConnections: "TOO_MANY_CONNECTIONS"
            case .handshakeTimeout: "HANDSHAKE_TIMEOUT"
            case .tooManyTopics: "TOO_MANY_TOPICS"
            case .rateLimited: "RATE_LIMITED"
            case .tooManySubscriptions: "TOO_MANY_SUBSCRIPTIONS"
            case .dataLoss: "DATA_LOSS"
            case .connectionFailed: "CONNECTION_FAILED"
            case .timeout: "TIMEOUT"
            case .invalidEvent: "INVALID_EVENT"
            case .closed: "CLOSED"
            case .tlsFailure: "TLS_FAILURE"
            default: "CODE_\(rawValue)"
            }
        }

        public var description: String { name }
    }

    public var code: Code
    /// What was wrong and where, in words a user can act on.
    public var message: String
    /// The request id of the frame this error answers, if any.
    public var requestID: UInt32?
    /// The topic involved, if any.
    public var topic: String?
    /// The offset involved, if any.
    public var offset: Int64?

    public init(_ code: Code, _ message: String, requestID: UInt32? = nil, topic: String? = nil, offset: Int64? = nil) {
        self.code = code
        self.message = message
        self.requestID = requestID
        self.topic = topic
        self.offset = offset
    }

    public var description: String { "\(code.name): \(message)" }
}

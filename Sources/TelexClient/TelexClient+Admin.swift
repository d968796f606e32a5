import TelexProtocol

/// Operator commands (ADMIN requests, PROTOCOL.md §5.17). The broker answers them to admin principals only;
/// others get NOT_AUTHORIZED.
extension TelexClient {
    /// The broker's version, uptime, address, fsync policy and data directory usage.
    public func brokerInfo() async throws -> BrokerInfo {
        guard case .info(let info) = try await admin(.info) else { throw unexpectedAdminResult(.info) }
        return info
    }

    /// Every topic matching `pattern` (every topic when nil), sorted by name.
    public func topics(matching pattern: String? = nil) async throws -> [TopicInfo] {
        if let pattern { try TopicName.validatePattern(pattern) }
        guard case .topics(let topics) = try await admin(.topics(pattern: pattern ?? "")) else {
            throw unexpectedAdminResult(.topics)
        }
        return topics
    }

    /// Every durable consumer's committed position per topic, or only `consumer`'s; sorted by consumer and topic.
    public func consumerPositions(consumer: String? = nil) async throws -> [ConsumerPosition] {
        guard case .consumers(let positions) = try await admin(.consumers(consumer: consumer ?? "")) else {
            throw unexpectedAdminResult(.consumers)
        }
        return positions
    }

    /// Sets `consumer`'s committed position (the next offset it will read) in every topic matching `pattern` — or,
    /// when nil, in every topic it has a position in — to `position`: the log start, the readable end, an offset
    /// (kept within the log), or the first record appended at or after a time. Refused while the consumer is
    /// subscribed anywhere, unless `force`.
    public func resetConsumer(
        _ consumer: String, to position: StartPosition, topics pattern: String? = nil, force: Bool = false
    ) async throws -> [ConsumerReset] {
        if let pattern { try TopicName.validatePattern(pattern) }
        let request = AdminRequest.resetConsumer(consumer: consumer, pattern: pattern ?? "", to: position, force: force)
        guard case .resetConsumer(let resets) = try await admin(request) else {
            throw unexpectedAdminResult(.resetConsumer)
        }
        return resets
    }

    /// Deletes `topic` and its data; its subscriptions end and its place under the broker's topic cap is freed.
    public func deleteTopic(_ topic: String) async throws {
        try TopicName.validate(topic)
        guard case .deleteTopic = try await admin(.deleteTopic(topic: topic)) else {
            throw unexpectedAdminResult(.deleteTopic)
        }
    }

    /// Physically removes every stored record whose key is `key` (an article's uri) from every topic matching
    /// `pattern` (every topic when nil): legal erasure. Returns each topic records were removed from, with their
    /// offsets (gaps from now on). Records published while it runs may stay.
    public func purge(key: String, topics pattern: String? = nil) async throws -> [PurgedTopic] {
        if let pattern { try TopicName.validatePattern(pattern) }
        guard case .purge(let topics) = try await admin(.purge(key: key, pattern: pattern ?? "")) else {
            throw unexpectedAdminResult(.purge)
        }
        return topics
    }

    private func admin(_ request: AdminRequest) async throws -> AdminResult {
        let reply = try await currentConnection().request(.admin(request))
        guard case .adminResult(let result) = reply, result.command == request.command else {
            throw unexpectedAdminResult(request.command, got: reply.type.name)
        }
        return result
    }

    private func unexpectedAdminResult(_ command: AdminCommand, got: String = "another result") -> TelexError {
        TelexError(.malformedFrame, "ADMIN \(command.name) answered with \(got)")
    }
}

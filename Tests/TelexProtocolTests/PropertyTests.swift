import NIOCore
import PropertyBased
import TelexProtocol
import Testing

/// Random wire values for the property tests.
enum RandomWire {
    static func bytes(_ rng: inout some RandomNumberGenerator, count range: ClosedRange<Int>) -> ByteBuffer {
        var buffer = ByteBuffer()
        for _ in 0..<Int.random(in: range, using: &rng) {
            buffer.writeInteger(UInt8.random(in: .min ... .max, using: &rng))
        }
        return buffer
    }

    /// A string mixing ASCII, Latin-1, CJK and astral scalars (1 to 4 UTF-8 bytes each).
    static func string(_ rng: inout some RandomNumberGenerator, scalars range: ClosedRange<Int> = 0...24) -> String {
        let planes: [ClosedRange<UInt32>] = [0x20...0x7E, 0xA0...0x17F, 0x4E00...0x9FFF, 0x1F300...0x1F64F]
        var string = ""
        for _ in 0..<Int.random(in: range, using: &rng) {
            let plane = planes.randomElement(using: &rng)!
            string.unicodeScalars.append(Unicode.Scalar(UInt32.random(in: plane, using: &rng))!)
        }
        return string
    }

    static func integer<T: FixedWidthInteger>(_ rng: inout some RandomNumberGenerator, as: T.Type = T.self) -> T {
        T.random(in: .min ... .max, using: &rng)
    }

    static let clientTypes = MessageType.allCases.filter(\.isSentByClients)
    static let brokerTypes = MessageType.allCases.filter { !$0.isSentByClients }

    /// A random message of either direction.
    static func message(_ rng: inout some RandomNumberGenerator) -> WireMessage {
        Bool.random(using: &rng) ? .client(clientMessage(&rng)) : .broker(brokerMessage(&rng))
    }

    static func clientMessage(_ rng: inout some RandomNumberGenerator) -> ClientMessage {
        switch clientTypes.randomElement(using: &rng)! {
        case .hello:
            return .hello(
                minVersion: integer(&rng), maxVersion: integer(&rng), clientName: string(&rng),
                authToken: bytes(&rng, count: 0...40))
        case .publish:
            return .publish(topic: string(&rng), batch: bytes(&rng, count: 0...200))
        case .subscribe:
            let start: StartPosition =
                switch Int.random(in: 0...5, using: &rng) {
                case 0: .beginning
                case 1: .end
                case 2: .offset(integer(&rng))
                case 3: .timestamp(integer(&rng))
                case 4: .latest
                default: .history(key: bytes(&rng, count: 0...40))
                }
            return .subscribe(
                subscriptionID: integer(&rng), pattern: string(&rng), start: start, consumerName: string(&rng),
                initialCredit: integer(&rng),
                resume: (0..<Int.random(in: 0...5, using: &rng)).map { _ in
                    TopicOffset(topic: string(&rng), offset: integer(&rng))
                },
                options: Bool.random(using: &rng) ? .skipDamaged : [])
        case .credit:
            return .credit(subscriptionID: integer(&rng), batches: integer(&rng))
        case .commit:
            return .commit(subscriptionID: integer(&rng), topic: string(&rng), offset: integer(&rng))
        case .unsubscribe:
            return .unsubscribe(subscriptionID: integer(&rng))
        case .ping:
            return .ping(nonce: integer(&rng))
        case .admin:
            let requests: [AdminRequest] = [
                .info, .topics(pattern: string(&rng)), .consumers(consumer: string(&rng)),
                .resetConsumer(consumer: string(&rng), pattern: string(&rng), to: .offset(integer(&rng)),
                               force: Bool.random(using: &rng)),
                .deleteTopic(topic: string(&rng)),
            ]
            return .admin(requests.randomElement(using: &rng)!)
        default:
            preconditionFailure("not a client-to-broker type")
        }
    }

    static func brokerMessage(_ rng: inout some RandomNumberGenerator) -> BrokerMessage {
        switch brokerTypes.randomElement(using: &rng)! {
        case .helloOK:
            return .helloOK(version: integer(&rng), serverName: string(&rng), maxFrameSize: integer(&rng))
        case .publishAck:
            return .publishAck(
                topic: string(&rng), baseOffset: integer(&rng), recordCount: integer(&rng),
                duplicate: Bool.random(using: &rng))
        case .subscribed:
            return .subscribed(
                subscriptionID: integer(&rng),
                topics: (0..<Int.random(in: 0...5, using: &rng)).map { _ in
                    TopicRange(topic: string(&rng), startOffset: integer(&rng), endOffset: integer(&rng))
                })
        case .deliver:
            return .deliver(subscriptionID: integer(&rng), topic: string(&rng), batches: bytes(&rng, count: 0...200))
        case .deliverSelected:
            var next = Int64.random(in: 0...1000, using: &rng)
            let selected = (0..<Int.random(in: 0...5, using: &rng)).map { _ -> Range<Int64> in
                let first = next + Int64.random(in: 0...10, using: &rng)
                next = first + Int64.random(in: 1...64, using: &rng)
                return first..<next
            }
            return .deliverSelected(
                subscriptionID: integer(&rng), topic: string(&rng), selected: selected, batches: bytes(&rng, count: 0...200))
        case .commitAck:
            return .commitAck(topic: string(&rng), offset: integer(&rng))
        case .unsubscribed:
            return .unsubscribed(subscriptionID: integer(&rng))
        case .pong:
            return .pong(nonce: integer(&rng))
        case .error:
            return .error(code: TelexError.Code(rawValue: integer(&rng)), message: string(&rng, scalars: 0...200))
        case .caughtUp:
            return .caughtUp(subscriptionID: integer(&rng))
        case .adminResult:
            let results: [AdminResult] = [
                .topics((0..<Int.random(in: 0...3, using: &rng)).map { _ in
                    TopicInfo(topic: string(&rng), startOffset: integer(&rng), endOffset: integer(&rng),
                              bytes: integer(&rng), segmentCount: integer(&rng), lastAppendTime: integer(&rng))
                }),
                .consumers((0..<Int.random(in: 0...3, using: &rng)).map { _ in
                    ConsumerPosition(consumer: string(&rng), topic: string(&rng), committed: integer(&rng),
                                     endOffset: integer(&rng), lag: integer(&rng), lastCommitTime: integer(&rng))
                }),
                .resetConsumer([ConsumerReset(topic: string(&rng), previous: integer(&rng), committed: integer(&rng))]),
                .deleteTopic(topic: string(&rng)),
            ]
            return .adminResult(results.randomElement(using: &rng)!)
        default:
            preconditionFailure("not a broker-to-client type")
        }
    }

    /// 1 to 12 records whose timestamps lie within ±24 days of the first.
    static func records(_ rng: inout some RandomNumberGenerator) -> [Record] {
        let base = Int64.random(in: -(1 << 50)...(1 << 50), using: &rng)
        return (0..<Int.random(in: 1...12, using: &rng)).map { index in
            Record(
                timestamp: index == 0 ? base : base + Int64.random(in: -2_000_000_000...2_000_000_000, using: &rng),
                key: bytes(&rng, count: 0...48),
                headers: (0..<Int.random(in: 0...4, using: &rng)).map { _ in
                    RecordHeader(name: string(&rng, scalars: 0...12), value: bytes(&rng, count: 0...40))
                },
                value: Bool.random(using: &rng)
                    ? bytes(&rng, count: 0...600)
                    : ByteBuffer(
                        string: String(
                            repeating: string(&rng, scalars: 1...8), count: Int.random(in: 1...60, using: &rng))))
        }
    }

    /// Bytes that look like frames often enough to reach the message decoders: plausible lengths, mostly version 1,
    /// mostly known types, random bodies; sometimes pure noise.
    static func frameStream(_ rng: inout some RandomNumberGenerator) -> ByteBuffer {
        var buffer = ByteBuffer()
        for _ in 0..<Int.random(in: 1...4, using: &rng) {
            if Int.random(in: 0..<10, using: &rng) == 0 {
                buffer.writeImmutableBuffer(bytes(&rng, count: 0...40))
                continue
            }
            let body = Bool.random(using: &rng) ? bytes(&rng, count: 0...80) : validBody(&rng)
            let lengthJitter = Int.random(in: 0..<8, using: &rng) == 0 ? Int.random(in: -3...3, using: &rng) : 0
            let length = max(0, 8 + body.readableBytes + lengthJitter)
            let version: UInt8 = Int.random(in: 0..<20, using: &rng) == 0 ? integer(&rng) : 1
            let type: UInt8 =
                Int.random(in: 0..<20, using: &rng) == 0 ? integer(&rng) : UInt8.random(in: 1...16, using: &rng)
            buffer.writeMultipleIntegers(
                UInt32(length), version, type, UInt16(0), UInt32(integer(&rng, as: UInt32.self)))
            buffer.writeImmutableBuffer(body)
        }
        return buffer
    }

    /// A valid encoding of some message body, possibly for a different type than the header will say.
    static func validBody(_ rng: inout some RandomNumberGenerator) -> ByteBuffer {
        var body = ByteBuffer()
        message(&rng).encodeBody(into: &body)
        return body
    }

    /// A valid batch with a few random byte changes; with `fixCRC` the CRC is recomputed so the change reaches
    /// the header checks, the record walk or the inflater.
    static func mutatedBatch(_ rng: inout some RandomNumberGenerator) -> ByteBuffer {
        var builder = RecordBatchBuilder()
        records(&rng).forEach { builder.append($0) }
        let original = builder.build(codec: Codec.allCases.randomElement(using: &rng)!)
        var batch = ByteBuffer()
        batch.writeImmutableBuffer(original)
        for _ in 0..<Int.random(in: 1...4, using: &rng) {
            let index = Int.random(in: 0..<batch.writerIndex, using: &rng)
            batch.setInteger(integer(&rng, as: UInt8.self), at: index)
        }
        if Int.random(in: 0..<4, using: &rng) == 0 {
            batch.moveWriterIndex(to: Int.random(in: 0...batch.writerIndex, using: &rng))
        }
        if Bool.random(using: &rng), batch.readableBytes >= 24 {
            batch.setInteger(CRC32.checksum(batch.getSlice(at: 24, length: batch.readableBytes - 24)!), at: 20)
        }
        return batch
    }
}

@Suite("Properties", .timeLimit(.minutes(1)))
struct PropertyTests {
    /// Runs every decoder a receiver would run on `bytes`; each may only return or throw `TelexError`.
    static func decodeEverything(_ bytes: ByteBuffer) {
        do {
            for frame in try decodeStream(bytes, limits: FrameLimits(maxFrameSize: 4096)) {
                // The broker decodes every frame as a ClientMessage, a client as a BrokerMessage.
                if case .publish(_, let batch)? = try? ClientMessage.decode(frame) {
                    decodeBatch(batch)
                }
                if case .deliver(_, _, let batches)? = try? BrokerMessage.decode(frame) {
                    (try? RecordBatch.split(batches))?.forEach(decodeBatch)
                }
            }
        } catch {
            #expect(error is TelexError, "FrameDecoder threw \(error)")
        }
    }

    static func decodeBatch(_ batch: ByteBuffer) {
        _ = try? RecordBatch.validate(batch)
        _ = try? RecordBatch.decodeRecords(batch)
    }

    @Test func randomBytesNeverCrashTheDecoders() async {
        await propertyCheck(count: 500, input: Gen<UInt8>.value().array(of: 0...300)) { bytes in
            Self.decodeEverything(ByteBuffer(bytes: bytes))
            Self.decodeBatch(ByteBuffer(bytes: bytes))
        }
    }

    @Test func frameLikeBytesNeverCrashTheDecoders() async {
        await propertyCheck(count: 1000, input: Generator { rng in RandomWire.frameStream(&rng) }) { bytes in
            Self.decodeEverything(bytes)
        }
    }

    @Test func mutatedBatchesNeverCrashTheBatchDecoders() async {
        await propertyCheck(count: 1000, input: Generator { rng in RandomWire.mutatedBatch(&rng) }) { batch in
            Self.decodeBatch(batch)
            Self.decodeEverything(frameBytes(.publish(topic: Newsroom.topic, batch: batch), requestID: 1))
        }
    }

    @Test func randomHeadersWithAValidCRCNeverCrashTheBatchDecoders() async {
        let input = Generator { rng in
            var batch = RandomWire.bytes(&rng, count: 64...400)
            batch.setInteger(UInt32(batch.readableBytes - 12), at: 8)
            batch.setInteger(RecordBatchHeader.currentMagic, at: 24)
            let codec = Codec.allCases.randomElement(using: &rng)!
            batch.setInteger(codec.rawValue, at: 25)
            let timestamp = RandomWire.integer(&rng, as: Int64.self)
            batch.setMultipleIntegers(timestamp, timestamp, at: 28)
            batch.setInteger(UInt32.random(in: 1...8, using: &rng), at: 56)
            let storedLength = UInt32(batch.readableBytes - 64)
            batch.setInteger(codec == .none ? storedLength : UInt32.random(in: 16...4096, using: &rng), at: 60)
            batch.setInteger(CRC32.checksum(batch.getSlice(at: 24, length: batch.readableBytes - 24)!), at: 20)
            return batch
        }
        await propertyCheck(count: 500, input: input) { batch in
            Self.decodeBatch(batch)
        }
    }

    @Test func encodeThenDecodeIsIdentityForRandomClientMessages() async {
        let input = Generator { rng in RandomWire.clientMessage(&rng) }
        await propertyCheck(count: 500, input: input, Gen<UInt32>.value()) { message, requestID in
            let frame = try decodeOneFrame(frameBytes(message, requestID: requestID))
            #expect(frame.header == FrameHeader(type: message.type, requestID: requestID))
            #expect(try ClientMessage.decode(frame) == message)
            expectTelexError(.malformedFrame, mentioning: ["sent by clients"]) {
                _ = try BrokerMessage.decode(frame)
            }
        }
    }

    @Test func encodeThenDecodeIsIdentityForRandomBrokerMessages() async {
        let input = Generator { rng in RandomWire.brokerMessage(&rng) }
        await propertyCheck(count: 500, input: input, Gen<UInt32>.value()) { message, requestID in
            let frame = try decodeOneFrame(frameBytes(message, requestID: requestID))
            #expect(frame.header == FrameHeader(type: message.type, requestID: requestID))
            #expect(try BrokerMessage.decode(frame) == message)
            expectTelexError(.invalidRequest, mentioning: ["sent by the broker"]) {
                _ = try ClientMessage.decode(frame)
            }
        }
    }

    @Test func encodeThenDecodeIsIdentityForRandomBatches() async {
        let input = Generator { rng in
            (
                RandomWire.records(&rng), Codec.allCases.randomElement(using: &rng)!,
                Int64.random(in: 0...(1 << 62), using: &rng), Int32.random(in: -1 ... .max, using: &rng)
            )
        }
        await propertyCheck(count: 300, input: input) { records, codec, baseOffset, sequence in
            var builder = RecordBatchBuilder()
            records.forEach { builder.append($0) }
            var batch = builder.build(codec: codec, producerID: baseOffset ^ 0x5A5A, producerSequence: sequence)
            RecordBatch.assign(baseOffset: baseOffset, appendTime: Newsroom.appendTime, in: &batch, at: 0)

            let header = try RecordBatch.validate(batch)
            #expect(header.codec == codec)
            #expect(header.baseOffset == baseOffset)
            #expect(header.producerID == baseOffset ^ 0x5A5A)
            #expect(header.producerSequence == sequence)
            #expect(header.recordCount == UInt32(records.count))
            #expect(header.firstTimestamp == records[0].timestamp)
            #expect(header.lastTimestamp == records.map(\.timestamp).max())
            let (decodedHeader, decoded) = try RecordBatch.decodeRecords(batch)
            #expect(decodedHeader == header)
            #expect(decoded == records)

            var twice = batch
            twice.writeImmutableBuffer(batch)
            let frame = try decodeOneFrame(
                frameBytes(.deliver(subscriptionID: 1, topic: "t", batches: twice), requestID: 0))
            guard case .deliver(_, _, let delivered) = try BrokerMessage.decode(frame) else {
                Issue.record("not a DELIVER")
                return
            }
            #expect(try RecordBatch.split(delivered) == [batch, batch])
        }
    }

    @Test func everyValidTopicMatchesItselfAndItsWildcards() async {
        let token = Gen.letterOrNumber.string(of: 1...10)
        await propertyCheck(count: 300, input: token.array(of: 1...6)) { tokens in
            let topic = tokens.joined(separator: ".")
            try TopicName.validate(topic)
            #expect(TopicName.matches(pattern: topic, topic: topic))
            #expect(TopicName.matches(pattern: ">", topic: topic))
            let starred = (tokens.dropLast() + ["*"]).joined(separator: ".")
            try TopicName.validatePattern(starred)
            #expect(TopicName.matches(pattern: starred, topic: topic))
            if tokens.count > 1 {
                let rest = (tokens.prefix(1) + [">"]).joined(separator: ".")
                #expect(TopicName.matches(pattern: rest, topic: topic))
                #expect(!TopicName.matches(pattern: rest, topic: tokens[0]))
            }
            #expect(!TopicName.matches(pattern: topic, topic: topic + ".x"))
        }
    }
}

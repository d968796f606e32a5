import Foundation
import NIOCore
import Testing
import TelexClient
import TelexEvents
import TelexProtocol
import TelexServer
import TelexStorage

@Suite("Broker end to end", .serialized, .timeLimit(.minutes(1)))
struct BrokerTests {
    @Test("publish then subscribe returns every event with its key, headers, offset and broker time")
    func publishThenSubscribe() async throws {
        try await withServer { _, client in
            let events = try (0..<150).map { try articleEvent($0) }
            let results = try await client.publish(events: events, to: "news.world")
            #expect(results.map(\.offset) == Array(0..<150))
            #expect(results.allSatisfy { $0.topic == "news.world" })
            let subscription = try await client.subscribe("news.world", from: .beginning, untilCaughtUp: true)
            var received: [DeliveredRecord] = []
            for try await record in subscription { received.append(record) }
            #expect(received.map(\.offset) == Array(0..<150))
            #expect(String(buffer: received[7].record.key) == "urn:telex:test:article-7")
            #expect(received[7].record.header("ce-type") == "article.created")
            #expect(received[7].record.header("ce-id") == "evt-7")
            #expect(received.allSatisfy { $0.brokerTime > 1_700_000_000_000 })
            let line = try CloudEvent.outputLine(value: received[7].record.value, topic: "news.world", offset: 7,
                                                 brokerTime: received[7].brokerTime)
            let roundTrip = try CloudEvent(jsonText: Data(line.utf8))
            #expect(roundTrip.uri == "urn:telex:test:article-7")
            #expect(roundTrip.topic == "news.world")
        }
    }

    @Test("subscribe starts at an offset, at the end, or at a time")
    func startPositions() async throws {
        try await withServer { server, client in
            _ = try await client.publish(records(0..<10), to: "sport.football")
            let middle = try await client.subscribe("sport.football", from: .offset(6), untilCaughtUp: true)
            var offsets: [Int64] = []
            for try await record in middle { offsets.append(record.offset) }
            #expect(offsets == [6, 7, 8, 9])

            let log = try #require(server.topicStore?.log("sport.football"))
            try await Task.sleep(nanoseconds: 20_000_000)
            let cut = Int64(Date().timeIntervalSince1970 * 1000)
            try await Task.sleep(nanoseconds: 20_000_000)
            _ = try await client.publish(records(10..<13), to: "sport.football")
            #expect(try log.offset(atOrAfter: cut) == 10)
            let since = try await client.subscribe("sport.football", from: .timestamp(cut), untilCaughtUp: true)
            offsets = []
            for try await record in since { offsets.append(record.offset) }
            #expect(offsets == [10, 11, 12])

            let tail = try await client.subscribe("sport.football", from: .end)
            _ = try await client.publish(records(13..<15), to: "sport.football")
            #expect(try await collect(tail, count: 2).map(\.offset) == [13, 14])
            await tail.cancel()
        }
    }

    @Test("an offset outside the log is refused with a clear error")
    func offsetOutOfRange() async throws {
        try await withServer { _, client in
            _ = try await client.publish(records(0..<3), to: "news.world")
            await #expect {
                _ = try await client.subscribe("news.world", from: .offset(50))
            } throws: { error in
                let error = try #require(error as? TelexError)
                return error.code == .offsetOutOfRange && error.message.contains("beyond the end")
            }
        }
    }

    @Test("wildcards match one token or the rest, including topics created after subscribing")
    func wildcards() async throws {
        try await withServer { _, client in
            _ = try await client.publish(records(0..<2), to: "news.world")
            _ = try await client.publish(records(2..<4), to: "news.europe.italy")
            _ = try await client.publish(records(4..<5), to: "sport.football")
            let one = try await client.subscribe("news.*", from: .beginning)
            let rest = try await client.subscribe("news.>", from: .beginning)
            #expect(one.topics.map(\.topic) == ["news.world"])
            #expect(Set(rest.topics.map(\.topic)) == ["news.world", "news.europe.italy"])
            var restIterator = rest.makeAsyncIterator()
            let initial = try await collect(&restIterator, count: 4)
            #expect(Set(initial.map(\.topic)) == ["news.world", "news.europe.italy"])
            // A topic born after the subscription: delivered from its first record.
            _ = try await client.publish(records(5..<8), to: "news.china.harbin")
            let later = try await collect(&restIterator, count: 3)
            #expect(later.map(\.topic) == Array(repeating: "news.china.harbin", count: 3))
            #expect(later.map(\.offset) == [0, 1, 2])
            let viaStar = try await collect(one, count: 2)
            #expect(viaStar.allSatisfy { $0.topic == "news.world" })
            await one.cancel()
            await rest.cancel()
        }
    }

    @Test("replay hands over to live delivery with no gap and no duplicate while publishing continues")
    func replayToLiveHandover() async throws {
        try await withServer { server, client in
            _ = try await client.publish(records(0..<500), to: "news.world")
            let total = 2500
            let publisher = TelexClient(configuration: clientConfiguration(server))
            let running = Task { await publisher.run() }
            let publishing = Task {
                var next = 500
                while next < total {
                    let end = min(next + 97, total)
                    _ = try await publisher.publish(records(next..<end), to: "news.world")
                    next = end
                }
            }
            let subscription = try await client.subscribe("news.world", from: .beginning)
            let received = try await collect(subscription, count: total, seconds: 60)
            try await publishing.value
            #expect(received.map(\.offset) == (0..<Int64(total)).map { $0 })
            #expect(received.map { String(buffer: $0.record.key) } == (0..<total).map { "urn:telex:test:article-\($0)" })
            await subscription.cancel()
            running.cancel()
        }
    }

    @Test("a restarted broker serves everything acknowledged before")
    func restartAndReplay() async throws {
        try await withTemporaryDirectory { directory in
            try await withServer(directory: directory) { _, client in
                _ = try await client.publish(records(0..<300), to: "news.world")
                _ = try await client.publish(records(0..<5), to: "business.markets")
            }
            try await withServer(directory: directory) { _, client in
                let acks = try await client.publish(records(300..<310), to: "news.world")
                #expect(acks.first?.baseOffset == 300)
                let subscription = try await client.subscribe("news.world", from: .beginning, untilCaughtUp: true)
                var keys: [String] = []
                for try await record in subscription { keys.append(String(buffer: record.record.key)) }
                #expect(keys == (0..<310).map { "urn:telex:test:article-\($0)" })
            }
        }
    }

    @Test("a durable consumer resumes from its committed position, across client and broker restarts")
    func durableConsumer() async throws {
        try await withTemporaryDirectory { directory in
            try await withServer(directory: directory) { server, client in
                _ = try await client.publish(records(0..<20), to: "news.world")
                let first = try await client.subscribe("news.>", from: .beginning, consumer: "search-indexer")
                let got = try await collect(first, count: 8)
                #expect(got.map(\.offset) == Array(0..<8))
                try await first.commit()
                await first.cancel()

                try await withAnotherClient(server) { again in
                    let second = try await again.subscribe("news.>", from: .beginning, consumer: "search-indexer")
                    #expect(try await collect(second, count: 2).map(\.offset) == [8, 9])
                    try await second.commit()
                    await second.cancel()
                }
            }
            try await withServer(directory: directory) { _, client in
                let resumed = try await client.subscribe("news.>", from: .beginning, consumer: "search-indexer", untilCaughtUp: true)
                var offsets: [Int64] = []
                for try await record in resumed { offsets.append(record.offset) }
                #expect(offsets == Array(10..<20))
                await #expect(throws: TelexError.self) {
                    let anonymous = try await client.subscribe("news.world", from: .beginning)
                    try await anonymous.commit(topic: "news.world", offset: 3)
                }
            }
        }
    }

    @Test("a slow subscriber gets no more than its credit while a fast one keeps up")
    func slowSubscriberIsBounded() async throws {
        try await withServer { server, client in
            let port = server.localPort!
            let slow = try RawConnection(port: port)
            try slow.hello()
            slow.send(.subscribe(subscriptionID: 1, pattern: "news.world", start: .beginning, consumerName: "",
                                 initialCredit: 2, resume: []), requestID: 2)
            guard case .subscribed = try slow.readMessage().message else { Issue.record("no SUBSCRIBED"); return }
            let fast = try await client.subscribe("news.world", from: .beginning)
            try await withAnotherClient(server) { publisher in
                for chunk in 0..<20 {
                    _ = try await publisher.publish(records(chunk * 64..<(chunk + 1) * 64), to: "news.world")
                }
            }
            let received = try await collect(fast, count: 20 * 64, seconds: 60)
            #expect(received.count == 1280)
            // The slow connection never read: it holds at most its 2 batches of credit.
            var batches = 0
            slow.setReadTimeout(milliseconds: 500)
            while let frame = try? slow.readFrame() {
                if case .deliver(_, _, let bytes) = try BrokerMessage.decode(frame) {
                    batches += try RecordBatch.split(bytes).count
                }
            }
            #expect(batches == 2)
            await fast.cancel()
        }
    }

    @Test("a retried batch is stored once and answered with its original offsets")
    func idempotentRetry() async throws {
        try await withServer { server, client in
            let prepared = try await client.prepare(records(0..<10), topic: "news.world")
            let first = try await client.publish(prepared: prepared)
            let retry = try await client.publish(prepared: prepared)
            #expect(first.map(\.baseOffset) == retry.map(\.baseOffset))
            #expect(first.allSatisfy { !$0.duplicate })
            #expect(retry.allSatisfy { $0.duplicate })
            #expect(server.topicStore?.log("news.world")?.endOffset == 10)
        }
    }

    @Test("publishing to a topic that does not exist fails when topic creation is disabled")
    func topicCreationDisabled() async throws {
        _ = try await withServer(configure: { $0.allowTopicCreation = false }) { _, client in
            await #expect {
                _ = try await client.publish(records(0..<1), to: "news.world")
            } throws: { error in
                // A publish that fails once sent reports what was acknowledged (nothing, here) and why.
                let publishError = try #require(error as? PublishError)
                #expect(publishError.acknowledged.isEmpty && publishError.unacknowledged.count == 1)
                let error = try #require(publishError.telexError)
                return error.code == .topicNotFound && error.message.contains("news.world")
            }
        }
    }
}

@Suite("Broker bad input", .serialized, .timeLimit(.minutes(1)))
struct BadInputTests {
    @Test("garbage bytes get an ERROR frame and a closed connection; the broker keeps serving")
    func garbage() async throws {
        try await withServer { server, client in
            _ = try await client.publish(records(0..<5), to: "news.world")
            let raw = try RawConnection(port: server.localPort!)
            raw.send(ByteBuffer(bytes: [0x00, 0x00, 0x00, 0x10, 0x07, 0x63, 0x00, 0x00] + Array(repeating: 0xAB, count: 16)))
            let (_, message) = try raw.readMessage()
            guard case .error(let code, let text) = message else { Issue.record("expected ERROR, got \(message)"); return }
            #expect(code == .unsupportedVersion)
            #expect(text.contains("version 7"))
            #expect(raw.waitForClose())
            let subscription = try await client.subscribe("news.world", from: .beginning, untilCaughtUp: true)
            var count = 0
            for try await _ in subscription { count += 1 }
            #expect(count == 5)
        }
    }

    @Test("an oversized frame is refused before its body is read")
    func oversizedFrame() async throws {
        try await withServer(configure: { $0.maxFrameSize = 64 << 10 }) { server, _ in
            let raw = try RawConnection(port: server.localPort!)
            try raw.hello()
            var header = ByteBuffer()
            header.writeMultipleIntegers(UInt32(10 << 20), UInt8(1), MessageType.publish.rawValue, UInt16(0), UInt32(9))
            raw.send(header)
            let (requestID, message) = try raw.readMessage()
            guard case .error(let code, let text) = message else { Issue.record("expected ERROR"); return }
            #expect(code == .frameTooLarge)
            #expect(text.contains("65536"))
            #expect(requestID == 0)
            #expect(raw.waitForClose())
        }
    }

    @Test("the client refuses a PUBLISH above the broker's maxFrameSize without sending it")
    func publishAboveBrokerFrameSize() async throws {
        try await withServer(configure: { $0.maxFrameSize = 4096 }) { _, client in
            var generator = SystemRandomNumberGenerator()
            let noise = ByteBuffer(bytes: (0..<8192).map { _ in UInt8.random(in: 0...255, using: &generator) })
            let large = Record(timestamp: 1, key: ByteBuffer(string: "big"), value: noise)
            let error = await #expect(throws: PublishError.self) { try await client.publish([large], to: "news.big") }
            let telexError = try #require(error?.telexError)
            #expect(telexError.code == .frameTooLarge)
            #expect(telexError.message.contains("'news.big'") && telexError.message.contains("4096"))
            let acks = try await client.publish(records(0..<1), to: "news.big")
            #expect(acks.first?.baseOffset == 0)
        }
    }

    @Test("a batch with a bad CRC or an invalid topic is refused; the connection and the log stay good")
    func badBatchAndTopic() async throws {
        try await withServer { server, client in
            _ = try await client.publish(records(0..<3), to: "news.world")
            let raw = try RawConnection(port: server.localPort!)
            try raw.hello()
            var builder = RecordBatchBuilder()
            builder.append(try articleEvent(99).record())
            var batch = builder.build(codec: .zlib)
            let last = batch.writerIndex - 1
            batch.setInteger(batch.getInteger(at: last, as: UInt8.self)! ^ 0x40, at: last)
            raw.send(.publish(topic: "news.world", batch: batch), requestID: 5)
            var reply = try raw.readMessage()
            guard case .error(let code, let text) = reply.message else { Issue.record("expected ERROR"); return }
            #expect(code == .corruptBatch)
            #expect(text.contains("CRC"))
            #expect(reply.requestID == 5)

            raw.send(.publish(topic: "news..world", batch: builder.build(codec: .none)), requestID: 6)
            reply = try raw.readMessage()
            guard case .error(let topicCode, let topicText) = reply.message else { Issue.record("expected ERROR"); return }
            #expect(topicCode == .invalidTopic)
            #expect(topicText.contains("empty token"))

            raw.send(.publish(topic: "news.world", batch: builder.build(codec: .none)), requestID: 7)
            reply = try raw.readMessage()
            guard case .publishAck(_, let baseOffset, _, _) = reply.message else { Issue.record("expected ack"); return }
            #expect(baseOffset == 3)
            let subscription = try await client.subscribe("news.world", from: .beginning, untilCaughtUp: true)
            var count = 0
            for try await _ in subscription { count += 1 }
            #expect(count == 4)
        }
    }

    @Test("a request before HELLO is refused")
    func handshakeRequired() async throws {
        try await withServer { server, _ in
            let raw = try RawConnection(port: server.localPort!)
            raw.send(.ping(nonce: 1), requestID: 3)
            let (_, message) = try raw.readMessage()
            guard case .error(let code, _) = message else { Issue.record("expected ERROR"); return }
            #expect(code == .handshakeRequired)
            #expect(raw.waitForClose())
        }
    }

    @Test("a message only brokers send is refused with an ERROR; the connection stays open")
    func brokerMessageSentToTheBroker() async throws {
        try await withServer { server, _ in
            let raw = try RawConnection(port: server.localPort!)
            try raw.hello()
            raw.send(BrokerMessage.pong(nonce: 7), requestID: 21)
            let (requestID, message) = try raw.readMessage()
            guard case .error(let code, let text) = message else { Issue.record("expected ERROR, got \(message)"); return }
            #expect(code == .invalidRequest)
            #expect(text.contains("PONG") && text.contains("sent by the broker, not to it"))
            #expect(requestID == 21)
            raw.send(ClientMessage.ping(nonce: 8), requestID: 22)
            let pong = try raw.readMessage()
            #expect(pong.requestID == 22)
            #expect(pong.message == .pong(nonce: 8))
        }
    }

    @Test("an invalid event is rejected with the field that is wrong")
    func invalidEvent() throws {
        let cases: [(String, String)] = [
            (#"{"specversion":"1.0","id":"1","source":"s","type":"article.created","data":{}}"#, "data.uri"),
            (#"{"specversion":"0.3","id":"1","source":"s","type":"t","data":{"uri":"u"}}"#, "specversion"),
            (#"{"specversion":"1.0","source":"s","type":"t","data":{"uri":"u"}}"#, "'id'"),
            (#"{"specversion":"1.0","id":"1","source":"s","type":"t","time":"yesterday","data":{"uri":"u"}}"#, "'time'"),
            (#"{"specversion":"1.0","id":"1","source":"s","type":"t","topic":"news..x","data":{"uri":"u"}}"#, "'topic'"),
            (#"{"specversion":"1.0","id":"1","source":"s","type":"article.updated","data":{"uri":"u","headlines":"x"}}"#, "data.headlines"),
            (#"not json"#, "not valid JSON"),
        ]
        for (text, field) in cases {
            #expect {
                _ = try CloudEvent(jsonText: Data(text.utf8), location: "line 4")
            } throws: { error in
                let error = try #require(error as? TelexError)
                return error.code == .invalidEvent && error.message.contains("line 4") && error.message.contains(field)
            }
        }
    }

    @Test("an unreachable broker gives a clear connection error")
    func unreachable() async throws {
        var configuration = ClientConfiguration(port: 1)
        configuration.connectTimeout = .seconds(2)
        await #expect {
            try await TelexClient.withClient(configuration: configuration) { try await $0.connect() }
        } throws: { error in
            let error = try #require(error as? TelexError)
            return error.code == .connectionFailed && error.message.contains("127.0.0.1:1")
        }
    }
}

import Foundation
import NIOCore
import TelexClient
import TelexProtocol
import TelexServer
import Testing

/// A bit flipped in a stored batch while the broker was stopped: subscribers get DATA_LOSS naming the topic and
/// the lost offsets, or, having asked to skip damaged ranges, the records after the gap.
@Suite("Data loss", .timeLimit(.minutes(1)))
struct DataLossTests {
    static let topic = "news.world"

    /// Publishes 20 records, one batch each, stops the broker, and flips a bit inside batch 10's records.
    static func damagedDirectory(_ directory: String) async throws {
        try await withServer(directory: directory) { _, client in
            for record in plainRecords(0..<20) { _ = try await client.publish([record], to: topic) }
        }
        try flipBitInBatch10(directory)
    }

    /// Flips one bit inside the records of the batch at offset 10, in place (a running broker sees it at once).
    static func flipBitInBatch10(_ directory: String) throws {
        try flipBitInBatch10(segment: directory + "/topics/\(topic)/00000000000000000000.log")
    }

    /// Flips one bit inside the records of the batch at offset 10 of the segment file at `path`, in place.
    static func flipBitInBatch10(segment path: String) throws {
        let contents = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let buffer = ByteBuffer(bytes: contents)
        var position = 0
        while let header = RecordBatchHeader.peek(buffer, at: position), header.baseOffset < 10 {
            position += header.totalSize
        }
        position += RecordBatchHeader.size + 10
        let file = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        defer { try? file.close() }
        try file.seek(toOffset: UInt64(position))
        try file.write(contentsOf: [contents[position] ^ 0x04])
    }

    @Test("without skip-damaged the subscription ends with DATA_LOSS after the records before the damage")
    func dataLossEndsTheSubscription() async throws {
        try await withTemporaryDirectory { directory in
            try await Self.damagedDirectory(directory)
            try await withServer(directory: directory) { _, client in
                let subscription = try await client.subscribe(Self.topic, from: .beginning)
                let (offsets, failure) = try await offsetsUntilError(subscription)
                #expect(offsets == Array(0..<10))
                #expect(failure?.code == .dataLoss)
                #expect(failure?.message.contains("offset 10 of news.world is lost") == true)
                #expect(subscription.isEnded)
            }
        }
    }

    @Test("with skip-damaged the subscriber gets every record after the gap, and the gap is reported")
    func skipDamagedDeliversAfterTheGap() async throws {
        try await withTemporaryDirectory { directory in
            try await Self.damagedDirectory(directory)
            try await withServer(directory: directory) { server, client in
                let subscription = try await client.subscribe(Self.topic, from: .beginning, skipDamaged: true)
                let received = try await collect(subscription, count: 19)
                #expect(received.map(\.offset) == Array(0..<10) + Array(11..<20))
                #expect(received.compactMap(\.skippedBefore) == [10..<11])
                #expect(received.first { $0.offset == 11 }?.skippedBefore == 10..<11)

                // Publishing goes on after the last offset ever stored.
                let acks = try await client.publish(plainRecords(20..<21), to: Self.topic)
                #expect(acks.first?.baseOffset == 20)
                #expect(server.topicStore?.log(Self.topic)?.endOffset == 21)
            }
        }
    }

    @Test("over TLS a batch that rotted after the broker checked it is caught when read for delivery")
    func tlsDeliveryChecksCRCs() async throws {
        try await withTemporaryDirectory { directory in
            try FileManager.default.createDirectory(atPath: directory + "/certificates", withIntermediateDirectories: true)
            let certificates = try TestCertificates(directory: directory + "/certificates")
            try certificates.makeCA("ca")
            try certificates.makeServer("server", signedBy: "ca")
            let data = directory + "/data"
            let server = try await startServer(directory: data) {
                $0.tls = ServerTLSConfiguration(
                    certificateChainPath: certificates.certificate("server"), privateKeyPath: certificates.key("server"))
            }
            var configuration = clientConfiguration(server)
            configuration.tls = ClientTLSConfiguration(trustRoots: .file(certificates.certificate("ca")))
            do {
                try await TelexClient.withClient(configuration: configuration) { client in
                    for record in plainRecords(0..<20) { _ = try await client.publish([record], to: Self.topic) }
                    // Appended batches were checked on append; this flip happens after, behind the broker's back.
                    try Self.flipBitInBatch10(data)

                    let plain = try await client.subscribe(Self.topic, from: .beginning)
                    let (offsets, failure) = try await offsetsUntilError(plain)
                    #expect(offsets == Array(0..<10))
                    #expect(failure?.code == .dataLoss)
                    #expect(failure?.message.contains("offset 10 of news.world is lost") == true)

                    let skipping = try await client.subscribe(Self.topic, from: .beginning, skipDamaged: true)
                    let received = try await collect(skipping, count: 19)
                    #expect(received.map(\.offset) == Array(0..<10) + Array(11..<20))
                    #expect(received.compactMap(\.skippedBefore) == [10..<11])
                }
                try await server.shutdown()
            } catch {
                try? await server.shutdown()
                throw error
            }
        }
    }

    @Test("a bit flipped in a segment sealed before the broker started is found when first delivered: DATA_LOSS")
    func sealedSegmentCheckedBeforeDelivery() async throws {
        try await withTemporaryDirectory { directory in
            // About four batches per segment: offset 10 lands in a sealed one.
            let small: (inout ServerConfiguration) -> Void = { $0.log.segmentBytes = 1000 }
            try await withServer(directory: directory, configure: small) { _, client in
                for record in plainRecords(0..<20) { _ = try await client.publish([record], to: Self.topic) }
            }
            let topicDirectory = directory + "/topics/\(Self.topic)"
            let bases = try FileManager.default.contentsOfDirectory(atPath: topicDirectory)
                .filter { $0.hasSuffix(".log") }.map { Int64($0.dropLast(4))! }.sorted()
            let base = try #require(bases.last { $0 <= 10 })
            try #require(base < bases.last!)
            let path = topicDirectory + "/" + String(repeating: "0", count: 20 - String(base).count) + "\(base).log"
            try Self.flipBitInBatch10(segment: path)

            try await withServer(directory: directory, configure: small) { _, client in
                let subscription = try await client.subscribe(Self.topic, from: .beginning)
                let (offsets, failure) = try await offsetsUntilError(subscription)
                #expect(offsets == Array(0..<10))
                #expect(failure?.code == .dataLoss)
                #expect(failure?.message.contains("offset 10 of news.world is lost") == true)
                let skipping = try await client.subscribe(Self.topic, from: .beginning, skipDamaged: true)
                #expect(try await collect(skipping, count: 19).map(\.offset) == Array(0..<10) + Array(11..<20))
            }
        }
    }
}

/// The offsets `subscription` delivers until it ends, and the `TelexError` it ended with, if any.
private func offsetsUntilError(_ subscription: TelexSubscription) async throws -> ([Int64], TelexError?) {
    var offsets: [Int64] = []
    do {
        for try await delivered in subscription { offsets.append(delivered.offset) }
    } catch let error as TelexError {
        return (offsets, error)
    }
    return (offsets, nil)
}

import Foundation
import NIOCore
import TelexProtocol
import Testing

@testable import TelexStorage

@Suite("Storage inspector", .timeLimit(.minutes(1)))
struct InspectorTests {
    func dump(_ directory: String, topic: String? = nil) throws -> [[String: Any]] {
        var lines: [String] = []
        try StorageInspector.dump(dataDirectory: directory, topic: topic) { lines.append($0) }
        // Batch and problem lines only: the key index lines are checked in KeyIndexFilesTests.
        return try lines.filter { !$0.hasPrefix("{\"keyIndex\"") }.map { line in
            #expect(!line.contains("\n"))
            return try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        }
    }

    @Test("dump prints one JSON line per batch, and flags a batch whose CRC fails")
    func dumpsEveryBatch() async throws {
        try await withTemporaryDirectory { directory in
            let batchSize = makeBatch(records: 2, seed: 0, codec: .zlib).readableBytes
            let store = try TopicStore(
                directory: directory, configuration: testConfiguration(segmentBytes: batchSize * 2),
                logger: makeLogger())
            let wire = try store.createLog("news.wire").log
            var appendTimes: [Int64] = []
            for _ in 0..<5 {
                let result = try wire.append(
                    makeBatch(records: 2, seed: 0, codec: .zlib, producerID: 9, sequence: Int32(appendTimes.count)))
                appendTimes.append(header(try wire.read(from: result.baseOffset, maxBytes: 1)!.readBytes()).appendTime)
            }
            _ = try store.createLog("news.sport").log.append(makeBatch(records: 1, seed: 4))
            try store.close()

            let lines = try dump(directory)
            #expect(lines.count == 6)
            let wireLines = lines.filter { $0["topic"] as? String == "news.wire" }
            #expect(wireLines.count == 5)
            for (index, line) in wireLines.enumerated() {
                #expect(line["crcValid"] as? Bool == true)
                #expect(line["computedCrc"] == nil)
                #expect(line["baseOffset"] as? Int == index * 2)
                #expect(line["lastOffset"] as? Int == index * 2 + 1)
                #expect(line["recordCount"] as? Int == 2)
                #expect(line["codec"] as? String == "zlib")
                #expect(line["appendTime"] as? Int64 == appendTimes[index])
                #expect(line["producerId"] as? Int == 9)
                #expect(line["producerSequence"] as? Int == index)
                #expect(line["segment"] as? String == Segment.fileName(Int64(index / 2 * 4), ".log"))
                #expect(line["position"] as? Int == (index % 2) * (line["size"] as? Int ?? -1))
                #expect((line["crc"] as? String)?.hasPrefix("0x") == true)
            }
            let sport = try dump(directory, topic: "news.sport")
            #expect(sport.count == 1)
            #expect(sport.first?["codec"] as? String == "none")

            // Flip one byte inside the records of the fourth batch (second batch of the second segment).
            let path = directory + "/topics/news.wire/" + Segment.fileName(4, ".log")
            var contents = try readFile(path)
            let position = try #require(wireLines[3]["position"] as? Int)
            contents[position + RecordBatchHeader.size + 3] ^= 0x01
            try writeFile(path, contents)

            let damaged = try dump(directory, topic: "news.wire")
            #expect(damaged.count == 5)
            #expect(damaged.map { $0["crcValid"] as? Bool } == [true, true, true, false, true])
            #expect((damaged[3]["computedCrc"] as? String) != (damaged[3]["crc"] as? String))
            #expect(damaged[3]["baseOffset"] as? Int == 6)
        }
    }

    @Test("a torn batch at the end of a segment is reported as an error line")
    func reportsTornTail() async throws {
        try await withTemporaryDirectory { directory in
            let store = try TopicStore(directory: directory, configuration: testConfiguration(), logger: makeLogger())
            let log = try store.createLog("news.wire").log
            _ = try log.append(makeBatch(records: 2))
            _ = try log.append(makeBatch(records: 2, seed: 1))
            try store.close()
            let path = directory + "/topics/news.wire/" + Segment.fileName(0, ".log")
            truncateFile(path, to: try fileSize(path) - 5)
            let lines = try dump(directory)
            #expect(lines.count == 2)
            #expect(lines[0]["crcValid"] as? Bool == true)
            #expect((lines[1]["error"] as? String)?.contains("remain") == true)
            #expect(lines[1]["position"] as? Int == makeBatch(records: 2).readableBytes)
        }
    }

    @Test("inspect reports the structs that dump encodes, one line per finding with sorted keys")
    func inspectMatchesDump() async throws {
        try await withTemporaryDirectory { directory in
            let store = try TopicStore(directory: directory, configuration: testConfiguration(), logger: makeLogger())
            let log = try store.createLog("news.wire").log
            _ = try log.append(makeBatch(records: 2, producerID: 3, sequence: 0))
            _ = try log.append(makeBatch(records: 1, seed: 1))
            try store.close()
            let path = directory + "/topics/news.wire/" + Segment.fileName(0, ".log")
            truncateFile(path, to: try fileSize(path) - 5)

            var findings: [StorageInspector.Finding] = []
            try StorageInspector.inspect(dataDirectory: directory) { findings.append($0) }
            var lines: [String] = []
            try StorageInspector.dump(dataDirectory: directory) { lines.append($0) }
            #expect(lines.count == 2)
            guard case .batch(let batch) = findings.first, case .problem(let problem) = findings.last else {
                Issue.record("expected a batch and a problem, got \(findings)")
                return
            }
            #expect(batch.producerId == 3)
            #expect(batch.computedCrc == nil)
            #expect(problem.position == batch.size)
            #expect(try JSONDecoder().decode(StorageInspector.BatchDescription.self, from: Data(lines[0].utf8)) == batch)
            #expect(try JSONDecoder().decode(StorageInspector.Problem.self, from: Data(lines[1].utf8)) == problem)
            #expect(lines[0].hasPrefix("{\"appendTime\":"))
            #expect(lines[1] == "{\"error\":\"\(problem.error)\",\"position\":\(batch.size),\"segment\":\"\(Segment.fileName(0, ".log"))\",\"topic\":\"news.wire\"}")
        }
    }

    @Test("dump refuses a directory that is not a data directory")
    func refusesOtherDirectories() async throws {
        try await withTemporaryDirectory { directory in
            let error = #expect(throws: TelexError.self) {
                try StorageInspector.dump(dataDirectory: directory) { _ in }
            }
            #expect(error?.code == .storageFailure)
        }
    }
}

@Suite("Topic store", .timeLimit(.minutes(1)))
struct TopicStoreTests {
    @Test(
        "createLog refuses names that are not topic names",
        arguments: [
            "", "news..wire", ".news", "news.", "news wire", "news/wire", "news.*", "news.>", "..", "nyhet.ø",
            String(repeating: "a", count: 65),
        ])
    func invalidTopicNames(topic: String) async throws {
        try await withTemporaryDirectory { directory in
            let store = try TopicStore(directory: directory, configuration: testConfiguration(), logger: makeLogger())
            let error = #expect(throws: TelexError.self) { try store.createLog(topic) }
            #expect(error?.code == .invalidTopic)
            #expect(store.topics.isEmpty)
            #expect(try FileManager.default.contentsOfDirectory(atPath: directory + "/topics").isEmpty)
        }
    }

    @Test("reopening the store recovers every topic and the consumer offsets")
    func reopenRecoversTopics() async throws {
        try await withTemporaryDirectory { directory in
            let configuration = testConfiguration()
            let topics = ["news.wire", "news.sport.football", "A_b-9"]
            do {
                let store = try TopicStore(directory: directory, configuration: configuration, logger: makeLogger())
                for (number, topic) in topics.enumerated() {
                    let (log, created) = try store.createLog(topic)
                    #expect(created)
                    let again = try store.createLog(topic)
                    #expect(!again.created)
                    #expect(again.log === log)
                    for seed in 0...number { _ = try log.append(makeBatch(records: 2, seed: seed)) }
                }
                try store.consumerOffsets.commit("archive", topic: "news.wire", offset: 2)
                #expect(store.log("missing") == nil)
                try store.close()
            }
            // A stray directory whose name is not a topic is left alone.
            try FileManager.default.createDirectory(
                atPath: directory + "/topics/not a topic", withIntermediateDirectories: true)

            let handler = RecordingLogHandler()
            let reopened = try TopicStore(
                directory: directory, configuration: configuration, logger: makeLogger(handler))
            #expect(reopened.topics == topics.sorted())
            #expect(handler.messages.contains("ignoring directory that is not a topic name"))
            for (number, topic) in topics.enumerated() {
                let log = try #require(reopened.log(topic))
                #expect(log.endOffset == Int64(2 * (number + 1)))
                #expect(try readAllBatches(log).count == number + 1)
            }
            #expect(reopened.consumerOffsets.committed("archive") == ["news.wire": 2])
            #expect(reopened.applyRetention() == 0)
            try reopened.close()
        }
    }
}

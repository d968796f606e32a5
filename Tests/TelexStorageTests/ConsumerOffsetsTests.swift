import Foundation
import TelexProtocol
import Testing

@testable import TelexStorage

@Suite("Consumer offsets", .timeLimit(.minutes(1)))
struct ConsumerOffsetsTests {
    @Test("committed offsets are there after a reopen")
    func commitAndReopen() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory + "/consumers"
            do {
                let offsets = try ConsumerOffsets(directory: path)
                #expect(offsets.committed("archive").isEmpty)
                try offsets.commit("archive", topic: "news.wire", offset: 10)
                try offsets.commit("archive", topic: "news.sport", offset: 3)
                try offsets.commit("archive", topic: "news.wire", offset: 25)
                try offsets.commit("web-front_page.v2", topic: "news.wire", offset: 7)
                #expect(offsets.committed("archive") == ["news.wire": 25, "news.sport": 3])
            }
            let reopened = try ConsumerOffsets(directory: path)
            #expect(reopened.committed("archive") == ["news.wire": 25, "news.sport": 3])
            #expect(reopened.committed("web-front_page.v2") == ["news.wire": 7])
            #expect(reopened.committed("nobody").isEmpty)
            let lines = try String(contentsOfFile: path + "/archive.offsets", encoding: .utf8).split(separator: "\n")
            #expect(lines.map { $0.split(separator: "\t").prefix(2).joined(separator: "\t") } == ["news.sport\t3", "news.wire\t25"])
            #expect(lines.allSatisfy { ($0.split(separator: "\t").last.flatMap { Int64($0) } ?? 0) > 1_700_000_000_000 })
            #expect(!FileManager.default.fileExists(atPath: path + "/archive.offsets.tmp"))
        }
    }

    @Test("a file without commit times (an older broker's) loads with commit time 0; new commits record the time")
    func commitTimes() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory + "/consumers"
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            try "news.wire\t12\n".write(toFile: path + "/old.offsets", atomically: true, encoding: .utf8)
            let offsets = try ConsumerOffsets(directory: path)
            #expect(offsets.all["old"] == ["news.wire": .init(offset: 12, commitTime: 0)])
            let before = Int64(Date().timeIntervalSince1970 * 1000)
            try offsets.commit("old", offsets: ["news.sport": 4, "news.wire": 13])
            let position = try #require(ConsumerOffsets(directory: path).all["old"]?["news.sport"])
            #expect(position.offset == 4 && position.commitTime >= before - 1000)
            try offsets.commit("other", topic: "news.sport", offset: 2)
            try offsets.removeTopic("news.sport")
            let reopened = try ConsumerOffsets(directory: path)
            #expect(reopened.committed("old") == ["news.wire": 13])
            #expect(reopened.committed("other").isEmpty)
        }
    }

    @Test(
        "invalid consumer names are rejected and nothing is written",
        arguments: ["", ".hidden", "a/b", "a b", "tab\there", "new\nline", "é", String(repeating: "x", count: 129)])
    func invalidNames(name: String) async throws {
        try await withTemporaryDirectory { directory in
            let offsets = try ConsumerOffsets(directory: directory + "/consumers")
            let error = #expect(throws: TelexError.self) { try offsets.commit(name, topic: "news.wire", offset: 1) }
            #expect(error?.code == .invalidRequest)
            #expect(try FileManager.default.contentsOfDirectory(atPath: directory + "/consumers").isEmpty)
        }
    }

    @Test("the longest allowed name works")
    func longestName() async throws {
        try await withTemporaryDirectory { directory in
            let name = String(repeating: "x", count: ConsumerOffsets.maxNameLength)
            try ConsumerOffsets(directory: directory + "/consumers").commit(name, topic: "a", offset: 1)
            #expect(try ConsumerOffsets(directory: directory + "/consumers").committed(name) == ["a": 1])
        }
    }

    @Test(
        "a topic that is not a topic name is rejected, so the offsets file stays loadable",
        arguments: ["", "bad\nname", "tab\tname", "news.>"])
    func invalidTopics(topic: String) async throws {
        try await withTemporaryDirectory { directory in
            let path = directory + "/consumers"
            let offsets = try ConsumerOffsets(directory: path)
            try offsets.commit("archive", topic: "news.wire", offset: 4)
            let error = #expect(throws: TelexError.self) { try offsets.commit("archive", topic: topic, offset: 1) }
            #expect(error?.code == .invalidTopic)
            #expect(try ConsumerOffsets(directory: path).committed("archive") == ["news.wire": 4])
        }
    }

    @Test("a leftover .tmp file from an interrupted commit does not break loading")
    func leftoverTemporaryFile() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory + "/consumers"
            do {
                let offsets = try ConsumerOffsets(directory: path)
                try offsets.commit("archive", topic: "news.wire", offset: 12)
            }
            // A crash between writing the temporary file and renaming it leaves a torn .tmp behind.
            try writeFile(path + "/archive.offsets.tmp", Array("news.wire\t9".utf8) + [0xFF, 0x00])
            try writeFile(path + "/ghost.offsets.tmp", Array("garbage without a tab\n".utf8))
            let reopened = try ConsumerOffsets(directory: path)
            #expect(reopened.committed("archive") == ["news.wire": 12])
            #expect(reopened.committed("ghost").isEmpty)
            try reopened.commit("archive", topic: "news.wire", offset: 13)
            #expect(try ConsumerOffsets(directory: path).committed("archive") == ["news.wire": 13])
        }
    }
}

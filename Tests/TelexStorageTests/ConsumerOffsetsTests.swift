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
            #expect(
                try String(contentsOfFile: path + "/archive.offsets", encoding: .utf8)
                    == "news.sport\t3\nnews.wire\t25\n")
            #expect(!FileManager.default.fileExists(atPath: path + "/archive.offsets.tmp"))
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

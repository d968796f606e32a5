import Foundation
import Glibc
import TelexProtocol
import Testing

@testable import TelexStorage

@Suite("Data directory lock", .timeLimit(.minutes(1)))
struct DataDirectoryLockTests {
    @Test("a second store on the same directory is refused, naming the holder's pid, until the first closes")
    func secondStoreRefused() async throws {
        try await withTemporaryDirectory { directory in
            let first = try TopicStore(directory: directory, configuration: testConfiguration(), logger: makeLogger())
            #expect(try String(contentsOfFile: directory + "/.lock", encoding: .utf8) == "\(getpid())\n")
            let error = #expect(throws: TelexError.self) {
                try TopicStore(directory: directory, configuration: testConfiguration(), logger: makeLogger())
            }
            #expect(error?.message
                == "data directory \(directory) is in use by another telexd (pid \(getpid())); stop it or use another --data-dir")
            try first.close()
            let second = try TopicStore(directory: directory, configuration: testConfiguration(), logger: makeLogger())
            try second.close()
        }
    }
}

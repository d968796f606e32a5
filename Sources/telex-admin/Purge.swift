import ArgumentParser
import Foundation
import TelexCLI
import TelexClient
import TelexProtocol

struct Purge: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Erase every stored version of one article (legal withdrawal): its records leave the segment files.",
        discussion: """
            Removes every record whose key is URI from every topic matching --topics (default: every topic); their
            offsets stay as gaps. The broker's audit log records who purged which URI and which offsets, never the
            content. Asks for confirmation on a terminal unless --yes; not on a terminal, --yes is required.
            """)

    @OptionGroup var options: AdminOptions

    @Argument(help: "The article's uri (the records' key).")
    var uri: String

    @Option(name: .customLong("topics"), help: ArgumentHelp("Only topics matching this pattern.", valueName: "PATTERN"))
    var pattern: String?

    @Flag(help: "Do not ask for confirmation.")
    var yes = false

    func validate() throws {
        guard !uri.isEmpty, uri.utf8.count <= Int(UInt16.max) else {
            throw ValidationError("the uri must be 1 to \(UInt16.max) bytes")
        }
        if let pattern { do { try TopicName.validatePattern(pattern) } catch { throw ValidationError(error.message) } }
    }

    struct Row: Encodable {
        var topic: String
        var offsets: [Int64]
    }

    func run() async throws {
        if !yes {
            guard isTerminal(STDIN_FILENO) else {
                throw ValidationError("standard input is not a terminal: give --yes to purge '\(uri)'")
            }
            FileHandle.standardError.write(Data(
                "Erase every version of '\(uri)' from \(pattern.map { "topics '\($0)'" } ?? "every topic")? This cannot be undone. Type the uri to confirm: ".utf8))
            guard readLine() == uri else {
                printError("telex-admin purge: not confirmed; nothing purged")
                throw ExitCode(1)
            }
        }
        let (output, uri, pattern) = (options.output, self.uri, self.pattern)
        // The broker rewrites every segment holding the article before it answers.
        try await options.run("purge", requestTimeout: .seconds(600)) { client in
            let purged = try await client.purge(key: uri, topics: pattern)
            if purged.isEmpty, !output.json {
                print("no record of \(uri) found")
                return
            }
            let rows = purged.map { Row(topic: $0.topic, offsets: $0.offsets) }
            try output.print(rows, headers: ["TOPIC", "REMOVED", "OFFSETS"]) {
                [$0.topic, "\($0.offsets.count)", Self.ranges($0.offsets)]
            }
        }
    }

    /// Offsets as comma-separated runs: `3,7-9,12`.
    static func ranges(_ offsets: [Int64]) -> String {
        var runs: [String] = []
        var index = 0
        while index < offsets.count {
            var end = index
            while end + 1 < offsets.count, offsets[end + 1] == offsets[end] + 1 { end += 1 }
            runs.append(end == index ? "\(offsets[index])" : "\(offsets[index])-\(offsets[end])")
            index = end + 1
        }
        return runs.joined(separator: ",")
    }
}

import ArgumentParser
import Foundation
import TelexStorage

/// `telexd verify`: checks every batch, index and metadata file of a data directory without changing it.
struct Verify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check every batch, index and offsets file of a data directory (read-only; the broker may run).",
        discussion: """
            Prints each problem on its own line (topic, file, byte position, offset), then a summary line. \
            Exit status: 0 no problem, 1 problems found, 2 bad arguments or a directory that cannot be read.

            It takes no lock: beside a running broker, a topic's newest segment may be caught mid-write (its \
            last batch truncated, an index not yet written); run it again, or on a stopped broker, to tell.

            With --archive s3://BUCKET/PREFIX it checks an archive instead: every object against its manifest's \
            SHA-256, then every batch as above (the archive is copied to a temporary directory first).

            Example: telexd verify /var/lib/telex
            """)

    @Argument(help: "The data directory. Env TELEX_DATA_DIR. Default ./telex-data.")
    var dataDirectory: String?
    @OptionGroup var source: ArchiveSourceOptions
    // Captured so that stray arguments exit 2 like every other usage error of this command.
    @Argument(parsing: .allUnrecognized, help: .hidden)
    var unexpected: [String] = []

    func validate() throws {
        if source.archive != nil, dataDirectory != nil {
            printError("telexd verify: give a data directory or --archive, not both")
            throw ExitCode(2)
        }
        guard unexpected.isEmpty else {
            printError("telexd verify: unexpected argument \(unexpected.joined(separator: " ")) (usage: telexd verify [DATA_DIR])")
            throw ExitCode(2)
        }
    }

    func run() async throws {
        // An archive holds no indexes (derived data): their absence in its copy is no problem.
        if try await source.withRestoredCopy(command: "verify", { try verify($0, archiveCopy: true) }) == nil {
            try verify(dataDirectory ?? ProcessInfo.processInfo.environment["TELEX_DATA_DIR"] ?? "./telex-data",
                       archiveCopy: false)
        }
    }

    private func verify(_ directory: String, archiveCopy: Bool) throws {
        var report: StorageVerifier.Report
        do {
            report = try StorageVerifier.verify(dataDirectory: directory) { finding in
                if !(archiveCopy && finding.isMissingIndex) { print(finding) }
            }
        } catch {
            printError("telexd verify: \(error.message)")
            throw ExitCode(2)
        }
        if archiveCopy { report.findings.removeAll(where: \.isMissingIndex) }
        print(report.summary)
        if !report.findings.isEmpty { throw ExitCode(1) }
    }

    private func printError(_ line: String) {
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }
}

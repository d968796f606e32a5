import ArgumentParser
import Foundation
import Logging
import TelexArchive
import TelexS3

/// `telexd restore s3://BUCKET/PREFIX --data-dir DIR`: a data directory rebuilt from an archive (disaster recovery,
/// Protocol/STORAGE.md §16.3).
struct Restore: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Rebuild a data directory from an archive: every archived segment (checksums checked) and the "
            + "consumer offsets. The directory must be missing or hold no topics.",
        discussion: "Example: telexd restore s3://news-archive/telex --data-dir /var/lib/telex --archive-endpoint http://minio:9000")

    @Argument(help: ArgumentHelp("The archive.", valueName: "s3://BUCKET/PREFIX"))
    var source: String
    @Option(name: .customLong("data-dir"), help: "The data directory to create. Default ./telex-data.")
    var dataDirectory = "./telex-data"
    @OptionGroup var objectStore: ObjectStoreOptions

    func run() async throws {
        let logger = Logger(label: "telexd.restore")
        let (location, client) = try objectStore.client(
            for: source, flag: "restore", environment: ProcessInfo.processInfo.environment, logger: logger)
        let result: Result<ArchiveRestore.Summary, any Error>
        do {
            result = .success(try await ArchiveRestore.restore(
                from: S3ObjectStore(client: client), layout: ArchiveLayout(prefix: location.prefix),
                into: dataDirectory, logger: logger))
        } catch {
            result = .failure(error)
        }
        try? await client.shutdown()
        switch result {
        case .success(let summary):
            for topic in summary.topics { print(topic) }
            print("restored \(summary.topics.count) topics and \(summary.consumers) consumers from \(location) into \(dataDirectory)")
        case .failure(let error):
            FileHandle.standardError.write(Data("telexd restore: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}

import ArgumentParser
import Foundation
import Logging
import TelexArchive
import TelexProtocol
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
        case .success(let summary) where summary.topics.isEmpty:
            FileHandle.standardError.write(Data("""
                telexd restore: \(location) holds no archived segment (is the bucket or the prefix wrong?); \
                \(dataDirectory) was left without topics\n
                """.utf8))
            throw ExitCode(1)
        case .success(let summary):
            // The restored archive.state files describe this archive: record it (ArchiveLocationFile).
            try ArchiveLocationFile.write(dataDirectory: dataDirectory, location: location)
            for topic in summary.topics { print(topic) }
            print("restored \(summary.topics.count) topics and \(summary.consumers) consumers from \(location) into \(dataDirectory)")
        case .failure(let error):
            FileHandle.standardError.write(Data("""
                telexd restore: \(error)
                (what was restored so far stays in \(dataDirectory): remove it before running the restore again)\n
                """.utf8))
            throw ExitCode(1)
        }
    }
}

/// `--archive s3://BUCKET/PREFIX` for `telexd inspect` and `telexd verify`: the archive is restored into a temporary
/// directory (every object checked against its manifest's SHA-256), which the command then reads like a data
/// directory and removes afterwards. Needs free disk for the whole archive.
struct ArchiveSourceOptions: ParsableArguments {
    @Option(name: .customLong("archive"), help: ArgumentHelp(
        "Read this archive instead of a data directory (copied to a temporary directory first).",
        valueName: "s3://BUCKET/PREFIX"))
    var archive: String?
    @OptionGroup var objectStore: ObjectStoreOptions

    /// Restores the archive into a new temporary directory and runs `body` on it; nil without `--archive`.
    /// A restore failure (a checksum mismatch names the object) is thrown with the command's name.
    func withRestoredCopy<T>(command: String, _ body: (String) throws -> T) async throws -> T? {
        guard let archive else { return nil }
        let logger = Logger(label: "telexd.\(command)")
        let (location, client) = try objectStore.client(
            for: archive, flag: "--archive", environment: ProcessInfo.processInfo.environment, logger: logger)
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("telex-\(command)-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let summary: ArchiveRestore.Summary
        do {
            summary = try await ArchiveRestore.restore(
                from: S3ObjectStore(client: client), layout: ArchiveLayout(prefix: location.prefix),
                into: directory, logger: logger)
        } catch {
            try? await client.shutdown()
            FileHandle.standardError.write(Data("telexd \(command): reading \(location): \(error)\n".utf8))
            // An object that does not match its manifest is a problem found (verify's 1); the rest is "could not
            // read" (2).
            throw ExitCode(command == "verify" && error.code == .dataLoss ? 1 : 2)
        }
        try? await client.shutdown()
        guard !summary.topics.isEmpty else {
            FileHandle.standardError.write(Data(
                "telexd \(command): \(location) holds no archived segment (is the bucket or the prefix wrong?)\n".utf8))
            throw ExitCode(2)
        }
        return try body(directory)
    }
}

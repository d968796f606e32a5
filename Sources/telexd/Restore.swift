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
        let (location, result) = try await objectStore.restore(
            source, flag: "restore", into: dataDirectory, logger: Logger(label: "telexd.restore"))
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
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("telex-\(command)-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (location, result) = try await objectStore.restore(
            archive, flag: "--archive", into: directory, logger: Logger(label: "telexd.\(command)"))
        let summary: ArchiveRestore.Summary
        switch result {
        case .success(let restored): summary = restored
        case .failure(let error):
            FileHandle.standardError.write(Data("telexd \(command): reading \(location): \(error)\n".utf8))
            // An object that does not match its manifest is a problem found (verify's 1); the rest is "could not
            // read" (2).
            throw ExitCode(command == "verify" && error.code == .dataLoss ? 1 : 2)
        }
        guard !summary.topics.isEmpty else {
            FileHandle.standardError.write(Data(
                "telexd \(command): \(location) holds no archived segment (is the bucket or the prefix wrong?)\n".utf8))
            throw ExitCode(2)
        }
        return try body(directory)
    }
}

extension ObjectStoreOptions {
    /// `ArchiveRestore.restore` of the archive `text` into `directory` (for `telexd restore` and the `--archive`
    /// of inspect and verify), the S3 client shut down whatever the outcome. Throws only for bad options.
    func restore(
        _ text: String, flag: String, into directory: String, logger: Logger
    ) async throws -> (location: S3Location, result: Result<ArchiveRestore.Summary, TelexError>) {
        let (location, client) = try client(
            for: text, flag: flag, environment: ProcessInfo.processInfo.environment, logger: logger)
        let result: Result<ArchiveRestore.Summary, TelexError>
        do {
            result = .success(try await ArchiveRestore.restore(
                from: S3ObjectStore(client: client), layout: ArchiveLayout(prefix: location.prefix),
                into: directory, logger: logger))
        } catch {
            result = .failure(error)
        }
        try? await client.shutdown()
        return (location, result)
    }
}

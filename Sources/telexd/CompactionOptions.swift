import ArgumentParser
import TelexProtocol
import TelexServer

/// `--compact PATTERN` (repeatable) and `--compact-tombstone-retention DURATION`: which topics the background
/// cleaner compacts (Protocol/STORAGE.md §15).
struct CompactionOptions: ParsableArguments {
    @Option(name: .customLong("compact"), help: ArgumentHelp(
        "Compact the topics matching this pattern (repeatable): keep each article's newest version, with offsets "
            + "kept as gaps. Env TELEX_COMPACT (comma-separated). Default: none (full history).",
        valueName: "PATTERN"))
    var patterns: [String] = []
    @Option(name: .customLong("compact-tombstone-retention"), help: ArgumentHelp(
        "How long a compacted topic keeps a deletion (article.deleted) that is its article's newest version: "
            + "N followed by s, m, h or d. Env TELEX_COMPACT_TOMBSTONE_RETENTION. Default 24h.",
        valueName: "DURATION"))
    var tombstoneRetention: String?

    func apply(to configuration: inout ServerConfiguration, environment: [String: String]) throws {
        let patterns = patterns.isEmpty
            ? (environment["TELEX_COMPACT"] ?? "").split(separator: ",").map(String.init) : patterns
        for pattern in patterns {
            do {
                try TopicName.validatePattern(pattern)
            } catch {
                throw ValidationError("--compact '\(pattern)': \(error.message)")
            }
        }
        configuration.compaction.patterns = patterns
        if let text = tombstoneRetention ?? environment["TELEX_COMPACT_TOMBSTONE_RETENTION"] {
            guard let milliseconds = CompactionConfiguration.milliseconds(parsing: text) else {
                throw ValidationError("--compact-tombstone-retention '\(text)' is not N followed by s, m, h or d (e.g. 24h)")
            }
            configuration.compaction.tombstoneRetentionMilliseconds = milliseconds
        }
    }
}

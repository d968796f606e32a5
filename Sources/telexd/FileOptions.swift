import ArgumentParser
import Foundation
import TelexStorage

#if canImport(Glibc)
    import Glibc
#endif

/// `--max-open-files`: the budget of segment and index files the broker keeps open, all topics together.
struct FileOptions: ParsableArguments {
    @Option(
        name: .customLong("max-open-files"),
        help: """
            Segment and index files kept open at once, all topics together; idle topics' files are closed least \
            recently used first. Env TELEX_MAX_OPEN_FILES. Default: half of the open-file limit (ulimit -n), \
            at least 8.
            """)
    var maxOpenFiles: Int?

    /// Sets `log.maxOpenFiles` from the flag or `TELEX_MAX_OPEN_FILES`; keeps the default when neither is given.
    func apply(to log: inout LogConfiguration, environment: [String: String]) throws {
        let value: Int
        if let maxOpenFiles {
            value = maxOpenFiles
        } else if let raw = environment["TELEX_MAX_OPEN_FILES"] {
            guard let parsed = Int(raw) else { throw ValidationError("TELEX_MAX_OPEN_FILES=\(raw) is not a valid value") }
            value = parsed
        } else {
            return
        }
        guard value >= 8 else { throw ValidationError("max open files must be at least 8, not \(value)") }
        var limit = rlimit()
        if getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur != rlim_t.max, value >= Int(clamping: limit.rlim_cur) {
            throw ValidationError(
                "max open files \(value) leaves no room under the open-file limit (\(limit.rlim_cur)) for sockets: lower it or raise the limit (ulimit -n)")
        }
        log.maxOpenFiles = value
    }
}

import ArgumentParser
import Foundation
import Logging
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
            recently used first. Env TELEX_MAX_OPEN_FILES. Default: half of the open-file limit (ulimit -n) \
            after raising its soft limit to the hard one, at least 8; the rest is for connections and the \
            files sent to subscribers.
            """)
    var maxOpenFiles: Int?

    /// Sets `log.maxOpenFiles` from the flag or `TELEX_MAX_OPEN_FILES`. When neither is given, first raises the
    /// process's soft open-file limit to its hard limit (Protocol/STORAGE.md §11) and sets the default from the
    /// raised limit; returns what it did to the limit, to log once logging is set up.
    func apply(to log: inout LogConfiguration, environment: [String: String]) throws -> OpenFileLimitChange? {
        let value: Int
        if let maxOpenFiles {
            value = maxOpenFiles
        } else if let raw = environment["TELEX_MAX_OPEN_FILES"] {
            guard let parsed = Int(raw) else { throw ValidationError("TELEX_MAX_OPEN_FILES=\(raw) is not a valid value") }
            value = parsed
        } else {
            let change = OpenFileLimitChange.raiseSoftLimit()
            log.maxOpenFiles = LogConfiguration.defaultMaxOpenFiles()
            return change
        }
        guard value >= 8 else { throw ValidationError("max open files must be at least 8, not \(value)") }
        var limit = rlimit()
        if getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur != rlim_t.max, value >= Int(clamping: limit.rlim_cur) {
            throw ValidationError(
                "max open files \(value) leaves no room under the open-file limit (\(limit.rlim_cur)) for sockets: lower it or raise the limit (ulimit -n)")
        }
        log.maxOpenFiles = value
        return nil
    }
}

/// A change to the process's soft `RLIMIT_NOFILE` made at startup, or the failure to make it.
enum OpenFileLimitChange {
    case raised(from: Int, to: Int)
    case failed(soft: Int, wanted: Int, error: String)

    /// Raises the soft open-file limit to the hard limit (to `/proc/sys/fs/nr_open` when the hard limit is
    /// unlimited), as servers commonly do; nil when it is already there.
    static func raiseSoftLimit() -> OpenFileLimitChange? {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur != rlim_t.max else {
            return nil
        }
        var wanted = limit.rlim_max
        if wanted == rlim_t.max {
            let text = (try? String(contentsOfFile: "/proc/sys/fs/nr_open", encoding: .utf8)) ?? ""
            wanted = rlim_t(text.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 1 << 20
        }
        guard wanted > limit.rlim_cur else { return nil }
        let soft = limit.rlim_cur
        limit.rlim_cur = wanted
        guard setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else {
            let error = String(cString: strerror(errno))
            return .failed(soft: Int(clamping: soft), wanted: Int(clamping: wanted), error: error)
        }
        return .raised(from: Int(clamping: soft), to: Int(clamping: wanted))
    }

    func log(to logger: Logger) {
        switch self {
        case .raised(let from, let to):
            logger.info(
                "raised the open-file limit (ulimit -n) to the hard limit",
                metadata: ["from": "\(from)", "to": "\(to)"])
        case .failed(let soft, let wanted, let error):
            logger.warning("could not raise the open-file limit (ulimit -n)", metadata: [
                "soft": "\(soft)", "wanted": "\(wanted)", "error": "\(error)",
            ])
        }
    }
}

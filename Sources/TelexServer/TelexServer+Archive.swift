import TelexProtocol
import TelexStorage

/// A read replica following its archive (Protocol/STORAGE.md §16.4).
extension TelexServer {
    /// Tells the broker that the archive holds new segments of `topics` (a replica's catalog saw new manifests):
    /// creates the logs it has not got, moves each log's end to the archive's (`TopicLog.adoptArchiveEnd`), and
    /// wakes the subscriptions waiting on them (pattern subscriptions learn of new topics) as an append does.
    /// Does nothing before `start()` or without an archive. File work runs on the server's thread pool; errors
    /// are logged per topic and the other topics go on.
    public func archiveGrew(topics: [String]) async {
        guard let store = topicStore, let archive = store.archive else { return }
        for topic in topics {
            guard let end = archive.archivedSegments(of: topic).last?.nextOffset else { continue }
            do {
                let created = try await threadPool.runIfActive { () throws -> Bool in
                    let (log, created) = try store.createLog(topic)
                    try log.adoptArchiveEnd(end)
                    return created
                }
                if created { hub.created(topic) }
                hub.readable(topic)
            } catch {
                logger.warning("could not follow the archive", metadata: [
                    "topic": "\(topic)", "endOffset": "\(end)", "error": "\(error)",
                ])
            }
        }
    }
}

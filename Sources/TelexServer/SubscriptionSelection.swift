import TelexStorage

/// The stored records of one topic that a latest or history subscription hands on below its snapshot end
/// (PROTOCOL.md §8.9, §8.10). From `end` on, a latest subscription delivers everything once CAUGHT_UP is sent; a
/// history stops there.
struct TopicSelection: Equatable, Sendable {
    /// Selected offsets below `end`, ascending.
    var offsets: [Int64]
    /// The topic's readable end when the snapshot was taken: SUBSCRIBED's `endOffset`.
    let end: Int64
    /// A history ends at `end`; a latest replay goes on live.
    let stopsAtEnd: Bool

    /// Index of the first selected offset at or above `offset`.
    func firstIndex(atOrAbove offset: Int64) -> Int {
        var low = 0
        var high = offsets.count
        while low < high {
            let middle = (low + high) / 2
            if offsets[middle] < offset { low = middle + 1 } else { high = middle }
        }
        return low
    }

    /// The selected offsets of `from..<to` (clipped to `end`), as ascending disjoint ranges.
    func ranges(from: Int64, to: Int64) -> [Range<Int64>] {
        var ranges: [Range<Int64>] = []
        var index = firstIndex(atOrAbove: from)
        while index < offsets.count, offsets[index] < min(to, end) {
            let offset = offsets[index]
            if let last = ranges.last, last.upperBound == offset {
                ranges[ranges.count - 1] = last.lowerBound..<offset + 1
            } else {
                ranges.append(offset..<offset + 1)
            }
            index += 1
        }
        return ranges
    }

    /// Whether the batch holding `batch` has a selected offset at or above `from` (and below `end`).
    func selects(_ batch: Range<Int64>, from: Int64) -> Bool {
        let index = firstIndex(atOrAbove: max(batch.lowerBound, from))
        return index < offsets.count && offsets[index] < min(batch.upperBound, end)
    }
}

/// Chooses, from the key indexes of a subscription's topics at snapshot time, which offsets it delivers. Pure.
enum SelectionPlanner {
    /// Latest per article: each key's newest record across all the topics, where newest means appended last by
    /// the broker, ties broken by the greater topic name, then the greater offset; keys whose newest record is a
    /// tombstone are left out. Returns the selected offsets per topic, ascending (topics selecting nothing map
    /// to an empty list).
    static func latest(_ topics: [(topic: String, latest: [String: KeyVersion])]) -> [String: [Int64]] {
        var winners: [String: (topic: String, version: KeyVersion)] = [:]
        for (topic, latest) in topics {
            for (key, version) in latest {
                if let current = winners[key], !isNewer(version, in: topic, than: current.version, in: current.topic) {
                    continue
                }
                winners[key] = (topic, version)
            }
        }
        var selected = Dictionary(uniqueKeysWithValues: topics.map { ($0.topic, [Int64]()) })
        for (topic, version) in winners.values where !version.tombstone {
            selected[topic, default: []].append(version.offset)
        }
        return selected.mapValues { $0.sorted() }
    }

    /// History: every version of one key, per topic, ascending.
    static func history(_ topics: [(topic: String, versions: [KeyVersion])]) -> [String: [Int64]] {
        Dictionary(topics.map { ($0.topic, $0.versions.map(\.offset).sorted()) }, uniquingKeysWith: { first, _ in first })
    }

    /// The order of "newest" across topics: append time, then topic name (byte order), then offset.
    static func isNewer(_ version: KeyVersion, in topic: String, than other: KeyVersion, in otherTopic: String) -> Bool {
        if version.appendTime != other.appendTime { return version.appendTime > other.appendTime }
        if topic != otherTopic { return topic.utf8.lexicographicallyPrecedes(otherTopic.utf8) == false }
        return version.offset > other.offset
    }
}

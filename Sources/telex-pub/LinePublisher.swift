#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOConcurrencyHelpers
import NIOCore
import TelexCLI
import TelexClient
import TelexEvents
import TelexProtocol

/// Publishes JSON Lines as a pipeline: a reader thread cuts the input into chunks, parse tasks validate chunks
/// into records on every core, a producer task prepares (compresses) them in input order, and the publishing
/// task sends whatever is prepared as one group while the next group is being prepared. Groups are published one
/// after another, so every topic gets its events in input order. Memory is bounded by what is in flight:
/// `readAhead` chunks read, `parseAhead` parsing, one preparing, `preparedAhead` prepared (compressed) chunks
/// waiting, and one group publishing.
struct LinePublisher: Sendable {
    let client: TelexClient
    /// `--topic`, or nil to use each event's own.
    let topic: String?
    /// Whether locations and ack lines name the file (more than one input).
    let namesFiles: Bool
    let quiet: Bool
    let progress: ProgressReporter

    /// Chunks read ahead of the parsers.
    static let readAhead = 2
    /// Chunks parsing at once (the one being prepared waits for the first).
    static let parseAhead = 2
    /// Prepared chunks waiting to be published (compressed: about a quarter of their input).
    static let preparedAhead = 4

    /// The events of one chunk, up to its first bad line.
    struct ParsedChunk: Sendable {
        var source: String
        var records: [Record] = []
        var topics: [String] = []
        var ids: [String] = []
        var lines: [Int] = []
        /// Input bytes the chunk covered (for progress).
        var bytes: Int64 = 0
        /// The bad line that ends the run after this chunk's good events are published.
        var stop: TelexError?
    }

    /// A parsed chunk compressed into batches; `owners[i]` are the event indexes batch `i` carries, in order.
    struct PreparedChunk: Sendable {
        var parsed: ParsedChunk
        var batches: [PreparedBatch] = []
        var owners: [[Int]] = []
    }

    func run(files: [String], summary: inout TelexPub.Summary) async throws {
        // Per-event lines on the same terminal would land in the middle of the progress line: erase it first.
        let clearsProgress = !quiet && isTerminal(STDOUT_FILENO)
        let queue = PreparedQueue(capacity: Self.preparedAhead)
        let producer = Task { await produce(files: files, into: queue) }
        defer {
            queue.close()
            producer.cancel()
        }
        var output: [UInt8] = []
        while true {
            // Everything prepared while the last group was on the wire goes out together, so the publish window
            // stays full instead of draining at the end of every chunk.
            let items = await queue.takeAll()
            if items.isEmpty { break }
            var chunks: [PreparedChunk] = []
            var failure: (any Error)?
            for item in items {
                switch item {
                case .chunk(let chunk): chunks.append(chunk)
                case .failed(let error): failure = error
                }
            }
            let batches = chunks.flatMap(\.batches)
            var acks: [PublishAck] = []
            var stopped: PublishError?
            if !batches.isEmpty {
                do {
                    acks = try await client.publish(prepared: batches)
                } catch let error as PublishError {
                    // The batches acknowledged before the failure are stored: their lines are reported below.
                    acks = error.acknowledged
                    stopped = error
                }
            }
            output.removeAll(keepingCapacity: true)
            var acked = acks.makeIterator()
            for chunk in chunks {
                let parsed = chunk.parsed
                // Batches are grouped by topic: offsets are put back in input order before the lines are written.
                var stored = [(topic: String, offset: Int64)?](repeating: nil, count: parsed.ids.count)
                var complete = true
                for owners in chunk.owners {
                    guard let ack = acked.next() else {
                        complete = false
                        break
                    }
                    for (position, index) in owners.enumerated() {
                        stored[index] = (ack.topic, ack.baseOffset + Int64(position))
                    }
                }
                var events: Int64 = 0
                for (index, event) in stored.enumerated() {
                    guard let event else { continue }
                    events += 1
                    summary.add(topic: event.topic, offset: event.offset)
                    if !quiet {
                        appendAckLine(file: namesFiles ? parsed.source : nil, id: parsed.ids[index],
                                      line: parsed.lines[index], topic: event.topic, offset: event.offset, to: &output)
                    }
                }
                progress.update { counts in
                    counts.events += events
                    if complete {
                        counts.bytes += parsed.bytes
                        counts.done += parsed.bytes
                    }
                }
                if !complete { break }
            }
            if !output.isEmpty {
                if clearsProgress { progress.clear() }
                try writeAll(output)
            }
            if let stopped { throw stopped }
            // The producer stops after a chunk with a bad line or a failure: either is the last item.
            if let stop = chunks.last?.parsed.stop { throw stop }
            if let failure { throw failure }
        }
    }

    /// Reads, parses (several chunks at a time) and prepares chunks in input order into `queue`, until the input
    /// ends, a line is bad, preparing fails, or the consumer is gone.
    private func produce(files: [String], into queue: PreparedQueue) async {
        let reader = ChunkReader(files: files, capacity: Self.readAhead)
        reader.start()
        var parsing: [Task<ParsedChunk, Never>] = []
        while !Task.isCancelled {
            if parsing.isEmpty {
                guard let item = await reader.next() else { break }
                parsing.append(Task { parse(item) })
            }
            while parsing.count < Self.parseAhead, let item = reader.ready() { parsing.append(Task { parse(item) }) }
            let parsed = await parsing.removeFirst().value
            do {
                let prepared = try await prepare(parsed)
                guard await queue.push(.chunk(prepared)) else { return }
                if parsed.stop != nil { break }
            } catch {
                _ = await queue.push(.failed(error))
                break
            }
        }
        queue.finish()
    }

    /// Validates a chunk's lines into records, up to the first bad line.
    func parse(_ item: ChunkReader.Item) -> ParsedChunk {
        guard case .chunk(let chunk) = item else {
            if case .failure(let message) = item { return ParsedChunk(source: "", stop: TelexError(.invalidEvent, message)) }
            return ParsedChunk(source: "")
        }
        var parsed = ParsedChunk(source: chunk.source)
        var number = chunk.firstLine
        var start = chunk.bytes.readerIndex
        let lineEnds = chunk.bytes.withUnsafeReadableBytes { raw -> [Int] in
            var ends: [Int] = []
            var position = 0
            while position < raw.count {
                let rest = raw.count - position
                if let found = memchr(raw.baseAddress! + position, 0x0A, rest) {
                    let index = UnsafeRawPointer(found) - raw.baseAddress!
                    ends.append(index)
                    position = index + 1
                } else {
                    ends.append(raw.count)
                    position = raw.count
                }
            }
            return ends
        }
        for lineEnd in lineEnds {
            defer { number += 1 }
            let lineStart = start
            let length = chunk.bytes.readerIndex + lineEnd - lineStart
            start = lineStart + length + 1
            parsed.bytes += Int64(length) + 1
            let line = chunk.bytes.getSlice(at: lineStart, length: length)!
            if Self.isBlank(line) { continue }
            let location = namesFiles ? "\(chunk.source) line \(number)" : "line \(number)"
            do {
                let event = try EventLine(line: line, location: location)
                guard let target = topic ?? event.topic else {
                    parsed.stop = TelexError(.invalidEvent,
                        "\(location): field 'topic': missing; give --topic or a \"topic\" attribute on the event")
                    break
                }
                parsed.records.append(event.record)
                parsed.topics.append(target)
                parsed.ids.append(event.id)
                parsed.lines.append(number)
            } catch {
                // A line of Unicode whitespace only is skipped, as it always was.
                if String(buffer: line).allSatisfy(\.isWhitespace) { continue }
                parsed.stop = error
                break
            }
        }
        return parsed
    }

    /// True for an empty line or one of ASCII whitespace only.
    private static func isBlank(_ line: ByteBuffer) -> Bool {
        line.readableBytesView.allSatisfy { $0 == 0x20 || ($0 >= 0x09 && $0 <= 0x0D) }
    }

    /// Groups a chunk's records by topic (in order of first appearance) and compresses them into batches.
    func prepare(_ parsed: ParsedChunk) async throws -> PreparedChunk {
        var prepared = PreparedChunk(parsed: parsed)
        var byTopic: [String: [Int]] = [:]
        var topicOrder: [String] = []
        for (index, target) in parsed.topics.enumerated() {
            if byTopic[target] == nil { topicOrder.append(target) }
            byTopic[target, default: []].append(index)
        }
        for target in topicOrder {
            let indexes = byTopic[target]!
            let batches = try await client.prepare(indexes.map { parsed.records[$0] }, topic: target)
            var position = 0
            for batch in batches {
                prepared.owners.append(Array(indexes[position..<position + batch.recordCount]))
                position += batch.recordCount
            }
            prepared.batches += batches
        }
        // The records live on in the batches; dropping them here frees the chunk's input buffer.
        prepared.parsed.records = []
        return prepared
    }

    /// `{"file":...,"id":...,"line":N,"offset":N,"topic":...}` (keys sorted, as the JSON encoder wrote them).
    private func appendAckLine(file: String?, id: String, line: Int, topic: String, offset: Int64, to output: inout [UInt8]) {
        output.append(UInt8(ascii: "{"))
        if let file {
            output.append(contentsOf: #""file":"#.utf8)
            CloudEvent.appendJSONString(file, to: &output)
            output.append(UInt8(ascii: ","))
        }
        output.append(contentsOf: #""id":"#.utf8)
        CloudEvent.appendJSONString(id, to: &output)
        output.append(contentsOf: #","line":"#.utf8)
        output.append(contentsOf: String(line).utf8)
        output.append(contentsOf: #","offset":"#.utf8)
        output.append(contentsOf: String(offset).utf8)
        output.append(contentsOf: #","topic":"#.utf8)
        CloudEvent.appendJSONString(topic, to: &output)
        output.append(contentsOf: "}\n".utf8)
    }
}

/// Writes all of `bytes` to standard output; throws when it is closed or fails.
func writeAll(_ bytes: [UInt8]) throws {
    try bytes.withUnsafeBytes { raw in
        var position = 0
        while position < raw.count {
            let written = write(STDOUT_FILENO, raw.baseAddress! + position, raw.count - position)
            if written < 0 {
                if errno == EINTR { continue }
                throw TelexError(.closed, "standard output: \(String(cString: strerror(errno)))")
            }
            position += written
        }
    }
}

/// The prepared chunks between the producer and the publishing task: at most `capacity` wait.
final class PreparedQueue: Sendable {
    enum Item: Sendable {
        case chunk(LinePublisher.PreparedChunk)
        case failed(any Error)
    }

    private struct State {
        var items: [Item] = []
        var finished = false
        var closed = false
        var consumer: CheckedContinuation<Void, Never>?
        var producer: CheckedContinuation<Void, Never>?
    }

    private let capacity: Int
    private let state = NIOLockedValueBox(State())

    init(capacity: Int) {
        self.capacity = capacity
    }

    /// Adds an item, waiting while the queue is full; false once the consumer has closed it.
    func push(_ item: Item) async -> Bool {
        while true {
            let (added, consumer): (Bool?, CheckedContinuation<Void, Never>?) = state.withLockedValue { state in
                if state.closed { return (false, nil) }
                guard state.items.count < capacity else { return (nil, nil) }
                state.items.append(item)
                defer { state.consumer = nil }
                return (true, state.consumer)
            }
            consumer?.resume()
            if let added { return added }
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLockedValue { state in
                    if state.closed || state.items.count < capacity { return true }
                    state.producer = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        }
    }

    /// Everything waiting; waits for at least one item. Empty once the producer has finished and all is taken.
    func takeAll() async -> [Item] {
        while true {
            let (items, producer): ([Item]?, CheckedContinuation<Void, Never>?) = state.withLockedValue { state in
                if !state.items.isEmpty {
                    defer { (state.items, state.producer) = ([], nil) }
                    return (state.items, state.producer)
                }
                return (state.finished ? [] : nil, nil)
            }
            producer?.resume()
            if let items { return items }
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLockedValue { state in
                    if !state.items.isEmpty || state.finished { return true }
                    state.consumer = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        }
    }

    /// The producer has pushed its last item.
    func finish() {
        let consumer = state.withLockedValue { state in
            state.finished = true
            defer { state.consumer = nil }
            return state.consumer
        }
        consumer?.resume()
    }

    /// The consumer takes nothing more: a waiting producer returns false.
    func close() {
        let producer = state.withLockedValue { state in
            state.closed = true
            defer { state.producer = nil }
            return state.producer
        }
        producer?.resume()
    }
}

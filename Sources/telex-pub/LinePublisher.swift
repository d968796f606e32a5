#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import TelexCLI
import TelexClient
import TelexEvents
import TelexProtocol

/// Publishes JSON Lines as a pipeline: a reader thread cuts the input into chunks, parse tasks validate chunks
/// into records on every core, and this task prepares (compresses) one chunk while the previous one is being
/// published. Chunks are published one after another, so every topic gets its events in input order. Memory is
/// bounded by the chunks in flight: `ChunkReader`'s queue, `parseAhead` chunks parsing, one preparing, one
/// publishing (within the client's publish window).
struct LinePublisher: Sendable {
    let client: TelexClient
    /// `--topic`, or nil to use each event's own.
    let topic: String?
    /// Whether locations and ack lines name the file (more than one input).
    let namesFiles: Bool
    let quiet: Bool
    let progress: ProgressReporter

    /// Chunks parsed ahead of the one being prepared.
    static let parseAhead = 3

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
        let reader = ChunkReader(files: files)
        reader.start()
        var parsing: [Task<ParsedChunk, Never>] = []
        var preparing: Task<PreparedChunk, any Error>?
        defer { preparing?.cancel() }
        var output: [UInt8] = []
        while true {
            if preparing == nil {
                if parsing.isEmpty {
                    guard let item = await reader.next() else { break }
                    parsing.append(parseTask(item))
                }
                preparing = prepareTask(parsing.removeFirst())
            }
            while parsing.count < Self.parseAhead, let item = reader.ready() { parsing.append(parseTask(item)) }
            let prepared = try await preparing!.value
            preparing = nil
            // Compress the next chunk while this one is on the wire; not after a bad line.
            if prepared.parsed.stop == nil, !parsing.isEmpty { preparing = prepareTask(parsing.removeFirst()) }
            let parsed = prepared.parsed
            if !prepared.batches.isEmpty {
                let acks = try await client.publish(prepared: prepared.batches)
                output.removeAll(keepingCapacity: true)
                for (ack, owners) in zip(acks, prepared.owners) {
                    for (position, index) in owners.enumerated() {
                        let offset = ack.baseOffset + Int64(position)
                        summary.add(topic: ack.topic, offset: offset)
                        if !quiet {
                            appendAckLine(file: namesFiles ? parsed.source : nil, id: parsed.ids[index],
                                          line: parsed.lines[index], topic: ack.topic, offset: offset, to: &output)
                        }
                    }
                }
                if !output.isEmpty {
                    if clearsProgress { progress.clear() }
                    try writeAll(output)
                }
                progress.update { counts in
                    counts.events += Int64(parsed.ids.count)
                    counts.bytes += parsed.bytes
                    counts.done += parsed.bytes
                }
            }
            if let stop = parsed.stop { throw stop }
        }
    }

    private func parseTask(_ item: ChunkReader.Item) -> Task<ParsedChunk, Never> {
        Task { parse(item) }
    }

    private func prepareTask(_ parsing: Task<ParsedChunk, Never>) -> Task<PreparedChunk, any Error> {
        Task { try await prepare(await parsing.value) }
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

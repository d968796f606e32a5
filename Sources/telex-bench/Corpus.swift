import ArgumentParser
import Foundation
import NIOCore
import TelexEvents
import TelexProtocol

/// Deterministic ~2 KB CloudEvents + ninjs article events built from the seed articles, each with its own uri,
/// headline and body: the realistic style (the default) writes bodies of Zipf-distributed words (`ArticleText`)
/// that compress like real articles; the easy style assembles them from the seeds' sentences, as issues 5–12
/// measured (they compress about twice as well as real text).
struct Corpus {
    enum Style: String, CaseIterable, ExpressibleByArgument {
        case realistic, easy
    }

    let records: [Record]
    let jsonBytes: Int
    /// How many distinct events `records` cycles through (a file corpus may be shorter than the run).
    let distinctEvents: Int

    /// A small xorshift generator: the same seed always gives the same corpus.
    struct Generator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return state
        }
        mutating func next(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }
    }

    /// `uri` and `type` choose each event's article and event type (the rebuild benchmark gives one article
    /// several versions).
    init(
        seedsPath: String, count: Int, style: Style = .realistic, targetBytes: Int = 2048,
        uri: (Int) -> String = { "urn:telex:bench:article-\($0)" },
        type: (Int) -> String = { $0 % 4 == 3 ? "article.updated" : "article.created" }
    ) throws {
        let text = try String(contentsOfFile: seedsPath, encoding: .utf8)
        var articles: [[String: JSONValue]] = []
        var sentences: [String] = []
        var bodies: [String] = []
        for line in text.split(separator: "\n") {
            // Deletions carry no article to copy (and would change the corpus the bench numbers were taken on).
            let event = try JSONValue(parsing: line.utf8)
            guard event["type"] != "article.deleted", let data = event["data"]?.objectValue else { continue }
            articles.append(data)
            for body in data["bodies"]?.arrayValue ?? [] {
                guard let value = body["value"]?.stringValue else { continue }
                let plain = value.replacingOccurrences(of: "<[^>]+>", with: " ", options: .regularExpression)
                bodies.append(plain)
                for sentence in plain.split(separator: ".") {
                    let trimmed = sentence.trimmingCharacters(in: .whitespacesAndNewlines)
                    if trimmed.count > 20 { sentences.append(trimmed + ".") }
                }
            }
        }
        guard !articles.isEmpty, !sentences.isEmpty else {
            throw TelexError(.invalidEvent, "\(seedsPath) has no articles with bodies to build a corpus from")
        }
        let sections = ["news.world", "news.europe", "news.china.harbin", "business.markets", "sport.football", "culture"]
        let desks = ["world", "europe", "china", "business", "sport", "culture"]
        var generator = Generator(state: 0x9E37_79B9_7F4A_7C15)
        let articleText = style == .realistic ? ArticleText(seedWords: ArticleText.words(of: bodies)) : nil
        var records: [Record] = []
        records.reserveCapacity(count)
        var total = 0
        let baseTime = 1_709_712_000.0  // 2024-03-06T08:00:00Z
        for index in 0..<count {
            var article = articles[index % articles.count]
            let uri = uri(index)
            article["uri"] = .string(uri)
            article["version"] = .string(String(1 + generator.next(5)))
            article["versionCreated"] = .string(CloudEvent.formatTime(Date(timeIntervalSince1970: baseTime + Double(index))))
            var body = ""
            if let text = articleText {
                article["headlines"] = [["role": "main", "value": .string(String(text.sentence(&generator).prefix(90)))]]
                article["by"] = .string(text.name(&generator))
                body = text.body(bytes: targetBytes - 1250, &generator)
            } else {
                let headline = sentences[generator.next(sentences.count)].prefix(90)
                article["headlines"] = [["role": "main", "value": .string("\(headline) (\(index))")]]
                while body.utf8.count < targetBytes - 1250 {
                    body += sentences[generator.next(sentences.count)] + " "
                }
            }
            article["bodies"] = [["role": "main", "contentType": "text/plain", "value": .string(body)]]
            let desk = generator.next(desks.count)
            let event = try CloudEvent(
                type: type(index), article: article,
                source: "urn:telex:newsroom:\(desks[desk])", id: "bench-\(index)",
                time: Date(timeIntervalSince1970: baseTime + Double(index)), topic: sections[desk])
            let record = event.record()
            total += record.value.readableBytes
            records.append(record)
        }
        self.records = records
        jsonBytes = total
        distinctEvents = count
    }
}

import ArgumentParser
import Foundation
import NIOCore
import TelexEvents
import TelexProtocol

extension Corpus {
    /// Any corpus: a JSON Lines file, each line one record value, published byte for byte, so Telex's client can be
    /// measured on the same events as other brokers' benchmarks. The key is the string at the dotted `keyField`
    /// (empty when absent or not a string); `type` and `id`, when they are strings, become the `ce-type` and `ce-id`
    /// headers (the key table takes its types from `ce-type`). Blank lines are skipped; a file shorter than `count`
    /// is cycled.
    init(file path: String, keyField: String, count: Int) throws {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw ValidationError("--corpus \(path): cannot read it (\(error.localizedDescription))")
        }
        let keyPath = keyField.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        // Timestamps count up from one fixed time: a batch's records must lie within 24 days of its first.
        let baseTime: Int64 = 1_709_712_000_000
        var distinct: [Record] = []
        var lineNumber = 0
        for line in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNumber += 1
            var bytes = line
            if bytes.last == UInt8(ascii: "\r") { bytes = bytes.dropLast() }
            if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { continue }
            let json: JSONValue
            do {
                json = try JSONValue(parsing: bytes)
            } catch {
                throw TelexError(.invalidEvent, "--corpus \(path) line \(lineNumber): not JSON (\(error.reason))")
            }
            var field: JSONValue? = json
            for name in keyPath { field = field?[name] }
            var headers: [RecordHeader] = []
            if let type = json["type"]?.stringValue { headers.append(RecordHeader(name: "ce-type", value: type)) }
            if let id = json["id"]?.stringValue { headers.append(RecordHeader(name: "ce-id", value: id)) }
            distinct.append(Record(
                timestamp: baseTime + Int64(distinct.count), key: ByteBuffer(string: field?.stringValue ?? ""),
                headers: headers, value: ByteBuffer(bytes: bytes)))
        }
        guard !distinct.isEmpty else {
            throw ValidationError("--corpus \(path): no JSON lines in it")
        }
        let records = (0..<count).map { distinct[$0 % distinct.count] }
        self.init(records: records, distinctEvents: distinct.count)
    }

    init(records: [Record], distinctEvents: Int) {
        self.records = records
        jsonBytes = records.reduce(0) { $0 + $1.value.readableBytes }
        self.distinctEvents = distinctEvents
    }
}

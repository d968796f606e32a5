import Foundation
import NIOCore
import TelexProtocol
import Testing

@testable import TelexStorage

@Suite("Idempotent appends", .timeLimit(.minutes(1)))
struct IdempotenceTests {
    @Test("a retried batch is answered with its original offsets and stored once, also after a reopen")
    func retriesAreDuplicates() async throws {
        try await withTemporaryDirectory { directory in
            let configuration = testConfiguration()
            let producer: Int64 = 0x7E1E_0001
            var originals: [AppendResult] = []
            do {
                let log = try openLog(directory, configuration)
                for sequence in Int32(0)..<4 {
                    originals.append(
                        try log.append(
                            makeBatch(records: 2, seed: Int(sequence), producerID: producer, sequence: sequence)))
                }
                let retry = try log.append(makeBatch(records: 2, seed: 1, producerID: producer, sequence: 1))
                #expect(retry.duplicate)
                #expect(retry.baseOffset == originals[1].baseOffset)
                #expect(retry.recordCount == originals[1].recordCount)
                #expect(log.endOffset == 8)

                let durableRetry = try await log.appendDurably(
                    makeBatch(records: 2, seed: 3, producerID: producer, sequence: 3))
                #expect(durableRetry == AppendResult(baseOffset: 6, recordCount: 2, duplicate: true))

                // Another producer with the same sequence, and a batch without a producer, are new.
                let other = try log.append(makeBatch(records: 1, producerID: producer + 1, sequence: 1))
                #expect(!other.duplicate)
                #expect(other.baseOffset == 8)
                #expect(!(try log.append(makeBatch(records: 1))).duplicate)
                #expect(!(try log.append(makeBatch(records: 1))).duplicate)
                #expect(log.endOffset == 11)
                #expect(try readAllBatches(log).count == 7)
                try log.close()
            }

            let reopened = try openLog(directory, configuration)
            for sequence in 0..<4 {
                let retry = try reopened.append(
                    makeBatch(records: 2, seed: sequence, producerID: producer, sequence: Int32(sequence)))
                #expect(
                    retry == AppendResult(baseOffset: originals[sequence].baseOffset, recordCount: 2, duplicate: true))
            }
            #expect(try reopened.append(makeBatch(records: 1, producerID: producer + 1, sequence: 1)).duplicate)
            #expect(reopened.endOffset == 11)
            let next = try reopened.append(makeBatch(records: 3, producerID: producer, sequence: 4))
            #expect(next == AppendResult(baseOffset: 11, recordCount: 3, duplicate: false))
            let stored = try readAllBatches(reopened)
            #expect(stored.count == 8)
            #expect(
                stored.filter { header($0).producerID == producer }.map { header($0).producerSequence } == [
                    0, 1, 2, 3, 4,
                ])
        }
    }

    @Test("producer memory is rebuilt across segments on reopen")
    func rebuiltAcrossSegments() async throws {
        try await withTemporaryDirectory { directory in
            let configuration = testConfiguration(segmentAgeMilliseconds: 0)
            let producer: Int64 = 42
            do {
                let log = try openLog(directory, configuration)
                _ = try log.append(makeBatch(records: 1, producerID: producer, sequence: 10))
                _ = try log.append(makeBatch(records: 1, producerID: producer, sequence: 11))
                #expect(log.segmentCount == 2)
                try log.close()
            }
            let reopened = try openLog(directory, configuration)
            #expect(
                try reopened.append(makeBatch(records: 1, producerID: producer, sequence: 10))
                    == AppendResult(baseOffset: 0, recordCount: 1, duplicate: true))
            #expect(
                try reopened.append(makeBatch(records: 1, producerID: producer, sequence: 11))
                    == AppendResult(baseOffset: 1, recordCount: 1, duplicate: true))
            #expect(reopened.endOffset == 2)
        }
    }

    @Test("sequences out of order are each stored once; one older than the whole remembered window is refused")
    func sequenceWindow() async throws {
        try await withTemporaryDirectory { directory in
            let log = try openLog(directory, testConfiguration())
            let producer: Int64 = 7
            // Publishers sharing a producer id may deliver sequences out of order.
            #expect(
                try log.append(makeBatch(records: 1, producerID: producer, sequence: 5))
                    == AppendResult(baseOffset: 0, recordCount: 1, duplicate: false))
            #expect(
                try log.append(makeBatch(records: 1, producerID: producer, sequence: 3))
                    == AppendResult(baseOffset: 1, recordCount: 1, duplicate: false))
            #expect(try log.append(makeBatch(records: 1, producerID: producer, sequence: 3)).duplicate)
            #expect(try log.append(makeBatch(records: 1, producerID: producer, sequence: 5)).baseOffset == 0)
            #expect(log.endOffset == 2)

            // Fill the memory with newer batches, so that 3 and 5 are forgotten.
            let window = Int32(ProducerState.remembered)
            for sequence in 6..<(6 + window) {
                _ = try log.append(makeBatch(records: 1, producerID: producer, sequence: sequence))
            }
            let end = log.endOffset
            for forgotten: Int32 in [3, 5] {
                let error = #expect(throws: TelexError.self) {
                    try log.append(makeBatch(records: 1, producerID: producer, sequence: forgotten))
                }
                #expect(error?.code == .sequenceOutOfOrder)
            }
            #expect(try log.append(makeBatch(records: 1, producerID: producer, sequence: 6 + window - 1)).duplicate)
            #expect(log.endOffset == end)
        }
    }
}

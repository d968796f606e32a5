import Foundation
import NIOCore
import TelexProtocol

/// What this machine can do at best on the bench's corpus, measured before the workloads so their figures can be
/// read against it: the corpus's compression ratio, fdatasync latency, and one core's compress and inflate rates.
struct Floors {
    /// JSON bytes of the events over the bytes of their compressed batches (what the broker stores).
    var ratio: Double
    var batches: Int
    var fdatasyncP50: Double
    var fdatasyncP99: Double
    var compressMBPerSecond: Double
    var inflateMBPerSecond: Double

    /// Up to this many events are cut into batches for the ratio and the codec rates (about 33 MB of JSON).
    static let sampleEvents = 16_384

    /// `implementation` is the deflate library the client compresses with (`--deflate`).
    static func measure(
        corpus: Corpus, batch: Int, level: Int32, implementation: DeflateImplementation, directory: String
    ) throws -> Floors {
        let compressor = BatchCompressor(level: level, implementation: implementation)
        let decompressor = BatchDecompressor(implementation: implementation)
        let sample = corpus.records.prefix(max(batch, min(corpus.records.count, sampleEvents)))
        var plain: [ByteBuffer] = []
        var json = 0
        var stored = 0
        for start in stride(from: sample.startIndex, to: sample.endIndex, by: batch) {
            var builder = RecordBatchBuilder()
            for record in sample[start..<min(start + batch, sample.endIndex)] {
                builder.append(record)
                json += record.value.readableBytes
            }
            stored += builder.build(codec: .zlib, compressor: compressor).readableBytes
            plain.append(builder.build(codec: .none))
        }

        // One core's rates: every sample batch compressed, then every result inflated; best of three passes.
        let clock = ContinuousClock()
        let plainBytes = plain.reduce(0) { $0 + $1.readableBytes }
        var compressed: [ByteBuffer] = []
        var compressSeconds = Double.infinity
        for _ in 0..<3 {
            var outputs: [ByteBuffer] = []
            outputs.reserveCapacity(plain.count)
            let started = clock.now
            for input in plain {
                var output = ByteBuffer()
                compressor.compress(input, into: &output)
                outputs.append(output)
            }
            compressSeconds = min(compressSeconds, (clock.now - started).seconds)
            compressed = outputs
        }
        var inflateSeconds = Double.infinity
        for _ in 0..<3 {
            var output = ByteBuffer()
            output.reserveCapacity((plain.map(\.readableBytes).max() ?? 0) + 1)
            let started = clock.now
            for (index, input) in compressed.enumerated() {
                output.clear()
                try decompressor.decompress(
                    input, expectedLength: plain[index].readableBytes, into: &output, context: "floor batch \(index)")
            }
            inflateSeconds = min(inflateSeconds, (clock.now - started).seconds)
        }

        var syncs = try fdatasyncTimes(appending: compressed[0], count: 200, directory: directory)
        syncs.sort()
        return Floors(
            ratio: Double(json) / Double(stored), batches: plain.count,
            fdatasyncP50: syncs[syncs.count / 2], fdatasyncP99: syncs[syncs.count * 99 / 100],
            compressMBPerSecond: Double(plainBytes) / compressSeconds / 1e6,
            inflateMBPerSecond: Double(plainBytes) / inflateSeconds / 1e6)
    }

    /// Nanoseconds of each of `count` appends of `batch` to a new file in `directory`, each followed by fdatasync,
    /// as the broker does under `--fsync always` with one writer.
    static func fdatasyncTimes(appending batch: ByteBuffer, count: Int, directory: String) throws -> [Double] {
        let path = directory + "/telex-bench-fdatasync-\(getpid()).tmp"
        let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw TelexError(.storageFailure, "cannot create \(path) to measure fdatasync: \(String(cString: strerror(errno)))")
        }
        defer {
            close(descriptor)
            unlink(path)
        }
        let bytes = Array(batch.readableBytesView)
        var times: [Double] = []
        times.reserveCapacity(count)
        for _ in 0..<count {
            let started = DispatchTime.now().uptimeNanoseconds
            let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
            guard written == bytes.count, fdatasync(descriptor) == 0 else {
                throw TelexError(.storageFailure, "appending to \(path) to measure fdatasync failed: \(String(cString: strerror(errno)))")
            }
            times.append(Double(DispatchTime.now().uptimeNanoseconds - started))
        }
        return times
    }
}

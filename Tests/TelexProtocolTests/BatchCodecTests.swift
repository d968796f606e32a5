import CZlib
import Foundation
import NIOCore
import PropertyBased
import TelexProtocol
import Testing

/// libdeflate (what Telex uses) and libz (the spec's reference) read each other's streams and give the same
/// verdicts on bad ones: swapping the inflater changed no record and no error code.
@Suite("Batch codec interoperability", .timeLimit(.minutes(1)))
struct BatchCodecTests {
    static let implementations = DeflateImplementation.allCases

    /// Every batch carried by a vector frame, good and bad, with the file it came from.
    static func vectorBatches() throws -> [(file: String, batch: ByteBuffer)] {
        var found: [(String, ByteBuffer)] = []
        for directory in [VectorDirectory.good, VectorDirectory.bad] {
            for file in VectorDirectory.jsonFiles(in: directory) {
                let json = try JSONValue.load(directory.appendingPathComponent(file))
                // Bad vectors may fail before the message decodes; those carry no batch to inflate.
                let limits = FrameLimits(maxFrameSize: 64 << 20)
                guard let frames = try? decodeStream(try json.hexBytes("hex"), limits: limits),
                    frames.count == 1, let message = try? WireMessage.decode(frames[0])
                else { continue }
                switch message {
                case .client(.publish(_, let batch)): found.append((file, batch))
                case .broker(.deliver(_, _, let batches)):
                    for batch in (try? RecordBatch.split(batches)) ?? [] { found.append((file, batch)) }
                default: break
                }
            }
        }
        return found
    }

    /// The inflated bytes, or the error's code.
    static func inflate(
        _ stream: ByteBuffer, expectedLength: Int, with implementation: DeflateImplementation
    ) -> Result<ByteBuffer, TelexError> {
        var output = ByteBuffer()
        do {
            try BatchDecompressor(implementation: implementation).decompress(
                stream, expectedLength: expectedLength, into: &output, context: "test")
            return .success(output)
        } catch {
            #expect(output.readableBytes == 0, "a failed \(implementation) inflate left bytes behind")
            return .failure(error)
        }
    }

    /// Both implementations fail on `stream` with the same code, which is returned (nil when either accepts).
    static func sharedFailure(_ stream: ByteBuffer, expectedLength: Int) -> TelexError.Code? {
        let results = implementations.map { inflate(stream, expectedLength: expectedLength, with: $0) }
        guard case .failure(let libdeflate) = results[0], case .failure(let zlib) = results[1] else {
            Issue.record("expected both to fail: \(results)")
            return nil
        }
        #expect(libdeflate.code == zlib.code, "libdeflate: \(libdeflate.message); zlib: \(zlib.message)")
        return libdeflate.code == zlib.code ? zlib.code : nil
    }

    /// The compressed records section of Newsroom's zlib batch (written by libz) and its inflated length.
    static var newsroomStream: (stream: ByteBuffer, length: Int) {
        let batch = Newsroom.zlibBatch
        let header = RecordBatchHeader.peek(batch, at: batch.readerIndex)!
        return (try! RecordBatch.recordsSection(of: batch, header: header), Int(header.uncompressedLength))
    }

    // MARK: Vectors

    @Test func everyVectorBatchReadsTheSameThroughBothAndRebuildsThroughEither() throws {
        var zlibBatches = 0
        for (file, batch) in try Self.vectorBatches() {
            guard let header = RecordBatchHeader.peek(batch, at: batch.readerIndex), header.codec == .zlib,
                let stream = try? RecordBatch.recordsSection(of: batch, header: header)
            else { continue }
            zlibBatches += 1
            // The raw stream: the same bytes, or the same error code, from both.
            let raw = Self.implementations.map {
                Self.inflate(stream, expectedLength: Int(header.uncompressedLength), with: $0)
            }
            switch (raw[0], raw[1]) {
            case (.success(let libdeflate), .success(let zlib)): #expect(libdeflate == zlib, "\(file)")
            case (.failure(let libdeflate), .failure(let zlib)): #expect(libdeflate.code == zlib.code, "\(file)")
            default: Issue.record("\(file): libdeflate \(raw[0]) but zlib \(raw[1])")
            }
            // The whole batch: the same records, or the same error code.
            let decoded = Self.implementations.map { implementation in
                Result { () throws(TelexError) in
                    try RecordBatch.decodeRecords(batch, decompressor: BatchDecompressor(implementation: implementation))
                }
            }
            switch (decoded[0], decoded[1]) {
            case (.success(let libdeflate), .success(let zlib)):
                #expect(libdeflate.records == zlib.records, "\(file)")
                // Written again by each implementation, read by the other: byte-identical records.
                let pairs: [(DeflateImplementation, DeflateImplementation)] = [(.libdeflate, .zlib), (.zlib, .libdeflate)]
                for (writer, reader) in pairs {
                    var builder = RecordBatchBuilder()
                    zlib.records.forEach { builder.append($0) }
                    let rebuilt = builder.build(codec: .zlib, compressor: BatchCompressor(implementation: writer))
                    let reread = try RecordBatch.decodeRecords(
                        rebuilt, decompressor: BatchDecompressor(implementation: reader))
                    #expect(reread.records.map(\.value) == zlib.records.map(\.value), "\(file): \(writer) → \(reader)")
                    #expect(reread.records.map(\.key) == zlib.records.map(\.key), "\(file): \(writer) → \(reader)")
                    #expect(reread.records == zlib.records, "\(file): \(writer) → \(reader)")
                }
            case (.failure(let libdeflate), .failure(let zlib)):
                #expect(libdeflate.code == zlib.code, "\(file): libdeflate \(libdeflate.message); zlib \(zlib.message)")
            default:
                Issue.record("\(file): libdeflate \(decoded[0]) but zlib \(decoded[1])")
            }
        }
        // publish_zlib, publish_deleted, the bombs and the key-table vectors at least.
        #expect(zlibBatches >= 5)
    }

    // MARK: Properties

    @Test func randomBatchesAtRandomLevelsDecodeThroughEachPair() async {
        let input = Generator { rng in
            (
                RandomWire.records(&rng), Int32.random(in: 0...12, using: &rng),
                Self.implementations.randomElement(using: &rng)!, Self.implementations.randomElement(using: &rng)!
            )
        }
        await propertyCheck(count: 300, input: input) { records, level, writer, reader in
            var builder = RecordBatchBuilder()
            records.forEach { builder.append($0) }
            let batch = builder.build(codec: .zlib, compressor: BatchCompressor(level: level, implementation: writer))
            let decoded = try RecordBatch.decodeRecords(batch, decompressor: BatchDecompressor(implementation: reader))
            #expect(decoded.records == records, "level \(level), \(writer) → \(reader)")
        }
    }

    @Test func randomBytesRoundTripThroughEachPair() async {
        let input = Generator { rng in
            // Runs of repeated bytes among random ones, so that some levels find matches and some do not.
            var bytes: [UInt8] = []
            for _ in 0..<Int.random(in: 0...40, using: &rng) {
                let byte = UInt8.random(in: 0...255, using: &rng)
                bytes += Bool.random(using: &rng)
                    ? [UInt8](repeating: byte, count: Int.random(in: 1...3000, using: &rng))
                    : (0..<Int.random(in: 1...200, using: &rng)).map { _ in UInt8.random(in: 0...3, using: &rng) }
            }
            return (
                bytes, Int32.random(in: -2...14, using: &rng),
                Self.implementations.randomElement(using: &rng)!, Self.implementations.randomElement(using: &rng)!
            )
        }
        await propertyCheck(count: 300, input: input) { bytes, level, writer, reader in
            let compressor = BatchCompressor(level: level, implementation: writer)
            #expect((0...writer.maxLevel).contains(compressor.level))
            var stream = ByteBuffer(string: "prefix")
            compressor.compress(ByteBuffer(bytes: bytes), into: &stream)
            #expect(stream.readString(length: 6) == "prefix")
            var output = ByteBuffer(string: "kept")
            try BatchDecompressor(implementation: reader).decompress(
                stream, expectedLength: bytes.count, into: &output, context: "property")
            #expect(output.readString(length: 4) == "kept")
            #expect(Array(output.readableBytesView) == bytes, "level \(level), \(writer) → \(reader)")
        }
    }

    // MARK: The same verdicts on bad streams

    @Test func corruptStreamsFailTheSameWay() {
        let (stream, length) = Self.newsroomStream
        // A wrong zlib header, a preset-dictionary flag, and bytes flipped in the deflate data and the Adler-32.
        for position in [0, 1, stream.readableBytes / 2, stream.readableBytes - 1] {
            var corrupt = stream
            let index = corrupt.readerIndex + position
            corrupt.setInteger(corrupt.getInteger(at: index, as: UInt8.self)! ^ (position == 1 ? 0x20 : 0x55), at: index)
            _ = Self.sharedFailure(corrupt, expectedLength: length)
        }
        #expect(Self.sharedFailure(ByteBuffer(), expectedLength: length) == .invalidBatch)
        #expect(Self.sharedFailure(ByteBuffer(bytes: [0xFF, 0xFE, 0xFD, 0xFC]), expectedLength: 4) == .invalidBatch)
        expectTelexError(.invalidBatch, mentioning: ["test: zlib data is corrupt"]) {
            var corrupt = stream
            corrupt.setInteger(UInt8(0x00), at: corrupt.readerIndex)
            var output = ByteBuffer()
            try BatchDecompressor().decompress(corrupt, expectedLength: length, into: &output, context: "test")
        }
    }

    @Test func truncatedStreamsFailTheSameWay() {
        let (stream, length) = Self.newsroomStream
        for cut in 0..<stream.readableBytes {
            let truncated = stream.getSlice(at: stream.readerIndex, length: cut)!
            #expect(Self.sharedFailure(truncated, expectedLength: length) == .invalidBatch, "cut at \(cut)")
        }
    }

    @Test func trailingBytesFailTheSameWay() {
        let (stream, length) = Self.newsroomStream
        var trailing = stream
        trailing.writeBytes([1, 2, 3])
        #expect(Self.sharedFailure(trailing, expectedLength: length) == .invalidBatch)
        for implementation in Self.implementations {
            expectTelexError(.invalidBatch, mentioning: ["3 bytes after the zlib stream"]) {
                var output = ByteBuffer()
                try BatchDecompressor(implementation: implementation).decompress(
                    trailing, expectedLength: length, into: &output, context: "test")
            }
        }
    }

    @Test func overAndUnderstatedLengthsFailTheSameWay() {
        let (stream, length) = Self.newsroomStream
        for implementation in Self.implementations {
            expectTelexError(.batchTooLarge, mentioning: ["test: inflates past its declared \(length - 1) bytes"]) {
                var output = ByteBuffer()
                try BatchDecompressor(implementation: implementation).decompress(
                    stream, expectedLength: length - 1, into: &output, context: "test")
            }
            let mentions = ["inflated to \(length) bytes but the header declares \(length + 1)"]
            expectTelexError(.invalidBatch, mentioning: mentions) {
                var output = ByteBuffer()
                try BatchDecompressor(implementation: implementation).decompress(
                    stream, expectedLength: length + 1, into: &output, context: "test")
            }
        }
        #expect(Self.sharedFailure(stream, expectedLength: 0) == .batchTooLarge)
        // 1 MiB of zeros declared as 1 KiB: both stop after the declared size plus one byte.
        let bomb = BadVectors.understatedBomb
        let header = RecordBatchHeader.peek(bomb, at: bomb.readerIndex)!
        let bombStream = try! RecordBatch.recordsSection(of: bomb, header: header)
        #expect(Self.sharedFailure(bombStream, expectedLength: Int(header.uncompressedLength)) == .batchTooLarge)
    }

    @Test func levelsAreClampedIntoEachImplementationsRange() {
        #expect(BatchCompressor(level: 12).level == 12)
        #expect(BatchCompressor(level: 13).level == 12)
        #expect(BatchCompressor(level: 12, implementation: .zlib).level == 9)
        #expect(BatchCompressor(level: -1, implementation: .zlib).level == 6)
        #expect(BatchCompressor(level: -1).level == 6)
        #expect(BatchCompressor().level == 1)
        #expect(BatchCompressor().implementation == .libdeflate)
    }

    /// libdeflate decodes the length symbol RFC 1951 reserves (286) where zlib refuses it: the one known way the
    /// two disagree (PROTOCOL.md §6.5). A fixed-Huffman block: 'a', then symbol 286 at distance 1, then end of
    /// block; the Adler-32 is that of the 259 'a's libdeflate produces.
    @Test func reservedSymbolsAreRefusedByTheReferenceAndToleratedByLibdeflate() throws {
        let stream = ByteBuffer(bytes: [0x78, 0x01, 0x4b, 0x1c, 0x03, 0x00, 0xd9, 0xa8, 0x62, 0x24])
        var output = ByteBuffer()
        try BatchDecompressor().decompress(stream, expectedLength: 259, into: &output, context: "reserved")
        #expect(output.readableBytesView.elementsEqual(repeatElement(UInt8(ascii: "a"), count: 259)))
        var strict = ByteBuffer()
        #expect(throws: TelexError.self) {
            try BatchDecompressor(implementation: .zlib).decompress(
                stream, expectedLength: 259, into: &strict, context: "reserved")
        }
        #expect(strict.readableBytes == 0)
    }

    @Test func aNegativeOrHugeDeclaredLengthIsRefusedBeforeInflating() {
        for implementation in DeflateImplementation.allCases {
            for length in [-2, -1, Int(UInt32.max), Int.max] {
                var output = ByteBuffer()
                #expect(throws: TelexError.self) {
                    try BatchDecompressor(implementation: implementation).decompress(
                        ByteBuffer(bytes: [0x78, 0x01, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]), expectedLength: length,
                        into: &output, context: "length")
                }
            }
        }
    }

    // MARK: CRC-32

    @Test func crcIsZlibsCRC32OnRandomBytes() async {
        let input = Gen<UInt8>.value().array(of: 0...5000)
        await propertyCheck(count: 200, input: input, Gen<Int>.value(in: 0...7)) { bytes, skip in
            let reference = bytes.withUnsafeBufferPointer { UInt32(crc32(0, $0.baseAddress, uInt($0.count))) }
            #expect(CRC32.checksum(bytes) == reference)
            // A buffer whose readable bytes start part-way in.
            var buffer = ByteBuffer(repeating: 0xAB, count: skip)
            buffer.writeBytes(bytes)
            buffer.moveReaderIndex(forwardBy: skip)
            #expect(CRC32.checksum(buffer) == reference)
        }
    }

    // MARK: Python

    /// python3 on PATH, if any.
    static let python3: String? = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")
        .split(separator: ":").map { "\($0)/python3" }.first { FileManager.default.isExecutableFile(atPath: $0) }

    @Test(.enabled(
        if: BatchCodecTests.python3 != nil,
        "python3 is not installed: skipping the check that Python's zlib reads Telex's batches"))
    func pythonsZlibReadsWhatTelexWrites() throws {
        var builder = RecordBatchBuilder()
        Newsroom.records.forEach { builder.append($0) }
        let batch = builder.build(codec: .zlib, compressor: BatchCompressor(level: 6))
        let header = RecordBatchHeader.peek(batch, at: 0)!
        let stream = try RecordBatch.recordsSection(of: batch, header: header)
        var plain = ByteBuffer()
        try BatchDecompressor().decompress(
            stream, expectedLength: Int(header.uncompressedLength), into: &plain, context: "test")

        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("telex-codec-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let streamFile = directory.appendingPathComponent("records.zlib")
        let plainFile = directory.appendingPathComponent("records.bin")
        try Data(stream.readableBytesView).write(to: streamFile)
        try Data(plain.readableBytesView).write(to: plainFile)

        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.python3!)
        process.arguments = [
            "-c",
            "import zlib,sys; d=zlib.decompress(open(sys.argv[1],'rb').read()); "
                + "sys.exit(0 if d == open(sys.argv[2],'rb').read() else 3)",
            streamFile.path, plainFile.path,
        ]
        try process.run()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "python3's zlib did not read the libdeflate stream back to the records")
    }
}

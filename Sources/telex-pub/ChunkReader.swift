#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch
import Foundation
import NIOConcurrencyHelpers
import NIOCore

/// Whole lines read from one input, in one buffer.
struct LineChunk: Sendable {
    /// The file name, or "stdin".
    var source: String
    /// The number of the chunk's first line in its input, from 1.
    var firstLine: Int
    /// The lines, each ended by a newline except perhaps the input's last.
    var bytes: ByteBuffer
}

/// Reads the inputs on a background thread in large chunks cut at line ends, at most `capacity` chunks ahead of
/// the reader of `next()`, so memory stays flat whatever the input size. A pipe that has nothing more to give
/// right now ends the chunk early, so publishing never waits for a slow pipe to fill a chunk.
final class ChunkReader: Sendable {
    enum Item: Sendable {
        case chunk(LineChunk)
        case failure(String)
    }

    private struct State {
        var items: [Item] = []
        var done = false
        var waiter: CheckedContinuation<Void, Never>?
    }

    /// Bytes per chunk (a longer line makes a longer chunk).
    static let chunkSize = 512 << 10
    /// The longest line read: the client's largest frame (16 MiB), which no longer record could fit.
    static let maxLineBytes = 16 << 20

    private let files: [String]
    private let slots: DispatchSemaphore
    private let state = NIOLockedValueBox(State())

    init(files: [String], capacity: Int = 3) {
        self.files = files
        slots = DispatchSemaphore(value: capacity)
    }

    func start() {
        Thread.detachNewThread { self.readAll() }
    }

    /// The next item; waits for it. Nil once the inputs are all read.
    func next() async -> Item? {
        while true {
            if let item = ready() { return item }
            if state.withLockedValue({ $0.done && $0.items.isEmpty }) { return nil }
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLockedValue { state in
                    if !state.items.isEmpty || state.done { return true }
                    state.waiter = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        }
    }

    /// The next item if one is already read; never waits.
    func ready() -> Item? {
        let item: Item? = state.withLockedValue { state in state.items.isEmpty ? nil : state.items.removeFirst() }
        if item != nil { slots.signal() }
        return item
    }

    private func push(_ item: Item) {
        slots.wait()
        let waiter = state.withLockedValue { state in
            state.items.append(item)
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    private func readAll() {
        for source in files.isEmpty ? ["-"] : files {
            let descriptor = source == "-" ? STDIN_FILENO : open(source, O_RDONLY)
            guard descriptor >= 0 else {
                push(.failure("\(source): cannot open for reading"))
                break
            }
            let failure = readChunks(descriptor, name: source == "-" ? "stdin" : source)
            if descriptor != STDIN_FILENO { close(descriptor) }
            if let failure {
                push(.failure(failure))
                break
            }
        }
        let waiter = state.withLockedValue { state in
            state.done = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    /// Reads one input to its end. Returns the message that stops the run when it cannot: a read error (the whole
    /// lines read before it are pushed first), or a line longer than `maxLineBytes` (which could never be published,
    /// and would otherwise grow the buffer without bound).
    private func readChunks(_ descriptor: Int32, name: String) -> String? {
        var line = 1
        var buffer = ByteBuffer()
        buffer.reserveCapacity(Self.chunkSize)
        var atEnd = false
        var readError: Int32 = 0
        while !atEnd {
            // Fill to a chunk's worth, or to the end of the input, or until a pipe has no more for now (once there
            // is a whole line).
            var hasNewline = buffer.readableBytesView.contains(UInt8(ascii: "\n"))
            while !(hasNewline && buffer.readableBytes >= Self.chunkSize) {
                let wanted = max(Self.chunkSize - buffer.readableBytes, 64 << 10)
                var newline = false
                let count = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: wanted) { pointer -> Int in
                    var count: Int
                    repeat { count = read(descriptor, pointer.baseAddress, wanted) } while count < 0 && errno == EINTR
                    if count < 0 {
                        readError = errno
                        return 0
                    }
                    newline = count > 0 && memchr(pointer.baseAddress!, 0x0A, count) != nil
                    return count
                }
                if readError != 0 {
                    // Publish what was whole before the error; the partial line after it is dropped.
                    if hasNewline || newline {
                        let view = buffer.readableBytesView
                        let chunk = buffer.readSlice(length: view.lastIndex(of: UInt8(ascii: "\n"))! + 1 - view.startIndex)!
                        push(.chunk(LineChunk(source: name, firstLine: line, bytes: chunk)))
                    }
                    return "\(name): read failed (\(String(cString: strerror(readError))))"
                }
                hasNewline = hasNewline || newline
                if !hasNewline, buffer.readableBytes > Self.maxLineBytes {
                    return "\(name) line \(line): longer than \(Self.maxLineBytes >> 20) MiB without a line break (no record that large fits a frame; is this JSON Lines?)"
                }
                if count == 0 {
                    atEnd = true
                    break
                }
                if count < wanted, hasNewline, !Self.readable(descriptor) { break }
            }
            guard buffer.readableBytes > 0 else { break }
            // Cut after the last newline; the partial line after it starts the next chunk.
            let view = buffer.readableBytesView
            let cut = atEnd ? view.endIndex : (view.lastIndex(of: UInt8(ascii: "\n")).map { $0 + 1 } ?? view.endIndex)
            let chunk = buffer.readSlice(length: cut - view.startIndex)!
            var rest = ByteBuffer()
            rest.reserveCapacity(max(Self.chunkSize, buffer.readableBytes))
            rest.writeBuffer(&buffer)
            buffer = rest
            let lines = Self.countNewlines(chunk)
            push(.chunk(LineChunk(source: name, firstLine: line, bytes: chunk)))
            line += lines
        }
        return nil
    }

    /// Whether more input is ready right now (a pipe that was drained is not).
    private static func readable(_ descriptor: Int32) -> Bool {
        var poller = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        return poll(&poller, 1, 0) > 0
    }

    private static func countNewlines(_ buffer: ByteBuffer) -> Int {
        buffer.withUnsafeReadableBytes { raw in
            var count = 0
            var position = raw.baseAddress!
            var remaining = raw.count
            while remaining > 0, let found = memchr(position, 0x0A, remaining) {
                count += 1
                let next = UnsafeRawPointer(found) + 1
                remaining -= next - position
                position = next
            }
            return count
        }
    }
}

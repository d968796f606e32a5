import Dispatch
#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import TelexProtocol

/// The open segment and index files of a whole store, kept within a budget of descriptors, so the number of
/// topics does not bound the number of open files (Protocol/STORAGE.md §11).
///
/// A file is opened on first use and stays open while it is used; when opening one more would pass `budget`,
/// the least recently used idle files are closed. Users borrow a descriptor through a `FileLease`: a leased
/// descriptor is never closed until its last lease ends. When every open file is leased, a new lease opens one
/// more above the budget instead of waiting (so holding one lease while taking another cannot deadlock), and
/// the surplus is closed as leases end: the open count stays within `budget` plus the leases held at once
/// beyond it.
///
/// Thread-safe: one short lock guards the bookkeeping; `open(2)` and `close(2)` run outside it. Only open
/// files have an entry here, so the cache's memory is bounded by the open count, not by the number of files.
///
/// The result of closing an evicted descriptor is kept for its file: on NFS `close(2)` writes back and reports
/// a writeback error, which a later `fdatasync` through another descriptor would not see (STORAGE.md §11.2).
/// `closeFailure(of:)` gives it to the file's sync rounds.
final class FileDescriptorCache: Sendable {
    /// Descriptors kept open when idle; at least 1.
    let budget: Int
    /// Sync rounds of the store's logs that may run at once (each leases its files for its fsyncs).
    let syncSlots = DispatchSemaphore(value: FileDescriptorCache.concurrentSyncRounds)
    static let concurrentSyncRounds = 4
    private let state = Mutex(State())
    private let nextFileID = Atomic<UInt64>(0)
    /// Test hooks: how many of the next opens (EMFILE), closes of evicted descriptors (EIO) and fsyncs of
    /// cached files (EIO) fail.
    private let openFaults = Atomic<Int>(0)
    private let closeFaults = Atomic<Int>(0)
    private let syncFaults = Atomic<Int>(0)

    /// A file's identity in the cache, unique for the cache's lifetime (unlike an address, never reused).
    typealias FileID = UInt64

    private struct Entry {
        var descriptor: CInt
        /// The file's path, for closing the descriptor through `FileIO`.
        var path: String
        var leases: Int
        /// Neighbours in the idle list (open files without a lease), towards the least and the most recently used.
        var older: FileID?
        var newer: FileID?
    }

    private struct State {
        var entries: [FileID: Entry] = [:]
        /// Evicted descriptors of a file being closed outside the lock, by file.
        var closing: [FileID: Int] = [:]
        /// The errno of the first failed close of an evicted descriptor, by file, until the file is discarded.
        var closeFailures: [FileID: Int32] = [:]
        /// Descriptors open or being opened.
        var openCount = 0
        var peakOpenCount = 0
        var opens = 0
        var oldestIdle: FileID?
        var newestIdle: FileID?

        /// Takes a lease on an open file; nil if it is not open.
        mutating func lease(_ key: FileID) -> CInt? {
            guard var entry = entries[key] else { return nil }
            if entry.leases == 0 { unlinkIdle(key, entry) }
            entry.leases += 1
            entry.older = nil
            entry.newer = nil
            entries[key] = entry
            return entry.descriptor
        }

        /// Ends a lease; the file becomes the most recently used idle one when it was the last.
        mutating func release(_ key: FileID) {
            guard var entry = entries[key] else { return }
            entry.leases -= 1
            if entry.leases == 0 {
                entry.older = newestIdle
                entry.newer = nil
                if let newest = newestIdle { entries[newest]!.newer = key } else { oldestIdle = key }
                newestIdle = key
            }
            entries[key] = entry
        }

        /// Forgets an idle file, returning its descriptor (and path) to close; nil if it is not open or is leased.
        mutating func removeIdle(_ key: FileID) -> (CInt, String)? {
            guard let entry = entries[key], entry.leases == 0 else { return nil }
            unlinkIdle(key, entry)
            entries[key] = nil
            openCount -= 1
            return (entry.descriptor, entry.path)
        }

        /// Removes the least recently used idle files while more than `budget` are open; returns them, counted
        /// as closing until `closed` records the result.
        mutating func evict(toFit budget: Int) -> [(FileID, CInt, String)] {
            var evicted: [(FileID, CInt, String)] = []
            while openCount > budget, let oldest = oldestIdle, let (descriptor, path) = removeIdle(oldest) {
                evicted.append((oldest, descriptor, path))
                closing[oldest, default: 0] += 1
            }
            return evicted
        }

        /// Records that an evicted descriptor of `key` is closed, and its errno if the close failed; dropped
        /// when the file was discarded meanwhile.
        mutating func closed(_ key: FileID, failure: Int32?) {
            guard let count = closing[key] else { return }
            closing[key] = count > 1 ? count - 1 : nil
            if let failure, closeFailures[key] == nil { closeFailures[key] = failure }
        }

        private mutating func unlinkIdle(_ key: FileID, _ entry: Entry) {
            if let older = entry.older { entries[older]!.newer = entry.newer } else { oldestIdle = entry.newer }
            if let newer = entry.newer { entries[newer]!.older = entry.older } else { newestIdle = entry.older }
        }
    }

    init(budget: Int) {
        precondition(budget >= 1, "a file descriptor cache needs a budget of at least one descriptor")
        self.budget = budget
    }

    /// Descriptors open now, leased or idle.
    var openCount: Int { state.withLock { $0.openCount } }
    /// The most descriptors open at once so far.
    var peakOpenCount: Int { state.withLock { $0.peakOpenCount } }
    /// Files opened so far (first opens and re-opens after eviction).
    var opens: Int { state.withLock { $0.opens } }

    /// A lease on `file`'s descriptor, opening the file (`O_RDWR`, plus `O_CREAT` when `creating`; `O_RDONLY` for
    /// a read-only file) if it is not open. Blocking when it opens: one `open(2)`, and the `close(2)`s of the
    /// files it evicts.
    fileprivate func lease(_ file: CachedFile, creating: Bool) throws(TelexError) -> FileLease {
        let key = file.id
        let (open, evicted) = state.withLock { state -> (CInt?, [(FileID, CInt, String)]) in
            if let descriptor = state.lease(key) { return (descriptor, []) }
            state.openCount += 1
            state.opens += 1
            let evicted = state.evict(toFit: budget)
            state.peakOpenCount = max(state.peakOpenCount, state.openCount)
            return (nil, evicted)
        }
        closeEvicted(evicted)
        if let open { return FileLease(file, descriptor: open) }
        let opened: CInt
        do throws(TelexError) {
            if Self.take(openFaults) { throw FileIO.failure("open", file.path, errno: EMFILE) }
            opened = try FileIO.open(file.path, flags: file.readOnly ? O_RDONLY : creating ? O_RDWR | O_CREAT : O_RDWR)
        } catch {
            state.withLock { $0.openCount -= 1 }
            throw error
        }
        // Another thread may have opened the same file meanwhile: then use its descriptor and close ours.
        let raced = state.withLock { state -> CInt? in
            if let descriptor = state.lease(key) {
                state.openCount -= 1
                return descriptor
            }
            state.entries[key] = Entry(descriptor: opened, path: file.path, leases: 1)
            return nil
        }
        guard let raced else { return FileLease(file, descriptor: opened) }
        FileIO.close(opened, path: file.path)
        return FileLease(file, descriptor: raced)
    }

    fileprivate func release(_ file: CachedFile) {
        let evicted = state.withLock { state in
            state.release(file.id)
            return state.evict(toFit: budget)
        }
        closeEvicted(evicted)
    }

    /// Closes `file` now if it is open and not leased; a leased file goes on being used and is closed by eviction.
    fileprivate func closeIfIdle(_ file: FileID) {
        let evicted = state.withLock { state -> [(FileID, CInt, String)] in
            guard let (descriptor, path) = state.removeIdle(file) else { return [] }
            state.closing[file, default: 0] += 1
            return [(file, descriptor, path)]
        }
        closeEvicted(evicted)
    }

    /// Closes `file`'s idle descriptor and forgets the file (its last reference is going).
    fileprivate func discard(_ file: FileID) {
        let open = state.withLock { state -> (CInt, String)? in
            state.closing[file] = nil
            state.closeFailures[file] = nil
            return state.removeIdle(file)
        }
        if let (descriptor, path) = open { FileIO.close(descriptor, path: path) }
    }

    /// Closes evicted descriptors and records a failed close for its file (EINTR is not one: Linux has released
    /// the descriptor whatever the result, and a retry could close another file's).
    private func closeEvicted(_ evicted: [(FileID, CInt, String)]) {
        for (file, descriptor, path) in evicted {
            var failed = FileIO.close(descriptor, path: path)
            if Self.take(closeFaults) { failed = EIO }
            state.withLock { $0.closed(file, failure: failed == 0 || failed == EINTR ? nil : failed) }
        }
    }

    /// The error of a failed close of one of `file`'s evicted descriptors, if any, once every close of it in
    /// progress is done (on NFS it may report a writeback error of bytes not yet fsynced). Blocking: waits for
    /// closes still running on other threads.
    func closeFailure(of file: CachedFile) -> TelexError? {
        while true {
            let (pending, failure) = state.withLock { ($0.closing[file.id] != nil, $0.closeFailures[file.id]) }
            if let failure { return FileIO.failure("close", file.path, errno: failure) }
            guard pending else { return nil }
            usleep(100)
        }
    }

    /// `fdatasync`s `descriptor`, one of `file`'s.
    fileprivate func sync(_ descriptor: CInt, of file: CachedFile) throws(TelexError) {
        if Self.take(syncFaults) { throw FileIO.failure("fdatasync", file.path, errno: EIO) }
        try FileIO.sync(descriptor, path: file.path)
    }

    fileprivate func makeFileID() -> FileID {
        nextFileID.add(1, ordering: .relaxed).newValue
    }

    /// Test hook: the next `count` opens fail with EMFILE (as when sockets filled the descriptor table).
    func failOpens(_ count: Int) { openFaults.store(count, ordering: .relaxed) }
    /// Test hook: the next `count` closes of evicted or idle descriptors report EIO (as NFS may on a failed
    /// writeback); the descriptors are closed all the same.
    func failCloses(_ count: Int) { closeFaults.store(count, ordering: .relaxed) }
    /// Test hook: the next `count` fsyncs through `CachedFile.sync()` fail with EIO.
    func failSyncs(_ count: Int) { syncFaults.store(count, ordering: .relaxed) }

    /// Takes one injected fault from `faults` if any is left.
    private static func take(_ faults: borrowing Atomic<Int>) -> Bool {
        var left = faults.load(ordering: .relaxed)
        while left > 0 {
            let (exchanged, original) = faults.compareExchange(
                expected: left, desired: left - 1, ordering: .relaxed)
            if exchanged { return true }
            left = original
        }
        return false
    }
}

/// One file a segment keeps through the store's `FileDescriptorCache`: its path, opened again on demand.
///
/// When the last reference goes, its descriptor (if open) is closed; leases hold the file, so that never happens
/// under a user.
final class CachedFile: Sendable {
    let path: String
    /// Opened `O_RDONLY`: a file the log must never write (an archived segment's copy, `TopicLog+Archive.swift`).
    let readOnly: Bool
    fileprivate let id: FileDescriptorCache.FileID
    private let cache: FileDescriptorCache

    init(path: String, cache: FileDescriptorCache, readOnly: Bool = false) {
        self.path = path
        self.readOnly = readOnly
        self.cache = cache
        id = cache.makeFileID()
    }

    deinit {
        cache.discard(id)
    }

    /// Borrows the file's descriptor until the lease is dropped; opens the file if the cache closed it.
    func lease(creating: Bool = false) throws(TelexError) -> FileLease {
        try cache.lease(self, creating: creating)
    }

    /// Runs `body` with the file's descriptor, leased for the duration of the call.
    func withDescriptor<T>(_ body: (CInt) throws(TelexError) -> T) throws(TelexError) -> T {
        try lease().withDescriptor(body)
    }

    /// Closes the descriptor now unless it is leased (then eviction closes it once idle). The file can still
    /// be leased again afterwards: it is opened anew.
    func closeIfIdle() {
        cache.closeIfIdle(id)
    }

    /// `fdatasync`s the file through a lease (opening it if the cache closed it).
    func sync() throws(TelexError) {
        let lease = try lease()
        try lease.withDescriptor { fd throws(TelexError) in try cache.sync(fd, of: self) }
    }

    /// The error of a failed close of an evicted descriptor of this file, if any (see
    /// `FileDescriptorCache.closeFailure(of:)`).
    var closeFailure: TelexError? { cache.closeFailure(of: self) }

    fileprivate func released() {
        cache.release(self)
    }
}

/// A borrowed descriptor of a `CachedFile`: open for as long as the lease exists. Use the descriptor only inside
/// `withDescriptor`, which keeps the lease alive for the duration of the call.
final class FileLease: Sendable {
    let file: CachedFile
    private let descriptor: CInt

    fileprivate init(_ file: CachedFile, descriptor: CInt) {
        self.file = file
        self.descriptor = descriptor
    }

    deinit {
        file.released()
    }

    func withDescriptor<T, E: Error>(_ body: (CInt) throws(E) -> T) throws(E) -> T {
        try body(descriptor)
    }
}

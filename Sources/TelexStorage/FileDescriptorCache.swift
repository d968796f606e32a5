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
final class FileDescriptorCache: Sendable {
    /// Descriptors kept open when idle; at least 1.
    let budget: Int
    /// Sync rounds of the store's logs that may run at once (each leases its files for its fsyncs).
    let syncSlots = DispatchSemaphore(value: FileDescriptorCache.concurrentSyncRounds)
    static let concurrentSyncRounds = 4
    private let state = Mutex(State())

    private struct Entry {
        var descriptor: CInt
        var leases: Int
        /// Neighbours in the idle list (open files without a lease), towards the least and the most recently used.
        var older: ObjectIdentifier?
        var newer: ObjectIdentifier?
    }

    private struct State {
        var entries: [ObjectIdentifier: Entry] = [:]
        /// Descriptors open or being opened.
        var openCount = 0
        var peakOpenCount = 0
        var opens = 0
        var oldestIdle: ObjectIdentifier?
        var newestIdle: ObjectIdentifier?

        /// Takes a lease on an open file; nil if it is not open.
        mutating func lease(_ key: ObjectIdentifier) -> CInt? {
            guard var entry = entries[key] else { return nil }
            if entry.leases == 0 { unlinkIdle(key, entry) }
            entry.leases += 1
            entry.older = nil
            entry.newer = nil
            entries[key] = entry
            return entry.descriptor
        }

        /// Ends a lease; the file becomes the most recently used idle one when it was the last.
        mutating func release(_ key: ObjectIdentifier) {
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

        /// Forgets an idle file, returning its descriptor to close; nil if it is not open or is leased.
        mutating func removeIdle(_ key: ObjectIdentifier) -> CInt? {
            guard let entry = entries[key], entry.leases == 0 else { return nil }
            unlinkIdle(key, entry)
            entries[key] = nil
            openCount -= 1
            return entry.descriptor
        }

        /// Removes the least recently used idle files while more than `budget` are open; returns their descriptors.
        mutating func evict(toFit budget: Int) -> [CInt] {
            var closing: [CInt] = []
            while openCount > budget, let oldest = oldestIdle, let descriptor = removeIdle(oldest) {
                closing.append(descriptor)
            }
            return closing
        }

        private mutating func unlinkIdle(_ key: ObjectIdentifier, _ entry: Entry) {
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

    /// A lease on `file`'s descriptor, opening the file (`O_RDWR`, plus `O_CREAT` when `creating`) if it is not
    /// open. Blocking when it opens: one `open(2)`, and the `close(2)`s of the files it evicts.
    fileprivate func lease(_ file: CachedFile, creating: Bool) throws(TelexError) -> FileLease {
        let key = ObjectIdentifier(file)
        let (open, evicted) = state.withLock { state -> (CInt?, [CInt]) in
            if let descriptor = state.lease(key) { return (descriptor, []) }
            state.openCount += 1
            state.opens += 1
            let evicted = state.evict(toFit: budget)
            state.peakOpenCount = max(state.peakOpenCount, state.openCount)
            return (nil, evicted)
        }
        for descriptor in evicted { close(descriptor) }
        if let open { return FileLease(file, descriptor: open) }
        let opened: CInt
        do {
            opened = try FileIO.open(file.path, flags: creating ? O_RDWR | O_CREAT : O_RDWR)
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
            state.entries[key] = Entry(descriptor: opened, leases: 1)
            return nil
        }
        guard let raced else { return FileLease(file, descriptor: opened) }
        close(opened)
        return FileLease(file, descriptor: raced)
    }

    fileprivate func release(_ file: CachedFile) {
        let evicted = state.withLock { state in
            state.release(ObjectIdentifier(file))
            return state.evict(toFit: budget)
        }
        for descriptor in evicted { close(descriptor) }
    }

    /// Closes `file` now if it is open and not leased; a leased file goes on being used and is closed by eviction.
    fileprivate func closeIfIdle(_ file: ObjectIdentifier) {
        if let descriptor = state.withLock({ $0.removeIdle(file) }) { close(descriptor) }
    }
}

/// One file a segment keeps through the store's `FileDescriptorCache`: its path, opened again on demand.
///
/// When the last reference goes, its descriptor (if open) is closed; leases hold the file, so that never happens
/// under a user.
final class CachedFile: Sendable {
    let path: String
    private let cache: FileDescriptorCache

    init(path: String, cache: FileDescriptorCache) {
        self.path = path
        self.cache = cache
    }

    deinit {
        cache.closeIfIdle(ObjectIdentifier(self))
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
        cache.closeIfIdle(ObjectIdentifier(self))
    }

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

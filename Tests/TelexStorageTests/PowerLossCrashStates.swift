import Foundation
import TelexProtocol

@testable import TelexStorage

/// The files a power cut may leave, built from the events recorded before it (in the manner of ALICE and LazyFS).
///
/// Rules: a file's data and size survive up to its last fsync; a directory's entries (creations, renames,
/// deletions, new subdirectories) up to its last fsync. Anything later may or may not survive, each change on
/// its own: a write may also survive torn, only some of its 512-byte sectors. A file or directory whose entry
/// did not survive is not there, whatever was fsynced in it.
struct CrashImage {
    /// Directories and files, by path relative to the recorded root ("/data/topics", …).
    var directories: Set<String> = []
    var files: [String: [UInt8]] = [:]

    /// Builds the image of a power cut after `events[..<crashPoint]`, keeping each change not yet synced with
    /// probability `keepChance` and tearing a kept write with probability `tearChance`.
    init(
        _ recorded: [DiskEvent], root: String, crashPoint: Int, keepChance: Double, tearChance: Double,
        random: inout SeededGenerator
    ) {
        enum Node: Equatable { case file(Int), directory }
        let events = recorded[..<crashPoint]
        // Pass 1: which file (inode) each data change and fsync is about, and which directory each entry change is in.
        var live: [String: Node] = [:]
        var inodes = [Int?](repeating: nil, count: crashPoint)
        var parents = [String?](repeating: nil, count: crashPoint)
        var nextInode = 0
        for (index, event) in events.enumerated() {
            switch event {
            case .create(let path):
                live[path] = .file(nextInode)
                inodes[index] = nextInode
                nextInode += 1
                parents[index] = Self.parent(path)
            case .makeDirectory(let path):
                live[path] = .directory
                parents[index] = Self.parent(path)
            case .write(let path, _, _), .truncate(let path, _), .sync(let path):
                if case .file(let inode) = live[path] { inodes[index] = inode }
            case .rename(let from, let to):
                live[to] = live[from]
                live[from] = nil
                parents[index] = Self.parent(to)
            case .unlink(let path), .removeDirectory(let path):
                live[path] = nil
                parents[index] = Self.parent(path)
            case .syncDirectory, .acknowledged:
                break
            }
        }
        // Pass 2, backwards: a change is pending (may be lost) unless its file or directory is fsynced later.
        var pending = [Bool](repeating: false, count: crashPoint)
        var syncedFiles: Set<Int> = []
        var syncedDirectories: Set<String> = []
        for (index, event) in events.enumerated().reversed() {
            switch event {
            case .sync:
                if let inode = inodes[index] { syncedFiles.insert(inode) }
            case .syncDirectory(let path):
                syncedDirectories.insert(path)
            case .write, .truncate:
                pending[index] = inodes[index].map { !syncedFiles.contains($0) } ?? false
            case .create, .makeDirectory, .rename, .unlink, .removeDirectory:
                pending[index] = !syncedDirectories.contains(parents[index]!)
            case .acknowledged:
                break
            }
        }
        // Pass 3: replay what survives.
        var entries: [String: Node] = [:]
        var contents: [Int: [UInt8]] = [:]
        for (index, event) in events.enumerated() {
            let keep = !pending[index] || Double.random(in: 0..<1, using: &random) < keepChance
            switch event {
            case .create(let path):
                contents[inodes[index]!] = []
                if keep { entries[path] = .file(inodes[index]!) }
            case .makeDirectory(let path):
                if keep { entries[path] = .directory }
            case .rename(let from, let to):
                if keep, let node = entries[from] {
                    entries[to] = node
                    entries[from] = nil
                }
            case .unlink(let path), .removeDirectory(let path):
                if keep { entries[path] = nil }
            case .write(_, let offset, let bytes):
                guard keep, let inode = inodes[index] else { break }
                let torn = pending[index] && Double.random(in: 0..<1, using: &random) < tearChance
                Self.write(bytes, at: offset, into: &contents[inode, default: []], torn: torn, random: &random)
            case .truncate(_, let length):
                guard keep, let inode = inodes[index] else { break }
                Self.resize(&contents[inode, default: []], to: length)
            case .sync, .syncDirectory, .acknowledged:
                break
            }
        }
        // A path is there only if every directory above it, up to the root, is.
        func reachable(_ path: String) -> Bool {
            var current = Self.parent(path)
            while current != root {
                guard current.hasPrefix(root), entries[current] == .directory else { return false }
                current = Self.parent(current)
            }
            return true
        }
        for (path, node) in entries where path.hasPrefix(root + "/") && reachable(path) {
            let relative = String(path.dropFirst(root.count))
            switch node {
            case .directory: directories.insert(relative)
            case .file(let inode): files[relative] = contents[inode] ?? []
            }
        }
    }

    static func parent(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    /// Applies a write, whole or torn (a random subset of its 512-byte sectors, counted from the file start).
    private static func write(
        _ bytes: [UInt8], at offset: Int, into file: inout [UInt8], torn: Bool, random: inout SeededGenerator
    ) {
        var start = offset
        while start < offset + bytes.count {
            let end = min(offset + bytes.count, (start / 512 + 1) * 512)
            if !torn || Bool.random(using: &random) {
                if file.count < end { file += [UInt8](repeating: 0, count: end - file.count) }
                file.replaceSubrange(start..<end, with: bytes[(start - offset)..<(end - offset)])
            }
            start = end
        }
    }

    private static func resize(_ file: inout [UInt8], to length: Int) {
        if file.count > length {
            file.removeSubrange(length...)
        } else {
            file += [UInt8](repeating: 0, count: length - file.count)
        }
    }

    /// Writes the image under `directory` (which must not exist yet).
    func materialize(in directory: String) throws {
        let manager = FileManager.default
        try manager.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for path in directories.sorted(by: { $0.count < $1.count }) {
            try manager.createDirectory(atPath: directory + path, withIntermediateDirectories: true)
        }
        for (path, bytes) in files { try writeFile(directory + path, bytes) }
    }
}

import Glibc
import NIOCore
import TelexProtocol

/// The storage format version of a data directory, kept in `DATA/FORMAT` (Protocol/STORAGE.md §12).
///
/// The file is one line, `telex-storage <version>\n`. A broker opens every version up to `current` (older ones are
/// migrated by code keyed on the number; today only version 1 exists) and refuses a newer one, naming the format
/// the directory needs. The inspector never calls this: it reads directories without changing them.
public enum StorageFormat {
    /// The format this code writes, and the newest it reads.
    public static let current = 1
    /// The file's name inside the data directory.
    public static let fileName = "FORMAT"

    private static let magic = "telex-storage"

    /// Checks the format of the data directory `directory` before the store opens it, creating the directory if
    /// missing. Returns the directory's format version (always `current` once this returns).
    ///
    /// - A missing `FORMAT` in a new or empty directory (hidden files and `FORMAT.tmp` aside) is written with
    ///   `current`; a missing one in a non-empty directory (written before the file existed) is version 1 and gets
    ///   its file written.
    /// - A newer version, or a file that does not parse, throws `storageFailure` and changes nothing.
    ///
    /// Blocking: reads and may write and fsync one small file.
    @discardableResult
    public static func prepare(_ directory: String) throws(TelexError) -> Int {
        try FileIO.makeDirectory(directory)
        let path = directory + "/" + fileName
        let found: Int
        if FileIO.exists(path) {
            found = try read(path)
        } else {
            // Hidden files (such as a lock file) and a leftover FORMAT.tmp do not make a directory old.
            let contents = try FileIO.listDirectory(directory).filter { !$0.hasPrefix(".") && $0 != fileName + ".tmp" }
            found = contents.isEmpty ? current : 1
        }
        guard found <= current else {
            throw TelexError(.storageFailure, """
                \(directory) was written by storage format \(found); this telexd reads up to \(current): \
                use a newer telexd (a release with storage format \(found))
                """)
        }
        // Migrations from `found` to `current` go here, one step per version (none yet: only version 1 exists).
        if !FileIO.exists(path) || found != current { try write(current, to: directory) }
        return current
    }

    /// The version recorded in the `FORMAT` file at `path`.
    static func read(_ path: String) throws(TelexError) -> Int {
        let fd = try FileIO.open(path, flags: O_RDONLY)
        defer { close(fd) }
        var buffer = ByteBuffer()
        _ = try FileIO.read(fd, at: 0, length: 256, into: &buffer, path: path)
        let bytes = buffer.readBytes(length: buffer.readableBytes) ?? []
        let text = String(decoding: bytes, as: UTF8.self)
        if text.hasSuffix("\n") {
            let fields = text.dropLast().split(separator: " ", omittingEmptySubsequences: false)
            if fields.count == 2, fields[0] == magic, fields[1].allSatisfy({ ("0"..."9").contains($0) }),
               let version = Int(fields[1]), version >= 1 {
                return version
            }
        }
        throw TelexError(.storageFailure, """
            \(path) is not a Telex storage format file: it contains \(text.debugDescription), expected \
            "\(magic) <version>\\n"; restore the file (a directory written by this telexd has "\(magic) \(current)")
            """)
    }

    /// Writes `FORMAT` atomically: `FORMAT.tmp`, fdatasync, rename, fsync the directory.
    static func write(_ version: Int, to directory: String) throws(TelexError) {
        try FileIO.replaceAtomically(
            directory + "/" + fileName, in: directory, with: ByteBuffer(string: "\(magic) \(version)\n"))
    }
}

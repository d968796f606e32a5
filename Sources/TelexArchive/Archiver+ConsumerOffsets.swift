import Logging
import TelexProtocol
import TelexStorage

/// Consumer offsets, and how store failures are logged.
extension Archiver {
    /// Uploads each `consumers/<name>.offsets` whose bytes changed since its last confirmed upload. Returns the
    /// failure's kind, nil when every changed file was uploaded.
    @discardableResult
    public func uploadConsumerOffsets() async -> ObjectStoreError.Kind? {
        let directory = store.directory + "/consumers"
        let names: [String]
        do {
            names = try await ArchiveFiles.offload { () throws(TelexError) in
                try ArchiveFiles.listDirectory(directory).filter { $0.hasSuffix(".offsets") }
            }
        } catch {
            logger.warning("cannot list consumer offsets", metadata: ["error": "\(error.message)"])
            return nil
        }
        for name in names {
            do {
                let bytes = try await ArchiveFiles.offload { () throws(TelexError) in
                    try ArchiveFiles.readFile(directory + "/" + name)
                }
                let md5 = FileDigest.md5(bytes)
                if progress.withLock({ $0.consumerUploads[name] }) == md5 { continue }
                let key = layout.consumersPrefix + name
                // After a restart, an object already holding these bytes is not uploaded again.
                let existing = try await metrics.counting("head") { try await objectStore.head(key: key) }
                if existing?.etag != md5 || existing?.size != bytes.readableBytes {
                    _ = try await metrics.counting("put") { try await objectStore.putBytes(key: key, bytes: bytes) }
                }
                progress.withLock { $0.consumerUploads[name] = md5 }
            } catch let error as ObjectStoreError {
                return failed(error, "uploading consumer offsets \(name)")
            } catch {
                logger.warning("cannot read consumer offsets", metadata: ["file": "\(name)", "error": "\(error)"])
            }
        }
        return nil
    }

    /// Logs a store failure (once while the store stays unavailable; every time for `denied`/`notFound`).
    func failed(_ error: any Error, _ doing: String) -> ObjectStoreError.Kind {
        let kind = (error as? ObjectStoreError)?.kind ?? .invalidResponse
        let first = progress.withLock { progress in
            defer { progress.failing = true }
            return !progress.failing
        }
        switch kind {
        case .denied, .notFound:
            logger.error("""
                archive \(objectStore.displayName) refused \(doing): \(error); \
                retrying in \(configuration.maximumBackoff)
                """)
        case .unavailable, .invalidResponse:
            if first {
                logger.warning("""
                    archive \(objectStore.displayName) unavailable while \(doing): \(error); retrying with backoff
                    """)
            } else {
                logger.debug("archive still unavailable", metadata: ["error": "\(error)"])
            }
        }
        return kind
    }

    func recovered() {
        if progress.withLock({ progress in defer { progress.failing = false }; return progress.failing }) {
            logger.info("archive \(objectStore.displayName) reachable again")
        }
    }
}

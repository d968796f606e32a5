import Dispatch
import Foundation
import Logging
import TelexServer

/// Makes SIGHUP call `server.reload()` (the users file, and a new TLS certificate and key for new connections) and
/// log the outcome.
/// A failed reload keeps the previous material and says why. Returns the signal source; keep it alive.
func reloadOnHangup(_ server: TelexServer, logger: Logger) -> any DispatchSourceSignal {
    signal(SIGHUP, SIG_IGN)
    let source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
    source.setEventHandler {
        Task {
            do {
                try await server.reload()
                logger.info("reloaded on SIGHUP")
            } catch {
                logger.error("reload on SIGHUP failed; still using what was loaded before",
                             metadata: ["error": "\(error)"])
            }
        }
    }
    source.resume()
    return source
}

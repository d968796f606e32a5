#if canImport(Glibc)
import Glibc
#endif
import TelexProtocol

/// Blocking work an async caller hands to a thread of its own, so that it blocks neither the Swift concurrency
/// pool nor Dispatch's global queues (on Linux the pool's threads and the global queues' are shared, and a test
/// or server blocking them waits on itself). For rare, long work: each call starts one thread.
enum OwnThread {
    /// The work and where its result goes, handed to the new thread.
    private final class Job: Sendable {
        let work: @Sendable () -> Void
        init(_ work: @escaping @Sendable () -> Void) { self.work = work }
    }

    /// Runs `work` on a new thread and returns its result.
    static func run<T: Sendable>(_ work: @escaping @Sendable () throws(TelexError) -> T) async throws(TelexError) -> T {
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, TelexError>, Never>) in
            let job = Job {
                do throws(TelexError) {
                    continuation.resume(returning: .success(try work()))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
            let argument = Unmanaged.passRetained(job).toOpaque()
            var thread = pthread_t()
            let started = pthread_create(&thread, nil, { argument in
                Unmanaged<Job>.fromOpaque(argument!).takeRetainedValue().work()
                return nil
            }, argument)
            if started == 0 {
                pthread_detach(thread)
            } else {
                Unmanaged<Job>.fromOpaque(argument).release()
                continuation.resume(returning: .failure(TelexError(.storageFailure,
                    "could not start a thread for blocking storage work: \(String(cString: strerror(started)))")))
            }
        }
        return try result.get()
    }
}

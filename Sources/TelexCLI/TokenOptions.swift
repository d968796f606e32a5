import ArgumentParser
import Foundation

/// `--token`, `--token-file` and `TELEX_TOKEN`: the credentials a tool sends in HELLO.
public struct TokenOptions: ParsableArguments {
    @Option(help: "Token NAME.SECRET sent in HELLO. Visible to every user in the process list: prefer --token-file or TELEX_TOKEN.")
    public var token: String?

    @Option(help: "Read the token from this file (surrounding whitespace is ignored).")
    public var tokenFile: String?

    public init() {}

    /// The token to send: `--token`, else the contents of `--token-file`, else `TELEX_TOKEN`, else empty.
    public func resolve() throws -> String {
        if let token { return token }
        if let tokenFile {
            do {
                return try String(contentsOfFile: tokenFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            } catch {
                throw ValidationError("cannot read the token file \(tokenFile): \(error.localizedDescription)")
            }
        }
        return ProcessInfo.processInfo.environment["TELEX_TOKEN"] ?? ""
    }
}

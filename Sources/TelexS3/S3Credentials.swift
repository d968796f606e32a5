import Foundation

/// An AWS access key pair, with the session token of temporary credentials. `description` never shows the
/// secret or the token, so credentials can be logged by mistake without leaking.
public struct S3Credentials: Sendable, Equatable, CustomStringConvertible {
    public var accessKeyID: String
    public var secretAccessKey: String
    public var sessionToken: String?

    public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
    }

    public var description: String {
        "S3Credentials(accessKeyID: \(accessKeyID), secretAccessKey: <redacted>"
            + (sessionToken == nil ? ")" : ", sessionToken: <redacted>)")
    }

    /// Why credentials could not be read: names the variable, or the file, line and profile.
    public struct LoadError: Error, Sendable, CustomStringConvertible {
        public let description: String
    }

    /// Credentials from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and (optional) AWS_SESSION_TOKEN.
    public static func fromEnvironment(
        _ environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(LoadError) -> S3Credentials {
        func value(_ name: String) -> String? {
            guard let value = environment[name]?.trimmingCharacters(in: .whitespaces), !value.isEmpty else {
                return nil
            }
            return value
        }
        let keyID = value("AWS_ACCESS_KEY_ID")
        let secret = value("AWS_SECRET_ACCESS_KEY")
        guard let keyID, let secret else {
            let missing = [keyID == nil ? "AWS_ACCESS_KEY_ID" : nil, secret == nil ? "AWS_SECRET_ACCESS_KEY" : nil]
                .compactMap { $0 }.joined(separator: " and ")
            throw LoadError(description: "no S3 credentials: \(missing) not set in the environment")
        }
        return S3Credentials(accessKeyID: keyID, secretAccessKey: secret, sessionToken: value("AWS_SESSION_TOKEN"))
    }

    /// Credentials of `profile` in an AWS shared-credentials file (INI: `[profile]` sections holding
    /// `aws_access_key_id`, `aws_secret_access_key` and optionally `aws_session_token`). Reads the file
    /// synchronously: call it at startup, not on an event loop.
    public static func fromFile(path: String, profile: String = "default") throws(LoadError) -> S3Credentials {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw LoadError(description: "cannot read S3 credentials file \(path): \(error.localizedDescription)")
        }
        return try parse(text, path: path, profile: profile)
    }

    /// Parses the shared-credentials format; `path` only names the file in errors.
    static func parse(_ text: String, path: String, profile: String) throws(LoadError) -> S3Credentials {
        var section: String?
        var values: [String: (value: String, line: Int)] = [:]
        var sawProfile = false
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let lineNumber = index + 1
            let line = rawLine.trimmingCharacters(in: .whitespacesAndNewlines)
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("[") {
                guard line.hasSuffix("]"), line.count > 2 else {
                    throw LoadError(description: "\(path) line \(lineNumber): malformed section header (expected '[name]')")
                }
                var name = line.dropFirst().dropLast().trimmingCharacters(in: .whitespaces)
                // The config file's spelling, accepted for convenience.
                if name.hasPrefix("profile ") { name = name.dropFirst(8).trimmingCharacters(in: .whitespaces) }
                section = name
                if name == profile { sawProfile = true }
                continue
            }
            guard let equals = line.firstIndex(of: "=") else {
                // Not the line itself: it may hold a secret.
                throw LoadError(description: "\(path) line \(lineNumber): expected 'name = value' (no '=' on the line)")
            }
            guard let current = section else {
                throw LoadError(description: "\(path) line \(lineNumber): setting outside any [profile] section")
            }
            guard current == profile else { continue }
            let name = line[..<equals].trimmingCharacters(in: .whitespaces).lowercased()
            let value = line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            values[name] = (value, lineNumber)
        }
        guard sawProfile else {
            throw LoadError(description: "\(path): no [\(profile)] profile")
        }
        func required(_ name: String) throws(LoadError) -> String {
            guard let entry = values[name] else {
                throw LoadError(description: "\(path): profile [\(profile)] has no \(name)")
            }
            guard !entry.value.isEmpty else {
                throw LoadError(description: "\(path) line \(entry.line): profile [\(profile)]: \(name) is empty")
            }
            return entry.value
        }
        let token = values["aws_session_token"].map(\.value).flatMap { $0.isEmpty ? nil : $0 }
        return S3Credentials(
            accessKeyID: try required("aws_access_key_id"),
            secretAccessKey: try required("aws_secret_access_key"),
            sessionToken: token
        )
    }
}

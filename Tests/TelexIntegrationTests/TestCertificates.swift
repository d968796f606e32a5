import Foundation

/// Test-only certificates, made at test time by the `openssl` command in a temporary directory (CI installs it:
/// see .ci/run). EC P-256 keys, valid for two days. Every file is `NAME.pem` (certificate) and `NAME.key`.
struct TestCertificates {
    let directory: String

    init(directory: String) throws {
        self.directory = directory
        try """
            [req]
            distinguished_name = dn
            prompt = no
            [dn]
            [ca]
            basicConstraints = critical,CA:TRUE
            keyUsage = critical,keyCertSign,cRLSign
            subjectKeyIdentifier = hash

            """.write(toFile: path("openssl.cnf"), atomically: true, encoding: .utf8)
    }

    /// The certificate of `name`.
    func certificate(_ name: String) -> String { path("\(name).pem") }
    /// The private key of `name`.
    func key(_ name: String) -> String { path("\(name).key") }

    /// A self-signed CA named `name`.
    func makeCA(_ name: String) throws {
        try openssl([
            "req", "-x509", "-config", path("openssl.cnf"), "-extensions", "ca", "-newkey", "ec",
            "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key(name), "-out", certificate(name),
            "-days", "2", "-subj", "/CN=Telex test CA \(name)",
        ])
    }

    /// A certificate for `commonName` signed by CA `ca`, for servers (with `subjectAltName`, e.g.
    /// `DNS:localhost,IP:127.0.0.1`) and clients alike.
    func makeLeaf(_ name: String, commonName: String, signedBy ca: String, subjectAltName: String? = nil) throws {
        var extensions = """
            basicConstraints = CA:FALSE
            keyUsage = critical,digitalSignature
            extendedKeyUsage = serverAuth,clientAuth
            subjectKeyIdentifier = hash
            authorityKeyIdentifier = keyid

            """
        if let subjectAltName { extensions += "subjectAltName = \(subjectAltName)\n" }
        try extensions.write(toFile: path("\(name).ext"), atomically: true, encoding: .utf8)
        try openssl([
            "req", "-new", "-config", path("openssl.cnf"), "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", key(name), "-out", path("\(name).csr"), "-subj", "/CN=\(commonName)",
        ])
        try openssl([
            "x509", "-req", "-in", path("\(name).csr"), "-CA", certificate(ca), "-CAkey", key(ca),
            "-set_serial", "\(UInt32.random(in: 1...UInt32.max))", "-days", "2", "-out", certificate(name),
            "-extfile", path("\(name).ext"),
        ])
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    func makeServer(_ name: String, signedBy ca: String) throws {
        try makeLeaf(name, commonName: "localhost", signedBy: ca, subjectAltName: "DNS:localhost,IP:127.0.0.1")
    }

    private func path(_ file: String) -> String { "\(directory)/\(file)" }

    private func openssl(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["openssl"] + arguments
        let errors = Pipe()
        process.standardOutput = FileHandle.nullDevice
        process.standardError = errors
        try process.run()
        let output = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw CertificateError(message: "openssl \(arguments.joined(separator: " ")) failed: "
                + String(decoding: output, as: UTF8.self))
        }
    }

    struct CertificateError: Error, CustomStringConvertible {
        let message: String
        var description: String { message }
    }
}

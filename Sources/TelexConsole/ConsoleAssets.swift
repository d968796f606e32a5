/// The page's files, embedded in the executable at build time (`.embedInCode` in Package.swift): the one installed
/// binary serves the console, with no file beside it and nothing fetched from the network.
enum ConsoleAssets {
    struct Asset: Sendable {
        let contentType: String
        let bytes: [UInt8]
    }

    /// By request path.
    static let byPath: [String: Asset] = [
        "/": Asset(contentType: "text/html; charset=utf-8", bytes: PackageResources.index_html),
        "/index.html": Asset(contentType: "text/html; charset=utf-8", bytes: PackageResources.index_html),
        "/console.css": Asset(contentType: "text/css; charset=utf-8", bytes: PackageResources.console_css),
        "/console.js": Asset(contentType: "text/javascript; charset=utf-8", bytes: PackageResources.console_js),
    ]
}

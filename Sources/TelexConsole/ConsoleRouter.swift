import NIOHTTP1
import TelexProtocol

/// What a request asks for, once its method and path are matched (README "Telex Console", endpoints).
enum ConsoleRoute: Equatable {
    case asset(path: String)
    case login
    case logout
    case session
    case overview
    case topics
    case events(topic: String)
    case tail(topic: String)
    case article
    case consumers
    case reset(consumer: String)
}

/// Matches method and path to a `ConsoleRoute`. Pure: no I/O, no state.
enum ConsoleRouter {
    enum Failure: Error, Equatable {
        /// 404 `NOT_FOUND`.
        case notFound(path: String)
        /// 405 `METHOD_NOT_ALLOWED` with `Allow`.
        case methodNotAllowed(path: String, allow: [HTTPMethod])
        /// 405 `METHOD_NOT_ALLOWED` for a method the console never answers (CONNECT, PUT, …), and the connection
        /// closes: what follows it may not be HTTP (a CONNECT tunnel's bytes).
        case unknownMethod(HTTPMethod)
        /// 400 `INVALID_REQUEST`: a path segment or query parameter is not valid percent-encoded UTF-8.
        case badRequest(message: String)
    }

    /// The route and the decoded query of a request target (`/api/topics?pattern=news.>`).
    static func route(method: HTTPMethod, target: String) -> Result<(ConsoleRoute, [String: String]), Failure> {
        guard knownMethods.contains(method) else { return .failure(.unknownMethod(method)) }
        let parts = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let rawPath = parts[0]
        let query: [String: String]
        switch ConsolePercent.parseQuery(parts.count > 1 ? parts[1] : "") {
        case .success(let parameters): query = parameters
        case .failure(let error): return .failure(.badRequest(message: error.message))
        }
        return route(method: method, rawPath: rawPath).map { ($0, query) }
    }

    /// Every method some path answers.
    static let knownMethods: [HTTPMethod] = [.GET, .HEAD, .POST]

    static func route(method: HTTPMethod, rawPath: Substring) -> Result<ConsoleRoute, Failure> {
        let path = String(rawPath)
        if ConsoleAssets.byPath[path] != nil {
            return allow(method, [.GET, .HEAD], path: path, .asset(path: path))
        }
        guard rawPath.hasPrefix("/api/") else { return .failure(.notFound(path: path)) }
        var segments: [String] = []
        for raw in rawPath.dropFirst("/api/".count).split(separator: "/", omittingEmptySubsequences: false) {
            guard let segment = ConsolePercent.decode(raw, plusIsSpace: false) else {
                return .failure(.badRequest(message: "path segment '\(raw)' is not valid percent-encoded UTF-8"))
            }
            segments.append(segment)
        }
        switch segments.count {
        case 1:
            switch segments[0] {
            case "login": return allow(method, [.POST], path: path, .login)
            case "logout": return allow(method, [.POST], path: path, .logout)
            case "session": return allow(method, [.GET], path: path, .session)
            case "overview": return allow(method, [.GET], path: path, .overview)
            case "topics": return allow(method, [.GET], path: path, .topics)
            case "articles": return allow(method, [.GET], path: path, .article)
            case "consumers": return allow(method, [.GET], path: path, .consumers)
            default: break
            }
        case 3 where segments[0] == "topics" && !segments[1].isEmpty:
            switch segments[2] {
            case "events": return allow(method, [.GET], path: path, .events(topic: segments[1]))
            case "tail": return allow(method, [.GET], path: path, .tail(topic: segments[1]))
            default: break
            }
        case 3 where segments[0] == "consumers" && !segments[1].isEmpty && segments[2] == "reset":
            return allow(method, [.POST], path: path, .reset(consumer: segments[1]))
        default:
            break
        }
        return .failure(.notFound(path: path))
    }

    private static func allow(
        _ method: HTTPMethod, _ methods: [HTTPMethod], path: String, _ route: ConsoleRoute
    ) -> Result<ConsoleRoute, Failure> {
        methods.contains(method) ? .success(route) : .failure(.methodNotAllowed(path: path, allow: methods))
    }

    /// The JSON error answer for a failure to route.
    static func response(for failure: Failure) -> ConsoleResponse {
        switch failure {
        case .notFound(let path):
            return .error(.notFound, code: ConsoleHTTPStatus.notFound, "no such page or endpoint: \(path)")
        case .methodNotAllowed(let path, let allow):
            let names = allow.map(\.rawValue).joined(separator: ", ")
            var response = ConsoleResponse.error(
                .methodNotAllowed, code: ConsoleHTTPStatus.methodNotAllowed, "\(path) answers \(names) only")
            response.headers.add(name: "Allow", value: names)
            return response
        case .unknownMethod(let method):
            let names = knownMethods.map(\.rawValue).joined(separator: ", ")
            var response = ConsoleResponse.error(.methodNotAllowed, code: ConsoleHTTPStatus.methodNotAllowed,
                "the console does not answer \(method.rawValue): only \(names)")
            response.headers.add(name: "Allow", value: names)
            response.closeConnection = true
            return response
        case .badRequest(let message):
            return .error(TelexError(.invalidRequest, message))
        }
    }
}

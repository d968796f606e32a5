import NIOHTTP1
import TelexAuth
import TelexProtocol
import TelexServer

/// Who a request comes from, once its session (or the lack of a login requirement) is settled.
struct ConsoleCaller: Sendable {
    var user: ConsoleUser
    /// The CSRF token its POSTs must carry: the session's, or the endpoint's anonymous one.
    var csrf: String
}

/// A request's caller, or the 401 that answers it instead.
enum ConsoleCallerLookup {
    case found(ConsoleCaller)
    case refused(ConsoleResponse)
}

extension ConsoleEndpoint {
    /// The answer to every route but the live tail.
    func respond(to route: ConsoleRoute, _ request: ConsoleRequest) async -> ConsoleResponse {
        switch route {
        case .asset(let path):
            return asset(path, request)
        case .login:
            return await login(request)
        case .logout:
            return logout(request)
        default:
            break
        }
        let caller: ConsoleCaller
        switch self.caller(of: request) {
        case .found(let found): caller = found
        case .refused(let refusal): return refusal
        }
        let user = caller.user
        do throws(TelexError) {
            switch route {
            case .session:
                return .json(sessionJSON(for: caller))
            case .overview:
                return .json(try await data.overview(for: user))
            case .topics:
                return .json(try await data.topics(matching: request.query["pattern"] ?? "", for: user))
            case .events(let topic):
                if let uri = request.query["uri"] {
                    guard !uri.isEmpty else { throw TelexError(.invalidRequest, "query parameter 'uri' is empty") }
                    return .json(try await data.events(topic: topic, uri: uri, for: user))
                }
                let from = try request.integer("from", minimum: 0)
                let limit = try request.integer("limit", minimum: 1) ?? 50
                let capped = Int(min(limit, Int64(configuration.maxEventsPerRequest)))
                return .json(try await data.events(topic: topic, from: from, limit: capped, for: user))
            case .article:
                guard let uri = request.query["uri"], !uri.isEmpty else {
                    throw TelexError(.invalidRequest, "query parameter 'uri' is missing: /api/articles?uri=URI")
                }
                let article = try await data.article(uri: uri, for: user)
                guard !article.versions.isEmpty else {
                    return .error(.notFound, code: ConsoleHTTPStatus.notFound,
                        "no version of article '\(uri)' is stored in a topic you may read")
                }
                return .json(article)
            case .consumers:
                return .json(try await data.consumers(for: user))
            case .reset(let consumer):
                if let refusal = refusePost(request, csrf: caller.csrf) { return refusal }
                // No admin check here: the data source's (the server's) comes first and audits a refusal.
                let body = try ConsoleJSON.decode(ResetRequestJSON.self, from: request.body, what: "reset request")
                return .json(try await data.resetConsumer(consumer, body, for: user))
            case .asset, .login, .logout, .tail:
                throw TelexError(.internalError, "route \(route) reached the JSON handlers")
            }
        } catch {
            if ConsoleHTTPStatus.of(error.code) == .internalServerError {
                logger.warning("console request failed", metadata: [
                    "path": "\(request.head.uri)", "code": "\(error.code.name)", "error": "\(error.message)",
                ])
            }
            return .error(error)
        }
    }

    /// The caller of a request: anonymous when the broker needs no login, else its session's identity; a 401
    /// `UNAUTHENTICATED` answer when it has no live session.
    func caller(of request: ConsoleRequest) -> ConsoleCallerLookup {
        guard authority.requiresAuthentication else {
            let user = ConsoleUser(identity: .anonymous, peer: request.peer)
            return .found(ConsoleCaller(user: user, csrf: anonymousCSRF))
        }
        guard let id = request.sessionID else {
            return .refused(.error(.unauthorized, code: ConsoleHTTPStatus.unauthenticated,
                "no session: log in with POST /api/login and a token"))
        }
        guard let session = sessions.lookup(id) else {
            return .refused(.error(.unauthorized, code: ConsoleHTTPStatus.unauthenticated,
                "the session has expired or was logged out: log in again"))
        }
        let user = ConsoleUser(identity: session.identity, peer: request.peer)
        return .found(ConsoleCaller(user: user, csrf: session.csrf))
    }

    func sessionJSON(for caller: ConsoleCaller) -> SessionJSON {
        SessionJSON(
            principal: caller.user.identity.name, admin: authority.isAdmin(caller.user.identity),
            authRequired: authority.requiresAuthentication, csrf: caller.csrf)
    }

    /// The refusal of a POST without the caller's CSRF token in `X-Telex-CSRF` (403 `CSRF`) or, when it carries a
    /// body, without `Content-Type: application/json` (400).
    func refusePost(_ request: ConsoleRequest, csrf: String) -> ConsoleResponse? {
        guard let presented = request.head.headers.first(name: "X-Telex-CSRF"),
            Secrets.constantTimeEquals(Array(presented.utf8), Array(csrf.utf8))
        else {
            return .error(.forbidden, code: ConsoleHTTPStatus.csrf,
                "the X-Telex-CSRF header is missing or does not match the session's csrf (GET /api/session)")
        }
        if request.body.readableBytes > 0, !request.isJSON {
            return .error(TelexError(.invalidRequest, "the body must be sent with Content-Type: application/json"))
        }
        return nil
    }

    private struct LoginRequest: Decodable {
        var token: String
    }

    /// `POST /api/login`: a new session for the principal the token names (cookie + SessionJSON), or anonymous when
    /// the broker needs no login. A refusal is 401 `AUTHENTICATION_FAILED` that does not say why (whether the
    /// principal exists): the broker logs and audits the reason. While the peer's login backoff runs it is refused
    /// at once, with `Retry-After`. While the broker starts or stops it is 503 `SHUTTING_DOWN`, not a refusal: the
    /// token was not checked.
    func login(_ request: ConsoleRequest) async -> ConsoleResponse {
        guard authority.requiresAuthentication else {
            return .json(sessionJSON(for: ConsoleCaller(
                user: ConsoleUser(identity: .anonymous, peer: request.peer), csrf: anonymousCSRF)))
        }
        guard request.isJSON else {
            return .error(TelexError(.invalidRequest, "the login must be sent with Content-Type: application/json"))
        }
        let token: String
        do {
            token = try ConsoleJSON.decode(LoginRequest.self, from: request.body, what: "login").token
        } catch {
            return .error(error)
        }
        switch await authority.consoleLogin(token: token, peer: request.peer) {
        case .waiting(let wait):
            var response = ConsoleResponse.error(TelexError(.authenticationFailed,
                TelexServer.consoleLoginWaitReason(wait)))
            response.headers.add(name: "Retry-After", value: "\(TelexServer.wholeSeconds(wait))")
            return response
        case .notServing:
            return .error(TelexError(.shuttingDown,
                "the broker is starting or stopping, so the token could not be checked; try again shortly"))
        case .rejected:
            return .error(TelexError(.authenticationFailed, "the token was not accepted"))
        case .accepted(let identity):
            if let previous = request.sessionID { sessions.forget(previous) }
            let session = sessions.create(identity: identity)
            var response = ConsoleResponse.json(sessionJSON(for: ConsoleCaller(
                user: ConsoleUser(identity: identity, peer: request.peer), csrf: session.csrf)))
            response.headers.add(name: "Set-Cookie", value: ConsoleSessions.setCookie(session.id, secure: tls != nil))
            return response
        }
    }

    /// `POST /api/logout`: forgets the session (its CSRF token required) and clears the cookie. Without a live
    /// session there is nothing to forget: 204 all the same.
    func logout(_ request: ConsoleRequest) -> ConsoleResponse {
        if !authority.requiresAuthentication {
            if let refusal = refusePost(request, csrf: anonymousCSRF) { return refusal }
        } else if let id = request.sessionID, let session = sessions.lookup(id) {
            if let refusal = refusePost(request, csrf: session.csrf) { return refusal }
            sessions.forget(id)
        }
        var response = ConsoleResponse.noContent()
        response.headers.add(name: "Set-Cookie", value: ConsoleSessions.clearCookie(secure: tls != nil))
        return response
    }

    /// An embedded file, validated by its ETag (`Cache-Control: no-cache`: the browser asks each time, and gets 304
    /// while the binary is the same).
    func asset(_ path: String, _ request: ConsoleRequest) -> ConsoleResponse {
        guard let asset = ConsoleAssets.byPath[path], let etag = Self.assetETags[path] else {
            return .error(.notFound, code: ConsoleHTTPStatus.notFound, "no such page or endpoint: \(path)")
        }
        var headers = HTTPHeaders([("ETag", etag), ("Cache-Control", "no-cache")])
        let presented = request.head.headers["If-None-Match"].flatMap { $0.split(separator: ",") }
            .map { $0.trimmingSpacesAndWeakPrefix }
        if presented.contains(etag) || presented.contains("*") {
            return ConsoleResponse(status: .notModified, headers: headers, body: [])
        }
        headers.add(name: "Content-Type", value: asset.contentType)
        return ConsoleResponse(status: .ok, headers: headers, body: asset.bytes)
    }

    /// Each asset's ETag: the FNV-1a hash of its bytes, computed once.
    static let assetETags: [String: String] = ConsoleAssets.byPath.mapValues { asset in
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in asset.bytes {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        return "\"\(String(hash, radix: 16))\""
    }
}

extension Substring {
    /// An entity tag of `If-None-Match` as `ETag` writes it: spaces trimmed, the weak prefix `W/` dropped.
    fileprivate var trimmingSpacesAndWeakPrefix: String {
        let trimmed = String(drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
        return trimmed.hasPrefix("W/") ? String(trimmed.dropFirst(2)) : trimmed
    }
}

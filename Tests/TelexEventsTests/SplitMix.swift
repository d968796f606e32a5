import TelexEvents

/// A tiny deterministic generator, so a failure reproduces.
struct SplitMix {
    var state: UInt64

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE5_E9B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func next(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }

    /// A random JSON value, nested at most a few levels (`depth` is the current one).
    mutating func randomValue(depth: Int) -> JSONValue {
        switch next(depth > 3 ? 5 : 7) {
        case 0: return .null
        case 1: return .bool(next(2) == 0)
        case 2: return .integer(Int64(bitPattern: next()))
        case 3:
            let double = Double(bitPattern: next())
            // Canonical doubles only: finite and not an exact Int64 (those parse back as `.integer`).
            if !double.isFinite || Int64(exactly: double) != nil { return .double(0.25) }
            return .double(double)
        case 4:
            let pool: [UInt32] = [0x00, 0x08, 0x0A, 0x1F, 0x22, 0x2F, 0x5C, 0x41, 0x7F, 0xE9, 0x2028, 0x6771, 0x1F5DE]
            let scalars = (0..<next(12)).map { _ in Character(Unicode.Scalar(pool[next(pool.count)])!) }
            return .string(String(scalars))
        case 5: return .array((0..<next(5)).map { _ in randomValue(depth: depth + 1) })
        default:
            var members: [String: JSONValue] = [:]
            for index in 0..<next(5) {
                members["k\(index)/\"\(next(3))"] = randomValue(depth: depth + 1)
            }
            return .object(members)
        }
    }
}

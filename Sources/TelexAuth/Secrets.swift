import Crypto

/// Secrets and tokens: a token is `NAME.SECRET`; only the SHA-256 of the secret is ever stored.
public enum Secrets {
    /// A new random 256-bit secret as 64 lowercase hex digits (from the system's cryptographic generator).
    public static func makeSecret() -> String {
        var generator = SystemRandomNumberGenerator()
        return hex((0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) })
    }

    /// The SHA-256 of `secret`'s UTF-8 bytes.
    public static func hash(_ secret: String) -> [UInt8] {
        Array(SHA256.hash(data: Array(secret.utf8)))
    }

    /// The SHA-256 of `secret` as 64 lowercase hex digits, as stored in the users file.
    public static func hashHex(_ secret: String) -> String {
        hex(hash(secret))
    }

    /// Splits a token `NAME.SECRET` at its last dot (names may contain dots, secrets do not); nil if there is none.
    public static func split(token: String) -> (name: String, secret: String)? {
        guard let dot = token.lastIndex(of: "."), dot != token.startIndex else { return nil }
        let secret = token[token.index(after: dot)...]
        guard !secret.isEmpty else { return nil }
        return (String(token[..<dot]), String(secret))
    }

    /// Compares two byte strings in time that depends only on their lengths, not on where they differ.
    public static func constantTimeEquals(_ lhs: [UInt8], _ rhs: [UInt8]) -> Bool {
        guard lhs.count == rhs.count else { return false }
        var difference: UInt8 = 0
        for index in lhs.indices { difference |= lhs[index] ^ rhs[index] }
        return difference == 0
    }

    /// Lowercase hex of `bytes`.
    public static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        text.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// The bytes of a lowercase or uppercase hex string; nil if it is not hex of even length.
    public static func bytes(hex: String) -> [UInt8]? {
        let digits = Array(hex.utf8)
        guard digits.count % 2 == 0 else { return nil }
        func value(_ digit: UInt8) -> UInt8? {
            switch digit {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(digits.count / 2)
        var index = 0
        while index < digits.count {
            guard let high = value(digits[index]), let low = value(digits[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
            index += 2
        }
        return bytes
    }
}

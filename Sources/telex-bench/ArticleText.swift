import Foundation

/// News-like text for the realistic corpus: words drawn from a 20,000-word vocabulary with a Zipf distribution
/// (rank r has weight 1/r^1.3), so the common words repeat as in real copy and a long tail does not, plus varied
/// names, places, numbers and dates. The seed articles' own words take the top ranks.
///
/// A small pool of seed sentences (the easy corpus) lets deflate find long matches and compresses about 7:1; real
/// ninjs articles compress about 3.5–4:1 at level 1 in 64-event batches. The exponent sets where this text lands:
/// a larger one repeats common words more and compresses better.
struct ArticleText {
    static let vocabularySize = 20_000
    static let zipfExponent = 1.3

    private let vocabulary: [String]
    /// Cumulative Zipf weights of `vocabulary`, for a binary search with a uniform draw.
    private let cumulative: [Double]

    init(seedWords: [String]) {
        var vocabulary: [String] = []
        var seen = Set<String>()
        func add(_ word: String) { if seen.insert(word).inserted { vocabulary.append(word) } }
        seedWords.forEach(add)
        StorageBenchmark.ArticleEventGenerator.words.forEach(add)
        // The long tail: made-up words of two to four syllables, in a fixed order.
        var generator = Corpus.Generator(state: 0xA076_1D64_78BD_642F)
        let syllables = StorageBenchmark.ArticleEventGenerator.syllables
        while vocabulary.count < Self.vocabularySize {
            add((0..<(2 + generator.next(3))).map { _ in syllables[generator.next(syllables.count)] }.joined())
        }
        self.vocabulary = vocabulary
        var total = 0.0
        cumulative = (1...vocabulary.count).map { rank in
            total += 1 / pow(Double(rank), Self.zipfExponent)
            return total
        }
    }

    /// The words of the seed articles' bodies, most frequent first (ties in order of first use).
    static func words(of bodies: [String]) -> [String] {
        var counts: [String: Int] = [:]
        var order: [String] = []
        for body in bodies {
            for word in body.split(whereSeparator: { !$0.isLetter && $0 != "'" && $0 != "-" }) {
                let word = String(word)
                if counts[word] == nil { order.append(word) }
                counts[word, default: 0] += 1
            }
        }
        return order.enumerated().sorted { left, right in
            let (a, b) = (counts[left.element]!, counts[right.element]!)
            return a != b ? a > b : left.offset < right.offset
        }.map(\.element)
    }

    func word(_ generator: inout Corpus.Generator) -> String {
        let draw = Double(generator.next() >> 11) / Double(1 << 53) * cumulative[cumulative.count - 1]
        var low = 0
        var high = cumulative.count - 1
        while low < high {
            let middle = (low + high) / 2
            if cumulative[middle] < draw { low = middle + 1 } else { high = middle }
        }
        return vocabulary[low]
    }

    func name(_ generator: inout Corpus.Generator) -> String {
        let names = StorageBenchmark.ArticleEventGenerator.names
        return Self.givenNames[generator.next(Self.givenNames.count)] + " " + names[generator.next(names.count)]
    }

    /// One sentence of 6 to 25 words; about one word in ten is a name, a place, a number or a date.
    func sentence(_ generator: inout Corpus.Generator) -> String {
        var words: [String] = []
        for _ in 0..<(6 + generator.next(20)) {
            switch generator.next(40) {
            case 0, 1: words.append(name(&generator))
            case 2: words.append(StorageBenchmark.ArticleEventGenerator.places[
                generator.next(StorageBenchmark.ArticleEventGenerator.places.count)])
            case 3: words.append(String(generator.next(100)))
            case 4: words.append(String(generator.next(1_000_000)))
            case 5: words.append("\(Self.months[generator.next(12)]) \(1 + generator.next(28))")
            default: words.append(word(&generator))
            }
        }
        let text = words.joined(separator: " ")
        let ending = generator.next(8) == 0 ? ", \(name(&generator)) said." : "."
        return text.prefix(1).uppercased() + text.dropFirst() + ending
    }

    /// Sentences, with a paragraph break now and then, until the text is at least `bytes` long.
    func body(bytes: Int, _ generator: inout Corpus.Generator) -> String {
        var body = ""
        while body.utf8.count < bytes {
            body += sentence(&generator) + (generator.next(5) == 0 ? "\n\n" : " ")
        }
        return body
    }

    static let givenNames = [
        "Anna", "Ben", "Chen", "Daria", "Emeka", "Fatima", "Giulia", "Hiroshi", "Ingrid", "Jakub", "Kofi", "Lena",
        "Mateo", "Nadia", "Olga", "Pedro", "Quentin", "Rania", "Sven", "Tomasz", "Ugo", "Vera", "Wei", "Yusuf",
    ]
    static let months = [
        "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
        "November", "December",
    ]
}

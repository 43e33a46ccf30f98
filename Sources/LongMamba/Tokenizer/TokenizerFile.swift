// tokenizer.json as typed records: the fields `BPETokenizer` reads, decoded leniently (a field
// of an unexpected type reads as absent, as the checks that follow expect), so every message
// stays the tokenizer's own ("merge 3 is neither …", "vocab entry 'x' has no valid id") rather
// than a decoder's. Fields this tokenizer does not use are ignored.
import Foundation

struct TokenizerFile: Decodable {
    /// Whether `truncation` / `padding` are present and not null (either changes encode results).
    var truncation = false
    var padding = false
    /// nil: absent or null; `.some(nil)` inside: present without a string `type`.
    var normalizer: Component?
    var preTokenizer: Component?
    var postProcessor: Component?
    var decoder: Component?
    var model: Model?
    var addedTokens: [AddedToken] = []

    /// A normalizer, pre-tokenizer, post-processor or decoder object.
    struct Component: Decodable {
        var type: String?
        var addPrefixSpace: Bool?
        var useRegex: Bool?
        init(from decoder: Decoder) throws {
            guard let c = try? decoder.container(keyedBy: JSONKey.self) else { return }   // not an object: no type
            type = c.lenient(String.self, "type")
            addPrefixSpace = c.lenient(Bool.self, "add_prefix_space")
            useRegex = c.lenient(Bool.self, "use_regex")
        }
    }

    struct Model: Decodable {
        var type: String?
        var dropout: Double?
        var continuingSubwordPrefix: String?
        var endOfWordSuffix: String?
        var byteFallback: Bool?
        /// token → id; nil: missing or not an object. An id that is not a number reads as nil.
        var vocab: [String: Int?]?
        /// nil: missing or not a list.
        var merges: [Merge]?
        var hasMergesKey = false
        var unkToken: String?
        var ignoreMerges: Bool?
        var fuseUnk: Bool?

        init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: JSONKey.self)
            type = c.lenient(String.self, "type")
            dropout = c.lenient(Double.self, "dropout")
            continuingSubwordPrefix = c.lenient(String.self, "continuing_subword_prefix")
            endOfWordSuffix = c.lenient(String.self, "end_of_word_suffix")
            byteFallback = c.lenient(Bool.self, "byte_fallback")
            vocab = c.lenient([String: LenientInt].self, "vocab")?.mapValues(\.value)
            hasMergesKey = c.present("merges")
            merges = c.lenient([Merge].self, "merges")
            unkToken = c.lenient(String.self, "unk_token")
            ignoreMerges = c.lenient(Bool.self, "ignore_merges")
            fuseUnk = c.lenient(Bool.self, "fuse_unk")
        }
    }

    /// A merge rule: "a b" (one string) or ["a", "b"]; anything else is kept as `.invalid`.
    enum Merge: Decodable {
        case joined(String)
        case pair(String, String)
        case invalid
        init(from decoder: Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let s = try? c.decode(String.self) { self = .joined(s) } else if let p = try? c.decode([String].self), p.count == 2 {
                self = .pair(p[0], p[1])
            } else { self = .invalid }
        }
    }

    struct AddedToken: Decodable {
        var content: String?
        var id: Int?
        var singleWord, lstrip, rstrip, normalized, special: Bool?
        init(from decoder: Decoder) throws {
            guard let c = try? decoder.container(keyedBy: JSONKey.self) else { return }
            content = c.lenient(String.self, "content")
            id = c.lenient(LenientInt.self, "id")?.value
            singleWord = c.lenient(Bool.self, "single_word")
            lstrip = c.lenient(Bool.self, "lstrip")
            rstrip = c.lenient(Bool.self, "rstrip")
            normalized = c.lenient(Bool.self, "normalized")
            special = c.lenient(Bool.self, "special")
        }
    }

    init(from source: Decoder) throws {
        let c = try source.container(keyedBy: JSONKey.self)
        /// Present and not null.
        func present(_ key: String) -> Bool { c.present(key) && !((try? c.decodeNil(forKey: JSONKey(key))) ?? true) }
        truncation = present("truncation")
        padding = present("padding")
        normalizer = present("normalizer") ? c.lenient(Component.self, "normalizer") : nil
        preTokenizer = present("pre_tokenizer") ? c.lenient(Component.self, "pre_tokenizer") : nil
        postProcessor = present("post_processor") ? c.lenient(Component.self, "post_processor") : nil
        self.decoder = present("decoder") ? c.lenient(Component.self, "decoder") : nil
        model = c.lenient(Model.self, "model")
        addedTokens = c.lenient([AddedToken].self, "added_tokens") ?? []
    }

    /// Decodes a file, with the two whole-file failures in the tokenizer's words.
    static func decode(_ data: Data) -> Result<TokenizerFile, TokenizerFileError> {
        do { return .success(try JSONDecoder().decode(TokenizerFile.self, from: data)) } catch let DecodingError.typeMismatch(_, context) where context.codingPath.isEmpty {
            return .failure(.notAnObject)
        } catch {
            return .failure(.notJSON(SystemMessage.of(error)))
        }
    }

    enum TokenizerFileError: Error { case notAnObject, notJSON(String) }


    /// An id: a JSON integer, or a number with an integral value (as NSNumber's intValue read it).
    struct LenientInt: Decodable {
        var value: Int?
        init(from decoder: Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let i = try? c.decode(Int.self) { value = i } else if let d = try? c.decode(Double.self), d.isFinite, abs(d) < 1e18 { value = Int(d) } else { value = nil }
        }
    }
}

// Lenient decoding for the typed records of files we do not write (tokenizer.json,
// config.json): a value of an unexpected type reads as absent, so the parser's own checks
// (and their messages) decide, not the decoder's.

/// Any string key of a JSON object.
struct JSONKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(_ s: String) { stringValue = s }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

extension KeyedDecodingContainer where K == JSONKey {
    /// The value at `key` when it has this type; nil when absent, null or of another type.
    func lenient<T: Decodable>(_ type: T.Type, _ key: String) -> T? { (try? decodeIfPresent(type, forKey: K(key))) ?? nil }
    /// Whether the object has this key (whatever its value, null included).
    func present(_ key: String) -> Bool { contains(K(key)) }
}

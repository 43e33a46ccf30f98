// Foundation's errors in words a user can act on. On Linux `localizedDescription` of a failed
// write reads "The operation could not be completed" or "Error Domain=NSCocoaErrorDomain Code=4",
// and a DecodingError's reads "The data is missing."; messages name the cause instead.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

public enum SystemMessage {
    /// The cause of `error`: the system's message (strerror) for file errors, the key path and
    /// what was wrong for JSON decoding errors, else the error's own description.
    public static func of(_ error: Error) -> String {
        if let decoding = error as? DecodingError { return describe(decoding) }
        let ns = error as NSError
        if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            return String(cString: strerror(Int32(underlying.code)))
        }
        if ns.domain == NSPOSIXErrorDomain { return String(cString: strerror(Int32(ns.code))) }
        if ns.domain == NSCocoaErrorDomain {
            switch CocoaError.Code(rawValue: ns.code) {
            case .fileNoSuchFile, .fileReadNoSuchFile: return "no such file or directory"
            case .fileWriteNoPermission, .fileReadNoPermission: return "permission denied"
            case .fileWriteOutOfSpace: return "no space left on device"
            case .fileWriteVolumeReadOnly: return "read-only file system"
            case .fileWriteFileExists: return "a file already exists there"
            case .fileReadCorruptFile: return "the file is not in the expected format"
            default: break
            }
            if let debug = ns.userInfo[NSDebugDescriptionErrorKey] as? String { return debug }
            return "error \(ns.code) of \(ns.domain)"
        }
        return "\(error)"
    }

    /// "at points[0].length: expected a number, found a string" and the like.
    static func describe(_ error: DecodingError) -> String {
        func path(_ keys: [CodingKey]) -> String {
            let text = keys.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
            return text.isEmpty ? "the top level" : String(text.drop { $0 == "." })
        }
        switch error {
        case let .keyNotFound(key, context):
            let parent = path(context.codingPath)
            return "the key \"\(key.stringValue)\" is missing" + (context.codingPath.isEmpty ? "" : " in \(parent)")
        case let .typeMismatch(type, context):
            return "at \(path(context.codingPath)): expected \(typeName(type))"
        case let .valueNotFound(type, context):
            return "at \(path(context.codingPath)): expected \(typeName(type)), found null"
        case let .dataCorrupted(context):
            let underlying = (context.underlyingError as NSError?)?.userInfo[NSDebugDescriptionErrorKey] as? String
            return "at \(path(context.codingPath)): \(underlying ?? context.debugDescription)"
        @unknown default:
            return "\(error)"
        }
    }

    private static func typeName(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: return "a string"
        case is Int.Type, is Int64.Type, is UInt64.Type, is Double.Type, is Float.Type: return "a number"
        case is Bool.Type: return "true or false"
        default:
            let name = "\(type)"
            return name.hasPrefix("Array") ? "a list" : name.hasPrefix("Dictionary") ? "an object" : "\(name)"
        }
    }
}

/// Identity of this tool, recorded in every file and table it writes.
public enum ToolInfo {
    public static let name = "longmamba"
    public static let version = "0.1.0"
}

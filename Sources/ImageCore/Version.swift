/// The version of ImageCore and of the `imgtool` command built from it.
public enum ImageCoreVersion {
    public static let current = "0.1.0"
}

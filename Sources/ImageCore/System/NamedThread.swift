// Threads named for the kernel, so that `top -H`, `ps -L` and `perf` show which of
// imgtool's threads is busy. Foundation's `Thread.name` does not reach the kernel on
// Linux, so every thread showed the name of the thread that started it.

import CSystem
import Foundation

extension Thread {
    /// Returns a thread, not started yet, that gives itself the kernel name `name` and
    /// then runs `body`. The kernel keeps 15 bytes of a name, so longer names are cut
    /// at the last whole character that fits.
    public static func named(_ name: String, _ body: @escaping @Sendable () -> Void) -> Thread {
        let thread = Thread {
            setKernelName(name)
            body()
        }
        thread.name = name
        return thread
    }

    /// Gives the calling thread the kernel name `name`, cut to at most 15 bytes between
    /// two Unicode scalars, so that /proc shows valid UTF-8.
    static func setKernelName(_ name: String) {
        var cut: [UInt8] = []
        for scalar in name.unicodeScalars {
            let encoded = Array(String(scalar).utf8)
            if cut.count + encoded.count > 15 { break }
            cut += encoded
        }
        let bytes = cut.map { CChar(bitPattern: $0) } + [0]
        _ = bytes.withUnsafeBufferPointer { imgtool_set_thread_name($0.baseAddress!) }
    }
}

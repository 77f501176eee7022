// A small filesystem mounted for one test (tmpfs or ramfs), so that ENOSPC and a
// filesystem without fallocate can be produced on demand. Mounting needs root with
// CAP_SYS_ADMIN; tests that use it are skipped elsewhere.

import Foundation
#if canImport(Glibc)
import Glibc
#endif

struct ScratchMount {
    let directory: ScratchDirectory
    var path: String { directory.path }

    /// Mounts a `type` filesystem ("tmpfs" or "ramfs") with `options` on a fresh directory.
    init(type: String, options: String = "", label: String = #function) throws {
        directory = try ScratchDirectory(label)
        let result = try runProcess("/bin/mount", ["-t", type, "-o", options.isEmpty ? "mode=0700" : options, type, directory.path])
        guard result.status == 0 else {
            directory.remove()
            throw POSIXError(.EPERM)
        }
    }

    func file(_ name: String) -> String { directory.file(name) }

    func unmount() {
        _ = try? runProcess("/bin/umount", [directory.path])
        directory.remove()
    }

    /// True when this process can mount a tmpfs, probed once by mounting one.
    static let isPossible: Bool = {
        guard getuid() == 0, let mount = try? ScratchMount(type: "tmpfs", options: "size=64k", label: "probe") else {
            return false
        }
        mount.unmount()
        return true
    }()
}

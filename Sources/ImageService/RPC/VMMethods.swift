// The vm.* methods: the middleware's names and argument shapes, bound to ImageCore.
//
// Each method checks its arguments (paths through PathGuard) and then calls ImageCore.
// Where the ImageCore operation is not part of this build yet, the method answers
// ENOSYS with a message that names the missing operation, after the argument checks.

import Foundation
import ImageCore

enum VMMethods {
    static func register(in table: inout MethodTable) {
        table.register(MethodSpec("vm.activate_sharefs") { context in
            try context.parameters.expectAtMost(1)
            _ = try context.parameters.optionalString(0, "pool")
            throw unavailable("vm.activate_sharefs", "Sharefs")
        })
        table.register(MethodSpec("vm.get_sharefs") { context in
            try context.parameters.expectAtMost(0)
            throw unavailable("vm.get_sharefs", "Sharefs")
        })
        table.register(MethodSpec("vm.list_images") { context in
            try context.parameters.expectAtMost(0)
            throw unavailable("vm.list_images", "ImageCatalog")
        })
        table.register(MethodSpec("vm.fetch_image") { context in
            try context.parameters.expectAtMost(2)
            _ = try context.parameters.string(0, "name")
            _ = try context.parameters.optionalBool(1, "force", default: false)
            throw unavailable("vm.fetch_image", "Downloader")
        })
        table.register(MethodSpec("vm.get_download_status") { context in
            try context.parameters.expectAtMost(1)
            let id = try context.parameters.integer(0, "job_id")
            return .value(context.service.jobs.job(id) ?? .bool(false))
        })
        table.register(MethodSpec("vm.image_path") { context in
            try context.parameters.expectAtMost(1)
            _ = try context.parameters.string(0, "name")
            throw unavailable("vm.image_path", "ImageCatalog")
        })
        table.register(MethodSpec("vm.decompress_gzip") { context in
            try context.parameters.expectAtMost(2)
            let source = try context.service.paths.existingFile(try context.parameters.string(0, "src"), argument: "src")
            let destination = try context.service.paths.newFile(try context.parameters.string(1, "dst"), argument: "dst")
            _ = (source, destination)
            throw unavailable("vm.decompress_gzip", "Decompressor")
        })
        table.register(MethodSpec("vm.raw_resize") { context in
            try context.parameters.expectAtMost(2)
            let disk = try context.service.paths.existingFile(try context.parameters.string(0, "path"), argument: "path",
                                                              writable: true)
            _ = disk
            throw unavailable("vm.raw_resize", "RawDisk")
        })
        table.register(MethodSpec("vm.write_container_conf", secretPositions: [0]) { context in
            try context.parameters.expectAtMost(1)
            throw unavailable("vm.write_container_conf", "the GRUB writer")
        })
        table.register(MethodSpec("vm.rm_container_conf") { context in
            try context.parameters.expectAtMost(1)
            _ = try context.parameters.integer(0, "id")
            throw unavailable("vm.rm_container_conf", "Sharefs")
        })
        table.register(MethodSpec("vm.create_container", secretPositions: [0]) { context in
            try context.parameters.expectAtMost(1)
            throw unavailable("vm.create_container", "the provisioning steps")
        })
    }

    // TODO: bind each method to its ImageCore call (Sharefs, ImageCatalog, Downloader,
    // Decompressor, RawDisk, the GRUB writer) once those operations are in ImageCore.
    private static func unavailable(_ method: String, _ operation: String) -> RPCError {
        RPCError.call(ENOSYS, "ENOSYS", "\(method) is not available in this build: ImageCore's \(operation) is missing")
    }
}

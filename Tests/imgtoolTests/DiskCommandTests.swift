// Tests of `imgtool resize`, `imgtool sharefs` and `imgtool grub` through the built binary.

import Foundation
import Testing

/// Runs imgtool with `environment` added and `input` on standard input.
private func runImgtool(_ arguments: [String], environment: [String: String], input: String = "") throws
    -> (status: Int32, output: String, error: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: imgtoolBinary())
    process.arguments = arguments
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    let stdin = Pipe(), out = Pipe(), err = Pipe()
    process.standardInput = stdin
    process.standardOutput = out
    process.standardError = err
    try process.run()
    stdin.fileHandleForWriting.write(Data(input.utf8))
    try stdin.fileHandleForWriting.close()
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    let errData = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errData, as: UTF8.self))
}

private func makeScratch() throws -> String {
    let path = NSTemporaryDirectory() + "/imgtool-cli-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: path + "/pools/tank", withIntermediateDirectories: true)
    return path
}

@Suite struct DiskCommandTests {
    @Test func resizeNegativeSizeExits64() throws {
        let scratch = try makeScratch()
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        #expect(FileManager.default.createFile(atPath: scratch + "/disk.raw", contents: nil))
        let result = try runImgtool(["resize", scratch + "/disk.raw", "-1G"], environment: [:])
        #expect(result.status == 64)
        #expect(result.error.contains("invalid size '-1G': a size cannot be negative"))
        #expect(result.error.contains("K, M, G or T"))
    }

    @Test func resizeReportsRounding() throws {
        let scratch = try makeScratch()
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        #expect(FileManager.default.createFile(atPath: scratch + "/disk.raw", contents: nil))
        let result = try runImgtool(["resize", scratch + "/disk.raw", "1000"], environment: [:])
        #expect(result.status == 0)
        #expect(result.output.contains("rounded 1000 bytes up to 1024 bytes"))
    }

    @Test func grubWriteReadsPasswordFromStdin() throws {
        let scratch = try makeScratch()
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let environment = ["IMGTOOL_POOLS_ROOT": scratch + "/pools", "IMGTOOL_STATE_DIR": scratch + "/state"]
        #expect(try runImgtool(["sharefs", "activate"], environment: environment).status == 0)

        let result = try runImgtool(["grub", "write", "--vm-id", "3", "--vm-name", "web", "--raw", "/mnt/tank/web.raw",
                                     "--kernel", "vmlinuz-4.9.75-rancher", "--initrd", "initrd-v1.1.3",
                                     "--password-form", "plain", "--password-file", "-"],
                                    environment: environment, input: "hunter2&x\n")
        #expect(result.status == 0)
        #expect(!result.output.contains("hunter2"))
        #expect(!result.error.contains("hunter2"))
        let config = try String(contentsOfFile: scratch + "/pools/tank/.bhyve_containers/configs/3_web/grub/grub.cfg",
                                encoding: .utf8)
        #expect(config.contains("rancher.password='hunter2&x' "))
    }

    @Test func grubWriteUsesCatalogImage() throws {
        let scratch = try makeScratch()
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let environment = ["IMGTOOL_POOLS_ROOT": scratch + "/pools", "IMGTOOL_STATE_DIR": scratch + "/state"]
        #expect(try runImgtool(["sharefs", "activate"], environment: environment).status == 0)
        let result = try runImgtool(["grub", "write", "--vm-id", "4", "--vm-name", "old", "--raw", "/mnt/tank/old.raw",
                                     "--image", "RancherOS@v1.1.3", "--password-file", "-"],
                                    environment: environment, input: "a&b\n")
        #expect(result.status == 0, "\(result.error)")
        let config = try String(contentsOfFile: scratch + "/pools/tank/.bhyve_containers/configs/4_old/grub/grub.cfg",
                                encoding: .utf8)
        #expect(config.contains("linux /boot/vmlinuz-4.9.75-rancher rancher.password='a&b' "))
        #expect(config.contains("initrd /boot/initrd-v1.1.3\n"))
    }

    @Test func grubWriteUnknownImageExits64() throws {
        let scratch = try makeScratch()
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let environment = ["IMGTOOL_POOLS_ROOT": scratch + "/pools", "IMGTOOL_STATE_DIR": scratch + "/state"]
        #expect(try runImgtool(["sharefs", "activate"], environment: environment).status == 0)
        let result = try runImgtool(["grub", "write", "--vm-id", "4", "--vm-name", "old", "--raw", "/mnt/tank/old.raw",
                                     "--image", "RancherOS@v9", "--password-file", "-"],
                                    environment: environment, input: "pw\n")
        #expect(result.status == 64)
        #expect(result.error.contains("unknown image 'RancherOS@v9'"))
    }

    @Test func grubRejectedPasswordIsNotEchoed() throws {
        let scratch = try makeScratch()
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let environment = ["IMGTOOL_POOLS_ROOT": scratch + "/pools", "IMGTOOL_STATE_DIR": scratch + "/state"]
        #expect(try runImgtool(["sharefs", "activate", "tank"], environment: environment).status == 0)
        let result = try runImgtool(["grub", "write", "--vm-id", "3", "--vm-name", "web", "--raw", "/mnt/tank/web.raw",
                                     "--kernel", "vmlinuz-4.9.75-rancher", "--initrd", "initrd-v1.1.3",
                                     "--password-form", "plain", "--password-file", "-"],
                                    environment: environment, input: "secret\\pw\n")
        #expect(result.status == 64)
        #expect(result.error.contains("backslash"))
        #expect(!result.error.contains("secret"))
    }

    @Test func sharefsShowWithoutActivation() throws {
        let scratch = try makeScratch()
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let result = try runImgtool(["sharefs", "show"], environment: ["IMGTOOL_STATE_DIR": scratch + "/state"])
        #expect(result.status == 0)
        #expect(result.output.contains("no sharefs is active"))
    }
}

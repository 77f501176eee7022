// CurlTransfer: one HTTP GET through libcurl's easy interface.
//
// libcurl calls back into Swift through C function pointers that cannot capture
// anything, so each callback receives an unretained pointer to the `CurlTransfer` that
// owns the handle; the object outlives `perform`, which is the only place callbacks run.
// Everything here runs on the thread that calls `perform`.

import CCurl
import Foundation

/// The status line and header fields of one HTTP response.
struct ResponseHeaders: Sendable {
    var statusCode = 0
    /// Field names in lower case; a repeated field keeps its last value.
    var fields: [String: String] = [:]

    subscript(name: String) -> String? { fields[name] }

    /// Feeds one header line as libcurl delivers it, CRLF included. A status line starts
    /// a new response: libcurl reports the headers of every redirect hop in turn.
    mutating func consume(line rawLine: String) {
        let line = rawLine.trimmingCharacters(in: .whitespacesAndNewlines)
        if line.hasPrefix("HTTP/") {
            self = ResponseHeaders()
            let parts = line.split(separator: " ", maxSplits: 2)
            if parts.count >= 2, let code = Int(parts[1]) { statusCode = code }
            return
        }
        guard let colon = line.firstIndex(of: ":") else { return }
        let name = line[..<colon].trimmingCharacters(in: .whitespaces).lowercased()
        let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        fields[name] = value
    }
}

/// The receiver of a transfer's final response and its body.
protocol CurlTransferDelegate: AnyObject {
    /// Called once, before the first body byte, with the final response's headers.
    /// Returning false stops the transfer, and the body is not delivered.
    func transferShouldAcceptBody(_ transfer: CurlTransfer) -> Bool
    /// Receives body bytes in order. Returning false stops the transfer.
    func transfer(_ transfer: CurlTransfer, received bytes: UnsafeRawBufferPointer) -> Bool
    /// Called about once a second and after data arrives; returning false stops the transfer.
    func transferShouldContinue(_ transfer: CurlTransfer) -> Bool
}

/// The outcome of `perform`: libcurl's result code and its error text.
struct CurlResult {
    var code: CURLcode
    var message: String
    var isSuccess: Bool { code == CURLE_OK }
}

final class CurlTransfer {
    private static let globalInitialization: Void = {
        // curl_global_init is not thread-safe; a Swift static runs it exactly once.
        let code = curl_global_init(Int(CURL_GLOBAL_DEFAULT))
        precondition(code == CURLE_OK, "Bug in imgtool: curl_global_init failed with code \(code.rawValue)")
    }()

    let url: String
    private let handle: UnsafeMutableRawPointer
    private var headerList: UnsafeMutablePointer<curl_slist>?
    private let errorBuffer = UnsafeMutablePointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
    private weak var delegate: (any CurlTransferDelegate)?
    private var bodyStarted = false

    /// The headers of the latest response seen so far.
    private(set) var headers = ResponseHeaders()

    /// Prepares a GET of `url`. `requestHeaders` are sent as given (for example
    /// `Range: bytes=100-`), on every redirect hop too.
    init(url: String, requestHeaders: [String], connectTimeout: Duration, delegate: any CurlTransferDelegate) {
        _ = Self.globalInitialization
        guard let handle = curl_easy_init() else {
            fatalError("Bug in imgtool: curl_easy_init failed (out of memory)")
        }
        self.url = url
        self.handle = handle
        self.delegate = delegate
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        for header in requestHeaders {
            headerList = curl_slist_append(headerList, header)
        }
        configure(connectTimeout: connectTimeout)
    }

    deinit {
        curl_easy_cleanup(handle)
        curl_slist_free_all(headerList)
        errorBuffer.deallocate()
    }

    private func configure(connectTimeout: Duration) {
        let context = Unmanaged.passUnretained(self).toOpaque()
        imgtool_curl_setopt_string(handle, CURLOPT_URL, url)
        imgtool_curl_setopt_pointer(handle, CURLOPT_ERRORBUFFER, errorBuffer)
        imgtool_curl_setopt_long(handle, CURLOPT_FOLLOWLOCATION, 1)
        imgtool_curl_setopt_long(handle, CURLOPT_MAXREDIRS, 10)
        // Only HTTP(S), also after a redirect: a Location header must not reach file:// or
        // any other protocol libcurl supports.
        imgtool_curl_setopt_string(handle, CURLOPT_PROTOCOLS_STR, "http,https")
        imgtool_curl_setopt_string(handle, CURLOPT_REDIR_PROTOCOLS_STR, "http,https")
        // The file is stored exactly as served: no Accept-Encoding is sent, and a
        // Content-Encoding the server adds anyway (a .gz labelled gzip) is not decoded.
        imgtool_curl_setopt_long(handle, CURLOPT_HTTP_CONTENT_DECODING, 0)
        imgtool_curl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS, Int(connectTimeout.seconds * 1000))
        imgtool_curl_setopt_long(handle, CURLOPT_NOSIGNAL, 1)
        // Up to 256 KiB per read from the socket instead of the default 16 KiB: fewer
        // calls per byte, while the buffer still fits in the L2 cache beside WriteBehind's.
        imgtool_curl_setopt_long(handle, CURLOPT_BUFFERSIZE, 256 * 1024)
        imgtool_curl_setopt_string(handle, CURLOPT_USERAGENT, "imgtool/\(ImageCoreVersion.current)")
        if let headerList { imgtool_curl_setopt_slist(handle, CURLOPT_HTTPHEADER, headerList) }

        imgtool_curl_setopt_pointer(handle, CURLOPT_HEADERDATA, context)
        imgtool_curl_setopt_data_callback(handle, CURLOPT_HEADERFUNCTION) { data, size, count, context in
            let transfer = Unmanaged<CurlTransfer>.fromOpaque(context!).takeUnretainedValue()
            let length = size * count
            let bytes = UnsafeRawBufferPointer(start: data, count: length)
            transfer.headers.consume(line: String(decoding: bytes, as: UTF8.self))
            return length
        }

        imgtool_curl_setopt_pointer(handle, CURLOPT_WRITEDATA, context)
        imgtool_curl_setopt_data_callback(handle, CURLOPT_WRITEFUNCTION) { data, size, count, context in
            let transfer = Unmanaged<CurlTransfer>.fromOpaque(context!).takeUnretainedValue()
            let length = size * count
            return transfer.deliver(UnsafeRawBufferPointer(start: data, count: length)) ? length : 0
        }

        imgtool_curl_setopt_long(handle, CURLOPT_NOPROGRESS, 0)
        imgtool_curl_setopt_pointer(handle, CURLOPT_XFERINFODATA, context)
        imgtool_curl_setopt_progress_callback(handle) { context, _, _, _, _ in
            let transfer = Unmanaged<CurlTransfer>.fromOpaque(context!).takeUnretainedValue()
            guard let delegate = transfer.delegate else { return 1 }
            return delegate.transferShouldContinue(transfer) ? 0 : 1
        }
    }

    private func deliver(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard let delegate else { return false }
        if !bodyStarted {
            bodyStarted = true
            if !delegate.transferShouldAcceptBody(self) { return false }
        }
        return delegate.transfer(self, received: bytes)
    }

    /// True once the body callback has run (so `transferShouldAcceptBody` was called).
    var hasStartedBody: Bool { bodyStarted }

    /// Runs the transfer to its end on the calling thread (`curl_easy_perform`).
    func perform() -> CurlResult {
        let code = curl_easy_perform(handle)
        var message = String(cString: errorBuffer)
        if message.isEmpty { message = String(cString: curl_easy_strerror(code)) }
        return CurlResult(code: code, message: message)
    }

    /// The URL of the last request, after redirects (`CURLINFO_EFFECTIVE_URL`).
    var effectiveURL: String {
        var pointer: UnsafeMutablePointer<CChar>?
        guard imgtool_curl_getinfo_string(handle, CURLINFO_EFFECTIVE_URL, &pointer) == CURLE_OK, let pointer else {
            return url
        }
        return String(cString: pointer)
    }

    /// The status code of the last response, or 0 when none arrived (`CURLINFO_RESPONSE_CODE`).
    var responseCode: Int {
        var code = 0
        _ = imgtool_curl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &code)
        return code
    }
}

// WebSocket framing (RFC 6455, section 5).
//
//   0                   1                   2                   3
//   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//  +-+-+-+-+-------+-+-------------+-------------------------------+
//  |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//  |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//  |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//  | |1|2|3|       |K|             |                               |
//  +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//  |     Extended payload length continued, if payload len == 127  |
//  + - - - - - - - - - - - - - - - +-------------------------------+
//  |                               | Masking-key, if MASK set to 1 |
//  +-------------------------------+-------------------------------+
//  | Masking-key (continued)       |          Payload Data         |
//  +-------------------------------- - - - - - - - - - - - - - - - +
//
// Lengths use the shortest form only by convention; a receiver must accept any form.
// The 64-bit length's most significant bit must be 0. Control frames (close, ping, pong)
// carry at most 125 bytes and are never fragmented. Frames from a client are masked;
// frames from a server are not.

/// A frame's opcode (4 bits). Values 3-7 and 11-15 are reserved.
public enum Opcode: UInt8, Sendable {
    case continuation = 0x0
    case text = 0x1
    case binary = 0x2
    case close = 0x8
    case ping = 0x9
    case pong = 0xA

    public var isControl: Bool { rawValue & 0x8 != 0 }
}

/// Close status codes (RFC 6455, section 7.4.1).
public enum CloseCode {
    public static let normal: UInt16 = 1000
    public static let goingAway: UInt16 = 1001
    public static let protocolError: UInt16 = 1002
    public static let unsupportedData: UInt16 = 1003
    /// Never sent: it means "no code was present" to the application.
    public static let noStatus: UInt16 = 1005
    /// Never sent: it means "closed without a close frame" to the application.
    public static let abnormal: UInt16 = 1006
    public static let invalidPayload: UInt16 = 1007
    public static let policyViolation: UInt16 = 1008
    public static let messageTooBig: UInt16 = 1009
    public static let internalError: UInt16 = 1011

    /// Whether a peer may send `code` in a close frame: 1000-1003 and 1007-1011 from
    /// RFC 6455, 1012-1014 (service restart, try again later, bad gateway) from the IANA
    /// WebSocket close code registry, and the ranges 3000-4999 for libraries and
    /// applications. 1004-1006, 1015 and the other values below 3000 are reserved or
    /// forbidden on the wire.
    public static func isValidOnWire(_ code: UInt16) -> Bool {
        switch code {
        case 1000...1003, 1007...1014: return true
        case 3000...4999: return true
        default: return false
        }
    }
}

/// One frame as read from the wire, payload already unmasked.
public struct Frame: Sendable {
    public var fin: Bool
    public var opcode: Opcode
    public var payload: [UInt8]

    public init(fin: Bool = true, opcode: Opcode, payload: [UInt8]) {
        self.fin = fin
        self.opcode = opcode
        self.payload = payload
    }

    /// Encodes the frame. `mask` is nil for frames a server sends, and the client's
    /// 4-byte masking key otherwise.
    public func encoded(mask: (UInt8, UInt8, UInt8, UInt8)? = nil) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(payload.count + 14)
        bytes.append((fin ? 0x80 : 0) | opcode.rawValue)
        let maskBit: UInt8 = mask == nil ? 0 : 0x80
        let count = UInt64(payload.count)
        if count < 126 {
            bytes.append(maskBit | UInt8(count))
        } else if count <= 0xFFFF {
            bytes.append(maskBit | 126)
            bytes.append(UInt8(count >> 8))
            bytes.append(UInt8(count & 0xFF))
        } else {
            bytes.append(maskBit | 127)
            for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8((count >> UInt64(shift)) & 0xFF)) }
        }
        guard let mask else {
            bytes.append(contentsOf: payload)
            return bytes
        }
        let key = [mask.0, mask.1, mask.2, mask.3]
        bytes.append(contentsOf: key)
        for (index, byte) in payload.enumerated() { bytes.append(byte ^ key[index & 3]) }
        return bytes
    }

    /// A close frame carrying `code` and `reason`, or an empty close frame when `code` is nil.
    public static func close(code: UInt16?, reason: String = "") -> Frame {
        guard let code else { return Frame(opcode: .close, payload: []) }
        var payload: [UInt8] = [UInt8(code >> 8), UInt8(code & 0xFF)]
        // A control frame's payload is at most 125 bytes: 2 for the code, 123 for the reason.
        payload.append(contentsOf: Array(reason.utf8).prefix(123))
        return Frame(opcode: .close, payload: payload)
    }
}

/// A violation of the protocol by the peer, and the close code it calls for.
public struct WebSocketProtocolError: Error, CustomStringConvertible, Sendable {
    public var closeCode: UInt16
    public var reason: String

    public init(_ closeCode: UInt16, _ reason: String) {
        self.closeCode = closeCode
        self.reason = reason
    }

    public var description: String { "WebSocket close \(closeCode): \(reason)" }
}

/// Where a frame reader gets its bytes: fills the buffer completely or throws.
public protocol ByteSource {
    /// Reads exactly `count` bytes. Throws at end of input or on an error.
    mutating func readExactly(_ count: Int) throws -> [UInt8]
}

/// Reads frames one at a time from a `ByteSource`, checking each header before it trusts
/// the length: reserved bits, reserved opcodes, masking, control-frame rules and the
/// payload limit are all checked before any payload byte is read.
public struct FrameReader {
    /// Whether frames must be masked (a server reading a client) or must not be (a client).
    public let expectMasked: Bool
    /// The largest payload accepted in one frame, in bytes.
    public let maximumPayload: UInt64

    public init(expectMasked: Bool, maximumPayload: UInt64) {
        self.expectMasked = expectMasked
        self.maximumPayload = maximumPayload
    }

    /// Reads the next frame. Throws `WebSocketProtocolError` for a frame that breaks the
    /// protocol, and whatever `source` throws at end of input.
    public func next<Source: ByteSource>(from source: inout Source) throws -> Frame {
        let head = try source.readExactly(2)
        let fin = head[0] & 0x80 != 0
        if head[0] & 0x70 != 0 {
            throw WebSocketProtocolError(CloseCode.protocolError, "reserved bits set without a negotiated extension")
        }
        guard let opcode = Opcode(rawValue: head[0] & 0x0F) else {
            throw WebSocketProtocolError(CloseCode.protocolError, "reserved opcode \(head[0] & 0x0F)")
        }
        let masked = head[1] & 0x80 != 0
        if masked != expectMasked {
            throw WebSocketProtocolError(CloseCode.protocolError, expectMasked ? "client frame is not masked" : "server frame is masked")
        }

        var length = UInt64(head[1] & 0x7F)
        if length == 126 {
            let extended = try source.readExactly(2)
            length = UInt64(extended[0]) << 8 | UInt64(extended[1])
        } else if length == 127 {
            let extended = try source.readExactly(8)
            length = extended.reduce(0) { $0 << 8 | UInt64($1) }
            if length & (1 << 63) != 0 {
                throw WebSocketProtocolError(CloseCode.protocolError, "64-bit payload length has its most significant bit set")
            }
        }

        if opcode.isControl {
            if !fin { throw WebSocketProtocolError(CloseCode.protocolError, "fragmented control frame") }
            if length > 125 { throw WebSocketProtocolError(CloseCode.protocolError, "control frame longer than 125 bytes") }
        }
        if length > maximumPayload {
            throw WebSocketProtocolError(CloseCode.messageTooBig, "frame of \(length) bytes exceeds the limit of \(maximumPayload) bytes")
        }

        let key = masked ? try source.readExactly(4) : []
        var payload = try source.readExactly(Int(length))
        if masked {
            for index in payload.indices { payload[index] ^= key[index & 3] }
        }
        return Frame(fin: fin, opcode: opcode, payload: payload)
    }
}

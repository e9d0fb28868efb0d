import Foundation

/// The conversation for one mail, as a pure state machine: fed the server's replies and what happened to the
/// connection, it answers with the next thing to do. No I/O, no clock: `SMTPClientHandler` carries the actions
/// out on a channel and arms the timeouts.
///
/// Greeting 220, EHLO (HELO after a 5xx only without TLS), STARTTLS when required (after its 220 everything
/// learnt before is forgotten and EHLO is sent again, RFC 3207 4.2), AUTH PLAIN or else LOGIN only over TLS,
/// MAIL FROM, RCPT TO, DATA, the dot-stuffed message, QUIT. A 4xx reply is transient, a 5xx permanent.
/// Outcome strings name the stage and codes only (see `SMTPOutcome`).
struct SMTPStateMachine: Sendable {
    /// The AUTH user and password.
    struct Credentials: Sendable, Equatable, CustomStringConvertible, CustomReflectable {
        var username: String
        var password: String

        var description: String { "Credentials(username: \(username), password: ***)" }
        var customMirror: Mirror { Mirror(self, children: ["username": username, "password": "***"]) }
    }

    /// What the handler waits for after a write, which picks the timeout.
    enum Wait: Sendable, Equatable {
        /// A reply to a command: `SMTPTimeouts.command`.
        case reply
        /// The reply after the final dot: `SMTPTimeouts.dataEnd`.
        case endOfData
    }

    /// What to do next.
    enum Action: Sendable, Equatable {
        /// Write these bytes, then wait.
        case send([UInt8], Wait)
        /// Put TLS in front of the pipeline now and report `tlsEstablished()` when its handshake completes.
        case startTLS
        /// Nothing; wait for the next event.
        case wait
        /// Write `QUIT`, wait briefly for its reply, then close: the outcome is decided.
        case quit(SMTPOutcome)
        /// Close the connection now, without QUIT: the outcome is decided.
        case close(SMTPOutcome)
    }

    /// Where the conversation waits.
    enum Stage: Sendable, Equatable {
        case greeting
        case ehlo
        case helo
        case startTLS
        case tlsHandshake
        case authPlain
        /// AUTH LOGIN: 0 waits for the user challenge, 1 for the password challenge, 2 for the verdict.
        case authLogin(Int)
        case mail
        case rcpt
        case data
        case endOfData

        /// The stage in an outcome: `at RCPT`.
        var name: String {
            switch self {
            case .greeting: "greeting"
            case .ehlo: "EHLO"
            case .helo: "HELO"
            case .startTLS: "STARTTLS"
            case .tlsHandshake: "TLS handshake"
            case .authPlain, .authLogin: "AUTH"
            case .mail: "MAIL"
            case .rcpt: "RCPT"
            case .data: "DATA"
            case .endOfData: "end of data"
            }
        }

        /// What a timeout waited for: `timeout waiting for the reply to RCPT`.
        var awaited: String {
            switch self {
            case .greeting: "the greeting"
            case .tlsHandshake: "the TLS handshake"
            case .endOfData: "the reply after the end of data"
            default: "the reply to \(name)"
            }
        }
    }

    /// The conversation's state.
    enum State: Sendable, Equatable {
        /// Waiting in a stage.
        case waiting(Stage)
        /// QUIT sent with the outcome decided.
        case quitting(SMTPOutcome)
        /// Closed or closing; every further event is ignored.
        case done
    }

    /// Something that went wrong below the replies.
    enum Failure: Sendable, Equatable {
        /// The server's bytes are not a reply within our limits.
        case reply(SMTPReplyError)
        /// The TLS handshake failed, for this reason (`certificate not trusted`).
        case tls(String)
        /// The connection failed, for this reason (`connection reset`).
        case connection(String)
    }

    /// `QUIT` and its line ending.
    static let quitCommand = Array("QUIT\r\n".utf8)

    let security: SMTPSecurity
    let helo: String
    let credentials: Credentials?
    let from: String
    let to: String
    /// The message as written after DATA's 354: dot-stuffed, ending in `CRLF.CRLF`.
    let payload: [UInt8]

    private(set) var state: State = .waiting(.greeting)
    /// Whether TLS protects the connection (the handshake completed).
    private(set) var tlsActive = false
    /// What the latest EHLO offered; emptied when STARTTLS succeeds.
    private(set) var capabilities = SMTPCapabilities()

    /// A conversation about to wait for the greeting. `message` is the rendered message before dot-stuffing.
    init(
        security: SMTPSecurity,
        helo: String,
        credentials: Credentials?,
        from: String,
        to: String,
        message: String
    ) {
        self.security = security
        self.helo = helo
        self.credentials = credentials
        self.from = from
        self.to = to
        self.payload = Self.dataPayload(message)
    }

    // MARK: Events

    /// A complete reply. `moreBuffered` says bytes followed it in what was received: the server spoke out of turn
    /// (we never pipeline), which after the STARTTLS 220 is the response-injection attack of RFC 3207 6.
    mutating func receive(_ reply: SMTPReply, moreBuffered: Bool) -> Action {
        guard case .waiting(let stage) = state else {
            if case .quitting(let outcome) = state { return close(outcome) }
            return .wait
        }
        if moreBuffered && stage != .endOfData {
            if stage == .startTLS && reply.code == 220 {
                return close(.transient("data after the STARTTLS reply before TLS; nothing sent"))
            }
            return close(.transient("unsolicited data after the reply at \(stage.name)"))
        }
        let success = reply.code / 100 == 2
        switch stage {
        case .greeting:
            guard reply.code == 220 else {
                if reply.code / 100 == 4 || reply.code / 100 == 5 { return refused(reply, stage) }
                return quit(.transient("unexpected greeting SMTP \(reply.code)"))
            }
            return send("EHLO \(helo)", .ehlo)
        case .ehlo:
            if success {
                capabilities = SMTPCapabilities(ehlo: reply)
                return afterHello()
            }
            if reply.code / 100 == 5 && security == .none && !tlsActive { return send("HELO \(helo)", .helo) }
            return refused(reply, stage)
        case .helo:
            guard success else { return refused(reply, stage) }
            capabilities = SMTPCapabilities()
            return afterHello()
        case .startTLS:
            guard reply.code == 220 else { return refused(reply, stage) }
            // RFC 3207 4.2: forget everything the server said in plain text.
            capabilities = SMTPCapabilities()
            state = .waiting(.tlsHandshake)
            return .startTLS
        case .tlsHandshake:
            return close(.transient("reply before the TLS handshake completed; nothing sent"))
        case .authPlain:
            guard success else { return refusedAuth(reply, stage) }
            return sendMail()
        case .authLogin(let step):
            guard let credentials else { return close(.transient("AUTH without credentials")) }
            switch (step, reply.code) {
            case (0, 334): return send(Self.base64(Array(credentials.username.utf8)), .authLogin(1))
            case (1, 334): return send(Self.base64(Array(credentials.password.utf8)), .authLogin(2))
            case (2, _) where success: return sendMail()
            default:
                if reply.code / 100 == 4 || reply.code / 100 == 5 { return refusedAuth(reply, stage) }
                return quit(.transient("unexpected reply " + reply.summary(at: stage.name)))
            }
        case .mail:
            guard success else { return refused(reply, stage) }
            return send("RCPT TO:<\(to)>", .rcpt)
        case .rcpt:
            guard success else { return refused(reply, stage) }
            return send("DATA", .data)
        case .data:
            guard reply.code / 100 == 3 else { return refused(reply, stage) }
            state = .waiting(.endOfData)
            return .send(payload, .endOfData)
        case .endOfData:
            guard success else { return refused(reply, stage) }
            return quit(.accepted(reply.queueId))
        }
    }

    /// The TLS handshake completed: after STARTTLS, EHLO again; with implicit TLS, before the greeting.
    mutating func tlsEstablished() -> Action {
        switch state {
        case .waiting(.tlsHandshake):
            tlsActive = true
            return send("EHLO \(helo)", .ehlo)
        case .waiting(.greeting) where security == .implicit:
            tlsActive = true
            return .wait
        default:
            return .wait
        }
    }

    /// The stage's timeout (or the conversation's) passed.
    mutating func timedOut() -> Action {
        switch state {
        case .waiting(let stage): close(Self.lost("timeout waiting for \(stage.awaited)", at: stage))
        case .quitting(let outcome): close(outcome)
        case .done: .wait
        }
    }

    /// The server closed the connection.
    mutating func connectionClosed() -> Action {
        switch state {
        case .waiting(let stage): close(Self.lost("connection closed waiting for \(stage.awaited)", at: stage))
        case .quitting(let outcome): close(outcome)
        case .done: .wait
        }
    }

    /// The outcome of a conversation cut off at `stage`: unknown once the whole message was sent (the server
    /// may deliver it), else transient (nothing was delivered, so trying again is safe).
    static func lost(_ reason: String, at stage: Stage) -> SMTPOutcome {
        stage == .endOfData ? .unknown(reason) : .transient(reason)
    }

    /// Something failed below the replies; after the outcome is decided it changes nothing.
    mutating func failed(_ failure: Failure) -> Action {
        switch state {
        case .waiting(let stage):
            switch failure {
            case .reply(let error): close(.transient("\(error.reason) at \(stage.name)"))
            case .tls(let reason):
                stage == .tlsHandshake || !tlsActive
                    ? close(.transient("TLS handshake failed: \(reason)"))
                    : close(.transient("TLS failed at \(stage.name): \(reason)"))
            case .connection(let reason): close(Self.lost("\(reason) at \(stage.name)", at: stage))
            }
        case .quitting(let outcome): close(outcome)
        case .done: .wait
        }
    }

    // MARK: Steps

    /// After a successful EHLO or HELO: STARTTLS if required and not yet done, AUTH if configured, or MAIL.
    private mutating func afterHello() -> Action {
        if security == .starttls && !tlsActive {
            guard capabilities.startTLS else { return quit(.permanent("server does not offer STARTTLS; nothing sent")) }
            return send("STARTTLS", .startTLS)
        }
        guard security == .none || tlsActive else { return quit(.permanent("TLS is not active; nothing sent")) }
        guard let credentials else { return sendMail() }
        guard tlsActive else { return quit(.permanent("AUTH needs TLS; nothing sent")) }
        if capabilities.authMechanisms.contains("PLAIN") {
            let plain = [0] + Array(credentials.username.utf8) + [0] + Array(credentials.password.utf8)
            return send("AUTH PLAIN " + Self.base64(plain), .authPlain)
        }
        if capabilities.authMechanisms.contains("LOGIN") { return send("AUTH LOGIN", .authLogin(0)) }
        return quit(.permanent("server offers neither AUTH PLAIN nor LOGIN; nothing sent"))
    }

    private mutating func sendMail() -> Action {
        send("MAIL FROM:<\(from)>", .mail)
    }

    private mutating func send(_ command: String, _ next: Stage) -> Action {
        state = .waiting(next)
        return .send(Array((command + "\r\n").utf8), .reply)
    }

    /// A refusal: 4xx transient, 5xx permanent, anything else an unexpected reply (transient).
    private mutating func refused(_ reply: SMTPReply, _ stage: Stage) -> Action {
        switch reply.code / 100 {
        case 4: quit(.transient(reply.summary(at: stage.name)))
        case 5: quit(.permanent(reply.summary(at: stage.name)))
        default: quit(.transient("unexpected reply " + reply.summary(at: stage.name)))
        }
    }

    /// As `refused`, with 535 named: the credentials are wrong.
    private mutating func refusedAuth(_ reply: SMTPReply, _ stage: Stage) -> Action {
        if reply.code == 535 { return quit(.permanent("authentication failed: " + reply.summary(at: stage.name))) }
        return refused(reply, stage)
    }

    private mutating func quit(_ outcome: SMTPOutcome) -> Action {
        state = .quitting(outcome)
        return .quit(outcome)
    }

    private mutating func close(_ outcome: SMTPOutcome) -> Action {
        state = .done
        return .close(outcome)
    }

    // MARK: Encoding

    /// The message as sent after 354 (RFC 5321 4.5.2): line endings made CRLF, a `.` doubled at the start of a
    /// line, a final CRLF if missing, then `.CRLF`.
    static func dataPayload(_ message: String) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(message.utf8.count + 64)
        let lines = MIMEMessage.lines(of: message)
        for (i, line) in lines.enumerated() {
            // The empty slice after a final line break is no line of its own.
            if i == lines.count - 1 && line.isEmpty && i > 0 { break }
            if line.first == UInt8(ascii: ".") { out.append(UInt8(ascii: ".")) }
            out += line
            out += [13, 10]
        }
        if message.isEmpty { out = [] }
        return out + Array(".\r\n".utf8)
    }

    static func base64(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString()
    }
}

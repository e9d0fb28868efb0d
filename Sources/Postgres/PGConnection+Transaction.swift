import CLibPQ

extension PGConnection {
    /// Runs `body` inside BEGIN/COMMIT, rolling back when it throws (a savepoint when already in a transaction).
    ///
    /// If `body` swallowed a server error so that the transaction is aborted, the transaction is rolled
    /// back and a `.server` error with SQLSTATE 25P02 is thrown instead of a silent "COMMIT".
    ///
    /// A connection lost before COMMIT was sent throws `.connection`: nothing was committed. One lost after
    /// it was sent and before its answer arrived (including a server that stopped answering) throws
    /// `.commitOutcomeUnknown`: the server may have committed and only the answer was lost, so the caller must
    /// not report that nothing was done. A COMMIT the server refuses (a deferred constraint) is a `.server` error.
    @discardableResult
    public func transaction<T>(_ body: (PGConnection) throws -> T) throws -> T {
        let handle = try liveHandle()
        if beginPending || PQtransactionStatus(handle) != PQTRANS_IDLE {
            return try nestedTransaction(body)
        }
        // BEGIN goes out with the first statement, in its round trip.
        beginPending = true
        let value: T
        do {
            value = try body(self)
        } catch {
            // Nothing to roll back when no statement ran.
            let begun = !beginPending
            beginPending = false
            if begun && isConnected { try? execute("ROLLBACK") }
            throw error
        }
        try commitIfBegun()
        return value
    }

    /// Ends `transaction`'s transaction: nothing when no statement ran (not even BEGIN was sent), a ROLLBACK and
    /// 25P02 when an error the body swallowed aborted it, otherwise COMMIT.
    private func commitIfBegun() throws {
        let begun = !beginPending
        beginPending = false
        guard begun else { return }
        if isConnected, let current = self.handle, PQtransactionStatus(current) == PQTRANS_INERROR {
            try? execute("ROLLBACK")
            throw PGError(code: .server, sqlState: "25P02", message: "the transaction was aborted by an earlier error")
        }
        // Checked here so that a `.connection` error from the COMMIT below means it was handed to libpq.
        _ = try liveHandle()
        do {
            try execute("COMMIT")
        } catch  where error.code == .connection {
            throw PGError(code: .commitOutcomeUnknown, sqlState: error.sqlState, message: error.message)
        }
    }

    private func nestedTransaction<T>(_ body: (PGConnection) throws -> T) throws -> T {
        savepointCounter += 1
        let name = "otpd_savepoint_\(savepointCounter)"
        try execute("SAVEPOINT \(name)")
        let value: T
        do {
            value = try body(self)
        } catch {
            if isConnected { try? execute("ROLLBACK TO SAVEPOINT \(name); RELEASE SAVEPOINT \(name)") }
            throw error
        }
        if let current = self.handle, PQtransactionStatus(current) == PQTRANS_INERROR {
            try? execute("ROLLBACK TO SAVEPOINT \(name); RELEASE SAVEPOINT \(name)")
            throw PGError(code: .server, sqlState: "25P02", message: "the transaction was aborted by an earlier error")
        }
        try execute("RELEASE SAVEPOINT \(name)")
        return value
    }

    /// Ends a transaction left open by a body; returns false when the connection is unusable.
    func resetSessionState() -> Bool {
        beginPending = false
        guard let handle, PQstatus(handle) == CONNECTION_OK else { return false }
        switch PQtransactionStatus(handle) {
        case PQTRANS_IDLE:
            return true
        case PQTRANS_INTRANS, PQTRANS_INERROR:
            do {
                try execute("ROLLBACK")
            } catch {
                return false
            }
            return isConnected
        default:
            return false
        }
    }
}

extension PGConnection {
    /// Runs `count` bodies in turn inside the open transaction, each under a savepoint of its own, so a body that
    /// throws (or leaves the transaction failed) is rolled back alone while the others keep their work.
    ///
    /// One round trip between two bodies releases the last savepoint and sets the next (a failed body's rollback
    /// keeps its savepoint for the next body). Returns each body's result in order; throws only what ends the
    /// whole transaction: a lost connection (from a body or a savepoint statement), or a savepoint statement the
    /// server refuses.
    public func eachUnderSavepoint<T>(_ count: Int, _ body: (Int) throws -> T) throws -> [Result<T, any Error>] {
        let name = "otpd_each"
        var results: [Result<T, any Error>] = []
        results.reserveCapacity(count)
        try execute("SAVEPOINT \(name)")
        for i in 0..<count {
            if i > 0, case .success = results[i - 1] { try execute("RELEASE SAVEPOINT \(name); SAVEPOINT \(name)") }
            do {
                let value = try body(i)
                if let handle, PQtransactionStatus(handle) == PQTRANS_INERROR {
                    throw PGError(
                        code: .server,
                        sqlState: "25P02",
                        message: "the transaction was aborted by an earlier error"
                    )
                }
                results.append(.success(value))
            } catch {
                if !isConnected || (error as? PGError)?.isConnectionLost == true { throw error }
                try execute("ROLLBACK TO SAVEPOINT \(name)")
                results.append(.failure(error))
            }
        }
        return results
    }
}

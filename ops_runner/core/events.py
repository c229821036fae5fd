"""The ledger's vocabulary: event kinds (past tense), system states, triggers, and payload shapes.

Payloads are canonical JSON: no floats. Money, prices and ratios are decimal strings
("1234.56"), quantities are integers (whole shares), dates are ISO strings, instants are
ISO-8601 UTC strings ending in "Z". The fields each kind carries are listed beside it; a
payload may carry more, never fewer.
"""

from __future__ import annotations

from enum import StrEnum


class EventKind(StrEnum):
    """Everything the ledger records. Add kinds here, never as bare strings elsewhere."""

    # states and safety
    STATE_CHANGED = "StateChanged"  # from, to, trigger, reason, evidence: list[str]
    KILL_SWITCH_SEEN = "KillSwitchSeen"  # path, reason (the file's content or why unreadable)
    APPROVAL_USED = "ApprovalUsed"  # token_id, action, from, to, reason, review, issued_by
    INCIDENT_OPENED = "IncidentOpened"  # incident_id, category, summary, evidence: list[str]
    INCIDENT_CLOSED = "IncidentClosed"  # incident_id, resolution, postmortem (or null)
    EQUITY_MARKED = "EquityMarked"  # session, net_liquidation (decimal str), source
    CHECK_RECORDED = "CheckRecorded"  # check, passed: bool, detail, evidence: list[str]
    # orders and fills
    ORDERS_PLANNED = "OrdersPlanned"  # cycle_id, order_session, lines, cash_walk, residual_cash
    ORDER_DENIED = "OrderDenied"  # client_ref, symbol, side, quantity, purpose, state, reason
    ORDER_INTENT_RECORDED = "OrderIntentRecorded"  # client_ref, symbol, side, quantity, purpose
    ORDER_SUBMITTED = "OrderSubmitted"  # client_ref, broker_order_id, symbol, side, quantity
    ORDER_STATUS_CHANGED = "OrderStatusChanged"  # client_ref, status, detail
    QUOTES_RECORDED = "QuotesRecorded"  # cycle_id, moment (submission | open), session, broker,
    #                                     quotes: {symbol: {bid, ask, at, source}}, unquoted:
    #                                     {symbol: why no quote came} (never an invented one)
    FILL_RECORDED = "FillRecorded"  # exec_id, client_ref, symbol, side, quantity, price,
    #                                 commission (decimal str or null), session
    CASH_ADJUSTED = "CashAdjusted"  # amount (decimal str, + deposit / - withdrawal), reason
    # between trades: what the broker does to the account (one event per line, each keyed)
    DIVIDEND_ENTITLED = "DividendEntitled"  # symbol, ex_date, pay_date (expected), shares,
    #                                         rate, amount (shares x rate, cents), evidence
    DIVIDEND_PAID = "DividendPaid"  # symbol, ex_date, on (pay date), amount (gross), evidence
    TAX_WITHHELD = "TaxWithheld"  # symbol, ex_date, on, amount (signed: - withheld), evidence
    SPLIT_APPLIED = "SplitApplied"  # symbol, effective, ratio (new per old), shares_before,
    #                                 shares_after, cash_in_lieu (decimal str), evidence
    INTEREST_BOOKED = "InterestBooked"  # on, amount (signed: + credited, - charged), evidence
    FEE_CHARGED = "FeeCharged"  # on, amount (signed: - charged, + refunded), description,
    #                             evidence
    # jobs and artifacts
    JOB_STARTED = "JobStarted"  # job, slot, session, cycle, run_id, at
    JOB_COMPLETED = "JobCompleted"  # job, slot, session, cycle, run_id, at, outcome, outputs
    JOB_FAILED = "JobFailed"  # job, slot, session, cycle, run_id, at, error
    JOB_MISSED = "JobMissed"  # job, slot, session, cycle, deadline, at
    ARTIFACT_RECORDED = "ArtifactRecorded"  # path (workbook-relative), sha256, job, run_id,
    #                                         slot, duration_seconds (decimal str), outcome
    #                                         (completed | failed), reason
    ALERT_SENT = "AlertSent"  # alert_id, subject, severity, events: list[int] (seqs),
    #                           channels: {name: "sent" | "failed: ..." | "not configured"}
    BASELINE_APPROVED = "BaselineApproved"  # config_hash, strategy_version, code_version,
    #                                         reason, approved_at
    CYCLE_SKIPPED = "CycleSkipped"  # cycle, session, reason (schedule.missed_decision)
    DECISION_RECORDED = "DecisionRecorded"  # the Decision Record (strategy issue)
    REPLAY_RECORDED = "ReplayRecorded"  # cycle, session, strategy, decision_seq, result
    #                                     (MATCH | DIFFERS), differences: list[str], causes:
    #                                     list[str], changed: list[str], config_hash /
    #                                     code_version / snapshot_sha256: {recorded, now}
    BACKUP_RECORDED = "BackupRecorded"  # archive (path), sha256, manifest_sha256, ledger_seq,
    #                                     ledger_head, files, bytes, reason (weekly | on demand)
    DEPENDENCY_SCAN_RECORDED = "DependencyScanRecorded"  # slot, service, tool, result (CLEAN |
    #                                                      VULNERABLE | NOT_SCANNED), reason,
    #                                                      packages: list[str] (name==version),
    #                                                      audited, skipped: list, findings: list
    #                                                      of {package, version, advisory,
    #                                                      aliases, fix_versions, service, summary}
    AUDIT_RECORDED = "AuditRecorded"  # session, status (CLEAN | BREAK), breaks: list, positions,
    #                                   cash (broker vs ledger since inception)
    DRILL_RECORDED = "DrillRecorded"  # archive, passed: bool, reason, steps: list, notebook
    PRICES_RECORDED = "PricesRecorded"  # source, reason, manifests: {symbol: manifest sha256}
    QA_RECORDED = "QARecorded"  # session, primary, secondary, blocking: bool, findings:
    #                             {severity: count}, fingerprint (the stored data it read)


class State(StrEnum):
    """The runbook's system states. RUN is the state of a ledger with no StateChanged yet."""

    RUN = "RUN"
    DEGRADED_DATA = "DEGRADED_DATA"
    BROKER_DOWN = "BROKER_DOWN"
    SAFE_MODE = "SAFE_MODE"
    HALT = "HALT"


class Trigger(StrEnum):
    """Why a state changes: the keys of the transition table in ``ops_runner.ledger.states``."""

    DATA_FAULT = "data_fault"  # stale or missing bars, corporate actions, provenance
    DATA_RESTORED = "data_restored"  # data QA clean again
    BROKER_FAULT = "broker_fault"  # authentication, disconnected session, repeated rejects
    BROKER_RESTORED = "broker_restored"
    INCIDENT = "incident"  # job failed or missed, clock skew, reconciliation break, baseline
    KILL_SWITCH = "kill_switch"
    DRAWDOWN_BREACH = "drawdown_breach"
    RECONCILIATION_UNRESOLVED = "reconciliation_unresolved"
    LEDGER_CORRUPT = "ledger_corrupt"
    DECISION_WINDOW_MISSED = "decision_window_missed"
    # The submission window closed with the broker still down: the cycle's orders were not sent.
    SUBMISSION_WINDOW_MISSED = "submission_window_missed"
    APPROVED_EXIT_SAFE_MODE = "approved_exit_safe_mode"  # integrity checks + token
    APPROVED_EXIT_HALT = "approved_exit_halt"  # token naming the review


class Purpose(StrEnum):
    """Why an order intent exists; the order gate decides by state and purpose."""

    REBALANCE = "rebalance"
    RISK_OFF = "risk_off"  # the drawdown policy's orders: the only new orders HALT lets through
    RECONCILIATION = "reconciliation"  # completes a reconciliation (e.g. a residual)
    CANCEL = "cancel"

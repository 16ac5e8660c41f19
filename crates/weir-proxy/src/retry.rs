//! The retry decision (docs/data-path.md, "Retries"): one pure function, [`decide`], from how an
//! attempt ended, what its request allows and what the upstream's policy still allows, to what
//! the proxy does next. Pingora's callbacks (`fail_to_connect`, `error_while_proxy`,
//! `upstream_response_filter`) gather the facts and apply the [`Decision`]; nothing here does
//! I/O, reads the clock or touches shared state.
//!
//! The rules, in the order they are applied:
//!
//! 1. A failure after the response header started is never retried: what was relayed stands.
//! 2. A malformed response header is never retried (502).
//! 3. A stale pooled connection — closed or reset by the peer while the proxy waited for the
//!    response header of an attempt sent on a reused connection — gets one free retry on the
//!    same node (not an attempt, not reported, not added to the tried set), if the body can be
//!    replayed and, for a non-idempotent method, no request byte was written. The attempt
//!    budget and the deadline do not apply to it.
//! 4. Otherwise the outcome must allow a replay: a connect failure (nothing was sent) for every
//!    method; a write or read failure for idempotent methods only; a response whose status is
//!    listed in `retry_on_status` for idempotent methods only.
//! 5. The body must fit Pingora's 64 KiB replay buffer.
//! 6. The budget: fewer than `max_attempts` attempts made, the deadline not passed, and the
//!    walk has a candidate node.
//!
//! A retry refused at 4–6 relays a response ([`Decision::Relay`]) and fails an attempt without
//! one: 504 when it timed out, else 502 ([`Decision::Fail`]).

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The TCP connect or the TLS handshake failed (refused, unreachable, reset, timed out,
    /// handshake failure), or the node's certificate was rejected: nothing was sent.
    Connect { timed_out: bool },
    /// Error or timeout writing the request.
    Write { timed_out: bool },
    /// The connection failed before the response header: `closed` when the peer closed or reset
    /// it (how a stale pooled connection shows; Pingora marks these `RetryType::ReusedOnly`),
    /// else another read error or the read timeout.
    ReadBeforeHeader { timed_out: bool, closed: bool },
    /// The response header could not be parsed.
    MalformedHeader,
    /// A response header with this status arrived.
    Status(u16),
    /// The attempt failed after its response header had started to be relayed.
    AfterHeader,
}

impl Outcome {
    /// Whether the attempt ended by a timeout.
    pub(crate) fn timed_out(self) -> bool {
        match self {
            Outcome::Connect { timed_out }
            | Outcome::Write { timed_out }
            | Outcome::ReadBeforeHeader { timed_out, .. } => timed_out,
            Outcome::MalformedHeader | Outcome::Status(_) | Outcome::AfterHeader => false,
        }
    }

    /// The status that stands for an attempt without a response: 504 when it timed out, else
    /// 502 (`X-Weir-Upstream-Status`, and Weir's answer when the request stops there).
    pub(crate) fn failure_status(self) -> u16 {
        if self.timed_out() {
            504
        } else {
            502
        }
    }
}

/// What is known about the attempt and its request when it ended.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attempted<'a> {
    pub outcome: Outcome,
    /// The attempt went out on a pooled (reused) connection.
    pub reused: bool,
    /// Some of the request may have been written to the upstream (everything but a connect
    /// failure: Pingora writes the request header before it reads anything).
    pub request_written: bool,
    /// Not POST, PATCH or LOCK.
    pub idempotent: bool,
    /// The request body can be sent again: it fit Pingora's 64 KiB retry buffer.
    pub body_replayable: bool,
    /// The upstream's `retry_on_status`.
    pub retry_on_status: &'a [u16],
    /// The request's one free retry on a stale pooled connection was used.
    pub stale_retry_used: bool,
}

/// What the upstream's policy still allows for this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Budget {
    /// Attempts made so far, the one that just ended included.
    pub attempts: u32,
    pub max_attempts: u32,
    /// `retry_timeout` is set and now is past the deadline.
    pub deadline_passed: bool,
    /// The walk can pick another node (`UpstreamRuntime::has_candidate`).
    pub candidate: bool,
}

impl Budget {
    fn allows_another(&self) -> bool {
        self.attempts < self.max_attempts && !self.deadline_passed && self.candidate
    }
}

/// What the proxy does after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// A new attempt on the next node the walk picks (counted against `max_attempts`).
    Retry,
    /// Send the request again on a fresh connection to the same node: the free retry after a
    /// stale pooled connection (not counted, not reported, not added to the tried set).
    RetryStaleSameNode,
    /// No retry: the response (or what was relayed of it) is the client's.
    Relay,
    /// No retry and no response: the request ends with this status.
    Fail(u16),
}

impl Attempted<'_> {
    /// Rule 3: the connection was a pooled one the peer had given up on.
    fn stale_connection(&self) -> bool {
        self.reused
            && matches!(self.outcome, Outcome::ReadBeforeHeader { closed: true, .. })
            && (self.idempotent || !self.request_written)
            && self.body_replayable
            && !self.stale_retry_used
    }
}

/// The retry decision for an attempt that ended as `a` says.
///
/// `budget` is asked at most once, and only when the outcome and the request allow a retry:
/// gathering it scans the walk's level and may read the clock, which the common case (a relayed
/// response whose status is not in `retry_on_status`) does not pay. The function itself does no
/// I/O and reads no clock.
pub(crate) fn decide(a: &Attempted<'_>, budget: impl FnOnce() -> Budget) -> Decision {
    let replayable = match a.outcome {
        Outcome::AfterHeader => return Decision::Relay,
        Outcome::MalformedHeader => return Decision::Fail(a.outcome.failure_status()),
        Outcome::Connect { .. } => true,
        Outcome::Write { .. } | Outcome::ReadBeforeHeader { .. } => {
            if a.stale_connection() {
                return Decision::RetryStaleSameNode;
            }
            a.idempotent
        }
        Outcome::Status(s) => a.idempotent && a.retry_on_status.contains(&s),
    };
    if replayable && a.body_replayable && budget().allows_another() {
        Decision::Retry
    } else if let Outcome::Status(_) = a.outcome {
        Decision::Relay
    } else {
        Decision::Fail(a.outcome.failure_status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    const LEFT: Budget = Budget {
        attempts: 1,
        max_attempts: 3,
        deadline_passed: false,
        candidate: true,
    };

    const CONNECT: Outcome = Outcome::Connect { timed_out: false };
    const CONNECT_TIMEOUT: Outcome = Outcome::Connect { timed_out: true };
    const WRITE: Outcome = Outcome::Write { timed_out: false };
    const WRITE_TIMEOUT: Outcome = Outcome::Write { timed_out: true };
    const CLOSED: Outcome = Outcome::ReadBeforeHeader {
        timed_out: false,
        closed: true,
    };
    const READ_ERROR: Outcome = Outcome::ReadBeforeHeader {
        timed_out: false,
        closed: false,
    };
    const READ_TIMEOUT: Outcome = Outcome::ReadBeforeHeader {
        timed_out: true,
        closed: false,
    };

    /// A GET whose attempt ended with `outcome` on a new connection, `retry_on_status: [503]`.
    fn get(outcome: Outcome) -> Attempted<'static> {
        Attempted {
            outcome,
            reused: false,
            request_written: !matches!(outcome, Outcome::Connect { .. }),
            idempotent: true,
            body_replayable: true,
            retry_on_status: &[503],
            stale_retry_used: false,
        }
    }

    fn post(outcome: Outcome) -> Attempted<'static> {
        Attempted {
            idempotent: false,
            ..get(outcome)
        }
    }

    fn reused(a: Attempted<'static>) -> Attempted<'static> {
        Attempted { reused: true, ..a }
    }

    fn with(a: &Attempted<'_>, budget: Budget) -> Decision {
        decide(a, || budget)
    }

    #[test]
    fn connect_failures_are_retried_for_every_method() {
        for o in [CONNECT, CONNECT_TIMEOUT] {
            assert_eq!(with(&get(o), LEFT), Decision::Retry);
            assert_eq!(with(&post(o), LEFT), Decision::Retry);
        }
    }

    #[test]
    fn write_and_read_failures_are_retried_for_idempotent_methods_only() {
        for o in [WRITE, WRITE_TIMEOUT, CLOSED, READ_ERROR, READ_TIMEOUT] {
            assert_eq!(with(&get(o), LEFT), Decision::Retry, "{o:?}");
            assert_eq!(
                with(&post(o), LEFT),
                Decision::Fail(o.failure_status()),
                "{o:?}"
            );
        }
    }

    #[test]
    fn a_failure_without_response_answers_504_if_it_timed_out_else_502() {
        let spent = Budget {
            attempts: 3,
            ..LEFT
        };
        assert_eq!(with(&get(CONNECT_TIMEOUT), spent), Decision::Fail(504));
        assert_eq!(with(&get(WRITE_TIMEOUT), spent), Decision::Fail(504));
        assert_eq!(with(&get(READ_TIMEOUT), spent), Decision::Fail(504));
        assert_eq!(with(&get(CONNECT), spent), Decision::Fail(502));
        assert_eq!(with(&get(WRITE), spent), Decision::Fail(502));
        assert_eq!(with(&get(READ_ERROR), spent), Decision::Fail(502));
        assert_eq!(with(&get(CLOSED), spent), Decision::Fail(502));
    }

    #[test]
    fn a_malformed_header_is_never_retried() {
        let o = Outcome::MalformedHeader;
        assert_eq!(with(&get(o), LEFT), Decision::Fail(502));
        assert_eq!(with(&reused(get(o)), LEFT), Decision::Fail(502));
    }

    #[test]
    fn nothing_after_the_response_header_is_retried() {
        let o = Outcome::AfterHeader;
        assert_eq!(with(&get(o), LEFT), Decision::Relay);
        assert_eq!(with(&reused(get(o)), LEFT), Decision::Relay);
    }

    #[test]
    fn listed_statuses_are_retried_for_idempotent_methods_when_the_budget_allows() {
        assert_eq!(with(&get(Outcome::Status(503)), LEFT), Decision::Retry);
        // Not listed, or not idempotent: relayed unchanged.
        assert_eq!(with(&get(Outcome::Status(500)), LEFT), Decision::Relay);
        assert_eq!(with(&get(Outcome::Status(200)), LEFT), Decision::Relay);
        assert_eq!(with(&post(Outcome::Status(503)), LEFT), Decision::Relay);
        // No attempt, deadline or node left: relayed too.
        for b in [
            Budget {
                attempts: 3,
                ..LEFT
            },
            Budget {
                deadline_passed: true,
                ..LEFT
            },
            Budget {
                candidate: false,
                ..LEFT
            },
        ] {
            assert_eq!(
                with(&get(Outcome::Status(503)), b),
                Decision::Relay,
                "{b:?}"
            );
        }
        // The body cannot be replayed.
        let big = Attempted {
            body_replayable: false,
            ..get(Outcome::Status(503))
        };
        assert_eq!(with(&big, LEFT), Decision::Relay);
    }

    #[test]
    fn the_budget_bounds_every_retry() {
        let cases = [
            (LEFT, true),
            (
                Budget {
                    attempts: 2,
                    ..LEFT
                },
                true,
            ),
            (
                Budget {
                    attempts: 3,
                    ..LEFT
                },
                false,
            ),
            (
                Budget {
                    attempts: 4,
                    ..LEFT
                },
                false,
            ),
            (
                Budget {
                    deadline_passed: true,
                    ..LEFT
                },
                false,
            ),
            (
                Budget {
                    candidate: false,
                    ..LEFT
                },
                false,
            ),
        ];
        for (b, retried) in cases {
            for o in [CONNECT, WRITE, READ_ERROR, READ_TIMEOUT] {
                let d = with(&get(o), b);
                let want = if retried {
                    Decision::Retry
                } else {
                    Decision::Fail(o.failure_status())
                };
                assert_eq!(d, want, "{o:?} {b:?}");
            }
        }
        // retries: 0 gives one attempt.
        let one = Budget {
            attempts: 1,
            max_attempts: 1,
            ..LEFT
        };
        assert_eq!(with(&get(CONNECT), one), Decision::Fail(502));
    }

    #[test]
    fn a_body_that_outgrew_the_replay_buffer_is_not_replayed() {
        for o in [WRITE, CLOSED, READ_ERROR, READ_TIMEOUT] {
            let a = Attempted {
                body_replayable: false,
                ..get(o)
            };
            assert_eq!(with(&a, LEFT), Decision::Fail(o.failure_status()));
            assert_eq!(with(&reused(a), LEFT), Decision::Fail(o.failure_status()));
        }
    }

    #[test]
    fn a_stale_pooled_connection_gets_one_free_retry_on_the_same_node() {
        assert_eq!(
            with(&reused(get(CLOSED)), LEFT),
            Decision::RetryStaleSameNode
        );
        // Free: neither the attempt budget nor the deadline nor the walk matter.
        let none = Budget {
            attempts: 1,
            max_attempts: 1,
            deadline_passed: true,
            candidate: false,
        };
        assert_eq!(
            with(&reused(get(CLOSED)), none),
            Decision::RetryStaleSameNode
        );
        // Once per request: then an ordinary failure.
        let again = Attempted {
            stale_retry_used: true,
            ..reused(get(CLOSED))
        };
        assert_eq!(with(&again, LEFT), Decision::Retry);
        assert_eq!(with(&again, none), Decision::Fail(502));
        // Only a connection the peer closed or reset, and only a reused one.
        assert_eq!(with(&get(CLOSED), LEFT), Decision::Retry);
        assert_eq!(with(&get(CLOSED), none), Decision::Fail(502));
        for o in [READ_ERROR, READ_TIMEOUT, WRITE, WRITE_TIMEOUT, CONNECT] {
            assert_ne!(
                with(&reused(get(o)), LEFT),
                Decision::RetryStaleSameNode,
                "{o:?}"
            );
        }
    }

    #[test]
    fn a_stale_connection_replays_a_non_idempotent_request_only_if_nothing_was_written() {
        assert_eq!(
            with(&reused(post(CLOSED)), LEFT),
            Decision::Fail(502),
            "a sent POST is not replayed"
        );
        let unsent = Attempted {
            request_written: false,
            ..reused(post(CLOSED))
        };
        assert_eq!(with(&unsent, LEFT), Decision::RetryStaleSameNode);
    }

    #[test]
    fn the_budget_is_gathered_only_when_a_retry_is_possible() {
        let asked = Cell::new(0);
        let count = |a: &Attempted<'_>| {
            asked.set(0);
            decide(a, || {
                asked.set(asked.get() + 1);
                LEFT
            });
            asked.get()
        };
        // The common case: a relayed response of an unlisted status.
        assert_eq!(count(&get(Outcome::Status(200))), 0);
        assert_eq!(count(&post(Outcome::Status(503))), 0);
        assert_eq!(count(&get(Outcome::MalformedHeader)), 0);
        assert_eq!(count(&get(Outcome::AfterHeader)), 0);
        assert_eq!(count(&post(READ_ERROR)), 0);
        assert_eq!(count(&reused(get(CLOSED))), 0);
        assert_eq!(count(&get(Outcome::Status(503))), 1);
        assert_eq!(count(&get(READ_ERROR)), 1);
        assert_eq!(count(&post(CONNECT)), 1);
    }
}

/// The `candidate` fact of [`Budget`] is `UpstreamRuntime::has_candidate`, which must agree
/// with the pick the retry then makes: `pick` returns a node exactly when `has_candidate` says
/// one is left, over node sets, weights (0 included), priority levels, health states and tried
/// sets. Otherwise a retry could be decided with no node to send it to, or refused with one.
#[cfg(test)]
mod walk_agreement {
    use crate::snapshot::{Snapshot, Tables};
    use crate::upstream::{UpstreamRuntime, Walk};
    use proptest::prelude::*;
    use std::fmt::Write as _;
    use std::sync::Arc;
    use weir_health::{Report, Source, Thresholds};

    /// The `type` (and chash `key`) lines of each algorithm.
    const LB: [&str; 4] = [
        "    type: roundrobin\n",
        "    type: chash\n    key: uri\n",
        "    type: least_conn\n",
        "    type: ewma\n",
    ];

    /// `(weight, priority, down)` of each node.
    type Nodes = Vec<(u32, i64, bool)>;

    fn upstream(lb: &str, nodes: &[(u32, i64, bool)], checks: bool) -> Arc<UpstreamRuntime> {
        let mut yaml = format!("upstreams:\n  - id: u\n{lb}    nodes:\n");
        for (i, (w, p, _)) in nodes.iter().enumerate() {
            let _ = writeln!(
                yaml,
                "      - {{host: 127.0.0.1, port: {}, weight: {w}, priority: {p}}}",
                10_000 + i
            );
        }
        if checks {
            yaml.push_str("    checks: {active: {type: tcp}}\n");
        }
        let loaded = weir_config::parse_yaml(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let snap = Snapshot::compile(&loaded.config.resources, &Tables::default());
        let up = Arc::clone(&snap.upstreams["upstreams/u"]);
        let down = Thresholds {
            successes: 1,
            http_failures: 1,
            tcp_failures: 1,
            timeouts: 1,
        };
        // Nodes are ordered by level in the compiled upstream; find each by its port.
        for (i, (_, _, is_down)) in nodes.iter().enumerate() {
            let node = up
                .nodes
                .iter()
                .find(|n| n.port as usize == 10_000 + i)
                .expect("node");
            if let (true, Some(t)) = (*is_down, &node.health) {
                t.report(Report::TcpFailure, &down, Source::Passive);
            }
        }
        up
    }

    fn copy(w: &Walk) -> Walk {
        Walk {
            level: w.level,
            tried: w.tried.clone(),
        }
    }

    const CHASH: usize = 1;

    fn nodes() -> impl Strategy<Value = Nodes> {
        prop::collection::vec((0u32..4, 0i64..3, any::<bool>()), 1..8)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Any walk state: a level (one past the last included) and any tried set.
        #[test]
        fn has_candidate_agrees_with_pick_for_any_walk(
            lb in 0..LB.len(),
            nodes in nodes(),
            checks in any::<bool>(),
            level in 0usize..4,
            tried in any::<u8>(),
            key in prop::collection::vec(any::<u8>(), 0..6),
        ) {
            let up = upstream(LB[lb], &nodes, checks);
            let walk = Walk {
                level: level.min(up.levels.len()),
                tried: (0..up.nodes.len() as u32).filter(|i| tried & (1 << i) != 0).collect(),
            };
            let candidate = up.has_candidate(&walk);
            let picked = up.pick(&key, &mut copy(&walk));
            prop_assert_eq!(candidate, picked.is_some(), "walk {:?} picked {:?}", walk, picked);
        }

        /// The walks a request makes: pick after pick, `has_candidate` asked before each.
        #[test]
        fn has_candidate_agrees_with_pick_along_a_request(
            lb in 0..LB.len(),
            nodes in nodes(),
            checks in any::<bool>(),
            key in prop::collection::vec(any::<u8>(), 0..6),
        ) {
            let up = upstream(LB[lb], &nodes, checks);
            let mut walk = Walk::default();
            for _ in 0..=up.nodes.len() + 1 {
                let candidate = up.has_candidate(&walk);
                let before = copy(&walk);
                let picked = up.pick(&key, &mut walk);
                prop_assert_eq!(candidate, picked.is_some(), "walk {:?} picked {:?}", before, picked);
                if picked.is_none() {
                    break;
                }
            }
        }
    }

    /// `chash` never picks a weight-0 node (it has no point on the ring), but
    /// `has_candidate` counts it: with the positive-weight nodes tried (or none at all) a retry
    /// is decided with no node to send it to. The effects: the failed attempt is reported to
    /// health as if retried, and a `retry_on_status` response is discarded where it should be
    /// relayed — the client gets 502 instead of the node's status. The fix belongs in
    /// `UpstreamRuntime::has_candidate` (or the selector's eligibility).
    #[test]
    fn chash_weight_zero_nodes_are_no_candidates() {
        let chash = LB[CHASH];
        let none = upstream(chash, &[(0, 0, false), (0, 0, false)], false);
        assert_eq!(none.pick(b"k", &mut Walk::default()), None);
        assert!(!none.has_candidate(&Walk::default()));
        let one = upstream(chash, &[(1, 0, false), (0, 0, false)], false);
        let mut walk = Walk::default();
        assert!(one.pick(b"k", &mut walk).is_some());
        assert_eq!(one.pick(b"k", &mut copy(&walk)), None);
        assert!(!one.has_candidate(&walk));
    }
}

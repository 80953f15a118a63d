//! Flow records in the kernel table (issue 14): how the rules that decide a packet's fate report it to
//! the daemon.
//!
//! - A **deny** (a policy's Deny rule, the end of a tier, no profile matched) goes to a tail chain of
//!   its own, `dl-<id>`: `limit rate R/second burst B packets log prefix "hpd1 <id>" group G`, then the
//!   drop or reject. Packets the rule does not match pay nothing; a denied packet pays the goto and the
//!   token bucket, and the daemon receives at most R per second (plus the burst) per deny rule, however
//!   hard the flood. The limit is a match: a rule `limit … log … drop` would not drop over the rate,
//!   hence the two rules.
//! - A **tracked allow** (policy Allow rules of the preDNAT, normal and forward stages, a profile's
//!   allow, forwarded traffic without applyOnForward policy, the failsafe ports) logs its packet
//!   without a limit: it is the first packet of a new connection (established ones are accepted before
//!   any policy), so the daemon sees every allowed connection, with its interface, once; conntrack's
//!   end-of-connection event (matched by the tuple) then gives the connection's counts. No conntrack
//!   mark: `ct mark set ct mark | BIT` loads the mark first, and that load ends the rule for a packet
//!   without a conntrack entry (neighbour discovery, anything `notrack`ed), so the allow would no
//!   longer match it (`tests/flows.rs`: `allow_rules_still_match_packets_without_conntrack`).
//! - An **untracked allow** (doNotTrack policy) runs for every packet: it goes to `ul-<id>`, a
//!   rate-limited sample to NFLOG, then the allow.
//!
//! The id is the flow id of the rule's origin ([`names::flow_id`]): the same for the same policy rule
//! however the files move, so reloads keep the rules (and their counters) of unchanged policies. The
//! ruleset lists every id with its origin (`Origins::flow_ids`).

use super::{names, Compiler, Rules};
use crate::ruleset::{Action, Match, OriginId, Rule, Verdict};
use crate::settings::Flows;

/// What the rules need to know to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FlowRules {
    group: u16,
    rate: u32,
    burst: u32,
}

impl FlowRules {
    pub(super) fn of(flows: &Flows) -> Option<FlowRules> {
        flows.enabled.then(|| FlowRules {
            group: flows.nflog_group,
            rate: flows.log_rate.max(1),
            burst: flows.burst(),
        })
    }
}

impl Compiler<'_> {
    /// The flow id of origin `o`, the same for every rule of that origin.
    pub(super) fn flow_id(&mut self, o: OriginId) -> u64 {
        if let Some(id) = self.flow_id_of.get(&o) {
            return *id;
        }
        let origin = &self.origins[o.0 as usize];
        // The same origin pushed twice (origins are not interned) shares its id; another origin that
        // meets it on one id (a 64-bit hash: practically never) takes the next salt.
        let (salt, id, taken) = (0u32..)
            .map(|salt| (salt, names::flow_id(origin, salt)))
            .map(|(salt, id)| (salt, id, self.flow_ids.get(&id).copied()))
            .find(|(_, _, by)| by.is_none_or(|b| self.origins[b.0 as usize] == *origin))
            .expect("a free id");
        if let Some(r) = &mut self.recording {
            r.flow_id(id, o, taken.is_none(), salt);
        }
        if taken.is_none() {
            self.flow_ids.insert(id, o);
        }
        self.flow_id_of.insert(o, id);
        id
    }

    pub(super) fn nflog(&mut self, f: FlowRules, o: OriginId) -> Action {
        Action::NfLog {
            group: f.group,
            prefix: names::flow_prefix(self.flow_id(o)),
        }
    }

    pub(super) fn limit(f: FlowRules) -> Match {
        Match::Limit {
            rate: f.rate,
            burst: f.burst,
        }
    }

    /// Chain `name` (made once per compile): origin `o`'s rate-limited NFLOG report, then `then` when
    /// given (else back to whoever called). The tails of denies, untracked allows and shadow verdicts.
    pub(super) fn log_tail(&mut self, f: FlowRules, name: &str, o: OriginId, then: Option<Rule>) {
        if !self.tails.insert(name.to_owned()) {
            return;
        }
        if let Some(r) = &mut self.recording {
            r.tail(name);
        }
        let mut rules = Rules::default();
        let log = self.nflog(f, o);
        rules.push(
            Rule {
                matches: vec![Self::limit(f)],
                actions: vec![log],
                ..Rule::default()
            },
            o,
        );
        if let Some(then) = then {
            rules.push(then, o);
        }
        self.push_chain(name.to_owned(), None, rules);
    }

    /// How a deny of origin `o` ends: `verdict`, or (flow records) a goto to its tail chain, which
    /// reports the packet (rate-limited) and then does `verdict`.
    pub(super) fn deny_end(&mut self, o: OriginId, verdict: Verdict) -> Verdict {
        let Some(f) = self.flows else {
            return verdict;
        };
        let name = names::deny_log_chain(self.flow_id(o));
        let then = Rule {
            verdict: Some(verdict),
            ..Rule::default()
        };
        self.log_tail(f, &name, o, Some(then));
        Verdict::Goto(name)
    }

    /// The actions of a tracked allow of origin `o` that sets the `accept` mark: with flow records, the
    /// connection is marked and its first packet reported first.
    pub(super) fn allow_actions(&mut self, o: OriginId, accept: u32) -> Vec<Action> {
        match self.flows {
            None => vec![Action::MarkOr(accept)],
            Some(f) => vec![self.nflog(f, o), Action::MarkOr(accept)],
        }
    }

    /// An untracked allow of origin `o` (flow records only): the goto to its tail chain, which samples
    /// the packet to NFLOG, sets `accept` and returns (to the HostEndpoint's chain, which called the
    /// policy's).
    pub(super) fn untracked_allow(&mut self, o: OriginId, accept: u32) -> Option<Verdict> {
        let f = self.flows?;
        let name = names::untracked_log_chain(self.flow_id(o));
        let then = Rule {
            actions: vec![Action::MarkOr(accept)],
            verdict: Some(Verdict::Return),
            ..Rule::default()
        };
        self.log_tail(f, &name, o, Some(then));
        Some(Verdict::Goto(name))
    }

    /// Failsafe accepts (of the preDNAT and filter stages) that report the connections they accept.
    pub(super) fn report_accepts(&mut self, mut rules: Rules) -> Rules {
        let Some(f) = self.flows else {
            return rules;
        };
        for (r, o) in rules.rules.iter_mut().zip(&rules.origins) {
            if r.verdict == Some(Verdict::Accept) {
                let log = self.nflog(f, *o);
                r.actions.push(log);
            }
        }
        rules
    }
}

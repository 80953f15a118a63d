//! Staged policies in the kernel (issue 14): the would-be set evaluated beside the real one.
//!
//! The would-be set is the configuration with every StagedGlobalNetworkPolicy enforced
//! (`Config::would_be`: a staged `Set` replaces the GlobalNetworkPolicy of its name or joins the
//! others, a staged `Delete` takes it out), resolved for this node like the real one (`NodeView::staged`).
//! Where a HostEndpoint's ordered list for a stage and direction is the same in both, nothing is added:
//! staged policies cost nothing there. Where it differs, the HostEndpoint's chain evaluates the
//! would-be list first, in *shadow chains* (`spi-NAME`, `spo-NAME`, one per policy of any would-be list)
//! whose rules match like the policy's but only mark the packet:
//!
//! - Allow and Deny set the DONE mark and go to `sl-<id>`, which reports the would-be verdict to NFLOG
//!   (rate-limited) and returns to the HostEndpoint's chain; Pass sets the PASSED mark and returns; Log
//!   does nothing (the enforced Log rule logs).
//! - The HostEndpoint's chain jumps to each shadow chain while neither mark is set, clears PASSED between
//!   tiers, and at the end of a would-be tier that drops (and at the would-be default of the normal and
//!   forward stages: a profile's allow, no policy, forwarded traffic without applyOnForward policy)
//!   sets DONE and jumps to that default's `sl-<id>` (a jump: a goto into a chain that returns would
//!   return from the HostEndpoint's chain and skip the enforced policies).
//! - No shadow rule ever accepts or drops: the enforced evaluation that follows decides, as it would
//!   without staged policies. The marks are the third and fourth usable bits of the mark mask.
//!
//! The shadow rules of staged policies carry counters (`status --counters` shows them apart, the
//! metrics label them `staged="true"`); the shadow copies of enforced policies do not (they would count
//! the same packets twice). The shadow section runs once per new connection on the HostEndpoints where
//! the sets differ (established packets are accepted before it), and for every packet in the untracked
//! stage when a staged doNotTrack policy makes the difference there.

use std::sync::Arc;

use super::{names, Compiler, Rules, DEFAULT_ALLOW_PROFILE};
use crate::config::model::{Action as RuleAction, Config};
use crate::resolve::{tier_groups, ActiveEndpoint, Dir, NodeView, Stage};
use crate::ruleset::{Action, Kind, Match, OriginId, Rule, Verdict};

impl<'a> Compiler<'a> {
    /// The would-be configuration, view and HostEndpoint of `ep`, when there are staged policies.
    pub(super) fn would_be_endpoint(
        &self,
        ep: &ActiveEndpoint,
    ) -> Option<(&'a Config, &'a NodeView, &'a ActiveEndpoint)> {
        let (config, view) = self.staged_view?;
        let w = view
            .endpoints
            .iter()
            .chain(view.wildcard.iter())
            .find(|w| w.hep == ep.hep)?;
        Some((config, view, w))
    }

    /// The shadow evaluation of `ep`'s chain for `stage` and `dir`, when the would-be list differs.
    pub(super) fn shadow_section(
        &mut self,
        ep: &ActiveEndpoint,
        stage: Stage,
        dir: Dir,
        rules: &mut Rules,
    ) {
        let Some((wc, wv, w)) = self.would_be_endpoint(ep) else {
            return;
        };
        let (done, passed) = (self.view.settings.mark_done, self.view.settings.mark_passed);
        if done == 0 || passed == 0 {
            // No room in the mark mask: refused by the lint (`analysis::staged`).
            return;
        }
        let enforced = ep.policies.get(stage, dir);
        let would = w.policies.get(stage, dir);
        let same = enforced.len() == would.len()
            && enforced.iter().zip(would).all(|(&e, &s)| {
                wc.policies[s].staged.is_none()
                    && self.config.policies[e].name == wc.policies[s].name
            });
        let same_default = match stage {
            Stage::Forward => ep.policies.has_forward_policy() == w.policies.has_forward_policy(),
            _ => true,
        };
        if same && same_default {
            return;
        }
        let undecided = Match::Mark {
            mask: done | passed,
            value: 0,
        };
        let origin = |c: &mut Self, kind: Kind| {
            let mut o = c.endpoint_origin(kind, ep, stage, dir);
            o.shadow = true;
            o
        };
        let structure = origin(self, Kind::Structure);
        let structure = self.origin(structure);
        rules.push(
            Rule {
                actions: vec![Action::MarkAnd(!(done | passed))],
                ..Rule::default()
            },
            structure,
        );
        for (i, group) in tier_groups(wc, would).iter().enumerate() {
            let tier: Arc<str> = Arc::from(group.name);
            if i > 0 {
                let mut o = origin(self, Kind::Tier);
                o.tier = Some(tier.clone());
                let o = self.origin(o);
                rules.push(
                    Rule {
                        actions: vec![Action::MarkAnd(!passed)],
                        ..Rule::default()
                    },
                    o,
                );
            }
            for &p in group.policies {
                let chain = self.shadow_policy_chain(wc, wv, p, dir);
                let policy = &wc.policies[p];
                let mut o = origin(self, Kind::Tier);
                o.tier = Some(tier.clone());
                o.policy = Some(Arc::from(policy.name.as_str()));
                o.staged = policy.staged.is_some();
                o.at = Some(super::source_pos(&policy.pos));
                let o = self.origin(o);
                rules.push(
                    Rule {
                        matches: vec![undecided.clone()],
                        verdict: Some(Verdict::Jump(chain)),
                        ..Rule::default()
                    },
                    o,
                );
            }
            if group.ends_with_drop(stage) {
                let mut o = origin(self, Kind::EndOfTier);
                o.tier = Some(tier);
                let o = self.origin(o);
                self.shadow_default(o, undecided.clone(), done, rules);
            }
        }
        let default = match stage {
            Stage::Forward if !w.policies.has_forward_policy() => {
                Some(origin(self, Kind::NoPolicy))
            }
            Stage::Normal => {
                let allow = w.profiles.iter().find(|p| *p == DEFAULT_ALLOW_PROFILE);
                Some(match allow {
                    Some(profile) => {
                        let mut o = origin(self, Kind::Profile);
                        o.profile = Some(Arc::from(profile.as_str()));
                        o
                    }
                    None => origin(self, Kind::NoPolicy),
                })
            }
            _ => None,
        };
        if let Some(o) = default {
            let o = self.origin(o);
            let only_done = Match::Mark {
                mask: done,
                value: 0,
            };
            self.shadow_default(o, only_done, done, rules);
        }
    }

    /// A would-be default of the HostEndpoint's chain: while undecided, set DONE and report it.
    fn shadow_default(&mut self, o: OriginId, when: Match, done: u32, rules: &mut Rules) {
        let report = self.shadow_report(o);
        rules.push(
            Rule {
                matches: vec![when],
                actions: vec![Action::MarkOr(done)],
                verdict: report.map(Verdict::Jump),
                ..Rule::default()
            },
            o,
        );
    }

    /// The chain that reports would-be verdict `o` (flow records on): a rate-limited NFLOG message,
    /// then back to whoever called.
    fn shadow_report(&mut self, o: OriginId) -> Option<String> {
        let f = self.flows?;
        let name = names::shadow_log_chain(self.flow_id(o));
        self.log_tail(f, &name, o, None);
        Some(name)
    }

    /// What a shadow rule does once it matches: the would-be verdict's mark and report.
    pub(super) fn shadow_verdict_parts(
        &mut self,
        action: RuleAction,
        origin: OriginId,
    ) -> (Vec<Action>, Option<Verdict>) {
        match action {
            RuleAction::Allow | RuleAction::Deny => {
                let end = match self.shadow_report(origin) {
                    Some(chain) => Verdict::Goto(chain),
                    None => Verdict::Return,
                };
                // In the shadow pass `accept` is the DONE mark (see `shadow_policy_chain`).
                (vec![Action::MarkOr(self.accept)], Some(end))
            }
            RuleAction::Pass => (vec![Action::MarkOr(self.pass)], Some(Verdict::Return)),
            RuleAction::Log => (Vec::new(), None),
        }
    }

    /// The shadow chain of the would-be set's policy `p` in direction `dir`, made once: the policy's
    /// rules compiled with the would-be configuration and view, with the DONE and PASSED marks in
    /// place of ACCEPT and PASS.
    fn shadow_policy_chain(
        &mut self,
        wc: &'a Config,
        wv: &'a NodeView,
        p: usize,
        dir: Dir,
    ) -> String {
        let policy = &wc.policies[p];
        let name = names::shadow_policy_chain(dir, &policy.name);
        if !self.policy_chains.insert(name.clone()) {
            return name;
        }
        let rules = match dir {
            Dir::Ingress => &policy.ingress,
            Dir::Egress => &policy.egress,
        };
        let saved = (self.config, self.view, self.accept, self.pass);
        std::mem::swap(&mut self.policy_names, &mut self.staged_policy_names);
        self.config = wc;
        self.view = wv;
        self.accept = saved.1.settings.mark_done;
        self.pass = saved.1.settings.mark_passed;
        self.shadow = true;
        let mut out = Rules::default();
        for (i, r) in rules.iter().enumerate() {
            self.compile_rule(&name, p, dir, i, r, &mut out);
        }
        (self.config, self.view, self.accept, self.pass) = saved;
        std::mem::swap(&mut self.policy_names, &mut self.staged_policy_names);
        self.shadow = false;
        self.push_chain(name.clone(), None, out);
        name
    }
}

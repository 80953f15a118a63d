//! Staged policies (issue 14): what `check` says about them.
//!
//! - **Lockout**: the would-be set (every staged policy enforced) is put through the lockout guard; a
//!   management flow it would block is a warning at the staged policy that blocks it (the configuration
//!   itself is fine: staged policies never change a verdict), an error with `check --strict`. Enforcing
//!   that staged policy as it is would be refused.
//! - **Room for the marks**: the staged evaluation needs two packet-mark bits beside hostpolicyd's two;
//!   a mark mask with fewer than four usable bits refuses staged policies (error).
//! - **A staged deletion of nothing**: `stagedAction: Delete` naming no GlobalNetworkPolicy changes
//!   nothing (warning).

use crate::config::diag::{Diagnostic, Severity};
use crate::config::model::{Config, StagedAction};
use crate::resolve::{Interface, NodeView};

/// `enforced`: what the lockout guard said of the enforced configuration (the pipeline's one run of it).
pub fn lint(
    config: &Config,
    view: &NodeView,
    interfaces: &[Interface],
    enforced: &[Diagnostic],
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let Some(first) = config.staged.first() else {
        return out;
    };
    if view.settings.mark_done == 0 || view.settings.mark_passed == 0 {
        out.push(Diagnostic::error(
            first.pos.clone(),
            format!(
                "StagedGlobalNetworkPolicy '{}': the mark mask (FelixConfiguration nftablesMarkMask or iptablesMarkMask) has fewer than four usable bits (kube-proxy's 0x4000 and 0x8000 left out); hostpolicyd uses two and the staged evaluation two more: widen the mask or remove the staged policies",
                first.name
            ),
        ));
    }
    for s in &config.staged {
        if s.staged == Some(StagedAction::Delete)
            && !config.policies.iter().any(|p| p.name == s.name)
        {
            out.push(Diagnostic::warning(
                s.pos.clone(),
                format!(
                    "StagedGlobalNetworkPolicy '{}' stages the deletion of GlobalNetworkPolicy '{}', which does not exist: it changes nothing",
                    s.name, s.name
                ),
            ));
        }
    }
    if let Some((would, would_view)) = view.staged() {
        for d in crate::analysis::lockout::check(would, would_view, interfaces) {
            if d.severity != Severity::Error || enforced.contains(&d) {
                continue;
            }
            let mut message = d
                .message
                .split("; the configuration is refused")
                .next()
                .unwrap_or(&d.message)
                .to_string();
            for s in config
                .staged
                .iter()
                .filter(|s| s.staged == Some(StagedAction::Set))
            {
                message = message.replace(
                    &format!("GlobalNetworkPolicy '{}'", s.name),
                    &format!("StagedGlobalNetworkPolicy '{}'", s.name),
                );
            }
            // At the staged policy that blocks the flow: the one the lockout guard names, else the
            // first that blocks it on its own (a staged deletion is never named).
            let culprit = config
                .staged
                .iter()
                .find(|s| message.contains(&format!("'{}'", s.name)))
                .or_else(|| {
                    config.staged.iter().find(|s| {
                        let alone = config.with_staged(std::slice::from_ref(s));
                        let view = crate::resolve::resolve(&alone, &view.node, interfaces);
                        crate::analysis::lockout::check(&alone, &view, interfaces)
                            .iter()
                            .any(|e| e.severity == Severity::Error && !enforced.contains(e))
                    })
                });
            let (pos, name) = match culprit {
                Some(s) => (
                    s.pos.clone(),
                    format!("StagedGlobalNetworkPolicy '{}'", s.name),
                ),
                None => (
                    d.pos.clone().unwrap_or_else(|| first.pos.clone()),
                    "the staged policies".to_string(),
                ),
            };
            out.push(Diagnostic::warning(
                pos,
                format!(
                    "{name} would lock out management access if enforced: {message}; enforcing it as it is would be refused"
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::config::load::load_sources;

    fn build(yaml: &str) -> Result<Vec<String>, Vec<String>> {
        let loaded = load_sources(&[("a.yaml".to_string(), yaml.to_string())]);
        let ifaces = [crate::resolve::Interface {
            name: "eth0".into(),
            addrs: vec!["192.0.2.1".parse().unwrap()],
        }];
        match crate::pipeline::build(loaded, "node1", &ifaces, "hostpolicy", false) {
            // The staged lints only (the HostEndpoint has no egress policy: another lint).
            Ok(c) => Ok(c
                .warnings
                .iter()
                .map(|d| d.to_string())
                .filter(|d| d.contains("Staged"))
                .collect()),
            Err(i) => Err(i.diagnostics.iter().map(|d| d.to_string()).collect()),
        }
    }

    const BASE: &str = "
- {apiVersion: projectcalico.org/v3, kind: HostEndpoint, metadata: {name: h, labels: {role: web}}, spec: {node: node1, interfaceName: eth0}}
- {apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {name: allow-ssh}, spec: {selector: all(), ingress: [{action: Allow, protocol: TCP, source: {nets: [198.51.100.0/24]}, destination: {ports: [2222]}}]}}
- {apiVersion: hostpolicy/v1, kind: ManagementAccess, metadata: {name: admin}, spec: {sources: [198.51.100.0/24], ports: [{protocol: TCP, port: 2222}]}}
";

    #[test]
    fn a_staged_policy_that_would_lock_out_management_is_a_warning_at_it() {
        assert_eq!(build(BASE), Ok(vec![]));
        let staged = format!(
            "{BASE}- {{apiVersion: projectcalico.org/v3, kind: StagedGlobalNetworkPolicy, metadata: {{name: lockdown}}, spec: {{order: 1, selector: all(), ingress: [{{action: Deny}}]}}}}\n"
        );
        let warnings = build(&staged).expect("staged policies never refuse a configuration");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("a.yaml:5:3: warning: StagedGlobalNetworkPolicy 'lockdown' would lock out management access if enforced: ManagementAccess 'admin': TCP port 2222 from 198.51.100.0/24")
                && warnings[0].contains("StagedGlobalNetworkPolicy 'lockdown'")
                && warnings[0].ends_with("enforcing it as it is would be refused"),
            "{warnings:?}"
        );
        // A staged deletion of the policy that lets management in: the same, at the staged deletion.
        let delete = format!(
            "{BASE}- {{apiVersion: projectcalico.org/v3, kind: StagedGlobalNetworkPolicy, metadata: {{name: allow-ssh}}, spec: {{stagedAction: Delete}}}}\n"
        );
        let warnings = build(&delete).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("would lock out management access"),
            "{warnings:?}"
        );
        // Deleting what does not exist changes nothing: said so.
        let nothing = format!(
            "{BASE}- {{apiVersion: projectcalico.org/v3, kind: StagedGlobalNetworkPolicy, metadata: {{name: gone}}, spec: {{stagedAction: Delete}}}}\n"
        );
        let warnings = build(&nothing).unwrap();
        assert!(
            warnings.iter().any(|w| w.contains(
                "stages the deletion of GlobalNetworkPolicy 'gone', which does not exist"
            )),
            "{warnings:?}"
        );
    }

    /// `explain` prints the staged verdict beside the enforced one.
    #[test]
    fn explain_gives_the_staged_verdict() {
        use crate::analysis::explain::{explain, Packet, Path, Verdict};
        let yaml = "
- {apiVersion: projectcalico.org/v3, kind: HostEndpoint, metadata: {name: h}, spec: {node: node1, interfaceName: eth0, expectedIPs: [192.0.2.1]}}
- {apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {name: allow-web}, spec: {selector: all(), ingress: [{action: Allow, protocol: TCP, destination: {ports: [8080]}}]}}
- {apiVersion: projectcalico.org/v3, kind: StagedGlobalNetworkPolicy, metadata: {name: block-web}, spec: {order: 1, selector: all(), ingress: [{action: Deny, protocol: TCP, destination: {ports: [8080]}}]}}
";
        let config = load_sources(&[("a.yaml".to_string(), yaml.to_string())]).config;
        let view = crate::resolve::resolve(&config, "node1", &[]);
        let mut p = Packet::new(
            Path::Inbound {
                iface: "eth0".into(),
            },
            "192.0.2.200".parse().unwrap(),
            "192.0.2.1".parse().unwrap(),
            6,
        );
        p.dport = Some(8080);
        let e = explain(&config, &view, &p);
        assert_eq!(e.verdict, Verdict::Allow);
        let s = e.staged.as_ref().expect("a staged verdict");
        assert_eq!(s.verdict, Verdict::Drop);
        assert!(s.by_staged_policy);
        assert_eq!(s.decided_by.policy.as_deref(), Some("block-web"));
        assert!(
            e.to_string().contains("staged: DROP if the staged policies were enforced, decided by: [normal] staged policy block-web ingress rule 1: Deny (a.yaml:4:144)"),
            "{e}"
        );
        // Without staged policies: no staged verdict.
        let plain = load_sources(&[(
            "a.yaml".to_string(),
            yaml.lines().take(3).collect::<Vec<_>>().join("\n"),
        )])
        .config;
        let view = crate::resolve::resolve(&plain, "node1", &[]);
        assert!(explain(&plain, &view, &p).staged.is_none());
    }

    #[test]
    fn staged_policies_need_room_in_the_mark_mask() {
        let narrow = format!(
            "{BASE}- {{apiVersion: projectcalico.org/v3, kind: FelixConfiguration, metadata: {{name: default}}, spec: {{nftablesMarkMask: 0x30000}}}}\n\
             - {{apiVersion: projectcalico.org/v3, kind: StagedGlobalNetworkPolicy, metadata: {{name: s}}, spec: {{selector: all()}}}}\n"
        );
        let errors = build(&narrow).expect_err("refused");
        assert!(
            errors
                .iter()
                .any(|e| e.contains("fewer than four usable bits")),
            "{errors:?}"
        );
    }
}

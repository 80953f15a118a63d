// Spec §7 T1–T8 (spec/calico-semantics.md), each configuration written once: in `tests/golden/tN/`,
// which the golden test renders. The end-to-end scenarios, the kernel-vs-explain agreement test and
// `explain`'s unit tests (which `include!` this file) read them from there. A row's variant is an edit
// of its scenario, named here ([`t3_without_order`], ...), so every test that runs the row runs the same
// configuration.
//
// Addresses are the golden files' (tests/golden/README.md): node eth0 192.0.2.1, eth1 198.51.100.45;
// T5's node1 198.51.100.4 and node2 .5; T8's server is the node (192.0.2.1), its client 192.0.2.200.
//
// Self-contained (std only) so that `src/` can include it.

use std::path::PathBuf;

/// One scenario's configuration files, `(name, text)` in name order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    pub case: String,
    pub files: Vec<(String, String)>,
}

impl Scenario {
    /// Every `*.yaml` of `tests/golden/<case>/`.
    pub fn load(case: &str) -> Scenario {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(case);
        let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("directory entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .map(|p| {
                let text =
                    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, text)
            })
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{}: no configuration", dir.display());
        Scenario {
            case: case.to_string(),
            files,
        }
    }

    /// The scenario with `from` replaced by `to`; `from` must occur exactly once in its files, so that
    /// a golden file that changes cannot silently turn a variant into the base case.
    pub fn with(mut self, from: &str, to: &str) -> Scenario {
        let hits: usize = self
            .files
            .iter()
            .map(|(_, t)| t.matches(from).count())
            .sum();
        assert_eq!(
            hits, 1,
            "{}: {from:?} occurs {hits} times in tests/golden/{}/",
            self.case, self.case
        );
        for (_, text) in &mut self.files {
            if text.contains(from) {
                *text = text.replacen(from, to, 1);
            }
        }
        self
    }

    /// `(name, text)` pairs, as the harness writes them into a configuration directory.
    pub fn files(&self) -> Vec<(&str, &str)> {
        self.files
            .iter()
            .map(|(n, t)| (n.as_str(), t.as_str()))
            .collect()
    }
}

/// T1: a HostEndpoint on eth0 with no policy.
pub fn t1() -> Scenario {
    Scenario::load("t1")
}

/// T1's HostEndpoint with `profiles` (T1's and T4's variants; other tests' HostEndpoint).
fn with_profiles(s: Scenario, profiles: &[&str]) -> Scenario {
    if profiles.is_empty() {
        return s;
    }
    s.with(
        "expectedIPs: [192.0.2.1]}",
        &format!(
            "expectedIPs: [192.0.2.1], profiles: [{}]}}",
            profiles.join(", ")
        ),
    )
}

/// T1's HostEndpoint with `profiles`.
pub fn t1_with_profiles(profiles: &[&str]) -> Scenario {
    with_profiles(t1(), profiles)
}

/// T1 variant: the HostEndpoint has the `projectcalico-default-allow` profile.
pub fn t1_default_allow() -> Scenario {
    t1_with_profiles(&["projectcalico-default-allow"])
}

/// T2: allow-http, its types inferred as [Ingress].
pub fn t2() -> Scenario {
    Scenario::load("t2")
}

/// T2 variant a: `types: [Ingress, Egress]` and no egress rule.
pub fn t2_types_ingress_egress() -> Scenario {
    t2().with(
        "spec: {selector: \"role == 'web'\", ingress:",
        "spec: {selector: \"role == 'web'\", types: [Ingress, Egress], ingress:",
    )
}

/// T2 variant b: an egress Allow rule (types inferred as both).
pub fn t2_egress_rule() -> Scenario {
    t2().with(
        "destination: {ports: [80]}}]}",
        "destination: {ports: [80]}}], egress: [{action: Allow}]}",
    )
}

/// T3: a-deny (order 10), b-allow (order 20), m-deny (no order).
pub fn t3() -> Scenario {
    Scenario::load("t3")
}

/// T3 row 3: b-allow without an order (a tie with m-deny at +∞, broken by name).
pub fn t3_without_order() -> Scenario {
    t3().with("{order: 20, selector", "{selector")
}

/// T3 row 4: the allow policy without an order and named z-allow (sorts after m-deny).
pub fn t3_z_allow() -> Scenario {
    t3_without_order().with("name: b-allow}", "name: z-allow}")
}

/// T4: p1 (Log, then Pass for 192.0.2.0/24), p2 (Allow TCP 80).
pub fn t4() -> Scenario {
    Scenario::load("t4")
}

/// T4 with the `projectcalico-default-allow` profile on the HostEndpoint.
pub fn t4_default_allow() -> Scenario {
    with_profiles(t4(), &["projectcalico-default-allow"])
}

/// T5: Calico's node-port how-to (preDNAT allow-nodeport, allow-cluster-internal-ingress-only,
/// allow-outbound-external; node1-eth0 and node2-eth0).
pub fn t5() -> Scenario {
    Scenario::load("t5")
}

const T5_NODE1_SPEC: &str = "spec: {interfaceName: eth0, node: node1, expectedIPs: [198.51.100.4]}";
const T5_NODE1_META: &str = "metadata: {name: node1-eth0, labels: {kubernetes-host: ingress}}";
const T5_NODEPORT_SELECTOR: &str =
    "selector: has(kubernetes-host)\n    ingress:\n      - {action: Allow, protocol: TCP";

/// T5 row 9: node1-eth0 without expectedIPs.
pub fn t5_without_expected_ips() -> Scenario {
    t5().with(T5_NODE1_SPEC, "spec: {interfaceName: eth0, node: node1}")
}

/// T5 row 10: node1-eth0 without the kubernetes-host label.
pub fn t5_without_label() -> Scenario {
    t5().with(T5_NODE1_META, "metadata: {name: node1-eth0}")
}

/// T5's node-selective variant: node1-eth0 also labelled `nodeport-external-ingress: "true"`, and
/// allow-nodeport's selector `selector` (the how-to's own `nodeport-external-ingress: true` is invalid).
pub fn t5_node_selective(selector: &str) -> Scenario {
    t5().with(
        T5_NODE1_META,
        "metadata: {name: node1-eth0, labels: {kubernetes-host: ingress, nodeport-external-ingress: \"true\"}}",
    )
    .with(
        T5_NODEPORT_SELECTOR,
        &format!(
            "selector: \"{selector}\"\n    ingress:\n      - {{action: Allow, protocol: TCP"
        ),
    )
}

/// T6: pd-31852, a preDNAT applyOnForward Allow to port 31852.
pub fn t6() -> Scenario {
    Scenario::load("t6")
}

/// T6's policy with `applyOnForward: true` replaced by `replacement` (`""` to drop it).
pub fn t6_apply_on_forward(replacement: &str) -> Scenario {
    t6().with("applyOnForward: true, ", replacement)
}

/// T6's policy with `extra` fields added to its spec (`egress: [...]`, `doNotTrack: true`...).
pub fn t6_with(extra: &str) -> Scenario {
    t6().with("{preDNAT: true, ", &format!("{{{extra}, preDNAT: true, "))
}

/// T7: a router, HostEndpoint on eth1 only, allow-ssh-maintenance (applyOnForward egress TCP 22).
pub fn t7() -> Scenario {
    Scenario::load("t7")
}

/// T7 without applyOnForward.
pub fn t7_without_apply_on_forward() -> Scenario {
    t7().with(" applyOnForward: true,", "")
}

/// T8: memcached-server, doNotTrack, written symmetrically; the server is node1's eth0.
pub fn t8() -> Scenario {
    Scenario::load("t8")
}

/// T8 row 4: without the egress rule that lets the replies out.
pub fn t8_without_egress() -> Scenario {
    t8().with(
        "    egress:  [{action: Allow, protocol: TCP, source: {ports: [12211]}, destination: {selector: \"memcached == 'client'\"}}]\n",
        "",
    )
}

/// T8 row 6: the server's HostEndpoint is the wildcard one (`interfaceName: "*"`).
pub fn t8_wildcard() -> Scenario {
    t8().with(
        "spec: {node: node1, interfaceName: eth0,",
        "spec: {node: node1, interfaceName: \"*\",",
    )
}

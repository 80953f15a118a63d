//! The accept/reject corpus of `hostpolicyd check` (spec §7 "T12"; the spec names it but gives no table).
//!
//! Each case is one small file. Reject cases list every diagnostic expected, with its exact line, its
//! column (0 = not asserted) and a distinctive part of the message; a case fails if any diagnostic is
//! missing *or* if there is one more than listed (double reports are bugs too). Accept cases expect no
//! diagnostic at all unless a warning is listed.
//!
//! Most bodies are wrapped in a fixed header so that line numbers are easy to read:
//!
//! ```text
//! 1 apiVersion: ...
//! 2 kind: <Kind>
//! 3 metadata: {name: ...}
//! 4 spec:
//! 5   <first body line, indented by the wrapper: a body column c is file column c + 2>
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use hostpolicyd::config::diag::{Diagnostic, Severity};
use hostpolicyd::config::load::{config_files, load_dir, load_files, load_sources, Loaded};
use hostpolicyd::config::model::{proto, Action, NamespaceScope, Port};

#[derive(Clone, Copy, Debug)]
enum Wrap {
    Gnp,
    /// A StagedGlobalNetworkPolicy named `p` (issue 14).
    Staged,
    Tier,
    Hep,
    Gns,
    Felix,
    Check,
    /// The body is the whole file.
    Raw,
}

#[derive(Clone, Copy, Debug)]
enum Exp {
    /// Error at (line, column; 0 = any column) whose message contains the text.
    E(u32, u32, &'static str),
    /// Warning, same fields.
    W(u32, u32, &'static str),
}
use Exp::{E, W};

struct Case {
    /// Spec section the case comes from.
    section: &'static str,
    wrap: Wrap,
    body: &'static str,
    expect: &'static [Exp],
}

const fn case(
    section: &'static str,
    wrap: Wrap,
    body: &'static str,
    expect: &'static [Exp],
) -> Case {
    Case {
        section,
        wrap,
        body,
        expect,
    }
}

fn wrap(w: Wrap, body: &str) -> String {
    let header = match w {
        Wrap::Gnp => "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec:\n",
        Wrap::Staged => "apiVersion: projectcalico.org/v3\nkind: StagedGlobalNetworkPolicy\nmetadata: {name: p}\nspec:\n",
        Wrap::Tier => "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: platform}\nspec:\n",
        Wrap::Hep => "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: h}\nspec:\n",
        Wrap::Gns => "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: s}\nspec:\n",
        Wrap::Felix => "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec:\n",
        Wrap::Check => "apiVersion: hostpolicy/v1\nkind: ConnectivityCheck\nmetadata: {name: c}\nspec:\n",
        Wrap::Raw => return body.to_owned(),
    };
    let mut text = header.to_owned();
    for line in body.lines() {
        text.push_str("  ");
        text.push_str(line);
        text.push('\n');
    }
    text
}

#[rustfmt::skip]
const CASES: &[Case] = &[
    // ── issue 14: StagedGlobalNetworkPolicy (Calico's validation: stagedAction Set | Delete) ──────
    case("staged", Wrap::Staged, "selector: all()\ningress: [{action: Deny}]", &[]),
    case("staged", Wrap::Staged, "stagedAction: Set\nselector: all()\ningress: [{action: Allow}]", &[]),
    case("staged", Wrap::Staged, "stagedAction: Delete", &[]),
    case("staged", Wrap::Staged, "stagedAction: Delete\ntier: default", &[]),
    case("staged", Wrap::Staged, "stagedAction: Delete\nselector: all()\ningress: [{action: Allow}]",
        &[E(6, 3, "with `stagedAction: Delete` stages the removal of the GlobalNetworkPolicy of its name and takes no `selector`"),
          E(7, 3, "takes no `ingress`")]),
    case("staged", Wrap::Staged, "stagedAction: Delete\ningress: []\ndoNotTrack: false", &[]),
    case("staged", Wrap::Staged, "stagedAction: delete", &[E(5, 17, "`stagedAction` is `Set` or `Delete`, not `delete`: write `Delete`")]),
    case("staged", Wrap::Staged, "selector: all()\ningress: [{action: Jump}]", &[E(6, 22, "")]),
    case("staged", Wrap::Staged, "selector: all()\npreDNAT: true\ndoNotTrack: true\napplyOnForward: true", &[E(6, 3, "`preDNAT` and `doNotTrack` cannot both be true")]),
    case("staged", Wrap::Staged, "tier: nope\nselector: all()", &[E(5, 9, "StagedGlobalNetworkPolicy 'p' (at ")]),
    case("staged", Wrap::Gnp, "stagedAction: Set", &[E(5, 3, "unknown field `stagedAction` in a GlobalNetworkPolicy spec")]),
    // ── §1.1 envelope and file loading ──────────────────────────────────────────────────────────
    case("1.1", Wrap::Gnp, "selector: all()", &[]),
    case("1.1", Wrap::Raw, "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p}\nstatus: {}\n",
        &[E(4, 1, "unknown field `status` in a GlobalNetworkPolicy")]),
    case("1.1", Wrap::Raw, "kind: GlobalNetworkPolicy\nmetadata: {name: p}\n",
        &[E(1, 1, "missing `apiVersion`")]),
    case("1.1", Wrap::Raw, "apiVersion: projectcalico.org/v3\nmetadata: {name: p}\n",
        &[E(1, 1, "missing `kind`; accepted kinds: GlobalNetworkPolicy")]),
    case("1.1", Wrap::Raw, "apiVersion: projectcalico.org/v3\nkind: globalnetworkpolicy\nmetadata: {name: p}\n",
        &[E(2, 7, "kinds are case-sensitive, write `GlobalNetworkPolicy`")]),
    case("1.1", Wrap::Raw, "apiVersion: crd.projectcalico.org/v1\nkind: GlobalNetworkPolicy\nmetadata: {name: p}\n",
        &[E(1, 13, "write `apiVersion: projectcalico.org/v3`")]),
    case("1.1", Wrap::Raw, "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\n",
        &[E(2, 7, "`IPPool` has no meaning for hostpolicyd; accepted kinds")]),
    case("1.1", Wrap::Raw, "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: p}\n",
        &[E(2, 7, "unknown apiVersion `example.com/v1` (kind `Widget`); accepted kinds: GlobalNetworkPolicy (projectcalico.org/v3)")]),
    case("1.1", Wrap::Raw, "apiVersion: projectcalico.org/v3\nkind: ConnectivityCheck\nmetadata: {name: c}\n",
        &[E(1, 13, "ConnectivityCheck needs `apiVersion: hostpolicy/v1`")]),
    case("1.1", Wrap::Raw, "just a string\n",
        &[E(1, 1, "expected a resource (a mapping with apiVersion, kind, metadata and spec)")]),
    case("1.1", Wrap::Raw, "# only a comment\n---\n---\n", &[]),
    case("1.1", Wrap::Raw,
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicyList\nitems:\n- apiVersion: projectcalico.org/v3\n  kind: GlobalNetworkPolicy\n  metadata: {name: p}\n",
        &[]),
    // ── §1.9 other kinds ─────────────────────────────────────────────────────────────────────────
    case("1.9", Wrap::Raw, "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p, namespace: default}\nspec: {}\n",
        &[W(2, 7, "ignored: a namespaced NetworkPolicy never applies to host endpoints")]),
    case("1.9", Wrap::Raw, "apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: p}\nspec: {}\n",
        &[E(2, 7, "only the built-in `projectcalico-default-allow` profile")]),

    // ── §1.2 names, labels, annotations ──────────────────────────────────────────────────────────
    case("1.2", Wrap::Raw, "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: allow.ssh}\n", &[]),
    case("1.2", Wrap::Raw, "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: a.b.c}\n",
        &[E(3, 18, "GlobalNetworkPolicy name `a.b.c` is not valid")]),
    case("1.2 §6.7", Wrap::Raw, "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: Allow_SSH\n",
        &[E(4, 9, "e.g. `allow-ssh`")]),
    case("1.2 §6.7", Wrap::Raw, "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: Node1-eth0}\nspec: {node: node1, interfaceName: eth0}\n",
        &[E(3, 18, "HostEndpoint name `Node1-eth0` is not valid")]),
    case("1.2", Wrap::Raw, "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: node1.eth0.a}\nspec: {node: node1, interfaceName: eth0}\n", &[]),
    case("1.2 §6.1", Wrap::Raw, "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata:\n  name: h\n  labels:\n    nodeport-external-ingress: true\nspec: {node: node1, interfaceName: eth0}\n",
        &[E(6, 32, "write nodeport-external-ingress: \"true\"")]),
    case("1.2", Wrap::Raw, "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: s\n  labels: {rack: 123}\n",
        &[E(5, 18, "YAML reads `123` as an integer: write rack: \"123\"")]),
    case("1.2", Wrap::Raw, "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: s\n  labels: {-bad: x}\n",
        &[E(5, 12, "label key `-bad` is not valid")]),
    case("1.2", Wrap::Raw, "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: s\n  labels: {role: \"-x\"}\n",
        &[E(5, 18, "label value `-x` (label `role`) is not valid")]),
    case("1.2", Wrap::Raw, "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: s\n  labels: {example.com/role: \"\", a_b: x.y}\n", &[]),
    case("1.2", Wrap::Raw, "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: s\n  labels: {projectcalico.org/namespace: x}\n",
        &[E(5, 11, "the label `projectcalico.org/namespace` is reserved")]),
    case("1.2", Wrap::Raw, "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: s, namespace: default}\n",
        &[E(3, 21, "cluster-wide and has no namespace: remove `namespace`")]),
    case("1.2", Wrap::Raw, "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: s, resourceVersion: \"12\", uid: abc, creationTimestamp: null, generation: 3}\n", &[]),
    case("1.2", Wrap::Raw, "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: s, lables: {a: b}}\n",
        &[E(3, 21, "unknown field `lables` in metadata (did you mean `labels`?)")]),
    case("1.2", Wrap::Raw, "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {labels: {a: b}}\n",
        &[E(3, 11, "GlobalNetworkSet has no `metadata.name`")]),
    case("1.2", Wrap::Raw, "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: s\n  annotations: {\"bad key!\": x, note: \"free text, any characters!\"}\n",
        &[E(5, 17, "annotation key `bad key!` is not valid")]),

    // ── §1.3 GlobalNetworkPolicy spec ────────────────────────────────────────────────────────────
    case("1.3 T2", Wrap::Gnp, "selector: \"role == 'web'\"\ningress: [{action: Allow, protocol: TCP, destination: {ports: [80]}}]", &[]),
    case("1.3 tiers 2", Wrap::Gnp, "tier: default", &[]),
    case("tiers 2", Wrap::Gnp, "tier: \"\"", &[]),
    case("tiers 1.2", Wrap::Gnp, "tier: kube-admin", &[]),
    case("tiers 1.2", Wrap::Gnp, "tier: kube-baseline", &[]),
    // ── tiers spec §1 the Tier resource ──────────────────────────────────────────────────────────
    case("tiers 1", Wrap::Tier, "order: 100\ndefaultAction: Pass", &[]),
    case("tiers 1", Wrap::Tier, "order: -2.5\ndefaultAction: Deny", &[]),
    case("tiers 1.1", Wrap::Raw, "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: security}\n", &[]),
    case("tiers 1", Wrap::Raw, "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: ops.edge}\n",
        &[E(3, 18, "Tier name `ops.edge` is not valid: names are one lowercase DNS label")]),
    case("tiers 1", Wrap::Raw, "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: Platform_1}\n",
        &[E(3, 18, "no `.`, at most 63 characters; e.g. `platform-1`")]),
    case("tiers 1", Wrap::Raw, "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa}\n",
        &[E(3, 18, "is not valid: names are one lowercase DNS label")]),
    case("tiers 1", Wrap::Tier, "defaultAction: Allow", &[E(5, 18, "`defaultAction` must be `Deny` or `Pass`, not `Allow` (a tier cannot end with Allow or Log")]),
    case("tiers 1", Wrap::Tier, "defaultAction: deny", &[E(5, 18, "not `deny` (actions are case-sensitive: write `Deny`)")]),
    case("tiers 1", Wrap::Tier, "defaultAction: Log", &[E(5, 18, "must be `Deny` or `Pass`")]),
    case("tiers 1", Wrap::Tier, "order: \"10\"", &[E(5, 10, "write order: 10 (without quotes)")]),
    case("tiers 1", Wrap::Tier, "orderr: 10", &[E(5, 3, "unknown field `orderr` in a Tier spec (did you mean `order`?); valid fields: order, defaultAction")]),
    case("tiers 1", Wrap::Raw, "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: platform}\nstatus: {conditions: []}\n",
        &[E(4, 1, "unknown field `status` in a Tier")]),
    case("tiers 1", Wrap::Raw, "apiVersion: projectcalico.org/v1\nkind: Tier\nmetadata: {name: platform}\n",
        &[E(1, 13, "Tier needs `apiVersion: projectcalico.org/v3`, not `projectcalico.org/v1`")]),
    case("tiers 2.2", Wrap::Raw, "- {apiVersion: projectcalico.org/v3, kind: Tier, metadata: {name: platform}}\n- {apiVersion: projectcalico.org/v3, kind: Tier, metadata: {name: platform}, spec: {order: 1}}\n",
        &[E(2, 3, "Tier 'platform' is already defined at case.yaml:1:3")]),
    case("tiers 1", Wrap::Raw, "apiVersion: projectcalico.org/v3\nkind: TierList\nitems:\n- {apiVersion: projectcalico.org/v3, kind: Tier, metadata: {name: platform}, spec: {order: 100}}\n", &[]),
    // ── tiers spec §1.2 built-in tiers ───────────────────────────────────────────────────────────
    case("tiers 1.2", Wrap::Raw, "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: default}\nspec: {order: 1000000, defaultAction: Deny}\n", &[]),
    case("tiers 1.2", Wrap::Raw, "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: default}\n", &[]),
    case("tiers 1.2", Wrap::Raw, "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: default}\nspec: {order: 5}\n",
        &[E(4, 15, "the built-in tier `default` has order 1000000 and cannot be given another (not 5): write `order: 1000000` or leave it out")]),
    case("tiers 1.2", Wrap::Raw, "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: default}\nspec: {defaultAction: Pass}\n",
        &[E(4, 23, "the built-in tier `default` has defaultAction Deny and cannot be given another (not Pass)")]),
    case("tiers 1.2", Wrap::Raw, "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: kube-admin}\nspec: {order: 1000, defaultAction: Pass}\n", &[]),
    case("tiers 1.2", Wrap::Raw, "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: kube-admin}\n",
        &[E(3, 18, "the built-in tier `kube-admin` has order 1000 and cannot be given another (and an omitted order is 1000000): write `order: 1000`"),
          E(3, 18, "the built-in tier `kube-admin` has defaultAction Pass and cannot be given another (and an omitted defaultAction is Deny)")]),
    case("tiers 1.2", Wrap::Raw, "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: kube-baseline}\nspec: {order: 10000000, defaultAction: Deny}\n",
        &[E(4, 40, "`kube-baseline` has defaultAction Pass")]),
    case("tiers 1.2", Wrap::Raw, "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: adminnetworkpolicy}\nspec: {order: 1000, defaultAction: Pass}\n", &[]),
    // ── tiers spec §2 policies in tiers ──────────────────────────────────────────────────────────
    case("tiers 2.2", Wrap::Gnp, "tier: security", &[E(5, 9, "GlobalNetworkPolicy 'p' (at case.yaml:1:1) is in tier `security`, which does not exist: declare it (apiVersion: projectcalico.org/v3, kind: Tier, metadata: {name: security})")]),
    case("tiers 2.2 1.2", Wrap::Gnp, "tier: adminnetworkpolicy", &[E(5, 9, "is in tier `adminnetworkpolicy`, which does not exist")]),
    case("tiers 2.2", Wrap::Raw, "- {apiVersion: projectcalico.org/v3, kind: Tier, metadata: {name: platform}}\n- {apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {name: p}, spec: {tier: platfrom}}\n",
        &[E(2, 99, "is in tier `platfrom`, which does not exist (did you mean `platform`?)")]),
    case("tiers 2.2", Wrap::Raw, "- {apiVersion: projectcalico.org/v3, kind: Tier, metadata: {name: platform}, spec: {defaultAction: Allow}}\n- {apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {name: p}, spec: {tier: platform}}\n",
        &[E(1, 100, "`defaultAction` must be `Deny` or `Pass`, not `Allow`")]),
    case("tiers 2", Wrap::Gnp, "tier: ops.edge", &[E(5, 9, "`tier: ops.edge` is not a valid tier name")]),
    case("tiers 2", Wrap::Gnp, "tier: 5", &[E(5, 9, "`tier` must be a string")]),
    case("tiers 2.1", Wrap::Raw, "- {apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {name: platform.deny}, spec: {tier: platform, ingress: [{action: Deny}]}}\n- {apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {name: allow}, spec: {tier: platform}}\n- {apiVersion: projectcalico.org/v3, kind: Tier, metadata: {name: platform}, spec: {order: 100}}\n", &[]),
    case("1.3", Wrap::Gnp, "order: \"10\"", &[E(5, 10, "write order: 10 (without quotes)")]),
    // Issue 20 item 6: rules that lost their `ingress:` line land in the key above them.
    case("1.3 issue 20.6", Wrap::Gnp, "selector: all()\ntypes:\n- Ingress\n- action: Allow\n  protocol: TCP\n  destination: {ports: [80]}",
        &[E(8, 5, "`types` must be a string, not a mapping (it looks like a rule: an `ingress:` or `egress:` key is probably missing above it)")]),
    case("1.3 issue 20.6", Wrap::Raw, "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec:\n- action: Allow\n  protocol: TCP\n",
        &[E(5, 3, "a GlobalNetworkPolicy spec must be a mapping, not a list (it looks like a list of rules: an `ingress:` or `egress:` key is probably missing above it)")]),
    case("1.3 issue 20.6", Wrap::Gnp, "selector: all()\naction: Allow",
        &[E(6, 3, "tier (`action` belongs to a rule: an `ingress:` or `egress:` list is probably missing)")]),
    case("1.3 issue 20.6", Wrap::Gnp, "doNotTrack:\n- action: Deny\n  source: {nets: [203.0.113.0/24]}",
        &[E(6, 5, "`doNotTrack` must be true or false, not a list (it looks like a list of rules")]),
    case("1.3 issue 20.6", Wrap::Gnp, "order:\n  action: Allow",
        &[E(6, 5, "`order` must be a number, not a mapping (it looks like a rule")]),
    case("1.3 §6.7", Wrap::Gnp, "order: -1.5", &[]),
    case("1.3", Wrap::Gnp, "types: [Ingress, Ingress]", &[E(5, 20, "`Ingress` is listed twice")]),
    case("1.3", Wrap::Gnp, "types: [ingress]", &[E(5, 11, "write `Ingress`")]),
    case("1.3", Wrap::Gnp, "types: [Ingress, Egress]\negress: [{action: Allow}]", &[]),
    case("1.3", Wrap::Gnp, "types: [Ingress]\negress: [{action: Allow}]", &[W(6, 3, "the egress rules are ignored: `types` does not contain `Egress`")]),
    case("1.3", Wrap::Gnp, "ingres: []", &[E(5, 3, "unknown field `ingres` in a GlobalNetworkPolicy spec (did you mean `ingress`?)")]),
    case("1.3", Wrap::Gnp, "doNotTrack: \"true\"", &[E(5, 15, "write doNotTrack: true (without quotes)")]),
    case("1.3 rule 1", Wrap::Gnp, "preDNAT: true\ndoNotTrack: true\napplyOnForward: true", &[E(5, 3, "`preDNAT` and `doNotTrack` cannot both be true")]),
    case("1.3 rule 2 T6", Wrap::Gnp, "preDNAT: true\napplyOnForward: true\negress: [{action: Allow}]",
        &[E(7, 3, "a preDNAT policy cannot have egress rules")]),
    case("1.3 rule 2 T6", Wrap::Gnp, "preDNAT: true\napplyOnForward: true\ntypes: [Ingress, Egress]",
        &[E(7, 3, "a preDNAT policy cannot have `Egress` in `types`")]),
    case("1.3 rule 3 T6", Wrap::Gnp, "preDNAT: true\ningress: [{action: Allow, protocol: TCP, destination: {ports: [31852]}}]",
        &[E(5, 3, "a `preDNAT: true` policy also needs `applyOnForward: true`")]),
    case("1.3 rule 3", Wrap::Gnp, "doNotTrack: true", &[E(5, 3, "a `doNotTrack: true` policy also needs `applyOnForward: true`")]),
    case("1.3 T6", Wrap::Gnp, "preDNAT: true\napplyOnForward: true\nselector: \"role == 'web'\"\ningress: [{action: Allow, protocol: TCP, destination: {ports: [31852]}}]", &[]),
    case("1.3 rule 4", Wrap::Gnp, "selector: global()", &[E(5, 13, "`global()` is not allowed in `selector`")]),
    case("1.3 rule 4", Wrap::Gnp, "namespaceSelector: global()", &[E(5, 22, "`global()` is not allowed in `namespaceSelector`")]),
    case("1.3 §2.4", Wrap::Gnp, "namespaceSelector: \"team == 'a'\"", &[W(5, 22, "`namespaceSelector` never matches a host endpoint")]),
    case("1.3 §2.4", Wrap::Gnp, "namespaceSelector: \"!has(team)\"", &[]),
    case("1.3", Wrap::Gnp, "performanceHints: [AssumeNeededOnEveryNode]", &[]),
    case("1.3", Wrap::Gnp, "performanceHints: [Fast]", &[E(5, 22, "unknown performance hint `Fast`")]),

    // ── §2.1, §2.5 selectors ─────────────────────────────────────────────────────────────────────
    case("2.5 §6.1", Wrap::Gnp, "selector: \"nodeport-external-ingress: true\"",
        &[E(5, 39, "nodeport-external-ingress == 'true'")]),
    case("2.5", Wrap::Gnp, "selector: nodeport-external-ingress == true", &[E(5, 42, "")]),
    case("2.5", Wrap::Gnp, "selector: nodeport-external-ingress == 'true'", &[]),
    case("2.5", Wrap::Gnp, "selector: has (kubernetes-host)", &[E(5, 16, "has(")]),
    case("2.5", Wrap::Gnp, "selector: all ()", &[E(5, 16, "")]),
    case("2.5", Wrap::Gnp, "selector: has( kubernetes-host )", &[]),
    case("2.5", Wrap::Gnp, "selector: !has(a)", &[E(5, 13, "YAML reads `!has(a)` as a tag: quote the selector, e.g. selector: \"!has(a)\"")]),
    case("2.5", Wrap::Gnp, "selector: \"!has(a)\"", &[]),
    case("2.5", Wrap::Gnp, "selector: \"!!has(a)\"", &[]),
    case("2.5", Wrap::Gnp, "selector: role in {}", &[]),
    case("2.5", Wrap::Gnp, "selector: \"a in {'x', }\"", &[]),
    case("2.5", Wrap::Gnp, "selector: 'a == \"it''s\"'", &[]),
    case("2.5", Wrap::Gnp, "selector: \"a notin {'x'} && a startswith 'p'\"", &[]),
    case("2.5", Wrap::Gnp, "selector: \"'b1' == b\"", &[E(5, 14, "")]),
    case("2.5", Wrap::Gnp, "selector: b == b", &[E(5, 18, "")]),
    case("2.5", Wrap::Gnp, "selector: a b", &[E(5, 15, "")]),
    case("2.5", Wrap::Gnp, "selector: \"()\"", &[E(5, 14, "empty parentheses")]),
    case("2.5", Wrap::Gnp, "selector: '(a == \"x\"'", &[E(5, 14, "never closed")]),
    case("2.5", Wrap::Gnp, "selector: \"   \"", &[]),
    case("2.1", Wrap::Gnp, "selector: |\n  has(a)", &[E(6, 5, "`selector` contains a line break")]),
    case("2.1", Wrap::Gnp, "selector: >-\n  has(a)", &[]),
    case("6.1", Wrap::Gnp, "selector: \"nodeport-external-ingress == \u{2018}true\u{2019}\"", &[E(5, 43, "typographic quote")]),

    // ── §1.4 rules ───────────────────────────────────────────────────────────────────────────────
    case("1.4", Wrap::Gnp, "ingress: [{protocol: TCP}]", &[E(5, 13, "a rule needs an `action`")]),
    case("1.4", Wrap::Gnp, "ingress: [{action: allow}]", &[E(5, 22, "write `Allow`")]),
    case("1.4", Wrap::Gnp, "ingress: [{action: Log}, {action: Pass}, {action: Deny}]", &[]),
    case("1.4", Wrap::Gnp, "ingress: [{action: accept, destination: {ports: [22]}}]",
        &[E(5, 22, "unknown action `accept`"), E(5, 52, "numeric port `22` needs a protocol")]),
    case("1.4", Wrap::Gnp, "ingress: [{action: Allow, protocol: tcp, destination: {ports: [22]}}]",
        &[E(5, 39, "write `protocol: TCP`")]),
    case("1.4 §6.7", Wrap::Gnp, "ingress: [{action: Allow, protocol: tcp}]", &[E(5, 39, "write `protocol: TCP`, not `tcp`")]),
    case("1.4", Wrap::Gnp, "ingress: [{action: Allow, protocol: 0}]", &[E(5, 39, "`protocol` must be 1-255 or a name")]),
    case("1.4", Wrap::Gnp, "ingress: [{action: Allow, protocol: 256}]", &[E(5, 39, "`protocol` must be 1-255 or a name")]),
    case("1.4", Wrap::Gnp, "ingress: [{action: Allow, protocol: \"0\"}]", &[E(5, 39, "must be 1-255")]),
    case("1.4", Wrap::Gnp, "ingress: [{action: Allow, protocol: Foo}]", &[E(5, 39, "unknown protocol `Foo`")]),
    case("1.4 §1.6", Wrap::Gnp, "ingress:\n- {action: Allow, protocol: \"6\", destination: {ports: [22]}}\n- {action: Allow, protocol: 132, notProtocol: UDPLite}", &[]),
    case("1.4", Wrap::Gnp, "ingress: [{action: Allow, icmp: {type: 8}}]", &[E(5, 29, "`icmp` needs `protocol: ICMP` or `protocol: ICMPv6`")]),
    case("1.4", Wrap::Gnp, "ingress: [{action: Allow, protocol: ICMP, icmp: {code: 0}}]", &[E(5, 52, "`icmp.code` needs a `type`")]),
    case("1.4", Wrap::Gnp, "ingress: [{action: Allow, protocol: ICMP, icmp: {type: 255}}]", &[E(5, 58, "`type` must be between 0 and 254")]),
    case("1.4", Wrap::Gnp, "ingress: [{action: Allow, protocol: ICMP, notICMP: {type: 8, code: 0}}]", &[]),
    case("1.4", Wrap::Gnp, "ingress: [{action: Allow, protocol: ICMP, ipVersion: 6}]", &[E(5, 29, "`protocol: ICMP` needs `ipVersion: 4`")]),
    case("1.4", Wrap::Gnp, "ingress: [{action: Allow, notProtocol: ICMPv6, ipVersion: 4}]", &[E(5, 29, "`notProtocol: ICMPv6` needs `ipVersion: 6`")]),
    case("1.4", Wrap::Gnp, "ingress: [{action: Allow, ipVersion: 5}]", &[E(5, 40, "`ipVersion` must be 4 or 6")]),
    case("1.4", Wrap::Gnp, "ingress: [{action: Allow, ipVersion: 4, source: {nets: [\"2001:db8::/32\"]}}]", &[E(5, 59, "is IPv6, but the rule has `ipVersion: 4`")]),
    case("1.4", Wrap::Gnp, "ingress:\n- action: Allow\n  source: {nets: [10.0.0.0/8]}\n  destination: {notNets: [\"2001:db8::/32\"]}",
        &[E(8, 29, "a rule cannot mix IPv4 and IPv6 networks")]),
    case("1.4 §6.7", Wrap::Gnp, "ingress: [{action: Allow, destination: {ports: [22]}}]",
        &[E(5, 51, "numeric port `22` needs a protocol: add `protocol: TCP`")]),
    case("1.4", Wrap::Gnp, "ingress: [{action: Allow, destination: {ports: [http, ssh-alt]}}]", &[]),
    case("1.4 §6.7", Wrap::Gnp, "ingress: [{action: Allow, protocol: UDPLite, destination: {ports: [53]}}]",
        &[E(5, 29, "`protocol: UDPLite` cannot be used with ports (Calico does not allow ports with UDPLite)")]),
    case("1.4", Wrap::Gnp, "ingress: [{action: Allow, protocol: ICMP, source: {notPorts: [22]}}]",
        &[E(5, 29, "`protocol: ICMP` cannot be used with ports")]),
    case("1.4", Wrap::Gnp, "ingress: [{action: Allow, protocol: TCP, http: {methods: [GET]}}]",
        &[E(5, 44, "`http` matches have no meaning for host endpoints")]),
    case("1.4 §1.2", Wrap::Gnp, "ingress: [{action: Allow, metadata: {annotations: {owner: team-a, note: \"anything: goes\"}}}]", &[]),
    case("1.4", Wrap::Gnp, "egress:\n- action: Allow\n  protocol: TCP\n  destination: {ports: [\"8000:8080\", 443], notPorts: [8001]}", &[]),

    // ── §1.5 entity rules, nets ──────────────────────────────────────────────────────────────────
    case("1.5 §6.2", Wrap::Gnp, "ingress: [{action: Allow, source: {nets: [1.2.3.4/16]}}]",
        &[W(5, 45, "`1.2.3.4/16` has host bits set; hostpolicyd uses `1.2.0.0/16` (write that; calicoctl rejects this form)")]),
    case("1.5", Wrap::Gnp, "ingress: [{action: Allow, source: {nets: [\"2001:db8::1/32\"]}}]",
        &[W(5, 45, "hostpolicyd uses `2001:db8::/32`")]),
    case("1.5", Wrap::Gnp, "ingress: [{action: Allow, source: {nets: [10.0.0.1]}}]",
        &[E(5, 45, "`10.0.0.1` needs a prefix length: write `10.0.0.1/32`")]),
    case("1.5", Wrap::Gnp, "ingress: [{action: Allow, source: {nets: [\"2001:db8::1\"]}}]",
        &[E(5, 45, "write `2001:db8::1/128`")]),
    case("1.5", Wrap::Gnp, "ingress: [{action: Allow, source: {nets: [10.0.0.0/33]}}]", &[E(5, 45, "`10.0.0.0/33` is not a network")]),
    case("1.4 §6.7", Wrap::Gnp, "ingress: [{action: Deny, source: {notNets: [0.0.0.0/0]}}]",
        &[E(5, 47, "`notNets: [0.0.0.0/0]` excludes every IPv4 address")]),
    case("1.4", Wrap::Gnp, "ingress: [{action: Deny, source: {notNets: [\"::/0\"]}}]", &[E(5, 47, "write `ipVersion: 4` instead")]),
    case("1.4", Wrap::Gnp, "ingress: [{action: Deny, source: {notNets: [10.0.0.0/8]}}]", &[]),
    case("1.5", Wrap::Gnp, "ingress: [{action: Allow, source: {services: {name: web, namespace: default}}}]",
        &[E(5, 38, "`services` matches Kubernetes Services")]),
    case("1.5", Wrap::Gnp, "ingress: [{action: Allow, source: {serviceAccounts: {names: [a]}}}]",
        &[W(5, 55, "`serviceAccounts` only matches Kubernetes workloads")]),
    case("1.5", Wrap::Gnp, "ingress: [{action: Allow, source: {selector: \"global()\"}}]", &[E(5, 48, "`global()` is not allowed in `selector`")]),
    case("1.5", Wrap::Gnp, "ingress: [{action: Allow, source: {notSelector: \"has(x)\", selector: \"!has(y)\"}}]", &[]),
    case("1.5", Wrap::Gnp, "ingress: [{action: Allow, source: {namespaceSelector: global(), selector: \"role == 'db'\"}}]", &[]),
    case("1.5", Wrap::Gnp, "ingress: [{action: Allow, source: {namespaceSelector: \"global() && a == 'b'\"}}]",
        &[E(5, 57, "`global()` cannot be combined with anything else")]),
    case("1.5 §2.4", Wrap::Gnp, "ingress: [{action: Allow, source: {namespaceSelector: \"team == 'a'\"}}]",
        &[W(5, 57, "limits the source to namespaced workloads")]),
    case("1.5", Wrap::Gnp, "ingress: [{action: Allow, source: {selector: has (a)}}]", &[E(5, 51, "no space is allowed before `(`")]),
    case("1.5", Wrap::Gnp, "ingress: [{action: Allow, source: {nets: 10.0.0.0/8}}]", &[E(5, 44, "write nets: [10.0.0.0/8]")]),

    // ── §1.6 ports ───────────────────────────────────────────────────────────────────────────────
    case("1.6", Wrap::Gnp, "ingress: [{action: Allow, protocol: TCP, destination: {ports: [0]}}]", &[E(5, 66, "`port` must be between 1 and 65535")]),
    case("1.6", Wrap::Gnp, "ingress: [{action: Allow, protocol: TCP, destination: {ports: [65536]}}]", &[E(5, 66, "between 1 and 65535")]),
    case("1.6", Wrap::Gnp, "ingress: [{action: Allow, protocol: TCP, destination: {ports: [\"90:80\"]}}]", &[E(5, 66, "is backwards: write \"80:90\"")]),
    case("1.6", Wrap::Gnp, "ingress: [{action: Allow, protocol: TCP, destination: {ports: [\"0:80\"]}}]", &[E(5, 66, "out of range")]),
    case("1.6", Wrap::Gnp, "ingress: [{action: Allow, protocol: TCP, destination: {ports: [\"80-90\"]}}]", &[E(5, 66, "write \"80:90\"")]),
    case("1.6", Wrap::Gnp, "ingress: [{action: Allow, protocol: TCP, destination: {ports: [\"bad name\"]}}]", &[E(5, 66, "`bad name` is not a valid port")]),
    case("1.6 issue 16.7", Wrap::Gnp, "ingress: [{action: Allow, protocol: TCP, destination: {ports: [HTTP]}}]",
        &[E(5, 66, "named port `HTTP` is not valid: port names are 1-15 characters of `a-z 0-9 -` with at least one letter, no `-` at either end or twice in a row (Kubernetes port names, as Calico checks them); e.g. `http`")]),
    case("1.6 issue 16.7", Wrap::Gnp, "ingress: [{action: Allow, protocol: TCP, destination: {ports: [my_port]}}]", &[E(5, 66, "named port `my_port` is not valid: port names are 1-15 characters of `a-z 0-9 -`")]),
    case("1.6 issue 16.7", Wrap::Gnp, "ingress: [{action: Allow, protocol: TCP, destination: {notPorts: [web.alt]}}]", &[E(5, 69, "named port `web.alt` is not valid")]),
    case("1.6", Wrap::Gnp, "ingress: [{action: Allow, protocol: TCP, destination: {ports: [https, \"8000:8080\"]}}]", &[]),
    case("1.6", Wrap::Gnp, "ingress: [{action: Allow, protocol: TCP, destination: {ports: [true]}}]", &[E(5, 66, "a port must be a number")]),
    case("1.6", Wrap::Gnp, "ingress: [{action: Allow, protocol: TCP, destination: {ports: [\"443\"]}}]", &[]),

    // ── §1.7 HostEndpoint ────────────────────────────────────────────────────────────────────────
    case("1.7 T1", Wrap::Hep, "node: node1\ninterfaceName: eth0\nexpectedIPs: [10.0.0.1, \"2001:db8::1\"]\nprofiles: [projectcalico-default-allow]\nports: [{name: https, protocol: TCP, port: 443}, {name: dns, protocol: 17, port: 53}]", &[]),
    case("1.7", Wrap::Hep, "interfaceName: eth0", &[E(5, 3, "a HostEndpoint needs `node`")]),
    case("1.7", Wrap::Hep, "node: Node_1\ninterfaceName: eth0", &[E(5, 9, "`node` `Node_1` is not a valid node name")]),
    case("1.7", Wrap::Hep, "node: node1\ninterfaceName: eth+", &[E(6, 18, "patterns are not supported")]),
    case("1.7", Wrap::Hep, "node: node1\ninterfaceName: averyveryverylongname0", &[E(6, 18, "longer than 15 characters")]),
    case("1.7", Wrap::Hep, "node: node1\ninterfaceName: \"*\"", &[]),
    case("1.7", Wrap::Hep, "node: node1", &[E(5, 3, "a HostEndpoint needs `interfaceName`")]),
    case("1.7", Wrap::Hep, "node: node1\ninterfaceName: \"\"\nexpectedIPs: []", &[E(5, 3, "a HostEndpoint needs `interfaceName`")]),
    case("1.7", Wrap::Hep, "node: node1\nexpectedIPs: [10.0.0.1/24]", &[E(6, 17, "takes a plain IP address, not a network: write `10.0.0.1`")]),
    case("1.7", Wrap::Hep, "node: node1\nexpectedIPs: [node1.example.com]", &[E(6, 17, "is not an IP address")]),
    case("1.7 issue 16.7", Wrap::Hep, "node: node1\ninterfaceName: eth0\nprofiles: [allow-all]", &[W(7, 14, "profile `allow-all` is not defined (hostpolicyd has only the built-in `projectcalico-default-allow`; Profile resources are not supported): as in Felix, it contributes no rules")]),
    case("1.7 issue 16.7", Wrap::Hep, "node: node1\ninterfaceName: eth0\nprofiles: [knp.default.x, projectcalico-default-allow]", &[W(7, 14, "profile `knp.default.x` is not defined")]),
    case("1.7 issue 16.7", Wrap::Hep, "node: node1\ninterfaceName: eth0\nprofiles: [Allow_All]", &[E(7, 14, "profile name `Allow_All` is not valid")]),
    case("1.7", Wrap::Hep, "node: node1\ninterfaceName: eth0\nports: [{name: web, protocol: tcp, port: 80}]", &[E(7, 33, "write `TCP`")]),
    case("1.7 §1.6", Wrap::Hep, "node: node1\ninterfaceName: eth0\nports: [{name: HTTP, protocol: TCP, port: 80}]", &[E(7, 18, "port name `HTTP` is not valid")]),
    case("1.7", Wrap::Hep, "node: node1\ninterfaceName: eth0\nports: [{name: web, protocol: TCP, port: 0}]", &[E(7, 44, "between 1 and 65535")]),
    case("1.7", Wrap::Hep, "node: node1\ninterfaceName: eth0\nport: []", &[E(7, 3, "unknown field `port` in a HostEndpoint spec (did you mean `ports`?)")]),

    // ── §1.8 GlobalNetworkSet ────────────────────────────────────────────────────────────────────
    case("1.8", Wrap::Gns, "nets: [10.0.0.1, 192.168.1.7/24, \"2001:db8::1\", 0.0.0.0/0]", &[]),
    case("1.8", Wrap::Gns, "nets: [10.0.0.0/8, not-a-net]", &[E(5, 22, "`not-a-net` is not a network")]),
    case("1.8", Wrap::Gns, "nets: []", &[]),
    case("1.8", Wrap::Gns, "net: [10.0.0.0/8]", &[E(5, 3, "unknown field `net` in a GlobalNetworkSet spec (did you mean `nets`?)")]),

    // ── §4.2 FelixConfiguration ──────────────────────────────────────────────────────────────────
    case("4.2", Wrap::Felix, "failsafeInboundHostPorts: [{protocol: TCP, port: 22}, {protocol: UDP, port: 68, net: 10.0.0.0/8}, {protocol: SCTP, port: 0}]\nfailsafeOutboundHostPorts: []", &[]),
    case("4.2 §6.7", Wrap::Felix, "failsafeInboundHostPorts: [{protocol: tcp, port: 22}]", &[E(5, 41, "write `protocol: TCP`, not `tcp`")]),
    // Issue 20 item 1: what is true about the lowercase form (Calico's validator, validateProtoPort).
    case("4.2 issue 20.1", Wrap::Felix, "failsafeOutboundHostPorts: [{protocol: udp, port: 53}]", &[E(5, 42, "write `protocol: UDP`, not `udp` (Calico's API validator accepts only `TCP`, `UDP` and `SCTP` in a FelixConfiguration, although its FelixConfiguration reference lists them in lowercase)")]),
    case("4.2", Wrap::Felix, "failsafeInboundHostPorts: [{protocol: ICMP, port: 22}]", &[E(5, 41, "failsafe protocol `ICMP` is not valid")]),
    // Issue 20 item 10: a /0 net is one family, as in Felix (felix/rules/static.go failsafeInChain:
    // `if int(ipVersion) == ip.Version()`); no net, or both /0 nets, is both families.
    case("4.2 issue 20.10", Wrap::Felix, "failsafeInboundHostPorts: [{protocol: TCP, port: 22, net: 0.0.0.0/0}]",
        &[W(5, 61, "`net: 0.0.0.0/0` opens TCP port 22 for IPv4 only, as in Felix"), ]),
    case("4.2 issue 20.10", Wrap::Felix, "failsafeOutboundHostPorts: [{protocol: UDP, port: 53, net: \"::/0\"}]",
        &[W(5, 62, "to open it for IPv4 too, leave `net` out or add `{protocol: UDP, port: 53, net: \"0.0.0.0/0\"}`")]),
    case("4.2 issue 20.10", Wrap::Felix, "failsafeInboundHostPorts: [{protocol: TCP, port: 22, net: 0.0.0.0/0}, {protocol: TCP, port: 22, net: \"::/0\"}, {protocol: UDP, port: 68, net: \"\"}]", &[]),
    case("4.2", Wrap::Felix, "failsafeInboundHostPorts: [{protocol: TCP, port: 65536}]", &[E(5, 52, "between 0 and 65535")]),
    case("4.2", Wrap::Felix, "failsafeInboundHostPorts: [{port: 22}]", &[E(5, 30, "a failsafe entry needs a `protocol`")]),
    case("4.2", Wrap::Felix, "failsafeInboundHostPorts: [{protocol: TCP, port: 22, net: 10.0.0.0/40}]", &[E(5, 61, "is not a network")]),
    case("4.2 issue 16.7", Wrap::Felix, "failsafeInboundHostPorts: [{protocol: TCP, port: 22, net: 192.0.2.10}]\nfailsafeOutboundHostPorts: [{protocol: UDP, port: 53, net: \"2001:db8::53\"}]", &[]),
    case("4.2", Wrap::Felix, "failsafeInboundHostPorts: [{protocol: TCP, port: 22, net: 192.0.2.300}]", &[E(5, 61, "is not a network")]),
    case("4.2", Wrap::Felix, "failsafeInboundHostPorts: [{protocol: TCP, port: 22, net: 10.1.2.3/8}]", &[W(5, 61, "hostpolicyd uses `10.0.0.0/8`")]),
    case("4.4", Wrap::Felix, "failsafeInboundHostPorts: none", &[E(5, 29, "write `failsafeInboundHostPorts: []` to disable the list")]),
    case("4.2", Wrap::Felix, "failsafeInboundHostPorts: \"tcp:22,udp:68\"", &[E(5, 29, "must be a list of {protocol, port, net}")]),
    case("4.2", Wrap::Felix, "failsafeInboundHostPort: []", &[E(5, 3, "(did you mean `failsafeInboundHostPorts`?)")]),
    case("4.2", Wrap::Felix, "failsafeInboundHostPorts:", &[W(5, 3, "which keeps the default list")]),
    case("1.9", Wrap::Felix, "bpfEnabled: false\nlogSeverityScreen: Info", &[W(5, 3, "`bpfEnabled` has no effect in hostpolicyd"), W(6, 3, "`logSeverityScreen` has no effect")]),
    case("5", Wrap::Felix, "nftablesFilterDenyAction: Reject\niptablesFilterDenyAction: Drop", &[]),
    case("5", Wrap::Felix, "nftablesFilterDenyAction: Deny", &[E(5, 29, "`nftablesFilterDenyAction` must be Drop or Reject, not `Deny`")]),
    case("1.9", Wrap::Felix, "iptablesFilterAllowAction: Return", &[W(5, 30, "`iptablesFilterAllowAction: Return` is not supported: hostpolicyd uses Accept")]),
    case("1.9", Wrap::Felix, "nftablesMangleAllowAction: Jump", &[E(5, 30, "must be Accept or Return")]),
    case("5.3", Wrap::Felix, "nftablesMarkMask: 0xc000", &[E(5, 21, "hostpolicyd needs at least 2")]),
    case("5.3", Wrap::Felix, "nftablesMarkMask: 0x1c000", &[E(5, 21, "leaves 1 usable bit")]),
    case("5.3", Wrap::Felix, "nftablesMarkMask: 0xffff0000\nlogPrefix: \"hp %t\"\ndisableConntrackInvalidCheck: true\ninterfacePrefix: cali,tap", &[]),
    case("1.9", Wrap::Felix, "logPrefix: \"bad'quote\"", &[E(5, 14, "`logPrefix` `bad'quote` may only contain")]),
    case("1.9", Wrap::Felix, "interfacePrefix: \"cali,,tap\"", &[E(5, 20, "`interfacePrefix` entry `` is not valid")]),
    case("1.9", Wrap::Raw, "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: node-one}\n",
        &[W(3, 18, "FelixConfiguration `node-one` has no effect")]),
    case("1.9", Wrap::Raw, "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: node.node1}\nspec: {failsafeOutboundHostPorts: [{protocol: UDP, port: 53}]}\n", &[]),
    // Issue 20 item 9: Calico 3.32's selector-scoped configuration, and the other fields of its
    // FelixConfigurationSpec: accepted, without effect.
    case("1.9 issue 20.9", Wrap::Raw, "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: edge}\nspec:\n  nodeSelector: \"role == 'edge'\"\n  failsafeInboundHostPorts: []\n",
        &[W(5, 3, "FelixConfiguration `edge` has no effect: selector-scoped configuration (`nodeSelector`, Calico 3.32) is not supported")]),
    case("1.9 issue 20.9", Wrap::Felix, "nodeSelector: \"role == 'edge'\"",
        &[E(5, 3, "`nodeSelector` must not be set on FelixConfiguration `default` (Calico refuses it on `default` and `node.*`)")]),
    case("1.9 issue 20.9", Wrap::Felix, "goMaxProcs: 2\nwireguardMTU: 1400\nbpfConntrackMode: Auto\nrouteSource: CalicoIPAM",
        &[W(5, 3, "`goMaxProcs` has no effect in hostpolicyd"), W(6, 3, "`wireguardMTU` has no effect"), W(7, 3, "`bpfConntrackMode` has no effect"), W(8, 3, "`routeSource` has no effect")]),

    // ── DESIGN.md: ConnectivityCheck ─────────────────────────────────────────────────────────────
    case("design", Wrap::Check, "node: node1\ntcp: {host: 192.0.2.10, port: 22}\ntimeoutSeconds: 2", &[]),
    case("design", Wrap::Check, "icmp: {host: \"2001:db8::10\"}\ntimeoutSeconds: 0.5", &[]),
    case("design", Wrap::Check, "acceptRefused: true\ntcp: {host: 192.0.2.10, port: 22, acceptRefused: true}", &[]),
    case("design", Wrap::Check, "tcp: {host: 192.0.2.10, port: 22}\nicmp: {host: 192.0.2.10}", &[E(6, 9, "exactly one of `tcp` and `icmp`")]),
    case("design", Wrap::Check, "node: node1", &[E(5, 3, "needs `tcp: {host: ..., port: ...}` or `icmp: {host: ...}`")]),
    case("design", Wrap::Check, "tcp: {host: 192.0.2.10, port: 22}\ntimeoutSeconds: 0", &[E(6, 19, "`timeoutSeconds` must be more than 0")]),
    case("design", Wrap::Check, "tcp: {host: gateway.example.com, port: 22}", &[E(5, 15, "is not an IP address")]),
    case("design", Wrap::Check, "tcp: {host: 192.0.2.10}", &[E(5, 8, "`tcp` needs a `port`")]),
    case("design", Wrap::Check, "acceptRefused: false\ntcp: {host: 192.0.2.10, port: 22, acceptRefused: true}", &[E(5, 18, "`acceptRefused` is set twice")]),
];

fn run(case: &Case) -> Result<(), String> {
    let text = wrap(case.wrap, case.body);
    let loaded = load_sources(&[("case.yaml".to_owned(), text.clone())]);
    let mut unmatched: Vec<&Diagnostic> = loaded.diagnostics.iter().collect();
    let mut missing = Vec::new();
    for exp in case.expect {
        let (severity, line, column, text) = match *exp {
            E(l, c, t) => (Severity::Error, l, c, t),
            W(l, c, t) => (Severity::Warning, l, c, t),
        };
        let found = unmatched.iter().position(|d| {
            let pos = d
                .pos
                .as_ref()
                .expect("diagnostics of a case have a position");
            d.severity == severity
                && pos.line == line
                && (column == 0 || pos.column == column)
                && d.message.contains(text)
        });
        match found {
            Some(i) => {
                unmatched.remove(i);
            }
            None => missing.push(format!("{exp:?}")),
        }
    }
    if missing.is_empty() && unmatched.is_empty() {
        return Ok(());
    }
    Err(format!(
        "§{} ({:?}):\n{text}\n  missing: {missing:?}\n  unexpected: {:?}\n  all:\n    {}",
        case.section,
        case.wrap,
        unmatched.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        loaded
            .diagnostics
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n    ")
    ))
}

#[test]
fn corpus() {
    let failures: Vec<String> = CASES.iter().filter_map(|c| run(c).err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n\n")
    );
    let rejects = CASES
        .iter()
        .filter(|c| c.expect.iter().any(|e| matches!(e, E(..))))
        .count();
    assert!(
        rejects >= 60,
        "the corpus should keep at least 60 reject cases, has {rejects}"
    );
}

/// Issue 20 item 6: the hint about a lost `ingress:`/`egress:` key is given for rule-shaped values only,
/// never for a mapping or list of something else, nor for a rule where a rule belongs.
#[test]
fn structural_slip_hints_only_for_rules() {
    for (body, text) in [
        (
            "types: {Ingress: true}",
            "`types` must be a list, not a mapping",
        ),
        (
            "selector: [all()]",
            "`selector` must be a string, not a list",
        ),
        (
            "doNotTrack: {x: y}",
            "`doNotTrack` must be true or false, not a mapping",
        ),
        (
            "ingress: {action: Allow}",
            "`ingress` must be a list, not a mapping",
        ),
        (
            "ingress: [[{action: Allow}]]",
            "a rule must be a mapping, not a list",
        ),
    ] {
        let loaded = load_sources(&[("case.yaml".to_owned(), wrap(Wrap::Gnp, body))]);
        let m: Vec<String> = loaded
            .diagnostics
            .iter()
            .map(|d| d.message.clone())
            .collect();
        assert_eq!(m.len(), 1, "{body}: {m:?}");
        assert!(m[0].starts_with(text), "{body}: {m:?}");
        assert!(!m[0].contains("probably missing"), "{body}: {m:?}");
    }
}

/// Accepted cases also decode into the config (nothing dropped silently).
#[test]
fn accepted_cases_reach_the_config() {
    for case in CASES
        .iter()
        .filter(|c| !c.expect.iter().any(|e| matches!(e, E(..))))
    {
        let loaded = load_sources(&[("case.yaml".to_owned(), wrap(case.wrap, case.body))]);
        let c = &loaded.config;
        let total = c.policies.len()
            + c.tiers.len()
            + c.host_endpoints.len()
            + c.network_sets.len()
            + c.felix.len()
            + c.checks.len()
            + c.staged.len();
        let expected = match case.wrap {
            Wrap::Raw => total, // NetworkPolicy, comment-only files: nothing to count
            _ => 1,
        };
        assert_eq!(total, expected, "§{}: {}", case.section, case.body);
    }
}

// ── The node-port how-to (spec §7 T5, §6.1, §6.2) ───────────────────────────────────────────────

const T5: &str = "\
- apiVersion: projectcalico.org/v3
  kind: GlobalNetworkPolicy
  metadata: {name: allow-cluster-internal-ingress-only}
  spec:
    order: 20
    preDNAT: true
    applyOnForward: true
    selector: has(kubernetes-host)
    ingress:
      - {action: Allow, source: {nets: [NET_A, NET_B]}}
      - {action: Deny}
- apiVersion: projectcalico.org/v3
  kind: GlobalNetworkPolicy
  metadata: {name: allow-outbound-external}
  spec: {order: 10, selector: has(kubernetes-host), egress: [{action: Allow}]}
- apiVersion: projectcalico.org/v3
  kind: HostEndpoint
  metadata: {name: node1-eth0, labels: {kubernetes-host: ingress}}
  spec: {interfaceName: eth0, node: node1, expectedIPs: [1.2.3.4]}
- apiVersion: projectcalico.org/v3
  kind: HostEndpoint
  metadata: {name: node2-eth0, labels: {kubernetes-host: ingress}}
  spec: {interfaceName: eth0, node: node2, expectedIPs: [1.2.3.5]}
- apiVersion: projectcalico.org/v3
  kind: GlobalNetworkPolicy
  metadata: {name: allow-nodeport}
  spec:
    order: 10
    preDNAT: true
    applyOnForward: true
    selector: NODEPORT_SELECTOR
    ingress:
      - {action: Allow, protocol: TCP, destination: {selector: has(kubernetes-host), ports: [31852]}}
";

fn t5(net_a: &str, net_b: &str, selector: &str) -> Loaded {
    let text = T5
        .replace("NET_A", net_a)
        .replace("NET_B", net_b)
        .replace("NODEPORT_SELECTOR", selector);
    load_sources(&[("nodeports.yaml".to_owned(), text)])
}

fn messages(loaded: &Loaded) -> Vec<String> {
    loaded.diagnostics.iter().map(ToString::to_string).collect()
}

#[test]
fn t5_masked_loads_cleanly_and_normalised() {
    let loaded = t5("1.2.0.0/16", "100.100.0.0/16", "has(kubernetes-host)");
    assert!(loaded.diagnostics.is_empty(), "{:#?}", messages(&loaded));
    let c = &loaded.config;
    assert_eq!((c.policies.len(), c.host_endpoints.len()), (3, 2));

    let internal = &c.policies[0];
    assert_eq!(internal.name, "allow-cluster-internal-ingress-only");
    assert_eq!(internal.order, Some(20.0));
    assert!(internal.pre_dnat && internal.apply_on_forward && !internal.do_not_track);
    assert!(internal.ingress_type && !internal.egress_type);
    let nets: Vec<String> = internal.ingress[0]
        .source
        .nets
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(nets, ["1.2.0.0/16", "100.100.0.0/16"]);
    assert_eq!(internal.ingress[1].action, Action::Deny);
    assert_eq!((internal.pos.line, internal.pos.column), (1, 3));

    // Egress rules only: types inferred as [Egress] (spec §1.3).
    let outbound = &c.policies[1];
    assert!(!outbound.ingress_type && outbound.egress_type);

    let nodeport = &c.policies[2];
    let rule = &nodeport.ingress[0];
    assert_eq!(rule.protocol, Some(proto::TCP));
    assert_eq!(rule.destination.ports, [Port::Range(31852, 31852)]);
    let sel = rule
        .destination
        .selector
        .as_ref()
        .expect("destination selector");
    let mut labels = BTreeMap::new();
    labels.insert("kubernetes-host".to_owned(), "ingress".to_owned());
    assert!(sel.value.matches(&labels));
    assert_eq!(sel.pos.line, 33);
    assert_eq!(rule.destination.namespace_scope, NamespaceScope::Any);

    let hep = &c.host_endpoints[0];
    assert_eq!(hep.node, "node1");
    assert_eq!(hep.interface_name.as_deref(), Some("eth0"));
    assert_eq!(hep.expected_ips, ["1.2.3.4".parse::<IpAddr>().unwrap()]);
    assert_eq!(
        hep.labels.get("kubernetes-host").map(String::as_str),
        Some("ingress")
    );
}

#[test]
fn t5_unmasked_nets_give_exactly_the_two_warnings() {
    let loaded = t5("1.2.3.4/16", "100.100.100.0/16", "has(kubernetes-host)");
    assert!(!loaded.has_errors());
    assert!(!loaded.errors(false));
    assert!(
        loaded.errors(true),
        "--strict turns the warnings into a refusal"
    );
    assert_eq!(
        messages(&loaded),
        [
            "nodeports.yaml:10:41: warning: `1.2.3.4/16` has host bits set; hostpolicyd uses `1.2.0.0/16` (write that; calicoctl rejects this form)",
            "nodeports.yaml:10:53: warning: `100.100.100.0/16` has host bits set; hostpolicyd uses `100.100.0.0/16` (write that; calicoctl rejects this form)",
        ]
    );
    let nets: Vec<String> = loaded.config.policies[0].ingress[0]
        .source
        .nets
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(nets, ["1.2.0.0/16", "100.100.0.0/16"]);
}

#[test]
fn t5_node_selective_variant_is_rejected_with_the_hint() {
    // As a quoted selector: a selector error at the `:` (line 31, the scalar starts at column 15).
    let loaded = t5(
        "1.2.0.0/16",
        "100.100.0.0/16",
        "\"nodeport-external-ingress: true\"",
    );
    let errors: Vec<&Diagnostic> = loaded.diagnostics.iter().filter(|d| d.is_error()).collect();
    assert_eq!(errors.len(), 1, "{:#?}", messages(&loaded));
    let pos = errors[0].pos.as_ref().unwrap();
    assert_eq!((pos.line, pos.column), (31, 41));
    assert!(
        errors[0]
            .message
            .contains("nodeport-external-ingress == 'true'"),
        "{}",
        errors[0]
    );

    // Copied unquoted, as in the how-to: YAML itself fails there, and says the same.
    let loaded = t5(
        "1.2.0.0/16",
        "100.100.0.0/16",
        "nodeport-external-ingress: true",
    );
    let errors: Vec<&Diagnostic> = loaded.diagnostics.iter().filter(|d| d.is_error()).collect();
    assert_eq!(errors.len(), 1, "{:#?}", messages(&loaded));
    assert_eq!(errors[0].pos.as_ref().unwrap().line, 31);
    assert!(
        errors[0]
            .message
            .contains("nodeport-external-ingress == 'true'"),
        "{}",
        errors[0]
    );

    // The working form.
    let loaded = t5(
        "1.2.0.0/16",
        "100.100.0.0/16",
        "nodeport-external-ingress == 'true'",
    );
    assert!(loaded.diagnostics.is_empty(), "{:#?}", messages(&loaded));
}

// ── Whole-load behaviour ─────────────────────────────────────────────────────────────────────────

const GNP_A: &str = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: a}\nspec: {selector: all()}\n";

#[test]
fn duplicate_names_name_both_places() {
    let other = "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: a}\nspec: {node: n, interfaceName: eth0}\n---\n# comment\n\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: a}\n";
    let loaded = load_sources(&[
        ("10-a.yaml".into(), GNP_A.into()),
        ("20-b.yaml".into(), other.into()),
    ]);
    // Same name in another kind is fine; the same kind twice is not.
    assert_eq!(
        messages(&loaded),
        ["20-b.yaml:8:1: error: GlobalNetworkPolicy 'a' is already defined at 10-a.yaml:1:1"]
    );
    assert_eq!(loaded.config.policies.len(), 1);

    // Reported even when the first copy has an error of its own.
    let bad_first = GNP_A.replace("{selector: all()}", "{order: x}");
    let loaded = load_sources(&[
        ("a.yaml".into(), bad_first),
        ("b.yaml".into(), GNP_A.into()),
    ]);
    assert_eq!(
        messages(&loaded),
        [
            "a.yaml:4:15: error: `order` must be a number, not a string",
            "b.yaml:1:1: error: GlobalNetworkPolicy 'a' is already defined at a.yaml:1:1",
        ]
    );
}

#[test]
fn several_errors_in_one_file_all_reported_in_file_order() {
    let text = "\
- apiVersion: projectcalico.org/v3
  kind: GlobalNetworkPolicy
  metadata: {name: Bad_Name}
  spec:
    ingress: [{action: allow}]
- apiVersion: projectcalico.org/v3
  kind: HostEndpoint
  metadata: {name: h}
  spec: {interfaceName: eth+}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: s}
spec: {nets: [bogus]}
";
    let loaded = load_sources(&[("f.yaml".into(), text.into())]);
    let lines: Vec<(u32, bool)> = loaded
        .diagnostics
        .iter()
        .map(|d| (d.pos.as_ref().unwrap().line, d.is_error()))
        .collect();
    assert_eq!(
        lines,
        [(3, true), (5, true), (9, true), (9, true), (14, true)],
        "{:#?}",
        messages(&loaded)
    );
    assert!(loaded.config.policies.is_empty() && loaded.config.host_endpoints.is_empty());
    assert!(loaded.config.network_sets.is_empty());
}

#[test]
fn an_error_in_one_file_does_not_hide_errors_in_another() {
    let broken = "apiVersion: projectcalico.org/v3\nkind: [unclosed\n";
    let bad = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: b}\nspec: {order: high}\n";
    let good = GNP_A;
    let loaded = load_sources(&[
        ("1.yaml".into(), broken.into()),
        ("2.yaml".into(), bad.into()),
        ("3.yaml".into(), good.into()),
    ]);
    let files: Vec<String> = loaded
        .diagnostics
        .iter()
        .map(|d| d.pos.as_ref().unwrap().file.to_string())
        .collect();
    assert_eq!(files, ["1.yaml", "2.yaml"], "{:#?}", messages(&loaded));
    assert!(loaded.diagnostics[0].message.starts_with("invalid YAML"));
    assert!(loaded.diagnostics[1]
        .message
        .contains("`order` must be a number"));
    assert_eq!(loaded.config.policies.len(), 1);
}

#[test]
fn a_syntax_error_does_not_hide_the_other_documents() {
    let text = format!(
        "{GNP_A}---\nkind: [\n---\n{}",
        GNP_A.replace("{name: a}", "{name: Z}")
    );
    let loaded = load_sources(&[("f.yaml".into(), text)]);
    let lines: Vec<u32> = loaded
        .diagnostics
        .iter()
        .map(|d| d.pos.as_ref().unwrap().line)
        .collect();
    assert_eq!(lines.len(), 2, "{:#?}", messages(&loaded));
    assert!(lines[0] == 6 || lines[0] == 7, "{lines:?}");
    assert_eq!(lines[1], 10, "the third document's bad name is still found");
    assert_eq!(loaded.config.policies.len(), 1);
}

#[test]
fn list_form_and_streams() {
    let text = format!(
        "---\n- {}\n- {}\n---\n{}...\n",
        indent_list(GNP_A),
        indent_list(&GNP_A.replace("{name: a}", "{name: b}")),
        GNP_A.replace("{name: a}", "{name: c}")
    );
    let loaded = load_sources(&[("f.yaml".into(), text.clone())]);
    assert!(
        loaded.diagnostics.is_empty(),
        "{text}\n{:#?}",
        messages(&loaded)
    );
    let names: Vec<&str> = loaded
        .config
        .policies
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(names, ["a", "b", "c"]);
    let lines: Vec<u32> = loaded.config.policies.iter().map(|p| p.pos.line).collect();
    assert_eq!(lines, [2, 6, 11]);
}

/// Turn a resource into a list item's continuation lines.
fn indent_list(resource: &str) -> String {
    resource.trim_end().replace('\n', "\n  ")
}

#[test]
fn duplicate_keys_are_errors_with_both_lines() {
    let text = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: a}\nspec:\n  order: 1\n  selector: all()\n  order: 2\n";
    let loaded = load_sources(&[("f.yaml".into(), text.into())]);
    assert_eq!(
        messages(&loaded),
        ["f.yaml:7:3: error: duplicate key `order`: it is already set at line 5"]
    );
    assert!(
        loaded.config.policies.is_empty(),
        "a resource with an error is not kept"
    );

    let labels = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: s\n  labels: {a: x, b: y, a: z}\n";
    let loaded = load_sources(&[("f.yaml".into(), labels.into())]);
    assert_eq!(
        messages(&loaded),
        ["f.yaml:5:24: error: duplicate key `a`: it is already set at line 5"]
    );
}

// ── Files ─────────────────────────────────────────────────────────────────────────────────────────

/// A scratch directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("hostpolicyd-check-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        fs::write(&path, text).unwrap();
        path
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_file_filter() {
    let dir = TempDir::new();
    let garbage = "this: [is not loaded\n";
    for name in [
        ".hidden.yaml",
        "backup.yaml~",
        ".policy.yaml.swp",
        "policy.yaml.swp",
        "policy.yaml.dpkg-new",
        "policy.yaml.dpkg-old",
        "policy.yaml.rpmnew",
        "policy.yaml.rpmsave",
        "policy.yaml.rpmorig",
        "README.md",
        "policy.json",
        "policy.yaml.bak",
    ] {
        dir.write(name, garbage);
    }
    dir.write("20-b.yml", &GNP_A.replace("{name: a}", "{name: b}"));
    dir.write("10-a.yaml", GNP_A);
    dir.write("rpm-hosts.yaml", &GNP_A.replace("{name: a}", "{name: c}"));
    fs::create_dir(dir.path().join("sub.yaml")).unwrap();
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(
            dir.path().join("10-a.yaml"),
            dir.path().join("30-link.yaml"),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            dir.path().join("missing"),
            dir.path().join("40-dangling.yaml"),
        )
        .unwrap();
    }

    let names: Vec<String> = config_files(dir.path())
        .unwrap()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    // Every entry with a configuration name, whatever it is: the loader opens it and judges.
    let mut expected = vec!["10-a.yaml", "20-b.yml", "rpm-hosts.yaml", "sub.yaml"];
    if cfg!(unix) {
        expected.insert(2, "30-link.yaml");
        expected.insert(3, "40-dangling.yaml");
    }
    assert_eq!(names, expected);

    // The link repeats policy `a`: the duplicate is reported at the link, naming the first file.
    // The dangling link is reported, not skipped: a policy must not vanish silently. A directory
    // named *.yaml is skipped with a warning naming it (issue 19: it was skipped silently).
    let loaded = load_dir(dir.path());
    let msgs = messages(&loaded);
    if cfg!(unix) {
        assert_eq!(msgs.len(), 3, "{msgs:#?}");
        assert!(
            msgs[1].contains("40-dangling.yaml cannot be read"),
            "{msgs:#?}"
        );
        assert!(
            msgs[2].contains("sub.yaml:1:1: warning: ")
                && msgs[2].ends_with("sub.yaml is a directory, not a regular file: skipped"),
            "{msgs:#?}"
        );
        assert!(
            msgs[0]
                .contains("30-link.yaml:1:1: error: GlobalNetworkPolicy 'a' is already defined at"),
            "{msgs:#?}"
        );
        assert!(msgs[0].ends_with("10-a.yaml:1:1"), "{msgs:#?}");
    } else {
        assert!(msgs.is_empty(), "{msgs:#?}");
    }
}

#[test]
fn explicit_files_load_whatever_their_names() {
    let dir = TempDir::new();
    // Ansible's `validate: hostpolicyd check %s` passes a temporary file without a suffix.
    let tmp = dir.write("tmpa1b2c3", &GNP_A.replace("{name: a}", "{name: Bad}"));
    let loaded = load_files(std::slice::from_ref(&tmp));
    assert_eq!(loaded.diagnostics.len(), 1);
    assert_eq!(
        loaded.diagnostics[0].pos.as_ref().unwrap().file.as_ref(),
        tmp.display().to_string()
    );
}

#[test]
fn unreadable_inputs_are_diagnostics() {
    let dir = TempDir::new();
    let loaded = load_dir(&dir.path().join("does-not-exist"));
    assert!(loaded.has_errors());
    assert!(loaded.diagnostics[0].pos.is_none());
    assert!(loaded.diagnostics[0]
        .to_string()
        .starts_with("hostpolicyd: error: cannot read the configuration directory"));

    let missing = dir.path().join("gone.yaml");
    let binary = dir.path().join("binary.yaml");
    fs::write(&binary, [0xff, 0xfe, 0x00, 0x41]).unwrap();
    let good = dir.write("good.yaml", GNP_A);
    let loaded = load_files(&[missing, binary, good]);
    let msgs = messages(&loaded);
    assert_eq!(msgs.len(), 2, "{msgs:#?}");
    assert!(msgs.iter().any(|m| m.contains("gone.yaml cannot be read")));
    assert!(msgs
        .iter()
        .any(|m| m.contains("binary.yaml is not UTF-8 text")));
    assert_eq!(loaded.config.policies.len(), 1);
}

#[test]
fn big_inputs_load() {
    // A 100,000-entry set and 2,000 policies in one stream: no budget limit of the YAML parser hit.
    let mut set = String::from("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: big}\nspec:\n  nets:\n");
    for i in 0..100_000u32 {
        set.push_str(&format!("  - 10.{}.{}.0/24\n", (i >> 8) & 0xff, i & 0xff));
    }
    let mut policies = String::new();
    for i in 0..2_000 {
        policies.push_str(&format!(
            "---\n{}",
            GNP_A.replace("{name: a}", &format!("{{name: p{i}}}"))
        ));
    }
    let loaded = load_sources(&[("set.yaml".into(), set), ("policies.yaml".into(), policies)]);
    assert!(
        loaded.diagnostics.is_empty(),
        "{:#?}",
        &messages(&loaded)[..loaded.diagnostics.len().min(5)]
    );
    assert_eq!(loaded.config.network_sets[0].nets.len(), 100_000);
    assert_eq!(loaded.config.policies.len(), 2_000);
}

// ── Robustness ────────────────────────────────────────────────────────────────────────────────────

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    /// Fragments that make YAML-ish text likely to reach the validator's corners.
    fn yamlish() -> impl Strategy<Value = String> {
        let atoms = prop::sample::select(vec![
            "apiVersion: projectcalico.org/v3\n",
            "apiVersion: hostpolicy/v1\n",
            "kind: GlobalNetworkPolicy\n",
            "kind: HostEndpoint\n",
            "kind: GlobalNetworkSet\n",
            "kind: FelixConfiguration\n",
            "kind: ConnectivityCheck\n",
            "metadata: {name: a}\n",
            "metadata:\n  name: x\n  labels: {a: b}\n",
            "spec:\n",
            "  selector: ",
            "!has(a)",
            "\"has(a)\"",
            "  ingress:\n",
            "  - action: Allow\n",
            "    protocol: TCP\n",
            "    destination: {ports: [",
            "80",
            "\"1:2\"",
            "]}\n",
            "  nets: [",
            "1.2.3.4/16",
            "::/0",
            "  node: n\n",
            "  interfaceName: \"*\"\n",
            "  failsafeInboundHostPorts: [{protocol: TCP, port: 22}]\n",
            "  tcp: {host: 1.2.3.4, port: 1}\n",
            "---\n",
            "- ",
            "  ",
            "\n",
            ": ",
            "[",
            "]",
            "{",
            "}",
            ",",
            "&a ",
            "*a",
            "<<: *a\n",
            "? ",
            "|\n",
            ">-\n",
            "'",
            "\"",
            "#",
            "%YAML 1.2\n",
            "...\n",
            "\u{feff}",
            "é",
            "\t",
            "~",
            "null",
            "0x10",
            "1e999",
            ".nan",
        ]);
        prop::collection::vec(atoms, 0..40).prop_map(|parts| parts.concat())
    }

    proptest! {
        // 256 cases each by default; `PROPTEST_CASES=10000` for a longer run.

        #[test]
        fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let _ = load_sources(&[("f.yaml".into(), text)]);
        }

        #[test]
        fn yaml_ish_text(text in yamlish()) {
            let loaded = load_sources(&[("f.yaml".into(), text)]);
            for d in &loaded.diagnostics {
                let _ = d.to_string();
            }
        }

        #[test]
        fn arbitrary_selector_values(sel in "[ -~\u{2018}\u{2019}\t]{0,60}") {
            let text = format!("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: a}}\nspec:\n  selector: {}\n  ingress: [{{action: Allow, source: {{selector: {}}}}}]\n",
                hostpolicyd_quote(&sel), sel);
            let _ = load_sources(&[("f.yaml".into(), text)]);
        }
    }

    fn hostpolicyd_quote(s: &str) -> String {
        format!("'{}'", s.replace('\'', "''"))
    }
}

// ── Normalisation (what the rest of the pipeline relies on) ───────────────────────────────────────

fn one(text: &str) -> Loaded {
    let loaded = load_sources(&[("n.yaml".into(), text.into())]);
    assert!(!loaded.has_errors(), "{:#?}", messages(&loaded));
    loaded
}

#[test]
fn types_inference_table() {
    // spec §1.3: (egress rules?, ingress rules?) → types.
    let gnp = |spec: &str| {
        one(&format!("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: p}}\nspec: {spec}\n"))
    };
    let types = |spec: &str| {
        let p = &gnp(spec).config.policies[0];
        (p.ingress_type, p.egress_type)
    };
    assert_eq!(types("{}"), (true, false), "no rules at all ⇒ [Ingress]");
    assert_eq!(types("{ingress: [{action: Allow}]}"), (true, false));
    assert_eq!(types("{egress: [{action: Allow}]}"), (false, true));
    assert_eq!(
        types("{ingress: [{action: Allow}], egress: [{action: Allow}]}"),
        (true, true)
    );
    assert_eq!(
        types("{types: [], egress: [{action: Allow}]}"),
        (false, true),
        "empty types are inferred too"
    );
    assert_eq!(types("{types: [Egress]}"), (false, true));
    assert_eq!(types("{types: [Ingress, Egress]}"), (true, true));
    let p = &gnp("{preDNAT: true, applyOnForward: true}").config.policies[0];
    assert_eq!(
        (p.ingress_type, p.egress_type, p.order),
        (true, false, None)
    );
    assert!(p.selector.value.is_all());
}

#[test]
fn rule_values_are_normalised() {
    let loaded = one("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec:\n  ingress:\n  - action: Allow\n    protocol: \"17\"\n    notProtocol: UDPLite\n    source: {nets: [10.1.2.3/8], notNets: [\"10.9.0.0/16\"], namespaceSelector: global(), selector: \"role == 'db'\"}\n    destination: {ports: [53, \"1000:2000\", dns], notPorts: [\"99\"]}\n  - action: Pass\n    protocol: ICMPv6\n    ipVersion: 6\n    icmp: {type: 128, code: 0}\n");
    let rules = &loaded.config.policies[0].ingress;
    assert_eq!(
        (rules[0].protocol, rules[0].not_protocol),
        (Some(proto::UDP), Some(proto::UDPLITE))
    );
    let src = &rules[0].source;
    assert_eq!(src.nets[0].to_string(), "10.0.0.0/8");
    assert_eq!(src.not_nets[0].to_string(), "10.9.0.0/16");
    assert_eq!(src.namespace_scope, NamespaceScope::Global);
    assert_eq!(src.selector.as_ref().unwrap().pos.line, 9);
    assert_eq!(
        rules[0].destination.ports,
        [
            Port::Range(53, 53),
            Port::Range(1000, 2000),
            Port::Named("dns".into())
        ]
    );
    assert_eq!(rules[0].destination.not_ports, [Port::Range(99, 99)]);
    assert_eq!(rules[0].pos.line, 6);
    assert_eq!(rules[1].action, Action::Pass);
    assert_eq!(
        (rules[1].protocol, rules[1].ip_version),
        (Some(proto::ICMPV6), Some(6))
    );
    let icmp = rules[1].icmp.unwrap();
    assert_eq!((icmp.icmp_type, icmp.code), (128, Some(0)));
    assert_eq!(loaded.diagnostics.len(), 1, "the unmasked net's warning");
}

#[test]
fn other_kinds_are_normalised() {
    let loaded = one("\
- apiVersion: projectcalico.org/v3
  kind: GlobalNetworkSet
  metadata: {name: s, labels: {role: blocklist}}
  spec: {nets: [192.0.2.7, 198.51.100.9/24, \"2001:db8::1\"]}
- apiVersion: projectcalico.org/v3
  kind: HostEndpoint
  metadata: {name: h}
  spec: {node: node1, interfaceName: \"\", expectedIPs: [192.0.2.1], ports: [{name: web, protocol: \"6\", port: 80}]}
- apiVersion: projectcalico.org/v3
  kind: FelixConfiguration
  metadata: {name: node.node1}
  spec:
    failsafeInboundHostPorts: [{protocol: TCP, port: 22, net: 192.0.2.0/24}]
    failsafeOutboundHostPorts: []
    nftablesMarkMask: 0x30000
    interfacePrefix: cali, tap
- apiVersion: hostpolicy/v1
  kind: ConnectivityCheck
  metadata: {name: gw}
  spec: {tcp: {host: 192.0.2.10, port: 22}, acceptRefused: true}
- apiVersion: hostpolicy/v1
  kind: ConnectivityCheck
  metadata: {name: ping}
  spec: {node: node1, icmp: {host: \"2001:db8::10\"}, timeoutSeconds: 0.5}
");
    let c = &loaded.config;
    let nets: Vec<String> = c.network_sets[0]
        .nets
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(nets, ["192.0.2.7/32", "198.51.100.0/24", "2001:db8::1/128"]);
    assert!(
        loaded.diagnostics.is_empty(),
        "no masking warning for sets: {:#?}",
        messages(&loaded)
    );

    let hep = &c.host_endpoints[0];
    assert_eq!(hep.interface_name, None);
    assert!(!hep.is_wildcard());
    assert_eq!(
        hep.ports[0],
        hostpolicyd::config::model::EndpointPort {
            name: "web".into(),
            protocol: proto::TCP,
            port: 80
        }
    );

    let felix = &c.felix[0];
    assert_eq!(felix.name, "node.node1");
    let inbound = felix.failsafe_inbound_host_ports.as_ref().unwrap();
    assert_eq!((inbound[0].protocol, inbound[0].port), (proto::TCP, 22));
    assert_eq!(inbound[0].net.unwrap().to_string(), "192.0.2.0/24");
    assert_eq!(
        felix.failsafe_outbound_host_ports,
        Some(Vec::new()),
        "`[]` disables the list"
    );
    assert_eq!(felix.mark_mask, Some(0x30000));
    assert_eq!(
        felix.interface_prefixes,
        Some(vec!["cali".to_owned(), "tap".to_owned()])
    );
    assert_eq!(felix.log_prefix, None);

    use hostpolicyd::config::model::CheckTarget;
    let gw = &c.checks[0];
    assert_eq!(
        gw.target,
        CheckTarget::Tcp {
            host: "192.0.2.10".parse().unwrap(),
            port: 22
        }
    );
    assert_eq!(
        (gw.node.as_deref(), gw.timeout, gw.accept_refused),
        (None, std::time::Duration::from_secs(2), true)
    );
    let ping = &c.checks[1];
    assert_eq!(
        ping.target,
        CheckTarget::Icmp {
            host: "2001:db8::10".parse().unwrap()
        }
    );
    assert_eq!(
        (ping.node.as_deref(), ping.timeout),
        (Some("node1"), std::time::Duration::from_millis(500))
    );
}

/// Issue 16 item 7: a failsafe `net` written as a bare address is the host's /32 or /128, as Felix's
/// `ParseCIDROrIP` reads it (spec §4.2).
#[test]
fn failsafe_bare_address_is_one_host() {
    let loaded = one("apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec:
  failsafeInboundHostPorts: [{protocol: TCP, port: 22, net: 192.0.2.10}]
  failsafeOutboundHostPorts: [{protocol: UDP, port: 53, net: \"2001:db8::53\"}]
");
    assert!(loaded.diagnostics.is_empty(), "{:?}", messages(&loaded));
    let felix = &loaded.config.felix[0];
    let net = |l: &Option<Vec<hostpolicyd::config::model::ProtoPort>>| {
        l.as_ref().unwrap()[0].net.unwrap().to_string()
    };
    assert_eq!(net(&felix.failsafe_inbound_host_ports), "192.0.2.10/32");
    assert_eq!(net(&felix.failsafe_outbound_host_ports), "2001:db8::53/128");
}

/// Tiers spec §1, §1.1, §1.2, §2: a Tier's omitted order is 1000000 and its omitted defaultAction Deny;
/// the built-in tiers exist without a file; a policy without `spec.tier` is in `default`.
#[test]
fn tiers_decode_with_their_defaults() {
    use hostpolicyd::config::model::{TierAction, DEFAULT_TIER};
    let loaded = one("- {apiVersion: projectcalico.org/v3, kind: Tier, metadata: {name: security}}
- {apiVersion: projectcalico.org/v3, kind: Tier, metadata: {name: platform}, spec: {order: 100, defaultAction: Pass}}
- {apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {name: guard}, spec: {tier: platform}}
- {apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {name: app}}
");
    assert!(loaded.diagnostics.is_empty(), "{:?}", messages(&loaded));
    let c = &loaded.config;
    let security = c.tier("security").unwrap();
    assert_eq!(
        (security.order, security.default_action),
        (1_000_000.0, TierAction::Deny)
    );
    assert_eq!(security.pos.as_ref().map(|p| p.line), Some(1));
    let platform = c.tier("platform").unwrap();
    assert_eq!(
        (platform.order, platform.default_action),
        (100.0, TierAction::Pass)
    );
    for (name, order, action) in [
        ("default", 1_000_000.0, TierAction::Deny),
        ("kube-admin", 1_000.0, TierAction::Pass),
        ("kube-baseline", 10_000_000.0, TierAction::Pass),
    ] {
        let t = c.tier(name).unwrap();
        assert_eq!(
            (t.order, t.default_action, t.pos.clone()),
            (order, action, None),
            "{name}"
        );
    }
    assert!(c.tier("adminnetworkpolicy").is_none());
    let tier_of = |n: &str| {
        c.policies
            .iter()
            .find(|p| p.name == n)
            .unwrap()
            .tier
            .value
            .clone()
    };
    assert_eq!(tier_of("guard"), "platform");
    assert_eq!(tier_of("app"), DEFAULT_TIER);
}

/// Tiers spec §2.2: removing a Tier file while policies still name the tier refuses the directory
/// (Calico: "Cannot delete a non-empty tier"), naming the tier and where each policy is.
#[test]
fn removing_a_tier_that_policies_use_is_refused() {
    let dir = TempDir::new();
    let tier = dir.write("10-tier.yaml", "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: platform}\nspec: {order: 100}\n");
    dir.write("20-guard.yaml", "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: guard}\nspec:\n  tier: platform\n  ingress: [{action: Pass}]\n");
    let loaded = load_dir(dir.path());
    assert!(loaded.diagnostics.is_empty(), "{:?}", messages(&loaded));
    fs::remove_file(tier).unwrap();
    let loaded = load_dir(dir.path());
    let m = messages(&loaded);
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(
        m[0].contains("20-guard.yaml:5:9: error: GlobalNetworkPolicy 'guard' (at "),
        "{m:?}"
    );
    assert!(
        m[0].contains("is in tier `platform`, which does not exist"),
        "{m:?}"
    );
    assert!(loaded.config.policies.is_empty());
}

#[test]
fn yaml_1_1_booleans() {
    // `yes`/`on` are booleans for calicoctl's YAML reader: accepted in boolean fields; in string
    // fields (node names, labels) they are the text they look like.
    let loaded = one("- apiVersion: projectcalico.org/v3\n  kind: GlobalNetworkPolicy\n  metadata: {name: p}\n  spec: {doNotTrack: yes, applyOnForward: on}\n- apiVersion: projectcalico.org/v3\n  kind: HostEndpoint\n  metadata: {name: h, labels: {n: y, enabled: on}}\n  spec: {node: n, interfaceName: eth0}\n");
    let p = &loaded.config.policies[0];
    assert!(p.do_not_track && p.apply_on_forward);
    let hep = &loaded.config.host_endpoints[0];
    assert_eq!(hep.node, "n");
    assert_eq!(hep.labels.get("enabled").map(String::as_str), Some("on"));
    assert_eq!(hep.labels.get("n").map(String::as_str), Some("y"));
}

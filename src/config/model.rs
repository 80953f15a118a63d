//! The validated configuration: plain data, no logic beyond small accessors.
//!
//! `load` + `validate` produce a [`Config`]; everything downstream (`resolve`, `compile`, `explain`) reads it.
//! Every resource and every field that a diagnostic may point at keeps its source position ([`Pos`]).
//! Values are already normalised: protocols are numbers, nets are masked, `types` are inferred (spec §1.3).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use crate::selector::Selector;

/// A place in a configuration file: 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    pub file: Arc<str>,
    pub line: u32,
    pub column: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// A value together with where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct At<T> {
    pub value: T,
    pub pos: Pos,
}

pub type Labels = BTreeMap<String, String>;

/// IANA protocol numbers used by name in Calico's API.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
    pub const SCTP: u8 = 132;
    pub const UDPLITE: u8 = 136;
}

/// Everything in the configuration directory, validated.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The tiers declared in the files (tiers spec §1), in file order. The built-in tiers are not
    /// listed unless declared: look tiers up with [`Config::tier`], which knows them.
    pub tiers: Vec<Tier>,
    /// Policies and network sets are shared (`Arc`): the daemon's per-file cache ([`crate::config::cache`])
    /// and each load's `Config` hold the same resources, not copies.
    pub policies: Vec<Arc<GlobalNetworkPolicy>>,
    pub host_endpoints: Vec<HostEndpoint>,
    pub network_sets: Vec<Arc<GlobalNetworkSet>>,
    pub felix: Vec<FelixConfiguration>,
    pub checks: Vec<ConnectivityCheck>,
    /// `hostpolicy/v1` ManagementAccess resources: flows the lockout guard proves open (`lockout`).
    pub management: Vec<ManagementAccess>,
    /// StagedGlobalNetworkPolicy resources (issue 14), each with `staged` set: never enforced; the
    /// would-be set they make is [`Config::would_be`].
    pub staged: Vec<Arc<GlobalNetworkPolicy>>,
}

impl Config {
    /// The configuration as it would be if every staged policy were enforced, or `None` when there is
    /// no staged policy. hostpolicyd's own rule (Calico's StagedAsEnforced evaluation keeps both): a
    /// staged policy with `stagedAction: Set` takes the place of the GlobalNetworkPolicy of its name,
    /// or joins the others when there is none; one with `Delete` takes the GlobalNetworkPolicy of its
    /// name out. The staged policies keep `staged` set, so that what decides can say so.
    pub fn would_be(&self) -> Option<Config> {
        if self.staged.is_empty() {
            return None;
        }
        Some(self.with_staged(&self.staged))
    }

    /// The configuration with the staged policies of `staged` (and no others) enforced.
    pub fn with_staged(&self, staged: &[Arc<GlobalNetworkPolicy>]) -> Config {
        let find = |name: &str| staged.iter().find(|s| s.name == name);
        let mut policies = Vec::with_capacity(self.policies.len() + staged.len());
        for p in &self.policies {
            match find(&p.name) {
                None => policies.push(p.clone()),
                Some(s) if s.staged == Some(StagedAction::Set) => policies.push(s.clone()),
                Some(_) => {}
            }
        }
        for s in staged {
            if s.staged == Some(StagedAction::Set)
                && !self.policies.iter().any(|p| p.name == s.name)
            {
                policies.push(s.clone());
            }
        }
        Config {
            tiers: self.tiers.clone(),
            policies,
            host_endpoints: self.host_endpoints.clone(),
            network_sets: self.network_sets.clone(),
            felix: self.felix.clone(),
            checks: self.checks.clone(),
            management: self.management.clone(),
            staged: Vec::new(),
        }
    }

    /// The tier named `name`: declared in the files, or built in (tiers spec §1.2). `None` for a tier
    /// that does not exist (validation refuses a policy that names one).
    pub fn tier(&self, name: &str) -> Option<&Tier> {
        self.tiers
            .iter()
            .find(|t| t.name == name)
            .or_else(|| builtin_tiers().iter().find(|t| t.name == name))
    }
}

/// The name of the tier a policy without `spec.tier` belongs to.
pub const DEFAULT_TIER: &str = "default";
/// The order of the `default` tier, and of a declared tier without `spec.order` (tiers spec §1.1).
pub const DEFAULT_TIER_ORDER: f64 = 1_000_000.0;

/// An order as written in YAML, for messages: `1000000`, `100`, `-5`, `2.5`.
pub fn fmt_order(order: f64) -> String {
    if order.fract() == 0.0 && order.abs() < 1e15 {
        format!("{}", order as i64)
    } else {
        format!("{order}")
    }
}

/// What a tier does with a packet that one of its policies saw but none allowed, denied or passed
/// (tiers spec §1, §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TierAction {
    Deny,
    Pass,
}

impl fmt::Display for TierAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TierAction::Deny => "Deny",
            TierAction::Pass => "Pass",
        })
    }
}

/// A `Tier` (tiers spec §1): an ordered group of policies with a default action at its end.
#[derive(Debug, Clone, PartialEq)]
pub struct Tier {
    pub name: String,
    /// Where the resource starts; `None` for a built-in tier that no file declares.
    pub pos: Option<Pos>,
    /// Omitted in the file: 1,000,000 (tiers spec §1.1).
    pub order: f64,
    pub default_action: TierAction,
}

impl Tier {
    /// Calico 3.32+'s built-in tiers (tiers spec §1.2): they exist without a file, with fixed values.
    pub fn is_builtin(&self) -> bool {
        builtin_tiers().iter().any(|t| t.name == self.name)
    }
}

/// `default` (1,000,000, Deny), `kube-admin` (1,000, Pass), `kube-baseline` (10,000,000, Pass).
pub fn builtin_tiers() -> &'static [Tier] {
    static BUILTIN: std::sync::OnceLock<[Tier; 3]> = std::sync::OnceLock::new();
    BUILTIN.get_or_init(|| {
        let tier = |name: &str, order: f64, default_action| Tier {
            name: name.to_owned(),
            pos: None,
            order,
            default_action,
        };
        [
            tier(DEFAULT_TIER, DEFAULT_TIER_ORDER, TierAction::Deny),
            tier("kube-admin", 1_000.0, TierAction::Pass),
            tier("kube-baseline", 10_000_000.0, TierAction::Pass),
        ]
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Allow,
    Deny,
    Log,
    Pass,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GlobalNetworkPolicy {
    pub name: String,
    /// Where the resource starts (its first key).
    pub pos: Pos,
    /// `spec.tier` (omitted or empty: `default`), where it is written (the resource when omitted).
    pub tier: At<String>,
    /// `None` sorts last (spec §1.3: unset order is +infinity).
    pub order: Option<f64>,
    /// The top-level selector; an empty selector is `all()`.
    pub selector: At<Selector>,
    /// Workload scoping; HEPs never carry `pcns.*` labels (spec §1.3, §2.4).
    pub namespace_selector: Option<At<Selector>>,
    pub service_account_selector: Option<At<Selector>>,
    /// After inference (spec §1.3).
    pub ingress_type: bool,
    pub egress_type: bool,
    pub ingress: Vec<Rule>,
    pub egress: Vec<Rule>,
    pub do_not_track: bool,
    pub pre_dnat: bool,
    pub apply_on_forward: bool,
    /// `Some` for a StagedGlobalNetworkPolicy (issue 14): evaluated on live traffic, never enforced;
    /// what it does to the GlobalNetworkPolicy of its name in the would-be set.
    pub staged: Option<StagedAction>,
}

/// A StagedGlobalNetworkPolicy's `stagedAction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StagedAction {
    /// In the would-be set, in place of the GlobalNetworkPolicy of its name (or beside the others).
    Set,
    /// The GlobalNetworkPolicy of its name is not in the would-be set.
    Delete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpMatch {
    pub icmp_type: u8,
    pub code: Option<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub pos: Pos,
    pub action: Action,
    /// Protocol numbers (names are normalised: TCP = 6 ...).
    pub protocol: Option<u8>,
    pub not_protocol: Option<u8>,
    pub icmp: Option<IcmpMatch>,
    pub not_icmp: Option<IcmpMatch>,
    /// 4 or 6.
    pub ip_version: Option<u8>,
    pub source: EntityRule,
    pub destination: EntityRule,
}

/// How a rule's `namespaceSelector` scopes its `selector` (spec §1.5, §2.4).
#[derive(Debug, Clone, PartialEq)]
pub enum NamespaceScope {
    /// No namespaceSelector: the selector covers every endpoint and network set.
    Any,
    /// `global()`: only non-namespaced objects (HEPs and GlobalNetworkSets) — all that exists here.
    Global,
    /// Any other namespaceSelector: only namespaced workloads and sets, none of which exist here.
    Namespaced,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Port {
    /// Inclusive range; a single port is `Range(p, p)`.
    Range(u16, u16),
    Named(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct EntityRule {
    /// Masked (spec §1.5: `1.2.3.4/16` is used as `1.2.0.0/16`).
    pub nets: Vec<IpNet>,
    pub not_nets: Vec<IpNet>,
    pub selector: Option<At<Selector>>,
    pub not_selector: Option<At<Selector>>,
    pub namespace_scope: NamespaceScope,
    pub ports: Vec<Port>,
    pub not_ports: Vec<Port>,
    /// `serviceAccounts` was given: workload-only, so as a positive criterion it matches no host address.
    pub service_accounts: bool,
}

impl Default for EntityRule {
    fn default() -> Self {
        EntityRule {
            nets: Vec::new(),
            not_nets: Vec::new(),
            selector: None,
            not_selector: None,
            namespace_scope: NamespaceScope::Any,
            ports: Vec::new(),
            not_ports: Vec::new(),
            service_accounts: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EndpointPort {
    pub name: String,
    pub protocol: u8,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HostEndpoint {
    pub name: String,
    pub pos: Pos,
    pub labels: Labels,
    pub node: String,
    /// `None` (or empty in YAML): matched by `expected_ips`. `Some("*")`: the wildcard HEP.
    pub interface_name: Option<String>,
    pub expected_ips: Vec<IpAddr>,
    pub profiles: Vec<At<String>>,
    pub ports: Vec<EndpointPort>,
}

impl HostEndpoint {
    pub fn is_wildcard(&self) -> bool {
        self.interface_name.as_deref() == Some("*")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct GlobalNetworkSet {
    pub name: String,
    pub pos: Pos,
    pub labels: Labels,
    /// Bare IPs become /32 or /128. Not masked strictly (spec §1.8), but stored masked.
    pub nets: Vec<IpNet>,
}

/// One failsafe entry (spec §4.2): protocol number (TCP, UDP or SCTP), port, optional net.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoPort {
    pub protocol: u8,
    pub port: u16,
    pub net: Option<IpNet>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyAction {
    Drop,
    Reject,
}

/// A FelixConfiguration resource: `default` is global, `node.<name>` overrides it for one node.
/// `None` means "not set here" so that the node-specific one can override field by field.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FelixConfiguration {
    pub name: String,
    pub pos: Pos,
    pub failsafe_inbound_host_ports: Option<Vec<ProtoPort>>,
    pub failsafe_outbound_host_ports: Option<Vec<ProtoPort>>,
    /// `nftablesMarkMask` / `iptablesMarkMask`.
    pub mark_mask: Option<u32>,
    pub log_prefix: Option<String>,
    pub disable_conntrack_invalid_check: Option<bool>,
    /// `nftablesFilterDenyAction` / `iptablesFilterDenyAction`: how filter-stage denies end.
    pub deny_action: Option<DenyAction>,
    /// Workload interface prefixes (`interfacePrefix`, comma separated in Felix); default `cali`.
    pub interface_prefixes: Option<Vec<String>>,
}

impl Default for Pos {
    fn default() -> Self {
        Pos {
            file: Arc::from("<default>"),
            line: 0,
            column: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckTarget {
    Tcp { host: IpAddr, port: u16 },
    Icmp { host: IpAddr },
}

/// `hostpolicy/v1` ConnectivityCheck (DESIGN.md "Resources of our own").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectivityCheck {
    pub name: String,
    pub pos: Pos,
    /// `None`: runs on every node.
    pub node: Option<String>,
    pub target: CheckTarget,
    pub timeout: Duration,
    pub accept_refused: bool,
}

/// `hostpolicy/v1` ManagementAccess: management flows (e.g. SSH from an admin network) that the lockout
/// guard (`crate::analysis::lockout`) proves are allowed inbound on every HostEndpoint of the node before any apply.
///
/// ```yaml
/// apiVersion: hostpolicy/v1
/// kind: ManagementAccess
/// metadata: {name: admin-ssh}
/// spec:
///   node: node1                          # optional: guard only this node (default: every node)
///   sources: [192.0.2.0/24, 2001:db8::/48] # required: CIDRs or bare IPs the operators come from
///   ports: [{protocol: TCP, port: 22}]    # required: TCP, UDP or SCTP and a port 1-65535
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ManagementAccess {
    pub name: String,
    pub pos: Pos,
    /// `None`: guards every node.
    pub node: Option<String>,
    /// Source networks, masked (a bare IP is a /32 or /128).
    pub sources: Vec<At<IpNet>>,
    /// (protocol number: TCP, UDP or SCTP; destination port).
    pub ports: Vec<At<(u8, u16)>>,
}
